output "cluster_name" {
  description = "The ECS cluster's name."
  value       = aws_ecs_cluster.this.name
}

output "service_name" {
  description = "The ECS service's name."
  value       = aws_ecs_service.this.name
}

output "task_role_name" {
  description = "The gateway's IAM role (reads its secrets, nothing else)."
  value       = aws_iam_role.task.name
}

output "log_group_name" {
  description = "CloudWatch Logs group of the tasks (access log and event log, JSON lines)."
  value       = aws_cloudwatch_log_group.this.name
}
