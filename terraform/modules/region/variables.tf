variable "region" {
  description = "AWS region of the provider passed in (us-west-2, us-east-2, ...). Written into the outputs that become lifeboat.toml, and into KMS kms:ViaService conditions."
  type        = string

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.region))
    error_message = "region must be an AWS region name such as us-west-2."
  }
}

variable "name_prefix" {
  description = "Prefix of KMS aliases and of the IAM role names that the bucket policy refers to."
  type        = string
  default     = "lifeboat"
}

variable "bucket_name" {
  description = "Name of the repository bucket (globally unique)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name must be a valid S3 bucket name (3-63 characters, lowercase letters, digits, dots and hyphens)."
  }
}

variable "log_bucket_name" {
  description = "Name of the bucket that receives the repository bucket's server access logs. Null means \"<bucket_name>-logs\"."
  type        = string
  default     = null
}

variable "repository_prefix" {
  description = "Key prefix of the lifeboat repository inside the bucket (\"lifeboat/\"), or \"\" for the whole bucket."
  type        = string
  default     = "lifeboat/"

  validation {
    condition     = var.repository_prefix == "" || (endswith(var.repository_prefix, "/") && !startswith(var.repository_prefix, "/"))
    error_message = "repository_prefix must be empty or end with \"/\" (and not start with one)."
  }
}

variable "object_lock_mode" {
  description = "Default Object Lock retention mode, spelled as in lifeboat.toml: \"governance\" or \"compliance\"."
  type        = string
  default     = "governance"

  validation {
    condition     = contains(["governance", "compliance"], var.object_lock_mode)
    error_message = "object_lock_mode must be \"governance\" or \"compliance\"."
  }
}

variable "object_lock_days" {
  description = "Default Object Lock retention in days: no object version can be deleted or overwritten for this long after it was written."
  type        = number
  default     = 30

  validation {
    condition     = var.object_lock_days >= 1 && var.object_lock_days == floor(var.object_lock_days)
    error_message = "object_lock_days must be a whole number of at least 1."
  }
}

variable "noncurrent_version_expiration_days" {
  description = "Days a version stays after it became noncurrent (after lifeboat's prune hid it with a delete marker) before S3 removes it. Object Lock still keeps every version for at least object_lock_days after it was written."
  type        = number
  default     = 30

  validation {
    condition     = var.noncurrent_version_expiration_days >= 1 && var.noncurrent_version_expiration_days == floor(var.noncurrent_version_expiration_days)
    error_message = "noncurrent_version_expiration_days must be a whole number of at least 1."
  }
}

variable "abort_incomplete_multipart_upload_days" {
  description = "Days after which S3 discards the parts of a multipart upload that was never completed (a backup host that died mid-pack)."
  type        = number
  default     = 7
}

variable "access_log_retention_days" {
  description = "Days server access logs are kept in the log bucket."
  type        = number
  default     = 365

  validation {
    condition     = var.access_log_retention_days >= 1
    error_message = "access_log_retention_days must be at least 1."
  }
}

variable "deleter_principal_arns" {
  description = "IAM principals (role ARNs) allowed by the bucket policy to delete objects: the maintainer role plus any break-glass role. Everybody else is denied s3:DeleteObject and s3:DeleteObjectVersion whatever their IAM policies say."
  type        = list(string)

  validation {
    condition     = length(var.deleter_principal_arns) > 0
    error_message = "deleter_principal_arns needs at least the maintainer role, or prune can never run."
  }
}

variable "bypass_principal_arns" {
  description = "IAM principals allowed by the bucket policy to use s3:BypassGovernanceRetention (break-glass only). Empty: nobody, not even an administrator, can shorten a governance-mode retention without first changing this bucket policy."
  type        = list(string)
  default     = []
}

variable "kms_deletion_window_days" {
  description = "Waiting period before a scheduled KMS key deletion takes effect (7-30)."
  type        = number
  default     = 30
}

variable "kms_rotation_period_days" {
  description = "Days between automatic rotations of the key material of both KMS keys (90-2560). 365: yearly."
  type        = number
  default     = 365

  validation {
    condition     = var.kms_rotation_period_days >= 90 && var.kms_rotation_period_days <= 2560
    error_message = "kms_rotation_period_days must be between 90 and 2560."
  }
}

variable "tags" {
  description = "Tags added to every resource of the module."
  type        = map(string)
  default     = {}
}
