variable "name" {
  description = "Name prefix of every resource (e.g. sluice-prod)."
  type        = string
}

variable "cidr_block" {
  description = "The VPC's IPv4 CIDR block; a /16 is split into /20 subnets: public are the 1st to 3rd, private the 9th to 11th (locals in main.tf)."
  type        = string
}

variable "azs" {
  description = "Exactly three availability zones to spread the subnets over."
  type        = list(string)
  validation {
    condition     = length(var.azs) == 3
    error_message = "Give exactly three availability zones."
  }
}

variable "single_nat_gateway" {
  description = "One NAT gateway for all private subnets (cheaper, dev) instead of one per zone (survives a zone loss)."
  type        = bool
  default     = false
}

variable "upstream_cidrs" {
  description = "CIDR blocks of the upstream services the gateway may connect to."
  type        = list(string)
}

variable "upstream_ports" {
  description = "TCP ports of the upstream services."
  type        = list(number)
  default     = [8080]
}

variable "flow_log_retention_days" {
  description = "Days the VPC flow logs are kept in CloudWatch Logs."
  type        = number
  default     = 90
}

variable "kms_key_arn" {
  description = "KMS key that encrypts the flow log group."
  type        = string
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
