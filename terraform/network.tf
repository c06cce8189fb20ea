# Security groups of the functions, the broker and the VPC endpoints, and the
# endpoints the private subnets need when they have no NAT.

resource "aws_security_group" "functions" {
  name        = "${local.name_prefix}functions"
  description = "Stratus functions: out to the broker, Consul and AWS APIs only"
  vpc_id      = var.vpc_id
}

resource "aws_security_group" "broker" {
  name        = "${local.name_prefix}broker"
  description = "Stratus Amazon MQ broker: AMQPS from the functions, its own pollers and the agent hosts"
  vpc_id      = var.vpc_id
}

resource "aws_security_group" "endpoints" {
  count = var.create_vpc_endpoints ? 1 : 0

  name        = "${local.name_prefix}endpoints"
  description = "Stratus VPC interface endpoints: HTTPS from the functions and the broker's pollers"
  vpc_id      = var.vpc_id
}

# --- Functions ------------------------------------------------------------------

resource "aws_vpc_security_group_egress_rule" "functions_to_broker" {
  security_group_id            = aws_security_group.functions.id
  description                  = "AMQPS to the broker"
  ip_protocol                  = "tcp"
  from_port                    = 5671
  to_port                      = 5671
  referenced_security_group_id = aws_security_group.broker.id
}

resource "aws_vpc_security_group_egress_rule" "functions_to_aws" {
  security_group_id = aws_security_group.functions.id
  description       = "HTTPS to AWS APIs (VPC endpoints, the DynamoDB gateway endpoint or a NAT)"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "functions_to_consul" {
  for_each = toset(var.consul_cidr_blocks)

  security_group_id = aws_security_group.functions.id
  description       = "Consul HTTP API"
  ip_protocol       = "tcp"
  from_port         = var.consul_port
  to_port           = var.consul_port
  cidr_ipv4         = each.value
}

# --- Broker ---------------------------------------------------------------------

resource "aws_vpc_security_group_ingress_rule" "broker_from_functions" {
  security_group_id            = aws_security_group.broker.id
  description                  = "AMQPS from the functions"
  ip_protocol                  = "tcp"
  from_port                    = 5671
  to_port                      = 5671
  referenced_security_group_id = aws_security_group.functions.id
}

# Lambda's pollers of the event source mappings run in the broker's subnets
# with the broker's security group.
resource "aws_vpc_security_group_ingress_rule" "broker_from_itself" {
  security_group_id            = aws_security_group.broker.id
  description                  = "AMQPS from the event source mappings' pollers"
  ip_protocol                  = "tcp"
  from_port                    = 5671
  to_port                      = 5671
  referenced_security_group_id = aws_security_group.broker.id
}

resource "aws_vpc_security_group_egress_rule" "broker_to_itself" {
  security_group_id            = aws_security_group.broker.id
  description                  = "AMQPS from the pollers to the broker"
  ip_protocol                  = "tcp"
  from_port                    = 5671
  to_port                      = 5671
  referenced_security_group_id = aws_security_group.broker.id
}

resource "aws_vpc_security_group_egress_rule" "broker_to_aws" {
  security_group_id = aws_security_group.broker.id
  description       = "HTTPS from the pollers to Lambda, STS and Secrets Manager"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_ingress_rule" "broker_from_agents" {
  for_each = toset(var.agent_cidr_blocks)

  security_group_id = aws_security_group.broker.id
  description       = "AMQPS from the hosts' stratus-agent"
  ip_protocol       = "tcp"
  from_port         = 5671
  to_port           = 5671
  cidr_ipv4         = each.value
}

# --- VPC endpoints --------------------------------------------------------------

resource "aws_vpc_security_group_ingress_rule" "endpoints_from_functions" {
  count = var.create_vpc_endpoints ? 1 : 0

  security_group_id            = aws_security_group.endpoints[0].id
  description                  = "HTTPS from the functions"
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  referenced_security_group_id = aws_security_group.functions.id
}

resource "aws_vpc_security_group_ingress_rule" "endpoints_from_pollers" {
  count = var.create_vpc_endpoints ? 1 : 0

  security_group_id            = aws_security_group.endpoints[0].id
  description                  = "HTTPS from the event source mappings' pollers"
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  referenced_security_group_id = aws_security_group.broker.id
}

resource "aws_vpc_endpoint" "dynamodb" {
  count = var.create_vpc_endpoints ? 1 : 0

  vpc_id            = var.vpc_id
  service_name      = "com.amazonaws.${local.region}.dynamodb"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = var.private_route_table_ids

  # A gateway endpoint works only through the route tables it is added to:
  # without them the functions cannot reach DynamoDB (no NAT), and the first
  # thing to fail would be the bootstrap's invocation, after the broker.
  lifecycle {
    precondition {
      condition     = length(var.private_route_table_ids) > 0
      error_message = "create_vpc_endpoints needs private_route_table_ids: the route tables of the private subnets, where the DynamoDB gateway endpoint is added."
    }
  }
}

resource "aws_vpc_endpoint" "interface" {
  for_each = var.create_vpc_endpoints ? toset(["secretsmanager", "ssm", "kms", "sts", "lambda", "logs", "xray"]) : toset([])

  vpc_id              = var.vpc_id
  service_name        = "com.amazonaws.${local.region}.${each.key}"
  vpc_endpoint_type   = "Interface"
  subnet_ids          = var.private_subnet_ids
  security_group_ids  = [aws_security_group.endpoints[0].id]
  private_dns_enabled = true
}
