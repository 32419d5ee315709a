# Two customer-managed keys per region, rotated yearly:
#   s3  - default encryption of the repository bucket (SSE-KMS, with an S3 bucket key);
#   rds - RDS snapshots that lifeboat copies into this region, and instances restored from them.
#
# lifeboat encrypts every object with age before upload, so SSE-KMS is a second
# layer: it keeps a leaked bucket listing or a misconfigured bucket policy from
# exposing even ciphertext, and puts every read in CloudTrail.
#
# Key policies give the account administrative control of each key but allow its
# cryptographic use only through the one AWS service it serves, in this region.
# Which principal may use a key is then decided by IAM (see modules/iam).

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  account_root = "arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"

  # What `terraform apply` and an operator need to manage a key; no cryptographic use.
  kms_admin_actions = [
    "kms:CancelKeyDeletion",
    "kms:CreateAlias",
    "kms:DeleteAlias",
    "kms:DescribeKey",
    "kms:DisableKey",
    "kms:DisableKeyRotation",
    "kms:EnableKey",
    "kms:EnableKeyRotation",
    "kms:GetKeyPolicy",
    "kms:GetKeyRotationStatus",
    "kms:ListAliases",
    "kms:ListGrants",
    "kms:ListKeyPolicies",
    "kms:ListKeyRotations",
    "kms:ListResourceTags",
    "kms:PutKeyPolicy",
    "kms:RevokeGrant",
    "kms:RotateKeyOnDemand",
    "kms:ScheduleKeyDeletion",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:UpdateAlias",
    "kms:UpdateKeyDescription",
  ]
}

data "aws_iam_policy_document" "s3_key" {
  #checkov:skip=CKV_AWS_111:In a key policy "*" is this key alone; the write actions granted to the account are key administration, delegated to IAM.
  #checkov:skip=CKV_AWS_356:In a key policy "*" is this key alone; a key policy cannot name its own ARN before the key exists.
  statement {
    sid       = "AccountAdministersKey"
    effect    = "Allow"
    actions   = local.kms_admin_actions
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = [local.account_root]
    }
  }

  statement {
    sid    = "AccountUsesKeyOnlyThroughS3InThisRegion"
    effect = "Allow"
    actions = [
      "kms:Decrypt",
      "kms:DescribeKey",
      "kms:Encrypt",
      "kms:GenerateDataKey",
      "kms:ReEncryptFrom",
      "kms:ReEncryptTo",
    ]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = [local.account_root]
    }

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${var.region}.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "kms:CallerAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

resource "aws_kms_key" "s3" {
  description             = "${var.name_prefix}: default encryption of s3://${var.bucket_name} (${var.region})"
  enable_key_rotation     = true
  rotation_period_in_days = var.kms_rotation_period_days
  deletion_window_in_days = var.kms_deletion_window_days
  policy                  = data.aws_iam_policy_document.s3_key.json
  tags                    = var.tags
}

resource "aws_kms_alias" "s3" {
  name          = "alias/${var.name_prefix}-s3"
  target_key_id = aws_kms_key.s3.key_id
}

data "aws_iam_policy_document" "rds_key" {
  #checkov:skip=CKV_AWS_111:In a key policy "*" is this key alone; the write actions granted to the account are key administration, delegated to IAM.
  #checkov:skip=CKV_AWS_356:In a key policy "*" is this key alone; a key policy cannot name its own ARN before the key exists.
  statement {
    sid       = "AccountAdministersKey"
    effect    = "Allow"
    actions   = local.kms_admin_actions
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = [local.account_root]
    }
  }

  statement {
    sid    = "AccountUsesKeyOnlyThroughRdsInThisRegion"
    effect = "Allow"
    actions = [
      "kms:CreateGrant",
      "kms:Decrypt",
      "kms:DescribeKey",
      "kms:Encrypt",
      "kms:GenerateDataKey",
      "kms:GenerateDataKeyWithoutPlaintext",
      "kms:ReEncryptFrom",
      "kms:ReEncryptTo",
    ]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = [local.account_root]
    }

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["rds.${var.region}.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "kms:CallerAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

resource "aws_kms_key" "rds" {
  description             = "${var.name_prefix}: RDS snapshots copied into ${var.region} and scratch instances restored from them"
  enable_key_rotation     = true
  rotation_period_in_days = var.kms_rotation_period_days
  deletion_window_in_days = var.kms_deletion_window_days
  policy                  = data.aws_iam_policy_document.rds_key.json
  tags                    = var.tags
}

resource "aws_kms_alias" "rds" {
  name          = "alias/${var.name_prefix}-rds"
  target_key_id = aws_kms_key.rds.key_id
}
