# S3 permissions, in four layers that the role documents combine:
#   s3_read     - every role that touches the repository;
#   s3_write    - writer and maintainer;
#   s3_evidence - restorer and drill: add drill reports (drills/) and audit
#                 checkpoints (audit/) to the regions, nothing else;
#   s3_prune    - maintainer only.
#
# Every action is listed literally (no wildcards): terraform/tests/check_policies.py
# reads these blocks and checks them against the S3 calls in the Rust code.

data "aws_partition" "current" {}

data "aws_caller_identity" "current" {}

locals {
  partition    = data.aws_partition.current.partition
  account_id   = data.aws_caller_identity.current.account_id
  account_root = "arn:${local.partition}:iam::${local.account_id}:root"

  region_names = sort(keys(var.regions))
  bucket_arns  = [for name in local.region_names : var.regions[name].bucket_arn]
  s3_key_arns  = [for name in local.region_names : var.regions[name].s3_kms_key_arn]

  # Objects of the repository: config, keys/, data/, index/, snapshots/, locks/.
  repository_object_arns = [for arn in local.bucket_arns : "${arn}/${var.repository_prefix}*"]

  # Evidence a restore or drill host adds to the regions: drill reports and the
  # audit trail's checkpoints. Both are MAC-authenticated by lifeboat, so a junk
  # object there is detected, and neither prefix holds anything a restore reads.
  evidence_object_arns = flatten([for arn in local.bucket_arns : [
    "${arn}/${var.repository_prefix}drills/*",
    "${arn}/${var.repository_prefix}audit/*",
  ]])

  # S3 asks KMS on the caller's behalf; with an S3 bucket key the encryption
  # context is the bucket ARN, without one the object ARN.
  s3_encryption_contexts = concat(local.bucket_arns, local.repository_object_arns)
  s3_via_services        = [for name in local.region_names : "s3.${name}.amazonaws.com"]

  object_lock_mode   = upper(var.object_lock_mode)
  max_retention_days = var.object_lock_days + var.retention_slack_days
  min_retention_days = max(var.object_lock_days - var.retention_slack_days, 0)
}

data "aws_iam_policy_document" "s3_read" {
  statement {
    sid       = "ListRepository"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = local.bucket_arns

    # A listing with a Prefix must stay inside the repository. Requests without
    # one are allowed: HeadBucket (lifeboat times a round trip with it) is
    # authorized as s3:ListBucket without a prefix, and the bucket is lifeboat's alone.
    dynamic "condition" {
      for_each = var.repository_prefix == "" ? [] : [var.repository_prefix]
      content {
        test     = "StringLikeIfExists"
        variable = "s3:prefix"
        values   = ["${condition.value}*"]
      }
    }
  }

  # lifeboat checks at start whether the bucket has versioning and Object Lock;
  # erasure receipts read the lifecycle rule that expires noncurrent versions.
  statement {
    sid    = "ReadBucketSettings"
    effect = "Allow"
    actions = [
      "s3:GetBucketObjectLockConfiguration",
      "s3:GetBucketVersioning",
      "s3:GetLifecycleConfiguration",
    ]
    resources = local.bucket_arns
  }

  # GetObject also authorizes HeadObject and ranged reads. HeadObject and GetObject
  # return an object's lock mode and retain-until date only with GetObjectRetention.
  statement {
    sid    = "ReadRepositoryObjects"
    effect = "Allow"
    actions = [
      "s3:GetObject",
      "s3:GetObjectRetention",
    ]
    resources = local.repository_object_arns
  }

  statement {
    sid       = "DecryptThroughS3"
    effect    = "Allow"
    actions   = ["kms:Decrypt"]
    resources = local.s3_key_arns

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = local.s3_via_services
    }

    condition {
      test     = "StringLike"
      variable = "kms:EncryptionContext:aws:s3:arn"
      values   = local.s3_encryption_contexts
    }
  }
}

