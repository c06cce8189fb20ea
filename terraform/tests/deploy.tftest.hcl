# terraform test (Terraform >= 1.7) of the root module: the real Terraform
# evaluation of this configuration with hashicorp/aws mocked (no cloud account,
# no network; `command = apply` makes the mocked resources' attributes known).
# From terraform/, after `terraform init -backend=false`: terraform test
# (tests/tests/terraform.rs runs it on a copy).
#
# What to expect is read from infra/manifest.json here, independently of
# manifest.tf's locals, so a drift between the two fails. package_dir points
# at tests/fixtures/lambda, whose checksums.json has made-up hashes (no zip is
# read when the provider is mocked).

mock_provider "aws" {
  mock_data "aws_caller_identity" {
    defaults = {
      account_id = "123456789012"
      arn        = "arn:aws:iam::123456789012:user/terraform-test"
      user_id    = "AIDAMOCKMOCKMOCKMOCK"
    }
  }

  mock_data "aws_partition" {
    defaults = {
      partition  = "aws"
      dns_suffix = "amazonaws.com"
    }
  }

  mock_data "aws_region" {
    defaults = {
      name = "eu-west-1"
    }
  }

  # The only secret value the configuration handles: it must reach the broker's
  # user and the credentials secret, and nothing else.
  mock_data "aws_secretsmanager_random_password" {
    defaults = {
      random_password = "MockBrokerPassword7f3a9c1e5d2b8a64"
    }
  }

  mock_resource "aws_mq_broker" {
    defaults = {
      arn = "arn:aws:mq:eu-west-1:123456789012:broker:stratus:b-0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
      id  = "b-0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
      instances = [
        {
          console_url = "https://b-0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b.mq.eu-west-1.amazonaws.com"
          endpoints   = ["amqps://b-0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b.mq.eu-west-1.amazonaws.com:5671"]
          ip_address  = "10.0.1.10"
        },
      ]
    }
  }

  mock_resource "aws_kms_key" {
    defaults = {
      arn    = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
      key_id = "1234abcd-12ab-34cd-56ef-1234567890ab"
    }
  }

  mock_resource "aws_cloudwatch_log_group" {
    defaults = {
      arn = "arn:aws:logs:eu-west-1:123456789012:log-group:mock"
    }
  }

  mock_resource "aws_iam_role" {
    defaults = {
      arn = "arn:aws:iam::123456789012:role/mock"
    }
  }

  mock_resource "aws_lambda_function" {
    defaults = {
      arn           = "arn:aws:lambda:eu-west-1:123456789012:function:mock"
      qualified_arn = "arn:aws:lambda:eu-west-1:123456789012:function:mock:$LATEST"
      invoke_arn    = "arn:aws:apigateway:eu-west-1:lambda:path/2015-03-31/functions/arn:aws:lambda:eu-west-1:123456789012:function:mock/invocations"
      version       = "$LATEST"
    }
  }

  mock_resource "aws_dynamodb_table" {
    defaults = {
      arn = "arn:aws:dynamodb:eu-west-1:123456789012:table/stratus_items"
    }
  }

  mock_resource "aws_apigatewayv2_api" {
    defaults = {
      id            = "a1b2c3d4e5"
      api_endpoint  = "https://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com"
      execution_arn = "arn:aws:execute-api:eu-west-1:123456789012:a1b2c3d4e5"
    }
  }

  mock_resource "aws_apigatewayv2_integration" {
    defaults = {
      id = "int0001"
    }
  }

  mock_resource "aws_cloudwatch_event_rule" {
    defaults = {
      arn = "arn:aws:events:eu-west-1:123456789012:rule/mock"
    }
  }

  mock_resource "aws_secretsmanager_secret" {
    defaults = {
      arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:mock-AbCdEf"
    }
  }
}

# Distinct ARNs where a test checks what points at what.
override_resource {
  target = aws_secretsmanager_secret.broker
  values = {
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:stratus/broker-AbCdEf"
    id  = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:stratus/broker-AbCdEf"
  }
}

override_resource {
  target = aws_secretsmanager_secret.admin_keys
  values = {
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:stratus/admin-keys-GhIjKl"
    id  = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:stratus/admin-keys-GhIjKl"
  }
}

