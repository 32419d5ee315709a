# One policy document per role, composed from the layers in s3.tf and rds.tf.
# The document of role R is data.aws_iam_policy_document.R (tests rely on it).

data "aws_iam_policy_document" "writer" {
  source_policy_documents = [
    data.aws_iam_policy_document.s3_read.json,
    data.aws_iam_policy_document.s3_write.json,
  ]
}

data "aws_iam_policy_document" "maintainer" {
  source_policy_documents = [
    data.aws_iam_policy_document.s3_read.json,
    data.aws_iam_policy_document.s3_write.json,
    data.aws_iam_policy_document.s3_prune.json,
  ]
}

data "aws_iam_policy_document" "restorer" {
  source_policy_documents = [
    data.aws_iam_policy_document.s3_read.json,
    data.aws_iam_policy_document.s3_evidence.json,
  ]
}

data "aws_iam_policy_document" "drill" {
  source_policy_documents = [
    data.aws_iam_policy_document.s3_read.json,
    data.aws_iam_policy_document.s3_evidence.json,
    data.aws_iam_policy_document.rds_scratch.json,
  ]
}

data "aws_iam_policy_document" "rds" {
  source_policy_documents = [
    data.aws_iam_policy_document.rds_snapshots.json,
    data.aws_iam_policy_document.rds_scratch.json,
  ]
}

locals {
  role_policies = {
    writer     = data.aws_iam_policy_document.writer.json
    maintainer = data.aws_iam_policy_document.maintainer.json
    restorer   = data.aws_iam_policy_document.restorer.json
    drill      = data.aws_iam_policy_document.drill.json
    rds        = data.aws_iam_policy_document.rds.json
  }

  role_descriptions = {
    writer     = "lifeboat backup hosts: read the repository and add objects; cannot delete"
    maintainer = "lifeboat prune: writer rights plus delete markers; no permanent deletion, no retention bypass"
    restorer   = "lifeboat restore and verify: read the repository; add audit checkpoints (audit/) and drill reports (drills/) only"
    drill      = "lifeboat DR drills: read the repository, add drill reports and audit checkpoints, restore RDS snapshots into tagged scratch instances and delete them"
    rds        = "lifeboat rds source: snapshot tagged instances, copy across regions, expire and restore-test lifeboat snapshots"
  }
}

data "aws_iam_policy_document" "trust" {
  for_each = local.role_policies

  statement {
    sid     = "AssumeRole"
    effect  = "Allow"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "AWS"
      identifiers = lookup(var.trusted_principal_arns, each.key, [local.account_root])
    }
  }
}

resource "aws_iam_role" "this" {
  for_each = local.role_policies

  name                 = "${var.name_prefix}-${each.key}"
  description          = local.role_descriptions[each.key]
  assume_role_policy   = data.aws_iam_policy_document.trust[each.key].json
  permissions_boundary = var.permissions_boundary_arn
  tags                 = var.tags
}

resource "aws_iam_policy" "this" {
  for_each = local.role_policies

  name        = "${var.name_prefix}-${each.key}"
  description = local.role_descriptions[each.key]
  policy      = each.value
  tags        = var.tags
}

resource "aws_iam_role_policy_attachment" "this" {
  for_each = local.role_policies

  role       = aws_iam_role.this[each.key].name
  policy_arn = aws_iam_policy.this[each.key].arn
}
