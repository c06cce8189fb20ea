# EventBridge schedules of the manifest. EventBridge's smallest rate is one
# minute: a rate(N seconds) schedule fires every minute with an input that
# asks the function to repeat its tick every N s for for_ms within the one
# invocation (local.schedules, manifest.tf); any other expression is used
# unchanged with the plain scheduled event.
resource "aws_cloudwatch_event_rule" "schedule" {
  for_each = local.schedules

  name                = "${local.name_prefix}${replace(each.key, "/", "-")}"
  description         = "Stratus ${each.value.function}: ${each.value.expression}"
  schedule_expression = each.value.aws_expression
}

resource "aws_cloudwatch_event_target" "schedule" {
  for_each = local.schedules

  rule = aws_cloudwatch_event_rule.schedule[each.key].name
  arn  = module.function[each.value.function].target_arn

  # The scheduled event as EventBridge sends it, plus detail.stratus_repeat.
  dynamic "input_transformer" {
    for_each = each.value.repeat == null ? [] : [each.value.repeat]
    content {
      input_paths = {
        id   = "$.id"
        time = "$.time"
      }
      input_template = "{\"id\": <id>, \"time\": <time>, \"source\": \"aws.events\", \"detail-type\": \"Scheduled Event\", \"detail\": {\"stratus_repeat\": {\"every_ms\": ${input_transformer.value.every_ms}, \"for_ms\": ${input_transformer.value.for_ms}}}}"
    }
  }

  # Ticks start once the bootstrap has declared the broker's topology, which
  # the relay and the orchestrator's sweep publish to (as the queue triggers wait).
  depends_on = [aws_lambda_invocation.startup]
}

resource "aws_lambda_permission" "schedule" {
  for_each = local.schedules

  statement_id   = "AllowEventBridge-${replace(each.key, "/", "-")}"
  action         = "lambda:InvokeFunction"
  function_name  = module.function[each.value.function].function_name
  qualifier      = module.function[each.value.function].qualifier
  principal      = "events.amazonaws.com"
  source_arn     = aws_cloudwatch_event_rule.schedule[each.key].arn
  source_account = local.account_id
}
