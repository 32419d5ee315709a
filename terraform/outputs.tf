output "lifeboat_regions_toml" {
  description = "The [[regions]] section of lifeboat.toml for both regions: terraform output -raw lifeboat_regions_toml >> lifeboat.toml"
  value       = module.lifeboat_toml.toml
}

output "lifeboat_regions" {
  description = "The same [[regions]] entries as objects (name, kind, bucket, region, prefix, endpoint, object_lock_days, object_lock_mode)."
  value       = module.lifeboat_toml.regions
}

output "regions" {
  description = "Everything created per region, keyed by region name."
  value = {
    for r in local.regions : r.region => {
      bucket            = r.bucket
      bucket_arn        = r.bucket_arn
      repository_prefix = r.repository_prefix
      object_lock_mode  = r.object_lock_mode
      object_lock_days  = r.object_lock_days
      log_bucket        = r.log_bucket
      s3_kms_key_arn    = r.s3_kms_key_arn
      rds_kms_key_arn   = r.rds_kms_key_arn
    }
  }
}

output "role_arns" {
  description = "Role to assume for each lifeboat job: writer (backup hosts), maintainer (prune), restorer (restore, verify), drill, rds."
  value       = module.iam.role_arns
}

output "policy_arns" {
  description = "The same permissions as managed policies, to attach to roles you already have."
  value       = module.iam.policy_arns
}

output "rds_copy_kms_key_arns" {
  description = "KmsKeyId to pass to CopyDBSnapshot for a copy into each region, keyed by region name."
  value       = { for r in local.regions : r.region => r.rds_kms_key_arn }
}

output "rds_conventions" {
  description = "Snapshot and scratch-instance name prefixes and tags that the rds and drill roles require."
  value       = module.iam.rds_conventions
}
