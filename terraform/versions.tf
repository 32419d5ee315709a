# lifeboat's AWS side: a repository bucket with Object Lock, its log bucket and
# KMS keys in each of two regions, and the IAM roles lifeboat runs as.
# See docs/terraform.md for how to apply it and wire its outputs into lifeboat.toml.
terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.49.0, < 7.0.0"
    }
  }
}
