# RDS permissions, in two layers:
#   rds_snapshots - rds role: snapshot source instances, copy snapshots across
#                   regions, expire them;
#   rds_scratch   - rds and drill roles: restore a snapshot into a scratch
#                   instance, watch it, delete it.
#
# Least privilege without knowing the user's databases in advance rests on
# three conventions that the lifeboat rds source follows:
#   * a source instance carries the tag <rds_source_tag_key> = "true";
#   * every snapshot lifeboat makes is named <rds_snapshot_prefix>... and tagged
#     <rds_managed_tag_key> = "true" in the create/copy request itself;
#   * every scratch instance is named <rds_scratch_instance_prefix>... and tagged
#     <rds_scratch_tag_key> = "true" in the restore request itself.
# Names scope what can be touched at all; tags are demanded on top, so a
# snapshot somebody else named lifeboat-x is still not deleted unless tagged.

locals {
  rds_arn_prefixes = [for name in local.region_names : "arn:${local.partition}:rds:${name}:${local.account_id}"]

  rds_all_instances      = [for p in local.rds_arn_prefixes : "${p}:db:*"]
  rds_all_snapshots      = [for p in local.rds_arn_prefixes : "${p}:snapshot:*"]
  rds_managed_snapshots  = [for p in local.rds_arn_prefixes : "${p}:snapshot:${var.rds_snapshot_prefix}*"]
  rds_scratch_instances  = [for p in local.rds_arn_prefixes : "${p}:db:${var.rds_scratch_instance_prefix}*"]
  rds_scratch_dependents = flatten([for p in local.rds_arn_prefixes : ["${p}:subgrp:*", "${p}:og:*", "${p}:pg:*"]])

  rds_kms_key_arns = concat(
    [for name in local.region_names : var.regions[name].rds_kms_key_arn],
    var.rds_source_kms_key_arns,
  )
  rds_via_services = [for name in local.region_names : "rds.${name}.amazonaws.com"]
}

data "aws_iam_policy_document" "rds_snapshots" {
  statement {
    sid       = "SnapshotTaggedSourceInstances"
    effect    = "Allow"
    actions   = ["rds:CreateDBSnapshot"]
    resources = local.rds_all_instances

    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/${var.rds_source_tag_key}"
      values   = ["true"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:RequestedRegion"
      values   = local.region_names
    }
  }

  statement {
    sid       = "CreateAndCopyManagedSnapshots"
    effect    = "Allow"
    actions   = ["rds:CopyDBSnapshot", "rds:CreateDBSnapshot"]
    resources = local.rds_managed_snapshots

    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/${var.rds_managed_tag_key}"
      values   = ["true"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:RequestedRegion"
      values   = local.region_names
    }
  }

  # Tag-on-create is authorized as rds:AddTagsToResource on the new snapshot.
  statement {
    sid       = "TagManagedSnapshots"
    effect    = "Allow"
    actions   = ["rds:AddTagsToResource"]
    resources = local.rds_managed_snapshots

    condition {
      test     = "StringEquals"
      variable = "aws:RequestedRegion"
      values   = local.region_names
    }
  }

  statement {
    sid       = "ExpireManagedSnapshots"
    effect    = "Allow"
    actions   = ["rds:DeleteDBSnapshot"]
    resources = local.rds_managed_snapshots

    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/${var.rds_managed_tag_key}"
      values   = ["true"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:RequestedRegion"
      values   = local.region_names
    }
  }

  # A cross-region copy decrypts with the source snapshot's key in the source
  # region and re-encrypts with the destination region's lifeboat RDS key; RDS
  # does both through grants it creates with the caller's permissions.
  statement {
    sid       = "GrantRdsUseOfSnapshotKeys"
    effect    = "Allow"
    actions   = ["kms:CreateGrant"]
    resources = local.rds_kms_key_arns

    condition {
      test     = "Bool"
      variable = "kms:GrantIsForAWSResource"
      values   = ["true"]
    }

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = local.rds_via_services
    }
  }

  statement {
    sid    = "UseSnapshotKeysThroughRds"
    effect = "Allow"
    actions = [
      "kms:Decrypt",
      "kms:DescribeKey",
      "kms:Encrypt",
      "kms:GenerateDataKey",
      "kms:GenerateDataKeyWithoutPlaintext",
      "kms:ReEncryptFrom",
      "kms:ReEncryptTo",
    ]
    resources = local.rds_kms_key_arns

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = local.rds_via_services
    }
  }
}