override_resource {
  target = module.function["api"].aws_lambda_function.this
  values = {
    arn           = "arn:aws:lambda:eu-west-1:123456789012:function:stratus-api"
    qualified_arn = "arn:aws:lambda:eu-west-1:123456789012:function:stratus-api:$LATEST"
    invoke_arn    = "arn:aws:apigateway:eu-west-1:lambda:path/2015-03-31/functions/arn:aws:lambda:eu-west-1:123456789012:function:stratus-api/invocations"
    version       = "$LATEST"
  }
}

override_resource {
  target = module.function["bootstrap"].aws_lambda_function.this
  values = {
    arn           = "arn:aws:lambda:eu-west-1:123456789012:function:stratus-bootstrap"
    qualified_arn = "arn:aws:lambda:eu-west-1:123456789012:function:stratus-bootstrap:$LATEST"
    invoke_arn    = "arn:aws:apigateway:eu-west-1:lambda:path/2015-03-31/functions/arn:aws:lambda:eu-west-1:123456789012:function:stratus-bootstrap/invocations"
    version       = "$LATEST"
  }
}

override_resource {
  target = module.function["orchestrator"].aws_lambda_function.this
  values = {
    arn           = "arn:aws:lambda:eu-west-1:123456789012:function:stratus-orchestrator"
    qualified_arn = "arn:aws:lambda:eu-west-1:123456789012:function:stratus-orchestrator:$LATEST"
    invoke_arn    = "arn:aws:apigateway:eu-west-1:lambda:path/2015-03-31/functions/arn:aws:lambda:eu-west-1:123456789012:function:stratus-orchestrator/invocations"
    version       = "$LATEST"
  }
}

override_resource {
  target = module.function["network"].aws_lambda_function.this
  values = {
    arn           = "arn:aws:lambda:eu-west-1:123456789012:function:stratus-network"
    qualified_arn = "arn:aws:lambda:eu-west-1:123456789012:function:stratus-network:$LATEST"
    invoke_arn    = "arn:aws:apigateway:eu-west-1:lambda:path/2015-03-31/functions/arn:aws:lambda:eu-west-1:123456789012:function:stratus-network/invocations"
    version       = "$LATEST"
  }
}

override_resource {
  target = module.function["compute"].aws_lambda_function.this
  values = {
    arn           = "arn:aws:lambda:eu-west-1:123456789012:function:stratus-compute"
    qualified_arn = "arn:aws:lambda:eu-west-1:123456789012:function:stratus-compute:$LATEST"
    invoke_arn    = "arn:aws:apigateway:eu-west-1:lambda:path/2015-03-31/functions/arn:aws:lambda:eu-west-1:123456789012:function:stratus-compute/invocations"
    version       = "$LATEST"
  }
}

override_resource {
  target = module.function["storage"].aws_lambda_function.this
  values = {
    arn           = "arn:aws:lambda:eu-west-1:123456789012:function:stratus-storage"
    qualified_arn = "arn:aws:lambda:eu-west-1:123456789012:function:stratus-storage:$LATEST"
    invoke_arn    = "arn:aws:apigateway:eu-west-1:lambda:path/2015-03-31/functions/arn:aws:lambda:eu-west-1:123456789012:function:stratus-storage/invocations"
    version       = "$LATEST"
  }
}

override_resource {
  target = module.function["diag"].aws_lambda_function.this
  values = {
    arn           = "arn:aws:lambda:eu-west-1:123456789012:function:stratus-diag"
    qualified_arn = "arn:aws:lambda:eu-west-1:123456789012:function:stratus-diag:$LATEST"
    invoke_arn    = "arn:aws:apigateway:eu-west-1:lambda:path/2015-03-31/functions/arn:aws:lambda:eu-west-1:123456789012:function:stratus-diag/invocations"
    version       = "$LATEST"
  }
}

override_resource {
  target = module.function["outbox-relay"].aws_lambda_function.this
  values = {
    arn           = "arn:aws:lambda:eu-west-1:123456789012:function:stratus-outbox-relay"
    qualified_arn = "arn:aws:lambda:eu-west-1:123456789012:function:stratus-outbox-relay:$LATEST"
    invoke_arn    = "arn:aws:apigateway:eu-west-1:lambda:path/2015-03-31/functions/arn:aws:lambda:eu-west-1:123456789012:function:stratus-outbox-relay/invocations"
    version       = "$LATEST"
  }
}

