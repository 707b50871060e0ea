output "dns_name" {
  description = "The NLB's DNS name (point the public records at it)."
  value       = aws_lb.this.dns_name
}

output "arn_suffix" {
  description = "The NLB's ARN suffix, for CloudWatch dimensions."
  value       = aws_lb.this.arn_suffix
}

output "target_group_arns" {
  description = "Target groups by listener (http, https), for the ECS service."
  value       = { for k, tg in aws_lb_target_group.this : k => tg.arn }
}

output "target_group_arn_suffixes" {
  description = "Target groups' ARN suffixes by listener, for CloudWatch dimensions."
  value       = { for k, tg in aws_lb_target_group.this : k => tg.arn_suffix }
}
