# The IAM side of lifeboat: one role (and one attachable managed policy) per job.
#
#   writer     backup hosts: read the repository, add objects; never delete.
#   maintainer lifeboat prune/forget: writer's rights plus hiding objects (delete markers).
#   restorer   restore operators and verify: read-only.
#   drill      DR drills: read the repository; restore RDS snapshots into scratch
#              instances and delete those instances again.
#   rds        the rds source: snapshot tagged instances, copy snapshots across
#              regions, expire them, restore-test them into scratch instances.
#
# IAM is global, so the module takes one provider (any region).
terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.49.0, < 7.0.0"
    }
  }
}
