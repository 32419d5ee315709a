# The repository bucket.
#
# What makes "a stolen backup host cannot destroy history" true on AWS:
#   * versioning + Object Lock: every version written is retained for
#     object_lock_days (default retention; lifeboat's uploads also carry an
#     explicit retain-until date of the same length);
#   * the bucket policy below: only the maintainer role may delete at all, and
#     only break-glass principals may bypass governance retention;
#   * lifecycle: current objects never expire (only lifeboat's prune decides what
#     is garbage); a version hidden by prune is removed by S3 only
#     noncurrent_version_expiration_days later, and never while it is locked.

locals {
  bucket_arn         = "arn:${data.aws_partition.current.partition}:s3:::${var.bucket_name}"
  object_lock_mode   = upper(var.object_lock_mode)
  log_bucket_name    = coalesce(var.log_bucket_name, "${var.bucket_name}-logs")
  access_log_prefix  = "s3/${var.bucket_name}/"
  repository_objects = "${local.bucket_arn}/${var.repository_prefix}*"
}

resource "aws_s3_bucket" "repository" {
  #checkov:skip=CKV_AWS_144:Cross-region replication is lifeboat's own job: it writes every pack to both regional buckets and commits index and manifest per region in write order, so each bucket is a complete repository on its own. S3 replication would duplicate that and could copy a half-written repository state.
  #checkov:skip=CKV2_AWS_62:Nothing consumes bucket events: lifeboat is the only writer and records every upload in its catalog; reads and deletes are in the server access logs and CloudTrail.
  bucket              = var.bucket_name
  object_lock_enabled = true

  # A backup bucket is never emptied by `terraform destroy`; Object Lock would refuse anyway.
  force_destroy = false

  tags = var.tags
}

resource "aws_s3_bucket_ownership_controls" "repository" {
  bucket = aws_s3_bucket.repository.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "repository" {
  bucket                  = aws_s3_bucket.repository.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "repository" {
  bucket = aws_s3_bucket.repository.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_object_lock_configuration" "repository" {
  bucket = aws_s3_bucket.repository.id

  rule {
    default_retention {
      mode = local.object_lock_mode
      days = var.object_lock_days
    }
  }

  depends_on = [aws_s3_bucket_versioning.repository]
}

resource "aws_s3_bucket_server_side_encryption_configuration" "repository" {
  bucket = aws_s3_bucket.repository.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.s3.arn
    }

    # One data key per bucket instead of one KMS call per object: packs are ~16 MiB
    # but index and snapshot objects are small and numerous.
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_logging" "repository" {
  bucket        = aws_s3_bucket.repository.id
  target_bucket = aws_s3_bucket.logs.id
  target_prefix = local.access_log_prefix
}

resource "aws_s3_bucket_lifecycle_configuration" "repository" {
  bucket = aws_s3_bucket.repository.id

  # No rule here has an `expiration { days = ... }` for current objects: a pack
  # still referenced by a snapshot must never disappear behind lifeboat's back.
  # The rules apply to the whole bucket, written `filter { prefix = "" }`: some
  # AWS provider versions warn about an empty `filter {}`.
  rule {
    id     = "noncurrent-versions"
    status = "Enabled"

    filter {
      prefix = ""
    }

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_expiration_days
    }
  }

  rule {
    id     = "expired-delete-markers"
    status = "Enabled"

    filter {
      prefix = ""
    }

    expiration {
      expired_object_delete_marker = true
    }
  }

  rule {
    id     = "incomplete-multipart-uploads"
    status = "Enabled"

    filter {
      prefix = ""
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = var.abort_incomplete_multipart_upload_days
    }
  }

  depends_on = [aws_s3_bucket_versioning.repository]
}

data "aws_iam_policy_document" "repository" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [local.bucket_arn, "${local.bucket_arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }

  statement {
    sid       = "DenyTlsOlderThan12"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [local.bucket_arn, "${local.bucket_arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "NumericLessThan"
      variable = "s3:TlsVersion"
      values   = ["1.2"]
    }
  }

  # An upload may rely on the bucket default (no header) but may not ask for
  # another kind of encryption or another key.
  statement {
    sid       = "DenyOtherEncryption"
    effect    = "Deny"
    actions   = ["s3:PutObject"]
    resources = ["${local.bucket_arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Null"
      variable = "s3:x-amz-server-side-encryption"
      values   = ["false"]
    }

    condition {
      test     = "StringNotEquals"
      variable = "s3:x-amz-server-side-encryption"
      values   = ["aws:kms"]
    }
  }

  statement {
    sid       = "DenyOtherKmsKey"
    effect    = "Deny"
    actions   = ["s3:PutObject"]
    resources = ["${local.bucket_arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Null"
      variable = "s3:x-amz-server-side-encryption-aws-kms-key-id"
      values   = ["false"]
    }

    condition {
      test     = "StringNotEquals"
      variable = "s3:x-amz-server-side-encryption-aws-kms-key-id"
      values   = [aws_kms_key.s3.arn]
    }
  }

  # Whatever IAM grants elsewhere in the account, only the maintainer role (and
  # break-glass principals) can delete. Versions stay protected by Object Lock even then.
  statement {
    sid       = "DenyDeleteExceptMaintainer"
    effect    = "Deny"
    actions   = ["s3:DeleteObject", "s3:DeleteObjectVersion"]
    resources = ["${local.bucket_arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "ArnNotEquals"
      variable = "aws:PrincipalArn"
      values   = var.deleter_principal_arns
    }
  }

  statement {
    sid       = "DenyGovernanceBypass"
    effect    = "Deny"
    actions   = ["s3:BypassGovernanceRetention"]
    resources = ["${local.bucket_arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    dynamic "condition" {
      for_each = length(var.bypass_principal_arns) > 0 ? [var.bypass_principal_arns] : []
      content {
        test     = "ArnNotEquals"
        variable = "aws:PrincipalArn"
        values   = condition.value
      }
    }
  }
}

resource "aws_s3_bucket_policy" "repository" {
  bucket = aws_s3_bucket.repository.id
  policy = data.aws_iam_policy_document.repository.json

  depends_on = [aws_s3_bucket_public_access_block.repository]
}
