# modules/redis - ElastiCache for Redis behind sluice's shared rate limits:
# a primary and replicas over the zones with automatic Multi-AZ failover,
# encryption at rest (KMS) and in transit, and an AUTH token from
# modules/secrets. sluice keeps deciding locally while Redis fails over
# (redis.on_failure = "local", docs/rate-limiting.md).

resource "aws_elasticache_subnet_group" "this" {
  name       = var.name
  subnet_ids = var.private_subnet_ids
  tags       = var.tags
}

resource "aws_elasticache_parameter_group" "this" {
  name   = "${var.name}-redis7"
  family = "redis7"
  # buckets are small and short-lived: evict the least recently used when full
  parameter {
    name  = "maxmemory-policy"
    value = "allkeys-lru"
  }
  tags = var.tags
}

resource "aws_elasticache_replication_group" "this" {
  replication_group_id       = var.name
  description                = "sluice shared rate limits (${var.name})"
  engine                     = "redis"
  engine_version             = var.engine_version
  node_type                  = var.node_type
  port                       = 6379
  num_cache_clusters         = var.replicas + 1
  automatic_failover_enabled = true
  multi_az_enabled           = true
  subnet_group_name          = aws_elasticache_subnet_group.this.name
  security_group_ids         = [var.security_group_id]
  parameter_group_name       = aws_elasticache_parameter_group.this.name
  at_rest_encryption_enabled = true
  kms_key_id                 = var.kms_key_arn
  transit_encryption_enabled = true
  transit_encryption_mode    = var.transit_encryption_mode
  auth_token                 = var.auth_token
  auth_token_update_strategy = "ROTATE"
  snapshot_retention_limit   = var.snapshot_retention_days
  apply_immediately          = false
  auto_minor_version_upgrade = true
  tags                       = var.tags
}
