output "region" {
  description = "AWS region of this lifeboat region."
  value       = var.region
}

output "bucket" {
  description = "Name of the repository bucket."
  value       = aws_s3_bucket.repository.id
}

output "bucket_arn" {
  description = "ARN of the repository bucket."
  value       = aws_s3_bucket.repository.arn
}

output "repository_prefix" {
  description = "Key prefix of the repository inside the bucket."
  value       = var.repository_prefix
}

output "object_lock_mode" {
  description = "Default Object Lock mode, lowercase as lifeboat.toml spells it."
  value       = var.object_lock_mode
  # Known only once the bucket's lock is configured, so lifeboat.toml never claims a lock the bucket lacks.
  depends_on = [aws_s3_bucket_object_lock_configuration.repository]
}

output "object_lock_days" {
  description = "Default Object Lock retention in days."
  value       = var.object_lock_days
  depends_on  = [aws_s3_bucket_object_lock_configuration.repository]
}

output "log_bucket" {
  description = "Name of the bucket receiving server access logs."
  value       = aws_s3_bucket.logs.id
}

output "s3_kms_key_arn" {
  description = "ARN of the KMS key encrypting the repository bucket."
  value       = aws_kms_key.s3.arn
}

output "rds_kms_key_arn" {
  description = "ARN of the KMS key for RDS snapshots copied into this region (CopyDBSnapshot's KmsKeyId)."
  value       = aws_kms_key.rds.arn
}
