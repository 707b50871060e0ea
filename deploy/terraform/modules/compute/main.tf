# modules/compute - the gateway as an ECS service on Fargate, running the image
# of docker/Dockerfile behind the NLB of modules/edge.
#
# Rollouts: a new task definition (new image digest or settings) is rolled out
# task by task: minimum healthy 100 %, maximum 200 %, each new task must pass
# the NLB health check; the deployment circuit breaker rolls back to the last
# good task definition on failure. That is ECS's counterpart of an
# autoscaling group's instance refresh (there are no instances to refresh on
# Fargate). Stopping a task: the NLB deregisters it (deregistration_delay),
# ECS sends SIGTERM, sluice drains for drain_timeout (25 s) and exits 0 well
# within stopTimeout (40 s).
#
# Secrets as files: ECS can only inject secrets as environment variables, and
# sluice reads them from files. An init container (essential = false) copies
# them from Secrets Manager into an in-memory volume, mode 0400 for uid 10001,
# and exits; sluice starts only after it succeeded (dependsOn SUCCESS).

data "aws_region" "current" {}

resource "aws_ecs_cluster" "this" {
  name = var.name
  setting {
    name  = "containerInsights"
    value = "enabled"
  }
  tags = var.tags
}

resource "aws_cloudwatch_log_group" "this" {
  name              = "/ecs/${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
  tags              = var.tags
}

# ---- roles: execution (pull the image, write logs) and task (the gateway itself)
data "aws_iam_policy_document" "ecs_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "execution" {
  name               = "${var.name}-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

resource "aws_iam_role" "task" {
  name               = "${var.name}-task"
  assume_role_policy = data.aws_iam_policy_document.ecs_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "task_secrets" {
  role       = aws_iam_role.task.name
  policy_arn = var.secrets_read_policy_arn
}

data "aws_iam_policy_document" "exec" {
  statement {
    actions = [
      "ssmmessages:CreateControlChannel",
      "ssmmessages:CreateDataChannel",
      "ssmmessages:OpenControlChannel",
      "ssmmessages:OpenDataChannel",
    ]
    resources = ["*"] # these actions take no resource ARN
  }
}

resource "aws_iam_role_policy" "exec" {
  count  = var.enable_execute_command ? 1 : 0
  name   = "ecs-exec"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.exec.json
}

# ---- the task
locals {
  log_options = {
    awslogs-group         = aws_cloudwatch_log_group.this.name
    awslogs-region        = data.aws_region.current.name
    awslogs-stream-prefix = "sluice"
  }
  settings = merge(var.environment_variables, {
    SLUICE_LISTEN              = "0.0.0.0:8080"
    SLUICE_TLS_LISTEN          = "0.0.0.0:8443"
    SLUICE_TLS_CERT_FILE       = "/run/secrets/tls.crt"
    SLUICE_TLS_KEY_FILE        = "/run/secrets/tls.key"
    SLUICE_REDIS_PASSWORD_FILE = "/run/secrets/redis_password"
    SLUICE_WORKERS             = tostring(var.workers)
    # /readyz for the NLB's health checks and the container's, /metrics with the token
    SLUICE_ADMIN_HTTP            = "0.0.0.0:9901"
    SLUICE_ADMIN_HTTP_TOKEN_FILE = "/run/secrets/admin_token"
  })
  fetch = join(" && ", [
    "umask 077",
    "aws secretsmanager get-secret-value --secret-id ${var.redis_secret_arn} --query SecretString --output text > /run/secrets/redis_password",
    "aws secretsmanager get-secret-value --secret-id ${var.admin_token_secret_arn} --query SecretString --output text > /run/secrets/admin_token",
    "aws secretsmanager get-secret-value --secret-id ${var.tls_certificate_secret_arn} --query SecretString --output text > /run/secrets/tls.crt",
    "aws secretsmanager get-secret-value --secret-id ${var.tls_private_key_secret_arn} --query SecretString --output text > /run/secrets/tls.key",
  ])
}

resource "aws_ecs_task_definition" "this" {
  family                   = var.name
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.cpu
  memory                   = var.memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn
  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }
  volume {
    name = "secrets"
  }
  volume {
    name = "run"
  }
  volume {
    name = "state"
  }
  volume {
    name = "init-tmp"
  }
  container_definitions = jsonencode([
    {
      name                   = "secrets-init"
      image                  = var.secrets_init_image
      essential              = false
      user                   = "10001:10001"
      readonlyRootFilesystem = true
      entryPoint             = ["/bin/sh", "-c"]
      command                = [local.fetch]
      environment            = [{ name = "HOME", value = "/tmp" }]
      mountPoints = [
        { sourceVolume = "secrets", containerPath = "/run/secrets", readOnly = false },
        { sourceVolume = "init-tmp", containerPath = "/tmp", readOnly = false },
      ]
      logConfiguration = { logDriver = "awslogs", options = local.log_options }
    },
    {
      name                   = "sluice"
      image                  = var.image
      essential              = true
      user                   = "10001:10001"
      readonlyRootFilesystem = true
      stopTimeout            = 40
      dependsOn              = [{ containerName = "secrets-init", condition = "SUCCESS" }]
      portMappings = [
        { name = "http", containerPort = 8080, protocol = "tcp" },
        { name = "https", containerPort = 8443, protocol = "tcp" },
        { name = "admin-http", containerPort = 9901, protocol = "tcp" },
      ]
      environment = [for k in sort(keys(local.settings)) : { name = k, value = local.settings[k] }]
      mountPoints = [
        { sourceVolume = "secrets", containerPath = "/run/secrets", readOnly = true },
        { sourceVolume = "run", containerPath = "/run/sluice", readOnly = false },
        { sourceVolume = "state", containerPath = "/var/lib/sluice", readOnly = false },
      ]
      healthCheck = {
        command     = ["CMD", "/usr/bin/sluice", "probe", "http", "http://127.0.0.1:9901/readyz"]
        interval    = 10
        timeout     = 3
        retries     = 3
        startPeriod = 10
      }
      linuxParameters  = { capabilities = { drop = ["ALL"] }, initProcessEnabled = false }
      ulimits          = [{ name = "nofile", softLimit = 65536, hardLimit = 65536 }]
      logConfiguration = { logDriver = "awslogs", options = local.log_options }
    },
  ])
  tags = var.tags
}

