variable "name" {
  description = "Name prefix of every resource (e.g. sluice-prod)."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the target groups."
  type        = string
}

variable "public_subnet_ids" {
  description = "Public subnets the NLB's nodes live in, one per zone."
  type        = list(string)
}

variable "health_check_path" {
  description = "HTTP path the target groups check: sluice's readiness endpoint /readyz on the admin HTTP listener (200 when serving, 503 while starting or draining; no token needed)."
  type        = string
  default     = "/readyz"
}

variable "health_check_port" {
  description = "Port of the health check (9901: admin HTTP listener; 8080: the plaintext listener)."
  type        = number
  default     = 9901
}

variable "deregistration_delay" {
  description = "Seconds a deregistered target keeps its connections; above sluice's drain_timeout plus the ECS stop delay."
  type        = number
  default     = 35
}

variable "access_logs_bucket" {
  description = "S3 bucket for the NLB's access logs (TLS listeners only log with TLS termination: kept for connection logs)."
  type        = string
}

variable "deletion_protection" {
  description = "Refuse to delete the NLB (staging, prod)."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
