variable "name" {
  description = "Name prefix; secrets are named sluice/ENVIRONMENT/... (see main.tf)."
  type        = string
}

variable "environment" {
  description = "Environment name (dev, staging, prod): the middle part of each secret's name."
  type        = string
}

variable "recovery_window_days" {
  description = "Days a deleted secret can be restored."
  type        = number
  default     = 30
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
