# One Lambda function (with its log group and least-privilege role) per
# function of infra/manifest.json.
module "function" {
  source   = "./modules/function"
  for_each = local.functions

  name             = each.key
  function_name    = "${local.name_prefix}${each.key}"
  binary           = each.value.binary
  filename         = "${local.package_dir}/${each.key}.zip"
  source_code_hash = local.checksums[each.key].base64sha256
  architecture     = var.architecture
  memory_mb        = each.value.memory_mb
  timeout_seconds  = each.value.timeout_seconds
  max_instances    = try(each.value.max_instances, 1)
  min_instances    = try(each.value.min_instances, 0)
  uses             = try(each.value.uses, [])
  queue_triggered  = contains([for t in each.value.triggers : t.type], "queue")

  reserve_concurrency = var.reserve_concurrency

  # The common variables, the references of what it uses (and may read), and
  # its own manifest environment.
  environment = merge(
    local.common_environment,
    merge([for u in try(each.value.uses, []) : lookup(local.use_environment, u, {})]...),
    try(each.value.environment, {}),
  )

  subnet_ids         = var.private_subnet_ids
  security_group_ids = [aws_security_group.functions.id]
  kms_key_arn        = aws_kms_key.stack.arn
  log_retention_days = var.log_retention_days

  partition  = local.partition
  region     = local.region
  account_id = local.account_id

  table_arn                     = aws_dynamodb_table.items.arn
  broker_arn                    = aws_mq_broker.this.arn
  broker_secret_arn             = aws_secretsmanager_secret.broker.arn
  consul_parameter_arns         = local.consul_parameter_arns
  consul_parameters_kms_key_arn = var.consul_parameters_kms_key_arn
  secret_key_parameter_arn      = local.secret_key_parameter_arn
  admin_keys_secret_arn         = aws_secretsmanager_secret.admin_keys.arn
}

# The startup functions (bootstrap), invoked once after apply with the
# manifest's event: zone_file is replaced by the zone itself, and the event
# asks to declare the broker topology (exchanges, quorum queues, bindings of
# infra/topology.json, compiled into the function), since a new broker is
# empty. The result kept in state never holds keys: the function writes the
# root admin's keys to the admin-keys secret. Invoked again when the package
# (and so the compiled topology) or the event changes.
locals {
  # The zone without the admin's password: the input is kept in Terraform
  # state, so the admin gets a password nobody knows and comes in with the
  # API keys the bootstrap writes to Secrets Manager.
  zone = jsondecode(file(local.zone_file))
  startup_zone = merge(local.zone, {
    admin = { for k, v in local.zone.admin : k => v if k != "password" }
  })

  startup_inputs = {
    for name, s in local.startups : name => jsonencode(merge(
      { for k, v in s.event : k => v if k != "zone_file" },
      { for k, v in s.event : "zone" => local.startup_zone if k == "zone_file" },
      {
        declare_topology = true
        endpoint         = local.api_url
      },
    ))
  }
}

resource "aws_lambda_invocation" "startup" {
  for_each = local.startups

  function_name = module.function[each.key].function_name
  qualifier     = module.function[each.key].qualifier
  input         = local.startup_inputs[each.key]

  triggers = {
    package = local.checksums[each.key].base64sha256
    input   = sha256(local.startup_inputs[each.key])
  }

  # What the bootstrap reaches at start: the broker credentials' value (the
  # function resolves STRATUS_AMQP_CREDENTIALS before anything else), the
  # endpoints and the rules that let its HTTPS and AMQPS through.
  depends_on = [
    aws_apigatewayv2_stage.default,
    aws_secretsmanager_secret_version.broker,
    aws_vpc_endpoint.interface,
    aws_vpc_endpoint.dynamodb,
    aws_vpc_security_group_ingress_rule.broker_from_functions,
    aws_vpc_security_group_ingress_rule.endpoints_from_functions,
    aws_vpc_security_group_egress_rule.functions_to_broker,
    aws_vpc_security_group_egress_rule.functions_to_aws,
  ]
}

# Scheduled functions are invoked asynchronously: no retry (the next tick comes
# within a minute) and no event older than a minute.
resource "aws_lambda_function_event_invoke_config" "scheduled" {
  for_each = toset(distinct([for s in values(local.schedules) : s.function]))

  function_name                = module.function[each.key].function_name
  qualifier                    = module.function[each.key].qualifier
  maximum_retry_attempts       = 0
  maximum_event_age_in_seconds = 60
}
