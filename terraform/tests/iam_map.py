"""What lifeboat's AWS calls need from IAM, and which role may hold what.

Three tables, kept next to each other because they change together:

* S3_OPERATIONS / RDS_OPERATIONS: SDK operation (snake case, the Rust method
  name) -> the IAM actions AWS authorizes it with, and a category saying which
  roles need it. An SDK call that is missing here fails the check: adding a call
  to the Rust code forces a decision about its permission.
* BASELINE_*: the calls the terraform exists for, required even before the Rust
  code makes them (the Backend contract of crates/repo over S3; the rds source
  of DESIGN.md).
* ALLOWED: every action each role may hold, with the reason. A policy granting
  anything else fails the check, so a permission cannot be widened silently.
  docs/terraform.md shows this table (check_policies.py --roles-table prints it).
"""

ROLES = ("writer", "maintainer", "restorer", "drill", "rds")

# Category -> roles that need an operation of that category.
CATEGORY_ROLES = {
    "read": ("writer", "maintainer", "restorer", "drill"),
    "write": ("writer", "maintainer"),
    "delete": ("maintainer",),
    "rds-snapshot": ("rds",),
    "rds-scratch": ("rds", "drill"),
}

# Patterns (fnmatch) of actions a role must never hold, whatever the code calls.
# Wildcard grants ("s3:*") are refused for every role by a separate rule.
FORBIDDEN = {
    "writer": ("s3:Delete*", "s3:BypassGovernanceRetention", "s3:PutBucket*", "s3:PutObjectLegalHold", "rds:*"),
    # restorer and drill may put drill reports and audit checkpoints (EVIDENCE_PREFIXES,
    # checked by check_policies.check_conditions), nothing else of s3:Put*.
    "restorer": ("s3:Delete*", "s3:PutBucket*", "s3:PutObjectLegalHold", "s3:PutObjectAcl", "s3:PutObjectTagging", "s3:AbortMultipartUpload", "s3:BypassGovernanceRetention", "rds:*"),
    "drill": ("s3:Delete*", "s3:PutBucket*", "s3:PutObjectLegalHold", "s3:PutObjectAcl", "s3:PutObjectTagging", "s3:BypassGovernanceRetention", "rds:DeleteDBSnapshot", "rds:CopyDBSnapshot", "rds:CreateDBSnapshot", "rds:Modify*"),
    "maintainer": ("s3:BypassGovernanceRetention", "s3:DeleteObjectVersion", "s3:PutBucket*", "rds:*"),
    "rds": ("s3:*", "rds:Modify*", "rds:DeleteDBCluster*", "rds:CreateDBInstance"),
}

S3_OPERATIONS = {
    # reads
    "get_object": (("s3:GetObject",), "read"),
    "head_object": (("s3:GetObject",), "read"),
    "get_object_attributes": (("s3:GetObject", "s3:GetObjectAttributes"), "read"),
    "list_objects_v2": (("s3:ListBucket",), "read"),
    "list_objects": (("s3:ListBucket",), "read"),
    "head_bucket": (("s3:ListBucket",), "read"),
    "list_object_versions": (("s3:ListBucketVersions",), "read"),
    "get_bucket_location": (("s3:GetBucketLocation",), "read"),
    "get_bucket_versioning": (("s3:GetBucketVersioning",), "read"),
    "get_object_lock_configuration": (("s3:GetBucketObjectLockConfiguration",), "read"),
    "get_bucket_lifecycle_configuration": (("s3:GetLifecycleConfiguration",), "read"),
    "get_object_retention": (("s3:GetObjectRetention",), "read"),
    "get_object_legal_hold": (("s3:GetObjectLegalHold",), "read"),
    "get_bucket_encryption": (("s3:GetEncryptionConfiguration",), "read"),
    # writes
    "put_object": (("s3:PutObject",), "write"),
    "create_multipart_upload": (("s3:PutObject",), "write"),
    "upload_part": (("s3:PutObject",), "write"),
    "complete_multipart_upload": (("s3:PutObject",), "write"),
    "abort_multipart_upload": (("s3:AbortMultipartUpload",), "write"),
    "list_parts": (("s3:ListMultipartUploadParts",), "write"),
    "list_multipart_uploads": (("s3:ListBucketMultipartUploads",), "write"),
    "copy_object": (("s3:PutObject", "s3:GetObject"), "write"),
    "upload_part_copy": (("s3:PutObject", "s3:GetObject"), "write"),
    "put_object_retention": (("s3:PutObjectRetention",), "write"),
    "put_object_legal_hold": (("s3:PutObjectLegalHold",), "write"),
    # deletes
    "delete_object": (("s3:DeleteObject",), "delete"),
    "delete_objects": (("s3:DeleteObject",), "delete"),
}

