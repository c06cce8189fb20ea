# The CloudStack API: an HTTP API (payload format 2.0) in front of the
# functions with an http trigger, on the routes of the manifest.

locals {
  http_functions = toset(distinct([for r in values(local.http_routes) : r.function]))
  api_route      = distinct([for r in values(local.http_routes) : r.route])[0]
  api_url        = "${aws_apigatewayv2_api.http.api_endpoint}${local.api_route}"
}

resource "aws_apigatewayv2_api" "http" {
  name          = var.name
  description   = "Stratus ${var.name}: the CloudStack API"
  protocol_type = "HTTP"
}

resource "aws_apigatewayv2_integration" "function" {
  for_each = local.http_functions

  api_id                 = aws_apigatewayv2_api.http.id
  integration_type       = "AWS_PROXY"
  integration_method     = "POST"
  integration_uri        = module.function[each.key].invoke_arn
  payload_format_version = "2.0"
  timeout_milliseconds   = min(30000, local.functions[each.key].timeout_seconds * 1000)
}

resource "aws_apigatewayv2_route" "http" {
  #checkov:skip=CKV_AWS_309:The CloudStack API authenticates every request itself: the client signs it with the user's API key and secret key (HMAC-SHA1), checked by the api function; an IAM or JWT authorizer would break every CloudStack client.
  for_each = local.http_routes

  api_id    = aws_apigatewayv2_api.http.id
  route_key = each.key
  target    = "integrations/${aws_apigatewayv2_integration.function[each.value.function].id}"
}

resource "aws_cloudwatch_log_group" "api" {
  name              = "/aws/apigateway/${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.stack.arn
}

resource "aws_apigatewayv2_stage" "default" {
  api_id      = aws_apigatewayv2_api.http.id
  name        = "$default"
  auto_deploy = true

  default_route_settings {
    throttling_burst_limit = var.api_throttling_burst_limit
    throttling_rate_limit  = var.api_throttling_rate_limit
  }

  access_log_settings {
    destination_arn = aws_cloudwatch_log_group.api.arn
    format = jsonencode({
      requestId          = "$context.requestId"
      requestTime        = "$context.requestTime"
      ip                 = "$context.identity.sourceIp"
      httpMethod         = "$context.httpMethod"
      routeKey           = "$context.routeKey"
      status             = "$context.status"
      responseLength     = "$context.responseLength"
      responseLatency    = "$context.responseLatency"
      integrationLatency = "$context.integrationLatency"
      integrationError   = "$context.integrationErrorMessage"
    })
  }
}

resource "aws_lambda_permission" "api" {
  for_each = local.http_functions

  statement_id   = "AllowApiGateway"
  action         = "lambda:InvokeFunction"
  function_name  = module.function[each.key].function_name
  qualifier      = module.function[each.key].qualifier
  principal      = "apigateway.amazonaws.com"
  source_arn     = "${aws_apigatewayv2_api.http.execution_arn}/*/*"
  source_account = local.account_id

  # Requests reach the API once the bootstrap has made the secret key's
  # parameter, which the API resolves at start (as the queue triggers wait).
  depends_on = [aws_lambda_invocation.startup]
}
