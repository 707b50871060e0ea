output "primary_endpoint" {
  description = "host:port of the primary (SLUICE_REDIS_ADDRESS); it follows a failover."
  value       = "${aws_elasticache_replication_group.this.primary_endpoint_address}:6379"
}

output "replication_group_id" {
  description = "The replication group's id (CloudWatch dimension)."
  value       = aws_elasticache_replication_group.this.id
}
