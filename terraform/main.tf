locals {
  tags = merge({ Application = "lifeboat" }, var.tags)

  # Principals the bucket policies allow to delete at all. Object Lock still
  # protects every version for object_lock_days whoever deletes.
  deleter_principal_arns = concat(
    [module.iam.role_arns["maintainer"]],
    var.extra_deleter_principal_arns,
    var.break_glass_principal_arns,
  )

  region_settings = {
    name_prefix                        = var.name_prefix
    repository_prefix                  = var.repository_prefix
    object_lock_mode                   = var.object_lock_mode
    object_lock_days                   = var.object_lock_days
    noncurrent_version_expiration_days = var.noncurrent_version_expiration_days
    access_log_retention_days          = var.access_log_retention_days
  }
}

module "us_west_2" {
  source    = "./modules/region"
  providers = { aws = aws.us_west_2 }

  region          = "us-west-2"
  bucket_name     = var.bucket_names.us_west_2
  log_bucket_name = try(var.log_bucket_names.us_west_2, null)

  name_prefix                        = local.region_settings.name_prefix
  repository_prefix                  = local.region_settings.repository_prefix
  object_lock_mode                   = local.region_settings.object_lock_mode
  object_lock_days                   = local.region_settings.object_lock_days
  noncurrent_version_expiration_days = local.region_settings.noncurrent_version_expiration_days
  access_log_retention_days          = local.region_settings.access_log_retention_days

  deleter_principal_arns = local.deleter_principal_arns
  bypass_principal_arns  = var.break_glass_principal_arns
}

module "us_east_2" {
  source    = "./modules/region"
  providers = { aws = aws.us_east_2 }

  region          = "us-east-2"
  bucket_name     = var.bucket_names.us_east_2
  log_bucket_name = try(var.log_bucket_names.us_east_2, null)

  name_prefix                        = local.region_settings.name_prefix
  repository_prefix                  = local.region_settings.repository_prefix
  object_lock_mode                   = local.region_settings.object_lock_mode
  object_lock_days                   = local.region_settings.object_lock_days
  noncurrent_version_expiration_days = local.region_settings.noncurrent_version_expiration_days
  access_log_retention_days          = local.region_settings.access_log_retention_days

  deleter_principal_arns = local.deleter_principal_arns
  bypass_principal_arns  = var.break_glass_principal_arns
}

locals {
  # In the order lifeboat.toml lists them; the first is where reads go first.
  regions = [module.us_west_2, module.us_east_2]
}

# IAM is global: the us-west-2 provider serves as well as any.
module "iam" {
  source    = "./modules/iam"
  providers = { aws = aws.us_west_2 }

  name_prefix = var.name_prefix
  regions = {
    for r in local.regions : r.region => {
      bucket_arn      = r.bucket_arn
      s3_kms_key_arn  = r.s3_kms_key_arn
      rds_kms_key_arn = r.rds_kms_key_arn
    }
  }

  repository_prefix = var.repository_prefix
  object_lock_mode  = var.object_lock_mode
  object_lock_days  = var.object_lock_days

  trusted_principal_arns       = var.trusted_principal_arns
  permissions_boundary_arn     = var.permissions_boundary_arn
  rds_source_kms_key_arns      = var.rds_source_kms_key_arns
  rds_scratch_instance_classes = var.rds_scratch_instance_classes
  tags                         = local.tags
}

module "lifeboat_toml" {
  source = "./modules/lifeboat_toml"

  regions = [
    for r in local.regions : {
      name             = r.region
      bucket           = r.bucket
      region           = r.region
      prefix           = r.repository_prefix
      object_lock_days = r.object_lock_days
      object_lock_mode = r.object_lock_mode
    }
  ]
}
