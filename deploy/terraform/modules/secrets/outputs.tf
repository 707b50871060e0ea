output "redis_auth_token" {
  description = "The generated ElastiCache AUTH token (sensitive: passed to modules/redis only)."
  value       = random_password.redis.result
  sensitive   = true
}

output "redis_secret_arn" {
  description = "ARN of sluice/ENV/redis-auth-token."
  value       = aws_secretsmanager_secret.redis.arn
}

output "admin_token_secret_arn" {
  description = "ARN of sluice/ENV/admin-token."
  value       = aws_secretsmanager_secret.admin.arn
}

output "tls_certificate_secret_arn" {
  description = "ARN of sluice/ENV/tls-certificate."
  value       = aws_secretsmanager_secret.tls["tls-certificate"].arn
}

output "tls_private_key_secret_arn" {
  description = "ARN of sluice/ENV/tls-private-key."
  value       = aws_secretsmanager_secret.tls["tls-private-key"].arn
}

output "read_policy_arn" {
  description = "IAM policy that reads these secrets and nothing else (for the gateway's roles)."
  value       = aws_iam_policy.read.arn
}

output "kms_key_arn" {
  description = "KMS key of the secrets."
  value       = aws_kms_key.secrets.arn
}
