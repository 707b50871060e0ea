variable "name" {
  description = "Name prefix of every resource (e.g. sluice-prod)."
  type        = string
}

variable "image" {
  description = "The gateway image, pinned by digest (REGISTRY/sluice@sha256:...); the pipeline sets it."
  type        = string
}

variable "secrets_init_image" {
  description = "Image of the init container that copies the secrets from Secrets Manager into an in-memory volume (needs the AWS CLI)."
  type        = string
  default     = "public.ecr.aws/aws-cli/aws-cli:2.15.30"
}

variable "cpu" {
  description = "Fargate task CPU units (1024 = one vCPU)."
  type        = number
  default     = 1024
}

variable "memory" {
  description = "Fargate task memory in MiB."
  type        = number
  default     = 2048
}

variable "workers" {
  description = "sluice worker threads per task (SLUICE_WORKERS); match the task's vCPUs."
  type        = number
  default     = 1
}

variable "desired_count" {
  description = "Tasks at creation; autoscaling moves it between min_count and max_count afterwards."
  type        = number
}

variable "min_count" {
  description = "Fewest tasks autoscaling keeps (at least 2 in one zone each for staging and prod)."
  type        = number
}

variable "max_count" {
  description = "Most tasks autoscaling starts."
  type        = number
}

variable "cpu_target_percent" {
  description = "Target average CPU utilisation of the service for target tracking."
  type        = number
  default     = 60
}

variable "connections_per_task_target" {
  description = "Target new client connections per second per task (NLB NewFlowCount / running tasks). The NLB sees connections, not requests; switch to sluice's request counter once /metrics (issue 14) is exported to CloudWatch."
  type        = number
  default     = 400
}

variable "private_subnet_ids" {
  description = "Subnets of the tasks (private, one per zone)."
  type        = list(string)
}

variable "security_group_id" {
  description = "Security group of the tasks (modules/network gateway_security_group_id)."
  type        = string
}

variable "target_group_arns" {
  description = "NLB target groups by listener: http (container port 8080), https (8443) (modules/edge)."
  type        = map(string)
}

variable "lb_arn_suffix" {
  description = "The NLB's ARN suffix (CloudWatch dimension of the connections metric)."
  type        = string
}

variable "secrets_read_policy_arn" {
  description = "IAM policy reading the gateway's secrets (modules/secrets read_policy_arn)."
  type        = string
}

variable "redis_secret_arn" {
  description = "Secrets Manager ARN of the Redis AUTH token."
  type        = string
}

variable "admin_token_secret_arn" {
  description = "Secrets Manager ARN of the admin HTTP listener's bearer token (admin.http_token_file)."
  type        = string
}

variable "tls_certificate_secret_arn" {
  description = "Secrets Manager ARN of the listener's certificate chain (PEM)."
  type        = string
}

variable "tls_private_key_secret_arn" {
  description = "Secrets Manager ARN of the listener's private key (PEM)."
  type        = string
}

variable "environment_variables" {
  description = "Settings of docker/sluice.lua (SLUICE_UPSTREAMS, SLUICE_REDIS_ADDRESS, SLUICE_RATE_LIMIT, ...); the module adds the listener, secret-file and worker settings."
  type        = map(string)
}

variable "log_retention_days" {
  description = "Days the task logs are kept in CloudWatch Logs."
  type        = number
  default     = 30
}

variable "kms_key_arn" {
  description = "KMS key that encrypts the log group."
  type        = string
}

variable "enable_execute_command" {
  description = "Allow ECS Exec into tasks (the pipeline's canary runs `sluice ctl` through it)."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
