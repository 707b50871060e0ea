variable "region" {
  description = "AWS region of the environment."
  type        = string
}

variable "azs" {
  description = "Three availability zones of the region."
  type        = list(string)
}

variable "image" {
  description = "The gateway image pinned by digest; the pipeline passes -var image=REGISTRY/sluice@sha256:..."
  type        = string
}

variable "upstream_cidrs" {
  description = "CIDR blocks of the upstream services in this environment."
  type        = list(string)
}

variable "upstreams" {
  description = "Servers of pool stable, comma-separated host:port (SLUICE_UPSTREAMS)."
  type        = string
}

variable "canary_upstreams" {
  description = "Servers of pool canary, comma-separated host:port (SLUICE_CANARY_UPSTREAMS)."
  type        = string
}

variable "alarm_email" {
  description = "Where alarms are mailed; empty for none."
  type        = string
  default     = ""
}
