output "alarm_topic_arn" {
  description = "SNS topic every alarm notifies (the pipeline's automatic rollback watches the alarms too)."
  value       = aws_sns_topic.alarms.arn
}

output "alarm_names" {
  description = "Names of every alarm, for the pipeline's rollback check."
  value = concat(
    [for a in aws_cloudwatch_metric_alarm.unhealthy_targets : a.alarm_name],
    [for a in aws_cloudwatch_metric_alarm.healthy_targets_low : a.alarm_name],
    [aws_cloudwatch_metric_alarm.gateway_cpu.alarm_name, aws_cloudwatch_metric_alarm.redis_cpu.alarm_name, aws_cloudwatch_metric_alarm.redis_memory.alarm_name],
    [for a in aws_cloudwatch_metric_alarm.sluice : a.alarm_name],
  )
}