override_resource {
  target = module.function["fabric-monitor"].aws_lambda_function.this
  values = {
    arn           = "arn:aws:lambda:eu-west-1:123456789012:function:stratus-fabric-monitor"
    qualified_arn = "arn:aws:lambda:eu-west-1:123456789012:function:stratus-fabric-monitor:$LATEST"
    invoke_arn    = "arn:aws:apigateway:eu-west-1:lambda:path/2015-03-31/functions/arn:aws:lambda:eu-west-1:123456789012:function:stratus-fabric-monitor/invocations"
    version       = "$LATEST"
  }
}

# Distinct rule ARNs, to check each permission names its own rule.
override_resource {
  target = aws_cloudwatch_event_rule.schedule["orchestrator/2"]
  values = {
    arn = "arn:aws:events:eu-west-1:123456789012:rule/stratus-orchestrator-2"
  }
}

override_resource {
  target = aws_cloudwatch_event_rule.schedule["outbox-relay/0"]
  values = {
    arn = "arn:aws:events:eu-west-1:123456789012:rule/stratus-outbox-relay-0"
  }
}

override_resource {
  target = aws_cloudwatch_event_rule.schedule["fabric-monitor/0"]
  values = {
    arn = "arn:aws:events:eu-west-1:123456789012:rule/stratus-fabric-monitor-0"
  }
}

variables {
  vpc_id             = "vpc-0123456789abcdef0"
  private_subnet_ids = ["subnet-0aaaaaaaaaaaaaaaa", "subnet-0bbbbbbbbbbbbbbbb"]
  package_dir        = "tests/fixtures/lambda"

  private_route_table_ids = ["rtb-0aaaaaaaaaaaaaaaa"]

  # Test-only inputs (not variables of the configuration): what to expect.
  manifest      = jsondecode(file("../infra/manifest.json"))
  zone          = jsondecode(file("../infra/simulator-zone.json"))
  mock_password = "MockBrokerPassword7f3a9c1e5d2b8a64"
  mock_endpoint = "amqps://b-0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b.mq.eu-west-1.amazonaws.com:5671"

  # Config::to_env's variables that every function gets ...
  common_variables = [
    "STRATUS_AMQP_HEARTBEAT",
    "STRATUS_AMQP_URL",
    "STRATUS_AMQP_VHOST",
    "STRATUS_BROKER_WAIT_MS",
    "STRATUS_EVENTS_EXCHANGE",
    "STRATUS_HOME",
    "STRATUS_STORE",
    "STRATUS_TABLE_PREFIX",
  ]

  # ... and those it gets only when its manifest `uses` lists the resource
  # (its role may read only those).
  use_variables = {
    "broker"            = ["STRATUS_AMQP_CREDENTIALS"]
    "consul"            = ["CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN"]
    "secret-key"        = ["STRATUS_SECRET_KEY"]
    "secret-key-create" = ["STRATUS_KMS_KEY_ID"]
    "admin-keys"        = ["STRATUS_ADMIN_KEYS_SECRET"]
    "table"             = []
  }
}

run "functions" {
  command = apply

  assert {
    condition     = toset(keys(module.function)) == toset([for f in var.manifest.functions : f.name]) && length(module.function) == length(var.manifest.functions)
    error_message = "Not one function per manifest function: ${jsonencode(keys(module.function))}"
  }

  assert {
    condition = alltrue([for f in var.manifest.functions : (
      module.function[f.name].settings.memory_size == f.memory_mb &&
      module.function[f.name].settings.timeout == f.timeout_seconds &&
      module.function[f.name].settings.reserved_concurrent_executions == try(f.max_instances, 1)
    )])
    error_message = "Memory, timeout or reserved concurrency differ from the manifest: ${jsonencode({ for k, m in module.function : k => [m.settings.memory_size, m.settings.timeout, m.settings.reserved_concurrent_executions] })}"
  }

  assert {
    condition = alltrue([for f in var.manifest.functions : (
      module.function[f.name].function_name == "stratus-${f.name}" &&
      module.function[f.name].settings.runtime == "provided.al2023" &&
      module.function[f.name].settings.handler == "bootstrap" &&
      module.function[f.name].settings.architectures == tolist(["x86_64"]) &&
      module.function[f.name].log_group_name == "/aws/lambda/stratus-${f.name}"
    )])
    error_message = "A function's name, runtime, handler, architecture or log group is not the expected one."
  }

  # Provisioned concurrency only with min_instances > 0; triggers then invoke the alias.
  assert {
    condition = alltrue([for f in var.manifest.functions : (
      try(f.min_instances, 0) > 0 ? module.function[f.name].qualifier == "live" : module.function[f.name].qualifier == null
    )])
    error_message = "A function's qualifier does not follow its min_instances."
  }

  # The overrides above give every function its own ARN (add one for a new function).
  assert {
    condition     = length(distinct([for m in values(module.function) : m.target_arn])) == length(var.manifest.functions)
    error_message = "Two functions share a mocked ARN: add an override_resource for the new function at the top of this file."
  }
}

