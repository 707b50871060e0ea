output "nlb_dns_name" {
  description = "Point the public DNS records here."
  value       = module.edge.dns_name
}

output "redis_primary_endpoint" {
  description = "host:port of Redis (also SLUICE_REDIS_ADDRESS of the Kubernetes overlays on EKS)."
  value       = module.redis.primary_endpoint
}

output "private_subnet_cidrs" {
  description = "Private subnets' CIDRs (the Kubernetes NetworkPolicy's Redis egress)."
  value       = module.network.private_subnet_cidrs
}

output "ecs_cluster" {
  description = "ECS cluster of the gateway."
  value       = module.compute.cluster_name
}

output "ecs_service" {
  description = "ECS service of the gateway."
  value       = module.compute.service_name
}

output "alarm_names" {
  description = "Every alarm; the pipeline rolls back when one fires during a canary."
  value       = module.monitoring.alarm_names
}
