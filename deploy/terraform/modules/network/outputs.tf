output "vpc_id" {
  description = "The VPC's id."
  value       = aws_vpc.this.id
}

output "public_subnet_ids" {
  description = "Public subnets (NLB), one per zone."
  value       = aws_subnet.public[*].id
}

output "private_subnet_ids" {
  description = "Private subnets (gateway tasks, Redis), one per zone."
  value       = aws_subnet.private[*].id
}

output "private_subnet_cidrs" {
  description = "CIDRs of the private subnets (the Kubernetes NetworkPolicy's Redis egress in staging/prod uses them)."
  value       = local.private_cidrs
}

output "gateway_security_group_id" {
  description = "Security group of the gateway tasks."
  value       = aws_security_group.gateway.id
}

output "redis_security_group_id" {
  description = "Security group of the Redis replication group."
  value       = aws_security_group.redis.id
}
