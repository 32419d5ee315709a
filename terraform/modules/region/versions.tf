# One lifeboat region: the repository bucket, its access-log bucket and the two
# customer-managed KMS keys (S3 and RDS snapshots) of one AWS region.
#
# The module has no provider block of its own: the caller passes the provider
# configured for the region (`providers = { aws = aws.us_west_2 }`), so the same
# code serves every region and the region lives in exactly one place, the root.
terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.49.0, < 7.0.0"
    }
  }
}