data "aws_iam_policy_document" "rds_scratch" {
  # Describe and ListTags read metadata only; scoped to the lifeboat regions.
  statement {
    sid    = "DescribeInstancesAndSnapshots"
    effect = "Allow"
    actions = [
      "rds:DescribeDBInstances",
      "rds:DescribeDBSnapshots",
      "rds:ListTagsForResource",
    ]
    resources = concat(local.rds_all_instances, local.rds_all_snapshots)

    condition {
      test     = "StringEquals"
      variable = "aws:RequestedRegion"
      values   = local.region_names
    }
  }

  statement {
    sid       = "RestoreFromManagedSnapshots"
    effect    = "Allow"
    actions   = ["rds:RestoreDBInstanceFromDBSnapshot"]
    resources = local.rds_managed_snapshots

    condition {
      test     = "StringEquals"
      variable = "aws:RequestedRegion"
      values   = local.region_names
    }
  }

  # The new instance: lifeboat's name prefix, the scratch tag in the request,
  # never Multi-AZ, and optionally only some instance classes.
  statement {
    sid       = "RestoreIntoScratchInstances"
    effect    = "Allow"
    actions   = ["rds:RestoreDBInstanceFromDBSnapshot"]
    resources = local.rds_scratch_instances

    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/${var.rds_scratch_tag_key}"
      values   = ["true"]
    }

    condition {
      test     = "BoolIfExists"
      variable = "rds:MultiAz"
      values   = ["false"]
    }

    dynamic "condition" {
      for_each = length(var.rds_scratch_instance_classes) > 0 ? [var.rds_scratch_instance_classes] : []
      content {
        test     = "StringLike"
        variable = "rds:DatabaseClass"
        values   = condition.value
      }
    }

    condition {
      test     = "StringEquals"
      variable = "aws:RequestedRegion"
      values   = local.region_names
    }
  }

  # Subnet, option and parameter groups are only referenced by the restore, not changed.
  statement {
    sid       = "RestoreUsingExistingGroups"
    effect    = "Allow"
    actions   = ["rds:RestoreDBInstanceFromDBSnapshot"]
    resources = local.rds_scratch_dependents

    condition {
      test     = "StringEquals"
      variable = "aws:RequestedRegion"
      values   = local.region_names
    }
  }

  statement {
    sid       = "TagScratchInstances"
    effect    = "Allow"
    actions   = ["rds:AddTagsToResource"]
    resources = local.rds_scratch_instances

    condition {
      test     = "StringEquals"
      variable = "aws:RequestedRegion"
      values   = local.region_names
    }
  }

  statement {
    sid       = "DeleteScratchInstances"
    effect    = "Allow"
    actions   = ["rds:DeleteDBInstance"]
    resources = local.rds_scratch_instances

    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/${var.rds_scratch_tag_key}"
      values   = ["true"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:RequestedRegion"
      values   = local.region_names
    }
  }

  # Restoring an encrypted snapshot makes RDS create a grant on its key for the new instance.
  statement {
    sid       = "GrantRdsUseOfKeysForScratch"
    effect    = "Allow"
    actions   = ["kms:CreateGrant"]
    resources = local.rds_kms_key_arns

    condition {
      test     = "Bool"
      variable = "kms:GrantIsForAWSResource"
      values   = ["true"]
    }

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = local.rds_via_services
    }
  }

  statement {
    sid       = "DescribeKeysForScratch"
    effect    = "Allow"
    actions   = ["kms:DescribeKey"]
    resources = local.rds_kms_key_arns

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = local.rds_via_services
    }
  }
}
