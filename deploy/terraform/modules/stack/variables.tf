variable "environment" {
  description = "Environment name: dev, staging or prod."
  type        = string
  validation {
    condition     = contains(["dev", "staging", "prod"], var.environment)
    error_message = "environment is dev, staging or prod."
  }
}

variable "image" {
  description = "The gateway image pinned by digest (REGISTRY/sluice@sha256:...)."
  type        = string
}

variable "cidr_block" {
  description = "The VPC's /16 CIDR block (distinct per environment; the Kubernetes overlays' NetworkPolicy CIDRs follow it)."
  type        = string
}

variable "azs" {
  description = "Three availability zones."
  type        = list(string)
}

variable "single_nat_gateway" {
  description = "One NAT gateway instead of one per zone (dev)."
  type        = bool
  default     = false
}

variable "upstream_cidrs" {
  description = "CIDR blocks of the upstream services."
  type        = list(string)
}

variable "sluice_settings" {
  description = "docker/sluice.lua settings (SLUICE_UPSTREAMS, SLUICE_CANARY_UPSTREAMS, SLUICE_RATE_LIMIT, ...); SLUICE_REDIS_ADDRESS is added from the Redis module."
  type        = map(string)
}

variable "task_cpu" {
  description = "Fargate CPU units per task."
  type        = number
}

variable "task_memory" {
  description = "Fargate memory per task, MiB."
  type        = number
}

variable "min_tasks" {
  description = "Fewest tasks."
  type        = number
}

variable "max_tasks" {
  description = "Most tasks."
  type        = number
}

variable "redis_node_type" {
  description = "ElastiCache node type."
  type        = string
}

variable "alarm_email" {
  description = "Where alarms are mailed; empty for none."
  type        = string
  default     = ""
}

variable "deletion_protection" {
  description = "Protect the NLB from deletion."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
