# modules/network - a VPC over three zones: public subnets (the NLB, NAT
# gateways), private subnets (gateway tasks, Redis), VPC flow logs, and the
# security groups of the gateway and Redis with least privilege.

locals {
  public_cidrs  = [for i in range(3) : cidrsubnet(var.cidr_block, 4, i)]
  private_cidrs = [for i in range(3) : cidrsubnet(var.cidr_block, 4, i + 8)]
  nat_count     = var.single_nat_gateway ? 1 : 3
}

resource "aws_vpc" "this" {
  cidr_block           = var.cidr_block
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags                 = merge(var.tags, { Name = var.name })
}

# No rules: the default security group admits and sends nothing.
resource "aws_default_security_group" "this" {
  vpc_id = aws_vpc.this.id
  tags   = merge(var.tags, { Name = "${var.name}-default-closed" })
}

resource "aws_internet_gateway" "this" {
  vpc_id = aws_vpc.this.id
  tags   = merge(var.tags, { Name = var.name })
}

resource "aws_subnet" "public" {
  count                   = 3
  vpc_id                  = aws_vpc.this.id
  cidr_block              = local.public_cidrs[count.index]
  availability_zone       = var.azs[count.index]
  map_public_ip_on_launch = false
  tags                    = merge(var.tags, { Name = "${var.name}-public-${var.azs[count.index]}", Tier = "public" })
}

resource "aws_subnet" "private" {
  count             = 3
  vpc_id            = aws_vpc.this.id
  cidr_block        = local.private_cidrs[count.index]
  availability_zone = var.azs[count.index]
  tags              = merge(var.tags, { Name = "${var.name}-private-${var.azs[count.index]}", Tier = "private" })
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.this.id
  tags   = merge(var.tags, { Name = "${var.name}-public" })
}

resource "aws_route" "public_internet" {
  route_table_id         = aws_route_table.public.id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.this.id
}

resource "aws_route_table_association" "public" {
  count          = 3
  subnet_id      = aws_subnet.public[count.index].id
  route_table_id = aws_route_table.public.id
}

resource "aws_eip" "nat" {
  count  = local.nat_count
  domain = "vpc"
  tags   = merge(var.tags, { Name = "${var.name}-nat-${count.index}" })
}

resource "aws_nat_gateway" "this" {
  count         = local.nat_count
  allocation_id = aws_eip.nat[count.index].id
  subnet_id     = aws_subnet.public[count.index].id
  tags          = merge(var.tags, { Name = "${var.name}-nat-${count.index}" })
}

resource "aws_route_table" "private" {
  count  = 3
  vpc_id = aws_vpc.this.id
  tags   = merge(var.tags, { Name = "${var.name}-private-${var.azs[count.index]}" })
}

resource "aws_route" "private_nat" {
  count                  = 3
  route_table_id         = aws_route_table.private[count.index].id
  destination_cidr_block = "0.0.0.0/0"
  nat_gateway_id         = aws_nat_gateway.this[var.single_nat_gateway ? 0 : count.index].id
}

resource "aws_route_table_association" "private" {
  count          = 3
  subnet_id      = aws_subnet.private[count.index].id
  route_table_id = aws_route_table.private[count.index].id
}

# ---- flow logs: every accepted and rejected flow, to CloudWatch Logs (KMS)
resource "aws_cloudwatch_log_group" "flow" {
  name              = "/vpc/${var.name}/flow-logs"
  retention_in_days = var.flow_log_retention_days
  kms_key_id        = var.kms_key_arn
  tags              = var.tags
}

data "aws_iam_policy_document" "flow_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["vpc-flow-logs.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "flow" {
  name               = "${var.name}-flow-logs"
  assume_role_policy = data.aws_iam_policy_document.flow_assume.json
  tags               = var.tags
}

data "aws_iam_policy_document" "flow_write" {
  statement {
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = ["${aws_cloudwatch_log_group.flow.arn}:*"]
  }
}

resource "aws_iam_role_policy" "flow" {
  name   = "write-flow-logs"
  role   = aws_iam_role.flow.id
  policy = data.aws_iam_policy_document.flow_write.json
}

resource "aws_flow_log" "this" {
  vpc_id          = aws_vpc.this.id
  traffic_type    = "ALL"
  iam_role_arn    = aws_iam_role.flow.arn
  log_destination = aws_cloudwatch_log_group.flow.arn
  tags            = var.tags
}

