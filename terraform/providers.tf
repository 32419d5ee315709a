# One provider configuration per lifeboat region. There is deliberately no
# default (unaliased) provider: every module says which region it lives in.
provider "aws" {
  alias  = "us_west_2"
  region = "us-west-2"

  allowed_account_ids = var.allowed_account_ids

  default_tags {
    tags = local.tags
  }
}

provider "aws" {
  alias  = "us_east_2"
  region = "us-east-2"

  allowed_account_ids = var.allowed_account_ids

  default_tags {
    tags = local.tags
  }
}
