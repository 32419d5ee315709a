# Example settings: copy to terraform.tfvars and edit.
#   cp example.tfvars terraform.tfvars

# Refuse to apply against any other account.
allowed_account_ids = ["123456789012"]

# Bucket names are global across AWS: use your organisation's name.
bucket_names = {
  us_west_2 = "acme-lifeboat-usw2"
  us_east_2 = "acme-lifeboat-use2"
}

repository_prefix = "lifeboat/"

# "governance" while you try lifeboat out; "compliance" once you trust the
# settings (then nobody can shorten a lock, not even the account root).
object_lock_mode = "governance"
object_lock_days = 30

# How long a version hidden by `lifeboat prune` stays restorable.
noncurrent_version_expiration_days = 30

access_log_retention_days = 365

# Who assumes which role. Roles left out trust the account as a whole.
trusted_principal_arns = {
  writer     = ["arn:aws:iam::123456789012:role/backup-host"]
  maintainer = ["arn:aws:iam::123456789012:role/lifeboat-ops"]
  restorer   = ["arn:aws:iam::123456789012:role/sre-oncall"]
  drill      = ["arn:aws:iam::123456789012:role/lifeboat-ops"]
  rds        = ["arn:aws:iam::123456789012:role/lifeboat-ops"]
}

# An emergency role that may delete and bypass governance retention.
break_glass_principal_arns = []

# KMS keys of the RDS instances tagged lifeboat:source = "true".
rds_source_kms_key_arns = [
  "arn:aws:kms:us-west-2:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
]

tags = {
  Team = "sre"
}