# With a file-level builder flag (see rustscan.FLAG_METHODS), an operation needs more.
S3_FLAG_EXTRAS = {
    "version_id": {
        "get_object": ("s3:GetObjectVersion", "read"),
        "head_object": ("s3:GetObjectVersion", "read"),
        "get_object_attributes": ("s3:GetObjectVersionAttributes", "read"),
        "delete_object": ("s3:DeleteObjectVersion", "delete"),
        "delete_objects": ("s3:DeleteObjectVersion", "delete"),
    },
    "reads_retention": {  # S3 returns x-amz-object-lock-* only to holders of s3:GetObjectRetention
        "head_object": ("s3:GetObjectRetention", "read"),
        "get_object": ("s3:GetObjectRetention", "read"),
    },
    "reads_legal_hold": {
        "head_object": ("s3:GetObjectLegalHold", "read"),
        "get_object": ("s3:GetObjectLegalHold", "read"),
    },
    "retention": {
        "put_object": ("s3:PutObjectRetention", "write"),
        "create_multipart_upload": ("s3:PutObjectRetention", "write"),
        "copy_object": ("s3:PutObjectRetention", "write"),
    },
    "legal_hold": {
        "put_object": ("s3:PutObjectLegalHold", "write"),
        "create_multipart_upload": ("s3:PutObjectLegalHold", "write"),
        "copy_object": ("s3:PutObjectLegalHold", "write"),
    },
}

# Operations that list without a Prefix, which the s3:prefix condition refuses.
UNPREFIXED_LISTS = ("head_bucket",)
PREFIXABLE_LISTS = ("list_objects_v2", "list_objects", "list_object_versions")

RDS_OPERATIONS = {
    # Snapshots carry their tags in the create/copy request: RDS then also
    # authorizes rds:AddTagsToResource.
    "create_db_snapshot": (("rds:CreateDBSnapshot", "rds:AddTagsToResource"), "rds-snapshot"),
    "copy_db_snapshot": (("rds:CopyDBSnapshot", "rds:AddTagsToResource"), "rds-snapshot"),
    "delete_db_snapshot": (("rds:DeleteDBSnapshot",), "rds-snapshot"),
    "describe_db_snapshots": (("rds:DescribeDBSnapshots",), "rds-scratch"),
    "describe_db_instances": (("rds:DescribeDBInstances",), "rds-scratch"),
    "restore_db_instance_from_db_snapshot": (("rds:RestoreDBInstanceFromDBSnapshot", "rds:AddTagsToResource"), "rds-scratch"),
    "delete_db_instance": (("rds:DeleteDBInstance",), "rds-scratch"),
    "add_tags_to_resource": (("rds:AddTagsToResource",), "rds-scratch"),
    "list_tags_for_resource": (("rds:ListTagsForResource",), "rds-scratch"),
    "remove_tags_from_resource": (("rds:RemoveTagsFromResource",), "rds-scratch"),
}

# (operation, file-level flags) the terraform must allow whatever the code does today.
BASELINE_S3 = (
    ("put_object", ("retention",)),  # Backend::put; uploads carry a retain-until date
    ("get_object", ()),  # Backend::get, with ranges
    ("head_object", ()),  # Backend::head
    ("list_objects_v2", ("prefix",)),  # Backend::list(prefix)
    ("delete_object", ()),  # Backend::delete, prune only
    ("get_bucket_versioning", ()),  # "used where the bucket has them"
    ("get_object_lock_configuration", ()),
)
BASELINE_RDS = (
    "create_db_snapshot",
    "describe_db_snapshots",
    "copy_db_snapshot",
    "delete_db_snapshot",
    "restore_db_instance_from_db_snapshot",
    "describe_db_instances",
    "delete_db_instance",
    "add_tags_to_resource",
    "list_tags_for_resource",
)

# Functions whose S3 calls are meant to be refused: they show that history cannot be
# destroyed. Their calls need no grant; the permanent deletions they try must stay
# ungranted for every role.
PROBES = {
    "delete_all_versions": "src/storage/s3.rs: deletes every version of an object, as a destructive writer would try, to show Object Lock and IAM refuse it (tests, `lifeboat regions check`)",
}

# What destroys history for good (a delete marker does not).
PERMANENT_DELETES = ("s3:DeleteObjectVersion", "s3:BypassGovernanceRetention")

# Where restorer and drill may put objects: the evidence a restore or a drill leaves
# (drill reports, audit checkpoints), under the repository prefix.
EVIDENCE_PREFIXES = ("drills/", "audit/")
EVIDENCE_ROLES = ("restorer", "drill")