run "queue_triggers" {
  command = apply

  assert {
    condition = toset(keys(aws_lambda_event_source_mapping.queue)) == toset(flatten([
      for f in var.manifest.functions : [for t in f.triggers : "${f.name}/${t.queue}" if t.type == "queue"]
    ]))
    error_message = "Not one event source mapping per queue trigger: ${jsonencode(keys(aws_lambda_event_source_mapping.queue))}"
  }

  assert {
    condition = alltrue(flatten([for f in var.manifest.functions : [for t in f.triggers : (
      aws_lambda_event_source_mapping.queue["${f.name}/${t.queue}"].queues == tolist([t.queue]) &&
      aws_lambda_event_source_mapping.queue["${f.name}/${t.queue}"].batch_size == t.batch_size &&
      aws_lambda_event_source_mapping.queue["${f.name}/${t.queue}"].maximum_batching_window_in_seconds == ceil(t.batching_window_ms / 1000) &&
      aws_lambda_event_source_mapping.queue["${f.name}/${t.queue}"].function_name == module.function[f.name].target_arn &&
      aws_lambda_event_source_mapping.queue["${f.name}/${t.queue}"].event_source_arn == aws_mq_broker.this.arn
    ) if t.type == "queue"]]))
    error_message = "An event source mapping's queue, batch size, batching window, function or broker differs: ${jsonencode({ for k, m in aws_lambda_event_source_mapping.queue : k => [m.queues, m.batch_size, m.maximum_batching_window_in_seconds, m.function_name] })}"
  }

  # The poller logs in with the broker secret (BASIC_AUTH) on the stack's vhost.
  assert {
    condition = alltrue([for m in values(aws_lambda_event_source_mapping.queue) : (
      toset([for c in m.source_access_configuration : "${c.type}=${c.uri}"]) == toset([
        "BASIC_AUTH=${aws_secretsmanager_secret.broker.arn}",
        "VIRTUAL_HOST=/",
      ])
    )])
    error_message = "An event source mapping does not authenticate with the broker secret on vhost /."
  }

  # One concrete case: 500 ms rounds up to 1 s.
  assert {
    condition     = aws_lambda_event_source_mapping.queue["diag/stratus.fn.diag"].batch_size == 100 && aws_lambda_event_source_mapping.queue["diag/stratus.fn.diag"].maximum_batching_window_in_seconds == 1
    error_message = "diag's mapping should take batches of 100 within 1 s."
  }
}

