# modules/monitoring - CloudWatch alarms that mirror the Prometheus alerts of
# issue 14 (deploy/prometheus, when it lands) with what AWS measures itself,
# plus alarms on sluice's own series once they are exported to CloudWatch
# (namespace "Sluice", by an OpenTelemetry collector scraping /metrics; until
# then those alarms have no data and stay OK: treat_missing_data =
# "notBreaching"). All notify one SNS topic.
#
#   Prometheus alert (issue 14)      here
#   instance not ready               UnHealthyHostCount > 0, HealthyHostCount < min
#   all servers of a pool down       Sluice PoolServersUp == 0
#   high 5xx rate per service        Sluice Requests5xxRatio > 5 %
#   p99 over the SLO                 Sluice RequestDurationP99 > 0.5 s
#   breaker open                     Sluice BreakersOpen > 0
#   Redis fallback active            Sluice RateLimitFallbacks > 0, and ElastiCache CPU / memory
#   reload failed                    Sluice ReloadFailures > 0
#   certificate expiring < 14 days   Sluice CertificateExpirySeconds < 14 days
#   WAF block-rate spike             Sluice WafBlocked > 600 a minute
#   (AWS only) gateway CPU high      ECS CPUUtilization > 85 %

resource "aws_sns_topic" "alarms" {
  name              = "${var.name}-alarms"
  kms_master_key_id = var.kms_key_arn
  tags              = var.tags
}

resource "aws_sns_topic_subscription" "email" {
  count     = var.alarm_email == "" ? 0 : 1
  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = var.alarm_email
}

locals {
  actions = [aws_sns_topic.alarms.arn]
  # sluice's own series (namespace Sluice, dimension Service = the ECS service)
  sluice_alarms = {
    pool-down      = { metric = "PoolServersUp", stat = "Minimum", op = "LessThanOrEqualToThreshold", threshold = 0, what = "all servers of a pool are down" }
    high-5xx       = { metric = "Requests5xxRatio", stat = "Average", op = "GreaterThanThreshold", threshold = 0.05, what = "more than 5 % of responses are 5xx" }
    p99-slo        = { metric = "RequestDurationP99", stat = "Maximum", op = "GreaterThanThreshold", threshold = 0.5, what = "p99 request duration above 500 ms" }
    breaker-open   = { metric = "BreakersOpen", stat = "Maximum", op = "GreaterThanThreshold", threshold = 0, what = "a circuit breaker is open" }
    redis-fallback = { metric = "RateLimitFallbacks", stat = "Sum", op = "GreaterThanThreshold", threshold = 0, what = "rate limits fall back to local buckets (Redis slow or down)" }
    reload-failed  = { metric = "ReloadFailures", stat = "Sum", op = "GreaterThanThreshold", threshold = 0, what = "a config reload failed" }
    cert-expiring  = { metric = "CertificateExpirySeconds", stat = "Minimum", op = "LessThanThreshold", threshold = 1209600, what = "a certificate expires within 14 days" }
    waf-spike      = { metric = "WafBlocked", stat = "Sum", op = "GreaterThanThreshold", threshold = 600, what = "the WAF blocks more than 10 requests a second (an attack, or a rule blocking real users)" }
  }
}

resource "aws_cloudwatch_metric_alarm" "unhealthy_targets" {
  for_each            = var.target_group_arn_suffixes
  alarm_name          = "${var.name}-${each.key}-unhealthy-targets"
  alarm_description   = "A gateway task fails the NLB health check (/readyz, ${each.key}): instance not ready. Runbook: docs/runbooks/alerts/SluiceNotReady.md"
  namespace           = "AWS/NetworkELB"
  metric_name         = "UnHealthyHostCount"
  dimensions          = { LoadBalancer = var.lb_arn_suffix, TargetGroup = each.value }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "breaching"
  alarm_actions       = local.actions
  ok_actions          = local.actions
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "healthy_targets_low" {
  for_each            = var.target_group_arn_suffixes
  alarm_name          = "${var.name}-${each.key}-healthy-targets-low"
  alarm_description   = "Fewer than ${var.min_healthy_tasks} healthy gateway tasks behind ${each.key}."
  namespace           = "AWS/NetworkELB"
  metric_name         = "HealthyHostCount"
  dimensions          = { LoadBalancer = var.lb_arn_suffix, TargetGroup = each.value }
  statistic           = "Minimum"
  period              = 60
  evaluation_periods  = 2
  comparison_operator = "LessThanThreshold"
  threshold           = var.min_healthy_tasks
  treat_missing_data  = "breaching"
  alarm_actions       = local.actions
  ok_actions          = local.actions
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "gateway_cpu" {
  alarm_name          = "${var.name}-cpu-high"
  alarm_description   = "Gateway tasks above 85 % CPU for 10 minutes although autoscaling should add tasks (max reached?)."
  namespace           = "AWS/ECS"
  metric_name         = "CPUUtilization"
  dimensions          = { ClusterName = var.cluster_name, ServiceName = var.service_name }
  statistic           = "Average"
  period              = 60
  evaluation_periods  = 10
  comparison_operator = "GreaterThanThreshold"
  threshold           = 85
  treat_missing_data  = "missing"
  alarm_actions       = local.actions
  ok_actions          = local.actions
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "redis_cpu" {
  alarm_name          = "${var.name}-redis-cpu-high"
  alarm_description   = "Redis engine CPU above 80 %: shared rate limits will slow down and fall back. Runbook: docs/runbooks/redis-down.md"
  namespace           = "AWS/ElastiCache"
  metric_name         = "EngineCPUUtilization"
  dimensions          = { ReplicationGroupId = var.redis_replication_group_id }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 5
  comparison_operator = "GreaterThanThreshold"
  threshold           = 80
  treat_missing_data  = "missing"
  alarm_actions       = local.actions
  ok_actions          = local.actions
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "redis_memory" {
  alarm_name          = "${var.name}-redis-memory-high"
  alarm_description   = "Redis memory above 90 %: buckets are being evicted. Runbook: docs/runbooks/redis-down.md"
  namespace           = "AWS/ElastiCache"
  metric_name         = "DatabaseMemoryUsagePercentage"
  dimensions          = { ReplicationGroupId = var.redis_replication_group_id }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 2
  comparison_operator = "GreaterThanThreshold"
  threshold           = 90
  treat_missing_data  = "missing"
  alarm_actions       = local.actions
  ok_actions          = local.actions
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "sluice" {
  for_each            = local.sluice_alarms
  alarm_name          = "${var.name}-${each.key}"
  alarm_description   = "sluice: ${each.value.what}. Needs sluice's /metrics (issue 14) exported to CloudWatch namespace Sluice; no data until then."
  namespace           = "Sluice"
  metric_name         = each.value.metric
  dimensions          = { Service = var.service_name }
  statistic           = each.value.stat
  period              = 60
  evaluation_periods  = 3
  comparison_operator = each.value.op
  threshold           = each.value.threshold
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.actions
  ok_actions          = local.actions
  tags                = var.tags
}