# KMS needs that follow from the infrastructure, not from an SDK call.
KMS_NEEDS = {
    "writer": ("kms:Decrypt", "kms:GenerateDataKey"),
    "maintainer": ("kms:Decrypt", "kms:GenerateDataKey"),
    "restorer": ("kms:Decrypt", "kms:GenerateDataKey"),
    "drill": ("kms:Decrypt", "kms:GenerateDataKey", "kms:CreateGrant", "kms:DescribeKey"),
    "rds": (
        "kms:CreateGrant",
        "kms:DescribeKey",
        "kms:Decrypt",
        "kms:Encrypt",
        "kms:GenerateDataKey",
        "kms:GenerateDataKeyWithoutPlaintext",
        "kms:ReEncryptFrom",
        "kms:ReEncryptTo",
    ),
}

_S3_READ = {
    "s3:ListBucket": "list the repository prefix (ListObjectsV2 with Prefix); HeadBucket to time a round trip. A Prefix outside the repository is refused (s3:prefix)",
    "s3:GetBucketVersioning": "find out at start whether the bucket keeps versions",
    "s3:GetBucketObjectLockConfiguration": "find out whether uploads must carry a retention, and how long",
    "s3:GetLifecycleConfiguration": "erasure receipts say how long deleted data stays in noncurrent versions (the noncurrent-version rule)",
    "s3:GetObject": "read config, keys/ (repository secrets), index/, snapshots/, packs (GetObject, HeadObject, ranges)",
    "s3:GetObjectRetention": "HeadObject returns an object's lock mode and retain-until date only to holders of this (verify, regions check)",
    "kms:Decrypt": "SSE-KMS reads, only through S3 (kms:ViaService) on the repository's keys",
}
_S3_WRITE = {
    "s3:PutObject": "upload packs, index, manifests, config, keys, locks; only the bucket's lock mode, about object_lock_days",
    "s3:PutObjectRetention": "uploads carry a retain-until date; only the bucket's mode and about object_lock_days (cannot shorten: no bypass)",
    "kms:GenerateDataKey": "SSE-KMS uploads, only through S3 on the repository's keys",
}
_S3_EVIDENCE = {
    "s3:PutObject": "add audit checkpoints (audit/) and drill reports (drills/) to every region, nothing else; only the bucket's lock mode, about object_lock_days",
    "s3:PutObjectRetention": "those uploads carry a retain-until date; audit/ and drills/ only, the bucket's mode, about object_lock_days",
    "kms:GenerateDataKey": "SSE-KMS for those uploads, only through S3 on the repository's keys",
}
_S3_PRUNE = {
    "s3:DeleteObject": "prune hides unreferenced objects behind a delete marker; the version stays (lock, then noncurrent_version_expiration_days)",
}
_RDS_SCRATCH = {
    "rds:DescribeDBInstances": "watch sources and scratch instances (region-scoped)",
    "rds:DescribeDBSnapshots": "find snapshots and wait for them (region-scoped)",
    "rds:ListTagsForResource": "check lifeboat's tags before acting (region-scoped)",
    "rds:RestoreDBInstanceFromDBSnapshot": "restore a lifeboat-* snapshot into a lifeboat-drill-* instance tagged lifeboat:drill=true, never Multi-AZ",
    "rds:DeleteDBInstance": "remove scratch instances: lifeboat-drill-* tagged lifeboat:drill=true only",
    "rds:AddTagsToResource": "tag-on-create of lifeboat-drill-* instances (and, for rds, lifeboat-* snapshots)",
    "kms:CreateGrant": "RDS creates a grant for the restored instance or copy; AWS resources only, through RDS only",
    "kms:DescribeKey": "RDS checks the snapshot key, through RDS only",
}
_RDS_SNAPSHOT = {
    "rds:CreateDBSnapshot": "snapshot instances tagged lifeboat:source=true into lifeboat-* snapshots tagged lifeboat:managed=true",
    "rds:CopyDBSnapshot": "copy lifeboat-* snapshots into the other region, tagged lifeboat:managed=true",
    "rds:DeleteDBSnapshot": "expire lifeboat-* snapshots tagged lifeboat:managed=true",
    "kms:Decrypt": "cross-region copy: RDS decrypts with the source key, through RDS only",
    "kms:Encrypt": "cross-region copy: RDS encrypts with the destination key, through RDS only",
    "kms:GenerateDataKey": "cross-region copy under the destination region's lifeboat RDS key, through RDS only",
    "kms:GenerateDataKeyWithoutPlaintext": "as kms:GenerateDataKey",
    "kms:ReEncryptFrom": "cross-region copy re-encrypts snapshot data keys, through RDS only",
    "kms:ReEncryptTo": "as kms:ReEncryptFrom",
}

ALLOWED = {
    "writer": {**_S3_READ, **_S3_WRITE},
    "maintainer": {**_S3_READ, **_S3_WRITE, **_S3_PRUNE},
    "restorer": {**_S3_READ, **_S3_EVIDENCE},
    "drill": {**_S3_READ, **_S3_EVIDENCE, **_RDS_SCRATCH},
    "rds": {**_RDS_SNAPSHOT, **_RDS_SCRATCH},
}