run "schedules" {
  command = apply

  assert {
    condition = toset(keys(aws_cloudwatch_event_rule.schedule)) == toset(flatten([
      for f in var.manifest.functions : [for i, t in f.triggers : "${f.name}/${i}" if t.type == "schedule"]
    ]))
    error_message = "Not one rule per schedule trigger: ${jsonencode(keys(aws_cloudwatch_event_rule.schedule))}"
  }

  # rate(N seconds) runs every minute with detail.stratus_repeat; anything else unchanged.
  assert {
    condition = alltrue(flatten([for f in var.manifest.functions : [for i, t in f.triggers : (
      can(regex("^rate\\([0-9]+ seconds?\\)$", t.expression)) ? (
        aws_cloudwatch_event_rule.schedule["${f.name}/${i}"].schedule_expression == "rate(1 minute)" &&
        length(aws_cloudwatch_event_target.schedule["${f.name}/${i}"].input_transformer) == 1 &&
        aws_cloudwatch_event_target.schedule["${f.name}/${i}"].input_transformer[0].input_paths == tomap({ id = "$.id", time = "$.time" }) &&
        aws_cloudwatch_event_target.schedule["${f.name}/${i}"].input_transformer[0].input_template == format(
          "{\"id\": <id>, \"time\": <time>, \"source\": \"aws.events\", \"detail-type\": \"Scheduled Event\", \"detail\": {\"stratus_repeat\": {\"every_ms\": %d, \"for_ms\": %d}}}",
          tonumber(regex("[0-9]+", t.expression)) * 1000,
          min(55, f.timeout_seconds - 5) * 1000,
        )
        ) : (
        aws_cloudwatch_event_rule.schedule["${f.name}/${i}"].schedule_expression == t.expression &&
        length(aws_cloudwatch_event_target.schedule["${f.name}/${i}"].input_transformer) == 0
      )
    ) if t.type == "schedule"]]))
    error_message = "A rule's expression or its target's input differs: ${jsonencode({ for k, r in aws_cloudwatch_event_target.schedule : k => [aws_cloudwatch_event_rule.schedule[k].schedule_expression, r.input_transformer] })}"
  }

  # The exact input of the orchestrator's rate(5 seconds), and it is JSON once
  # EventBridge has put the (quoted) id and time in.
  assert {
    condition     = aws_cloudwatch_event_target.schedule["orchestrator/2"].input_transformer[0].input_template == "{\"id\": <id>, \"time\": <time>, \"source\": \"aws.events\", \"detail-type\": \"Scheduled Event\", \"detail\": {\"stratus_repeat\": {\"every_ms\": 5000, \"for_ms\": 55000}}}"
    error_message = "orchestrator/2's input template: ${aws_cloudwatch_event_target.schedule["orchestrator/2"].input_transformer[0].input_template}"
  }

  assert {
    condition = alltrue([for t in values(aws_cloudwatch_event_target.schedule) : (
      jsondecode(replace(replace(t.input_transformer[0].input_template, "<id>", "\"0\""), "<time>", "\"1970-01-01T00:00:00Z\"")).detail.stratus_repeat.for_ms > 0
    ) if length(t.input_transformer) > 0])
    error_message = "An input template is not JSON once its placeholders are filled."
  }

  assert {
    condition = alltrue([for k, r in aws_cloudwatch_event_rule.schedule : (
      aws_cloudwatch_event_target.schedule[k].rule == r.name &&
      aws_cloudwatch_event_target.schedule[k].arn == module.function[split("/", k)[0]].target_arn &&
      aws_lambda_permission.schedule[k].source_arn == r.arn &&
      aws_lambda_permission.schedule[k].principal == "events.amazonaws.com" &&
      aws_lambda_permission.schedule[k].function_name == module.function[split("/", k)[0]].function_name
    )])
    error_message = "A schedule's target or permission does not point at its own rule and function."
  }

  # Scheduled functions: no retry of a missed tick.
  assert {
    condition = toset(keys(aws_lambda_function_event_invoke_config.scheduled)) == toset([for k in keys(aws_cloudwatch_event_rule.schedule) : split("/", k)[0]]) && alltrue([
      for c in values(aws_lambda_function_event_invoke_config.scheduled) : c.maximum_retry_attempts == 0
    ])
    error_message = "Scheduled functions should have maximum_retry_attempts = 0."
  }
}

run "subminute_window_variable" {
  command = plan

  variables {
    subminute_window_seconds = 20
  }

  assert {
    condition     = aws_cloudwatch_event_target.schedule["outbox-relay/0"].input_transformer[0].input_template == "{\"id\": <id>, \"time\": <time>, \"source\": \"aws.events\", \"detail-type\": \"Scheduled Event\", \"detail\": {\"stratus_repeat\": {\"every_ms\": 1000, \"for_ms\": 20000}}}"
    error_message = "outbox-relay/0 with a 20 s window: ${aws_cloudwatch_event_target.schedule["outbox-relay/0"].input_transformer[0].input_template}"
  }
}

run "subminute_window_capped_by_timeout" {
  command = plan

  variables {
    subminute_window_seconds = 300
  }

  # timeout 65 s: at most 60 s of ticks.
  assert {
    condition     = strcontains(aws_cloudwatch_event_target.schedule["orchestrator/2"].input_transformer[0].input_template, "{\"every_ms\": 5000, \"for_ms\": 60000}")
    error_message = "orchestrator/2 with a 300 s window: ${aws_cloudwatch_event_target.schedule["orchestrator/2"].input_transformer[0].input_template}"
  }
}