resource "aws_ecs_service" "this" {
  name                               = var.name
  cluster                            = aws_ecs_cluster.this.id
  task_definition                    = aws_ecs_task_definition.this.arn
  desired_count                      = var.desired_count
  launch_type                        = "FARGATE"
  enable_execute_command             = var.enable_execute_command
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  health_check_grace_period_seconds  = 30
  propagate_tags                     = "SERVICE"
  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }
  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [var.security_group_id]
    assign_public_ip = false
  }
  dynamic "load_balancer" {
    for_each = { http = 8080, https = 8443 }
    content {
      target_group_arn = var.target_group_arns[load_balancer.key]
      container_name   = "sluice"
      container_port   = load_balancer.value
    }
  }
  lifecycle {
    ignore_changes = [desired_count] # autoscaling owns it after creation
  }
  tags = var.tags
}

# ---- autoscaling: CPU and client connections per task
resource "aws_appautoscaling_target" "this" {
  service_namespace  = "ecs"
  resource_id        = "service/${aws_ecs_cluster.this.name}/${aws_ecs_service.this.name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.min_count
  max_capacity       = var.max_count
}

resource "aws_appautoscaling_policy" "cpu" {
  name               = "${var.name}-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.this.service_namespace
  resource_id        = aws_appautoscaling_target.this.resource_id
  scalable_dimension = aws_appautoscaling_target.this.scalable_dimension
  target_tracking_scaling_policy_configuration {
    target_value       = var.cpu_target_percent
    scale_in_cooldown  = 300
    scale_out_cooldown = 60
    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
  }
}

resource "aws_appautoscaling_policy" "connections" {
  name               = "${var.name}-connections"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.this.service_namespace
  resource_id        = aws_appautoscaling_target.this.resource_id
  scalable_dimension = aws_appautoscaling_target.this.scalable_dimension
  target_tracking_scaling_policy_configuration {
    target_value       = var.connections_per_task_target
    scale_in_cooldown  = 300
    scale_out_cooldown = 60
    customized_metric_specification {
      metrics {
        id          = "flows"
        return_data = false
        metric_stat {
          stat = "Sum"
          metric {
            namespace   = "AWS/NetworkELB"
            metric_name = "NewFlowCount"
            dimensions {
              name  = "LoadBalancer"
              value = var.lb_arn_suffix
            }
          }
        }
      }
      metrics {
        id          = "tasks"
        return_data = false
        metric_stat {
          stat = "Average"
          metric {
            namespace   = "ECS/ContainerInsights"
            metric_name = "RunningTaskCount"
            dimensions {
              name  = "ClusterName"
              value = aws_ecs_cluster.this.name
            }
            dimensions {
              name  = "ServiceName"
              value = aws_ecs_service.this.name
            }
          }
        }
      }
      metrics {
        id          = "per_task"
        label       = "new connections per second per task"
        expression  = "flows / 60 / tasks"
        return_data = true
      }
    }
  }
}
