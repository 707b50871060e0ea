variable "name" {
  description = "Name prefix (the replication group id; at most 40 characters)."
  type        = string
}

variable "node_type" {
  description = "ElastiCache node type."
  type        = string
  default     = "cache.t4g.small"
}

variable "replicas" {
  description = "Read replicas besides the primary (at least 1: failover needs a replica in another zone)."
  type        = number
  default     = 1
  validation {
    condition     = var.replicas >= 1
    error_message = "Multi-AZ failover needs at least one replica."
  }
}

variable "engine_version" {
  description = "Redis engine version (7.x supports transit_encryption_mode)."
  type        = string
  default     = "7.1"
}

variable "private_subnet_ids" {
  description = "Private subnets of the cache nodes, one per zone."
  type        = list(string)
}

variable "security_group_id" {
  description = "Security group of the cache (modules/network redis_security_group_id: only the gateway on 6379)."
  type        = string
}

variable "auth_token" {
  description = "AUTH token (modules/secrets redis_auth_token); sluice reads the same value from its password file."
  type        = string
  sensitive   = true
}

variable "transit_encryption_mode" {
  description = "\"preferred\" accepts TLS and plaintext clients, \"required\" only TLS. sluice's Redis client has no TLS yet, so environments use \"preferred\" until it does (docs/deploy.md)."
  type        = string
  default     = "required"
  validation {
    condition     = contains(["preferred", "required"], var.transit_encryption_mode)
    error_message = "transit_encryption_mode is \"preferred\" or \"required\"."
  }
}

variable "snapshot_retention_days" {
  description = "Days automatic snapshots are kept (rate-limit buckets are disposable: 1 is plenty)."
  type        = number
  default     = 1
}

variable "kms_key_arn" {
  description = "KMS key for encryption at rest."
  type        = string
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