data "aws_iam_policy_document" "s3_write" {
  # Uploads into the repository prefix. If an upload sets
  # its own retention, it must be the bucket's mode and about object_lock_days:
  # a stolen key can neither weaken the lock nor lock junk away for decades.
  statement {
    sid       = "WriteRepositoryObjects"
    effect    = "Allow"
    actions   = ["s3:PutObject"]
    resources = local.repository_object_arns

    condition {
      test     = "StringEqualsIfExists"
      variable = "s3:object-lock-mode"
      values   = [local.object_lock_mode]
    }

    condition {
      test     = "NumericLessThanEqualsIfExists"
      variable = "s3:object-lock-remaining-retention-days"
      values   = [tostring(local.max_retention_days)]
    }

    condition {
      test     = "NumericGreaterThanEqualsIfExists"
      variable = "s3:object-lock-remaining-retention-days"
      values   = [tostring(local.min_retention_days)]
    }
  }

  # Needed for uploads that carry x-amz-object-lock-mode/-retain-until-date, and
  # to extend the retention of an existing pack. Shortening a retention needs
  # s3:BypassGovernanceRetention, which no lifeboat role holds.
  statement {
    sid       = "SetRetentionOfRepositoryObjects"
    effect    = "Allow"
    actions   = ["s3:PutObjectRetention"]
    resources = local.repository_object_arns

    condition {
      test     = "StringEquals"
      variable = "s3:object-lock-mode"
      values   = [local.object_lock_mode]
    }

    condition {
      test     = "NumericLessThanEquals"
      variable = "s3:object-lock-remaining-retention-days"
      values   = [tostring(local.max_retention_days)]
    }

    condition {
      test     = "NumericGreaterThanEquals"
      variable = "s3:object-lock-remaining-retention-days"
      values   = [tostring(local.min_retention_days)]
    }
  }

  statement {
    sid       = "EncryptThroughS3"
    effect    = "Allow"
    actions   = ["kms:GenerateDataKey"]
    resources = local.s3_key_arns

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = local.s3_via_services
    }

    condition {
      test     = "StringLike"
      variable = "kms:EncryptionContext:aws:s3:arn"
      values   = local.s3_encryption_contexts
    }
  }
}

data "aws_iam_policy_document" "s3_evidence" {
  # The same lock conditions as the writer's uploads, on drills/ and audit/ only.
  statement {
    sid       = "WriteEvidenceObjects"
    effect    = "Allow"
    actions   = ["s3:PutObject"]
    resources = local.evidence_object_arns

    condition {
      test     = "StringEqualsIfExists"
      variable = "s3:object-lock-mode"
      values   = [local.object_lock_mode]
    }

    condition {
      test     = "NumericLessThanEqualsIfExists"
      variable = "s3:object-lock-remaining-retention-days"
      values   = [tostring(local.max_retention_days)]
    }

    condition {
      test     = "NumericGreaterThanEqualsIfExists"
      variable = "s3:object-lock-remaining-retention-days"
      values   = [tostring(local.min_retention_days)]
    }
  }

  statement {
    sid       = "SetRetentionOfEvidenceObjects"
    effect    = "Allow"
    actions   = ["s3:PutObjectRetention"]
    resources = local.evidence_object_arns

    condition {
      test     = "StringEquals"
      variable = "s3:object-lock-mode"
      values   = [local.object_lock_mode]
    }

    condition {
      test     = "NumericLessThanEquals"
      variable = "s3:object-lock-remaining-retention-days"
      values   = [tostring(local.max_retention_days)]
    }

    condition {
      test     = "NumericGreaterThanEquals"
      variable = "s3:object-lock-remaining-retention-days"
      values   = [tostring(local.min_retention_days)]
    }
  }

  statement {
    # The object puts above are what confine this; the context is the bucket ARN
    # when the bucket uses an S3 bucket key, so it cannot name audit/ and drills/.
    sid       = "EncryptEvidenceThroughS3"
    effect    = "Allow"
    actions   = ["kms:GenerateDataKey"]
    resources = local.s3_key_arns

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = local.s3_via_services
    }

    condition {
      test     = "StringLike"
      variable = "kms:EncryptionContext:aws:s3:arn"
      values   = local.s3_encryption_contexts
    }
  }
}

data "aws_iam_policy_document" "s3_prune" {
  # DeleteObject without a version id: on a versioned bucket it only adds a
  # delete marker. The hidden version stays restorable until the lifecycle rule
  # removes it noncurrent_version_expiration_days later, and Object Lock keeps
  # it for object_lock_days after it was written in any case. No
  # s3:DeleteObjectVersion (permanent deletion is the lifecycle's job) and no
  # s3:BypassGovernanceRetention.
  statement {
    sid       = "HideRepositoryObjects"
    effect    = "Allow"
    actions   = ["s3:DeleteObject"]
    resources = local.repository_object_arns
  }
}
