# modules/stack - one environment of sluice on AWS: the six modules wired
# together (diagram: docs/diagrams/deploy-aws.dot). environments/ENV call it
# with their own sizes.

locals {
  name = "sluice-${var.environment}"
  tags = merge(var.tags, { Application = "sluice", Environment = var.environment })
}

data "aws_caller_identity" "current" {}
data "aws_region" "current" {}

# One key for the logs (flow logs, task logs) and the alarm topic.
data "aws_iam_policy_document" "logs_key" {
  statement {
    sid       = "Account"
    actions   = ["kms:*"]
    resources = ["*"] # a key policy's resource is the key itself
    principals {
      type        = "AWS"
      identifiers = ["arn:aws:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }
  statement {
    sid       = "CloudWatchLogsAndSNS"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${data.aws_region.current.name}.amazonaws.com", "sns.amazonaws.com", "cloudwatch.amazonaws.com"]
    }
  }
}

resource "aws_kms_key" "logs" {
  description         = "${local.name} logs and alarms"
  enable_key_rotation = true
  policy              = data.aws_iam_policy_document.logs_key.json
  tags                = local.tags
}

# The NLB's access logs (NLB log delivery supports SSE-S3 only).
resource "aws_s3_bucket" "lb_logs" {
  bucket = "${local.name}-lb-logs-${data.aws_caller_identity.current.account_id}"
  tags   = local.tags
}

resource "aws_s3_bucket_public_access_block" "lb_logs" {
  bucket                  = aws_s3_bucket.lb_logs.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "lb_logs" {
  bucket = aws_s3_bucket.lb_logs.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_versioning" "lb_logs" {
  bucket = aws_s3_bucket.lb_logs.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "lb_logs" {
  bucket = aws_s3_bucket.lb_logs.id
  rule {
    id     = "expire"
    status = "Enabled"
    filter {}
    expiration {
      days = 90
    }
    noncurrent_version_expiration {
      noncurrent_days = 7
    }
  }
}

data "aws_iam_policy_document" "lb_logs" {
  statement {
    sid       = "NLBLogDelivery"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.lb_logs.arn}/${local.name}/AWSLogs/${data.aws_caller_identity.current.account_id}/*"]
    principals {
      type        = "Service"
      identifiers = ["delivery.logs.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "s3:x-amz-acl"
      values   = ["bucket-owner-full-control"]
    }
  }
  statement {
    sid       = "NLBLogDeliveryAcl"
    actions   = ["s3:GetBucketAcl"]
    resources = [aws_s3_bucket.lb_logs.arn]
    principals {
      type        = "Service"
      identifiers = ["delivery.logs.amazonaws.com"]
    }
  }
  statement {
    sid       = "TLSOnly"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.lb_logs.arn, "${aws_s3_bucket.lb_logs.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "lb_logs" {
  bucket = aws_s3_bucket.lb_logs.id
  policy = data.aws_iam_policy_document.lb_logs.json
}

module "network" {
  source             = "../network"
  name               = local.name
  cidr_block         = var.cidr_block
  azs                = var.azs
  single_nat_gateway = var.single_nat_gateway
  upstream_cidrs     = var.upstream_cidrs
  kms_key_arn        = aws_kms_key.logs.arn
  tags               = local.tags
}

module "secrets" {
  source      = "../secrets"
  name        = local.name
  environment = var.environment
  tags        = local.tags
}

module "redis" {
  source             = "../redis"
  name               = local.name
  node_type          = var.redis_node_type
  private_subnet_ids = module.network.private_subnet_ids
  security_group_id  = module.network.redis_security_group_id
  auth_token         = module.secrets.redis_auth_token
  # sluice's Redis client speaks no TLS yet: accept plaintext AUTH clients too
  transit_encryption_mode = "preferred"
  kms_key_arn             = module.secrets.kms_key_arn
  tags                    = local.tags
}

module "edge" {
  source            = "../edge"
  name              = local.name
  vpc_id            = module.network.vpc_id
  public_subnet_ids = module.network.public_subnet_ids
  # readiness on the admin HTTP listener: 503 while a task drains
  health_check_path   = "/readyz"
  health_check_port   = 9901
  access_logs_bucket  = aws_s3_bucket.lb_logs.id
  deletion_protection = var.deletion_protection
  tags                = local.tags
}

module "compute" {
  source                     = "../compute"
  name                       = local.name
  image                      = var.image
  cpu                        = var.task_cpu
  memory                     = var.task_memory
  workers                    = max(1, floor(var.task_cpu / 1024))
  desired_count              = var.min_tasks
  min_count                  = var.min_tasks
  max_count                  = var.max_tasks
  private_subnet_ids         = module.network.private_subnet_ids
  security_group_id          = module.network.gateway_security_group_id
  target_group_arns          = module.edge.target_group_arns
  lb_arn_suffix              = module.edge.arn_suffix
  secrets_read_policy_arn    = module.secrets.read_policy_arn
  redis_secret_arn           = module.secrets.redis_secret_arn
  admin_token_secret_arn     = module.secrets.admin_token_secret_arn
  tls_certificate_secret_arn = module.secrets.tls_certificate_secret_arn
  tls_private_key_secret_arn = module.secrets.tls_private_key_secret_arn
  environment_variables      = merge(var.sluice_settings, { SLUICE_REDIS_ADDRESS = module.redis.primary_endpoint })
  kms_key_arn                = aws_kms_key.logs.arn
  tags                       = local.tags
}

module "monitoring" {
  source                     = "../monitoring"
  name                       = local.name
  alarm_email                = var.alarm_email
  lb_arn_suffix              = module.edge.arn_suffix
  target_group_arn_suffixes  = module.edge.target_group_arn_suffixes
  cluster_name               = module.compute.cluster_name
  service_name               = module.compute.service_name
  min_healthy_tasks          = var.min_tasks
  redis_replication_group_id = module.redis.replication_group_id
  kms_key_arn                = aws_kms_key.logs.arn
  tags                       = local.tags
}
