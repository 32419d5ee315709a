variable "allowed_account_ids" {
  description = "If set, Terraform refuses to run against any other AWS account (guards against applying with the wrong credentials)."
  type        = list(string)
  default     = null
}

variable "name_prefix" {
  description = "Prefix of IAM role and policy names and KMS aliases."
  type        = string
  default     = "lifeboat"

  validation {
    condition     = can(regex("^[A-Za-z0-9+=,.@_-]{1,40}$", var.name_prefix))
    error_message = "name_prefix must be 1-40 characters usable in an IAM role name."
  }
}

variable "bucket_names" {
  description = "Repository bucket of each region. Bucket names are global: pick names nobody else has, e.g. \"<org>-lifeboat-usw2\"."
  type = object({
    us_west_2 = string
    us_east_2 = string
  })
}

variable "log_bucket_names" {
  description = "Access-log bucket of each region. Null: \"<bucket>-logs\"."
  type = object({
    us_west_2 = string
    us_east_2 = string
  })
  default = null
}

variable "repository_prefix" {
  description = "Key prefix of the lifeboat repository in both buckets (lifeboat.toml's `prefix`), or \"\" for the whole bucket."
  type        = string
  default     = "lifeboat/"
}

variable "object_lock_mode" {
  description = "Object Lock mode, as lifeboat.toml spells it: \"governance\" (administrators can lift a lock after changing the bucket policy) or \"compliance\" (nobody can, not even the account root, until the retention ends)."
  type        = string
  default     = "governance"
}

variable "object_lock_days" {
  description = "Days every object version is locked after it is written. Keep it at least as long as the oldest snapshot you must be able to restore after an attack on a backup host."
  type        = number
  default     = 30
}

variable "noncurrent_version_expiration_days" {
  description = "Days a version hidden by lifeboat's prune stays restorable before S3 removes it (never before its lock ends)."
  type        = number
  default     = 30
}

variable "access_log_retention_days" {
  description = "Days server access logs are kept."
  type        = number
  default     = 365
}

variable "trusted_principal_arns" {
  description = "Who may assume each role, keyed by writer, maintainer, restorer, drill, rds. A role missing here trusts the account (principals then also need sts:AssumeRole in their own policies)."
  type        = map(list(string))
  default     = {}
}

variable "extra_deleter_principal_arns" {
  description = "Principals besides the maintainer role that the bucket policies let delete objects, e.g. a role of your own to which you attached the maintainer policy."
  type        = list(string)
  default     = []
}

variable "break_glass_principal_arns" {
  description = "Emergency principals the bucket policies let delete objects and bypass governance retention. Empty: nobody can bypass a governance lock without first editing the bucket policy."
  type        = list(string)
  default     = []
}

variable "permissions_boundary_arn" {
  description = "Optional permissions boundary for every role."
  type        = string
  default     = null
}

variable "rds_source_kms_key_arns" {
  description = "KMS keys encrypting the RDS instances lifeboat snapshots (needed to copy or restore their snapshots)."
  type        = list(string)
  default     = []
}

variable "rds_scratch_instance_classes" {
  description = "If set, the instance classes (IAM patterns such as \"db.t4g.*\") scratch instances may use. Empty: any, for restore tests on the production class."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