run "api_routes" {
  command = apply

  assert {
    condition = toset(keys(aws_apigatewayv2_route.http)) == toset(flatten([
      for f in var.manifest.functions : [
        for t in f.triggers : [for m in coalescelist(try(t.methods, []), ["ANY"]) : "${upper(m)} ${t.route}"] if t.type == "http"
      ]
    ]))
    error_message = "Not one route per manifest method and route: ${jsonencode(keys(aws_apigatewayv2_route.http))}"
  }

  assert {
    condition     = toset(keys(aws_apigatewayv2_route.http)) == toset(["GET /client/api", "POST /client/api"])
    error_message = "The CloudStack API's routes are GET and POST /client/api."
  }

  assert {
    condition = alltrue([for k, r in aws_apigatewayv2_route.http : (
      r.route_key == k &&
      r.api_id == aws_apigatewayv2_api.http.id &&
      r.target == "integrations/${aws_apigatewayv2_integration.function["api"].id}"
    )])
    error_message = "A route's key or target is wrong."
  }

  assert {
    condition = (
      aws_apigatewayv2_api.http.protocol_type == "HTTP" &&
      aws_apigatewayv2_integration.function["api"].integration_type == "AWS_PROXY" &&
      aws_apigatewayv2_integration.function["api"].integration_method == "POST" &&
      aws_apigatewayv2_integration.function["api"].payload_format_version == "2.0" &&
      aws_apigatewayv2_integration.function["api"].integration_uri == module.function["api"].invoke_arn
    )
    error_message = "The integration is not an AWS_PROXY (payload 2.0) to the api function."
  }

  assert {
    condition = (
      aws_lambda_permission.api["api"].principal == "apigateway.amazonaws.com" &&
      aws_lambda_permission.api["api"].function_name == module.function["api"].function_name &&
      aws_lambda_permission.api["api"].source_arn == "${aws_apigatewayv2_api.http.execution_arn}/*/*"
    )
    error_message = "API Gateway may not invoke the api function."
  }

  assert {
    condition     = aws_apigatewayv2_stage.default.name == "$default" && aws_apigatewayv2_stage.default.auto_deploy
    error_message = "The stage is not an auto-deployed $default."
  }

  assert {
    condition     = output.api_url == "https://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com/client/api"
    error_message = "api_url: ${output.api_url}"
  }
}

run "startup_invocation" {
  command = apply

  assert {
    condition = toset(keys(aws_lambda_invocation.startup)) == toset([
      for f in var.manifest.functions : f.name if contains([for t in f.triggers : t.type], "startup")
    ])
    error_message = "Not one invocation per startup function: ${jsonencode(keys(aws_lambda_invocation.startup))}"
  }

  assert {
    condition = (
      jsondecode(aws_lambda_invocation.startup["bootstrap"].input).declare_topology == true &&
      !contains(keys(jsondecode(aws_lambda_invocation.startup["bootstrap"].input)), "zone_file") &&
      jsondecode(aws_lambda_invocation.startup["bootstrap"].input).zone == merge(var.zone, { admin = { for k, v in var.zone.admin : k => v if k != "password" } }) &&
      !contains(keys(jsondecode(aws_lambda_invocation.startup["bootstrap"].input).zone.admin), "password") &&
      jsondecode(aws_lambda_invocation.startup["bootstrap"].input).endpoint == output.api_url
    )
    error_message = "The bootstrap's input should have declare_topology = true, the zone itself (no zone_file) and the API endpoint: ${aws_lambda_invocation.startup["bootstrap"].input}"
  }

  assert {
    condition     = toset(keys(jsondecode(aws_lambda_invocation.startup["bootstrap"].input))) == toset(["declare_topology", "endpoint", "zone"])
    error_message = "The bootstrap's input has other keys: ${jsonencode(keys(jsondecode(aws_lambda_invocation.startup["bootstrap"].input)))}"
  }

  assert {
    condition     = aws_lambda_invocation.startup["bootstrap"].function_name == module.function["bootstrap"].function_name
    error_message = "The startup invocation does not invoke the bootstrap function."
  }
}

