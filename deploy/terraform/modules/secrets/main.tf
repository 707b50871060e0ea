# modules/secrets - the gateway's secrets in AWS Secrets Manager, encrypted
# with a key of their own; the policy read_policy_arn (attached by
# modules/compute to the gateway's task and execution roles, nothing else)
# reads exactly these:
#   sluice/ENV/redis-auth-token  generated here, also given to modules/redis
#   sluice/ENV/admin-token       generated here: the bearer token of the admin
#                                HTTP listener (/metrics; /readyz needs none)
#   sluice/ENV/tls-certificate   PEM chain      } values put by the certificate
#   sluice/ENV/tls-private-key   PEM key        } process, never by Terraform
#                                                 (no private key in state)
# The same names are what deploy/k8s's ExternalSecrets read on EKS.

resource "aws_kms_key" "secrets" {
  description         = "${var.name} secrets"
  enable_key_rotation = true
  tags                = var.tags
}

resource "aws_kms_alias" "secrets" {
  name          = "alias/${var.name}-secrets"
  target_key_id = aws_kms_key.secrets.key_id
}

resource "random_password" "redis" {
  length  = 48
  special = false
}

resource "aws_secretsmanager_secret" "redis" {
  name                    = "sluice/${var.environment}/redis-auth-token"
  description             = "ElastiCache AUTH token; sluice reads it as redis.password_file"
  kms_key_id              = aws_kms_key.secrets.arn
  recovery_window_in_days = var.recovery_window_days
  tags                    = var.tags
}

resource "aws_secretsmanager_secret_version" "redis" {
  secret_id     = aws_secretsmanager_secret.redis.id
  secret_string = random_password.redis.result
}

resource "random_password" "admin" {
  length  = 48
  special = false
}

resource "aws_secretsmanager_secret" "admin" {
  name                    = "sluice/${var.environment}/admin-token"
  description             = "Bearer token of sluice's admin HTTP listener (admin.http_token_file): Prometheus sends it"
  kms_key_id              = aws_kms_key.secrets.arn
  recovery_window_in_days = var.recovery_window_days
  tags                    = var.tags
}

resource "aws_secretsmanager_secret_version" "admin" {
  secret_id     = aws_secretsmanager_secret.admin.id
  secret_string = random_password.admin.result
}

resource "aws_secretsmanager_secret" "tls" {
  for_each                = toset(["tls-certificate", "tls-private-key"])
  name                    = "sluice/${var.environment}/${each.key}"
  description             = "sluice's listener ${each.key} (PEM); value set by the certificate process"
  kms_key_id              = aws_kms_key.secrets.arn
  recovery_window_in_days = var.recovery_window_days
  tags                    = var.tags
}

data "aws_iam_policy_document" "read" {
  statement {
    sid       = "ReadSluiceSecrets"
    actions   = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
    resources = concat([aws_secretsmanager_secret.redis.arn, aws_secretsmanager_secret.admin.arn], [for s in aws_secretsmanager_secret.tls : s.arn])
  }
  statement {
    sid       = "DecryptSluiceSecrets"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.secrets.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["secretsmanager.${data.aws_region.current.name}.amazonaws.com"]
    }
  }
}

data "aws_region" "current" {}

resource "aws_iam_policy" "read" {
  name        = "${var.name}-read-secrets"
  description = "Read sluice's own secrets, nothing else"
  policy      = data.aws_iam_policy_document.read.json
  tags        = var.tags
}
