# modules/edge - a Network Load Balancer in front of the gateway tasks.
#
# TLS passthrough, not termination: the NLB forwards TCP 443 to sluice's TLS
# listener (8443) and 80 to its plaintext listener (8080). sluice terminates
# TLS itself because that is where its features live: SNI certificate choice,
# mTLS with routing on the client certificate, ALPN h2/http1.1 and HTTP/2 flood
# defences, session tickets, OCSP stapling, and the client's real address
# (an NLB keeps it; a TLS-terminating NLB would hide ALPN and client
# certificates). The cost: certificates live with the gateway (Secrets Manager,
# modules/secrets), not in ACM.

resource "aws_lb" "this" {
  name                             = var.name
  load_balancer_type               = "network"
  internal                         = false
  subnets                          = var.public_subnet_ids
  enable_cross_zone_load_balancing = true
  enable_deletion_protection       = var.deletion_protection
  access_logs {
    bucket  = var.access_logs_bucket
    prefix  = var.name
    enabled = true
  }
  tags = var.tags
}

locals {
  listeners = {
    http  = { port = 80, target_port = 8080 }
    https = { port = 443, target_port = 8443 }
  }
}

resource "aws_lb_target_group" "this" {
  for_each             = local.listeners
  name                 = "${var.name}-${each.key}"
  port                 = each.value.target_port
  protocol             = "TCP"
  target_type          = "ip"
  vpc_id               = var.vpc_id
  deregistration_delay = var.deregistration_delay
  preserve_client_ip   = true
  health_check {
    protocol            = "HTTP"
    path                = var.health_check_path
    port                = tostring(var.health_check_port)
    interval            = 10
    healthy_threshold   = 2
    unhealthy_threshold = 2
    matcher             = "200"
  }
  tags = var.tags
}

resource "aws_lb_listener" "this" {
  for_each          = local.listeners
  load_balancer_arn = aws_lb.this.arn
  port              = each.value.port
  protocol          = "TCP"
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.this[each.key].arn
  }
  tags = var.tags
}
