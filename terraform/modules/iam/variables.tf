variable "name_prefix" {
  description = "Prefix of role and policy names: <name_prefix>-writer, ..."
  type        = string
  default     = "lifeboat"
}

variable "regions" {
  description = "The lifeboat regions, keyed by AWS region name, as produced by modules/region."
  type = map(object({
    bucket_arn      = string
    s3_kms_key_arn  = string
    rds_kms_key_arn = string
  }))

  validation {
    condition     = length(var.regions) >= 1
    error_message = "At least one region is needed."
  }
}

variable "repository_prefix" {
  description = "Key prefix of the repository inside each bucket (\"lifeboat/\"), or \"\" for the whole bucket. Object permissions are granted under this prefix only."
  type        = string
  default     = "lifeboat/"
}

variable "object_lock_mode" {
  description = "Object Lock mode the buckets use, \"governance\" or \"compliance\". Uploads may only ask for this mode."
  type        = string
  default     = "governance"

  validation {
    condition     = contains(["governance", "compliance"], var.object_lock_mode)
    error_message = "object_lock_mode must be \"governance\" or \"compliance\"."
  }
}

variable "object_lock_days" {
  description = "Object Lock retention in days. Uploads may only set a retain-until date this many days ahead (give or take retention_slack_days)."
  type        = number
  default     = 30
}

variable "retention_slack_days" {
  description = "Tolerance, in days, around object_lock_days for the retention an upload may set (clock skew, rounding)."
  type        = number
  default     = 1
}

variable "trusted_principal_arns" {
  description = "Who may assume each role, keyed by role (writer, maintainer, restorer, drill, rds): IAM role or user ARNs, e.g. a backup host's instance role. A role missing from the map trusts the account, which then still needs an IAM policy granting sts:AssumeRole on it."
  type        = map(list(string))
  default     = {}

  validation {
    condition     = alltrue([for role in keys(var.trusted_principal_arns) : contains(["writer", "maintainer", "restorer", "drill", "rds"], role)])
    error_message = "trusted_principal_arns keys must be among writer, maintainer, restorer, drill, rds."
  }

  validation {
    condition     = alltrue([for arns in values(var.trusted_principal_arns) : length(arns) > 0])
    error_message = "trusted_principal_arns lists at least one principal per role given (leave a role out to trust the account)."
  }
}

variable "permissions_boundary_arn" {
  description = "Optional permissions boundary attached to every role."
  type        = string
  default     = null
}

variable "rds_snapshot_prefix" {
  description = "Identifier prefix of every RDS snapshot lifeboat creates or copies. The rds role can only tag, copy, restore and delete snapshots whose name starts with it."
  type        = string
  default     = "lifeboat-"
}

variable "rds_scratch_instance_prefix" {
  description = "Identifier prefix of the scratch DB instances that restore tests and drills create. Only those can be created, tagged and deleted."
  type        = string
  default     = "lifeboat-drill-"
}

variable "rds_source_tag_key" {
  description = "Tag key (value \"true\") that marks a DB instance as a source lifeboat may snapshot."
  type        = string
  default     = "lifeboat:source"
}

variable "rds_managed_tag_key" {
  description = "Tag key (value \"true\") lifeboat puts on every snapshot it creates or copies; only such snapshots can be deleted."
  type        = string
  default     = "lifeboat:managed"
}

variable "rds_scratch_tag_key" {
  description = "Tag key (value \"true\") lifeboat puts on every scratch instance; only such instances can be deleted."
  type        = string
  default     = "lifeboat:drill"
}

variable "rds_source_kms_key_arns" {
  description = "KMS keys that encrypt the source DB instances (and so their snapshots). Copying or restoring such a snapshot needs a grant on its key."
  type        = list(string)
  default     = []
}

variable "rds_scratch_instance_classes" {
  description = "Instance classes a scratch instance may use (IAM StringLike patterns, e.g. \"db.t4g.*\"). Empty: any class, so that a restore test can use the production class and measure a faithful RTO."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags added to every role and policy."
  type        = map(string)
  default     = {}
}
