terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.40"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
  }
  # Remote state: S3 (versioned, encrypted) with a DynamoDB table for locking.
  # The bucket and table are made once per account (docs/deploy.md, "AWS").
  backend "s3" {
    bucket         = "sluice-terraform-state"
    key            = "sluice/staging/terraform.tfstate"
    region         = "eu-west-1"
    dynamodb_table = "sluice-terraform-locks"
    encrypt        = true
  }
}

provider "aws" {
  region = var.region
  default_tags {
    tags = {
      ManagedBy = "terraform"
      Source    = "deploy/terraform/environments/staging"
    }
  }
}
