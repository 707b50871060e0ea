variable "name" {
  description = "Name prefix of every alarm (e.g. sluice-prod)."
  type        = string
}

variable "alarm_email" {
  description = "Address subscribed to the alarm topic (confirm the subscription once); empty: no subscription."
  type        = string
  default     = ""
}

variable "lb_arn_suffix" {
  description = "The NLB's ARN suffix (modules/edge)."
  type        = string
}

variable "target_group_arn_suffixes" {
  description = "Target groups' ARN suffixes by listener (modules/edge)."
  type        = map(string)
}

variable "cluster_name" {
  description = "ECS cluster of the gateway (modules/compute)."
  type        = string
}

variable "service_name" {
  description = "ECS service of the gateway (modules/compute)."
  type        = string
}

variable "min_healthy_tasks" {
  description = "Alarm when fewer targets than this are healthy in a target group."
  type        = number
}

variable "redis_replication_group_id" {
  description = "ElastiCache replication group (modules/redis)."
  type        = string
}

variable "kms_key_arn" {
  description = "KMS key that encrypts the SNS topic."
  type        = string
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