run "environment" {
  command = apply

  # Each function: the common variables, those of what it uses, and its own.
  assert {
    condition = alltrue([for f in var.manifest.functions : (
      sort(keys(module.function[f.name].settings.environment)) == sort(distinct(concat(
        var.common_variables,
        flatten([for u in try(f.uses, []) : var.use_variables[u]]),
        keys(try(f.environment, {})),
      )))
    )])
    error_message = "A function's environment has other variables: ${jsonencode({ for k, m in module.function : k => keys(m.settings.environment) })}"
  }

  assert {
    condition = alltrue([for f in var.manifest.functions : alltrue([
      for k, v in try(f.environment, {}) : module.function[f.name].settings.environment[k] == tostring(v)
    ])])
    error_message = "A function's own manifest environment is not passed as is."
  }

  assert {
    condition     = keys(module.function["fabric-monitor"].settings.environment) == sort(concat(var.common_variables, ["CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN"])) && keys(module.function["diag"].settings.environment) == sort(concat(var.common_variables, ["STRATUS_AMQP_CREDENTIALS"]))
    error_message = "fabric-monitor should get Consul's references only, diag the broker's only."
  }

  # References only: the broker's URL carries no credentials.
  assert {
    condition = alltrue([for m in values(module.function) : (
      m.settings.environment.STRATUS_AMQP_URL == var.mock_endpoint &&
      m.settings.environment.STRATUS_AMQP_VHOST == "/" &&
      m.settings.environment.STRATUS_STORE == "dynamodb:https://dynamodb.eu-west-1.amazonaws.com" &&
      m.settings.environment.STRATUS_TABLE_PREFIX == "stratus_" &&
      m.settings.environment.STRATUS_HOME == "/tmp/stratus" &&
      m.settings.environment.STRATUS_EVENTS_EXCHANGE == "cloudstack-events" &&
      m.settings.environment.STRATUS_BROKER_WAIT_MS == "5000" &&
      m.settings.environment.STRATUS_AMQP_HEARTBEAT == "10"
    )])
    error_message = "A common variable has an unexpected value: ${jsonencode(module.function["api"].settings.environment)}"
  }

  # The references name what the role may read.
  assert {
    condition = (
      module.function["api"].settings.environment.STRATUS_AMQP_CREDENTIALS == "secretsmanager:${aws_secretsmanager_secret.broker.arn}" &&
      module.function["api"].settings.environment.STRATUS_SECRET_KEY == "ssm:/stratus/secret-key" &&
      module.function["api"].settings.environment.CONSUL_HTTP_ADDR == "ssm:/stratus/consul/address" &&
      module.function["api"].settings.environment.CONSUL_HTTP_TOKEN == "ssm:/stratus/consul/token"
    )
    error_message = "api's references have unexpected values: ${jsonencode(module.function["api"].settings.environment)}"
  }

  assert {
    condition = (
      module.function["bootstrap"].settings.environment.STRATUS_ADMIN_KEYS_SECRET == aws_secretsmanager_secret.admin_keys.arn &&
      module.function["bootstrap"].settings.environment.STRATUS_KMS_KEY_ID == aws_kms_key.stack.arn
    )
    error_message = "bootstrap's extras do not name the admin-keys secret and the stack key."
  }
}

run "no_secret_in_outputs" {
  command = apply

  # The password reaches the broker's user and the credentials secret ...
  assert {
    condition     = nonsensitive(one(aws_mq_broker.this.user).password == var.mock_password && jsondecode(aws_secretsmanager_secret_version.broker.secret_string) == { username = "stratus", password = var.mock_password })
    error_message = "The broker's user and the credentials secret ({username, password}) should hold the generated password."
  }

  # ... and nothing else: no output, environment, invocation input or mapping.
  assert {
    condition = !strcontains(jsonencode([
      output.admin_keys_secret_arn,
      output.agent_host,
      output.agent_host_policy_json,
      output.api_url,
      output.broker_credentials_secret_arn,
      output.broker_endpoint,
      output.functions,
      output.kms_key_arn,
      output.queues,
      output.secret_key_parameter,
      output.table_name,
    ]), var.mock_password)
    error_message = "An output holds the broker's password."
  }

  assert {
    condition = !strcontains(jsonencode([
      [for m in values(module.function) : m.settings.environment],
      [for i in values(aws_lambda_invocation.startup) : i.input],
      [for m in values(aws_lambda_event_source_mapping.queue) : m.source_access_configuration],
    ]), var.mock_password)
    error_message = "A function's environment, the startup input or a mapping holds the broker's password."
  }

  assert {
    condition     = output.broker_endpoint == var.mock_endpoint && !strcontains(output.agent_host.STRATUS_AMQP_URL, "@")
    error_message = "The broker endpoint should be the plain amqps URL."
  }
}

# Without route tables the DynamoDB gateway endpoint would reach nothing.
run "gateway_endpoint_needs_route_tables" {
  command = plan

  variables {
    private_route_table_ids = []
  }

  expect_failures = [aws_vpc_endpoint.dynamodb]
}
