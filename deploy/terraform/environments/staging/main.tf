# environments/staging - sluice's staging environment on AWS.
#   terraform init && terraform plan -var image=REGISTRY/sluice@sha256:...
# Values that differ between environments are here (sizes) and in
# terraform.tfvars (addresses); the modules hold everything else.

module "sluice" {
  source             = "../../modules/stack"
  environment        = "staging"
  image              = var.image
  cidr_block         = "10.20.0.0/16"
  azs                = var.azs
  single_nat_gateway = false
  upstream_cidrs     = var.upstream_cidrs
  sluice_settings = {
    SLUICE_UPSTREAMS        = var.upstreams
    SLUICE_CANARY_UPSTREAMS = var.canary_upstreams
    SLUICE_CANARY_WEIGHT    = "0"
    SLUICE_RATE_LIMIT       = "200"
    SLUICE_LOG_LEVEL        = "info"
  }
  task_cpu            = 1024
  task_memory         = 2048
  min_tasks           = 2
  max_tasks           = 6
  redis_node_type     = "cache.t4g.small"
  alarm_email         = var.alarm_email
  deletion_protection = true
}

output "nlb_dns_name" {
  description = "Point the public DNS records here."
  value       = module.sluice.nlb_dns_name
}

output "redis_primary_endpoint" {
  description = "host:port of Redis."
  value       = module.sluice.redis_primary_endpoint
}

output "ecs_cluster" {
  description = "ECS cluster (the pipeline's canary runs sluice ctl through ECS Exec here)."
  value       = module.sluice.ecs_cluster
}

output "ecs_service" {
  description = "ECS service."
  value       = module.sluice.ecs_service
}

output "alarm_names" {
  description = "Alarms the pipeline watches during a canary."
  value       = module.sluice.alarm_names
}