# ---- security groups
# The gateway: clients arrive through the NLB (TCP passthrough keeps the
# client's address, so the listener ports are open to the internet at the
# NLB's level; the tasks only take them from inside the VPC's public subnets
# where the NLB's nodes live, and health checks from the same).
resource "aws_security_group" "gateway" {
  name        = "${var.name}-gateway"
  description = "sluice tasks: listeners from the NLB subnets, egress to upstreams, Redis and AWS APIs"
  vpc_id      = aws_vpc.this.id
  tags        = merge(var.tags, { Name = "${var.name}-gateway" })
}

resource "aws_vpc_security_group_ingress_rule" "gateway_listeners" {
  for_each          = { for p in setproduct([8080, 8443], local.public_cidrs) : "${p[0]}-${p[1]}" => p }
  security_group_id = aws_security_group.gateway.id
  description       = "listener ${each.value[0]} from the NLB subnet ${each.value[1]}"
  cidr_ipv4         = each.value[1]
  from_port         = each.value[0]
  to_port           = each.value[0]
  ip_protocol       = "tcp"
}

# The NLB's health checks: /readyz on the admin HTTP listener (its /metrics
# needs the bearer token).
resource "aws_vpc_security_group_ingress_rule" "gateway_readiness" {
  for_each          = toset(local.public_cidrs)
  security_group_id = aws_security_group.gateway.id
  description       = "admin HTTP 9901 (/readyz health checks) from the NLB subnet ${each.value}"
  cidr_ipv4         = each.value
  from_port         = 9901
  to_port           = 9901
  ip_protocol       = "tcp"
}

resource "aws_vpc_security_group_egress_rule" "gateway_upstreams" {
  for_each          = { for p in setproduct(var.upstream_ports, var.upstream_cidrs) : "${p[0]}-${p[1]}" => p }
  security_group_id = aws_security_group.gateway.id
  description       = "upstream services"
  cidr_ipv4         = each.value[1]
  from_port         = each.value[0]
  to_port           = each.value[0]
  ip_protocol       = "tcp"
}

resource "aws_vpc_security_group_egress_rule" "gateway_redis" {
  security_group_id            = aws_security_group.gateway.id
  description                  = "Redis (shared rate limits)"
  referenced_security_group_id = aws_security_group.redis.id
  from_port                    = 6379
  to_port                      = 6379
  ip_protocol                  = "tcp"
}

resource "aws_vpc_security_group_egress_rule" "gateway_endpoints" {
  security_group_id = aws_security_group.gateway.id
  description       = "HTTPS to the VPC's interface endpoints (ECR, Secrets Manager, CloudWatch Logs)"
  cidr_ipv4         = var.cidr_block
  from_port         = 443
  to_port           = 443
  ip_protocol       = "tcp"
}

resource "aws_security_group" "redis" {
  name        = "${var.name}-redis"
  description = "ElastiCache: only the gateway on 6379"
  vpc_id      = aws_vpc.this.id
  tags        = merge(var.tags, { Name = "${var.name}-redis" })
}

resource "aws_vpc_security_group_ingress_rule" "redis_from_gateway" {
  security_group_id            = aws_security_group.redis.id
  description                  = "from the gateway tasks"
  referenced_security_group_id = aws_security_group.gateway.id
  from_port                    = 6379
  to_port                      = 6379
  ip_protocol                  = "tcp"
}

resource "aws_security_group" "endpoints" {
  name        = "${var.name}-endpoints"
  description = "VPC interface endpoints: HTTPS from the gateway"
  vpc_id      = aws_vpc.this.id
  tags        = merge(var.tags, { Name = "${var.name}-endpoints" })
}

resource "aws_vpc_security_group_ingress_rule" "endpoints_from_gateway" {
  security_group_id            = aws_security_group.endpoints.id
  description                  = "HTTPS from the gateway tasks"
  referenced_security_group_id = aws_security_group.gateway.id
  from_port                    = 443
  to_port                      = 443
  ip_protocol                  = "tcp"
}

data "aws_region" "current" {}

resource "aws_vpc_endpoint" "interface" {
  for_each            = toset(["ecr.api", "ecr.dkr", "secretsmanager", "logs"])
  vpc_id              = aws_vpc.this.id
  service_name        = "com.amazonaws.${data.aws_region.current.name}.${each.key}"
  vpc_endpoint_type   = "Interface"
  subnet_ids          = aws_subnet.private[*].id
  security_group_ids  = [aws_security_group.endpoints.id]
  private_dns_enabled = true
  tags                = merge(var.tags, { Name = "${var.name}-${each.key}" })
}

resource "aws_vpc_endpoint" "s3" {
  vpc_id            = aws_vpc.this.id
  service_name      = "com.amazonaws.${data.aws_region.current.name}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = aws_route_table.private[*].id
  tags              = merge(var.tags, { Name = "${var.name}-s3" })
}
