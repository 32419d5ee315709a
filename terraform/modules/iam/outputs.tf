output "role_arns" {
  description = "ARN of each lifeboat role, keyed by writer, maintainer, restorer, drill, rds."
  value       = { for role, r in aws_iam_role.this : role => r.arn }
}

output "policy_arns" {
  description = "ARN of each role's managed policy, to attach to an existing role instead of assuming ours."
  value       = { for role, p in aws_iam_policy.this : role => p.arn }
}

output "rds_conventions" {
  description = "Names and tags the lifeboat rds source must use for the rds and drill roles to allow its calls."
  value = {
    snapshot_prefix         = var.rds_snapshot_prefix
    scratch_instance_prefix = var.rds_scratch_instance_prefix
    source_tag              = { key = var.rds_source_tag_key, value = "true" }
    managed_tag             = { key = var.rds_managed_tag_key, value = "true" }
    scratch_tag             = { key = var.rds_scratch_tag_key, value = "true" }
  }
}
