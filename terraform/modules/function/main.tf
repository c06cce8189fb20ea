locals {
  # The function's inline policy, built from var.uses only (a test evaluates
  # this local with hcl-rs: plain expressions over var.*, no data sources).
  policy_statements = concat(
    [
      {
        Sid      = "OwnLogGroup"
        Effect   = "Allow"
        Action   = ["logs:CreateLogStream", "logs:PutLogEvents"]
        Resource = ["arn:${var.partition}:logs:${var.region}:${var.account_id}:log-group:/aws/lambda/${var.function_name}:*"]
      },
      {
        # Lambda attaches the function (and the broker's pollers) to the VPC
        # with these; they take no resource-level restriction.
        Sid    = "VpcNetworkInterfaces"
        Effect = "Allow"
        Action = [
          "ec2:CreateNetworkInterface",
          "ec2:DescribeNetworkInterfaces",
          "ec2:DeleteNetworkInterface",
          "ec2:AssignPrivateIpAddresses",
          "ec2:UnassignPrivateIpAddresses",
          "ec2:DescribeSubnets",
        ]
        Resource = ["*"]
      },
      {
        Sid      = "XRayTraces"
        Effect   = "Allow"
        Action   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
        Resource = ["*"]
      },
    ],
    contains(var.uses, "table") ? [
      {
        Sid    = "Table"
        Effect = "Allow"
        Action = [
          "dynamodb:GetItem",
          "dynamodb:PutItem",
          "dynamodb:UpdateItem",
          "dynamodb:DeleteItem",
          "dynamodb:Query",
          "dynamodb:ConditionCheckItem",
          "dynamodb:BatchWriteItem",
          "dynamodb:TransactWriteItems",
        ]
        Resource = [var.table_arn]
      },
      {
        Sid      = "TableIndexes"
        Effect   = "Allow"
        Action   = ["dynamodb:Query"]
        Resource = ["${var.table_arn}/index/*"]
      },
    ] : [],
    contains(var.uses, "broker") || var.queue_triggered ? [
      {
        Sid      = "BrokerSecret"
        Effect   = "Allow"
        Action   = ["secretsmanager:GetSecretValue"]
        Resource = [var.broker_secret_arn]
      },
      {
        Sid      = "BrokerSecretKey"
        Effect   = "Allow"
        Action   = ["kms:Decrypt"]
        Resource = [var.kms_key_arn]
      },
    ] : [],
    var.queue_triggered ? [
      {
        Sid      = "BrokerPoller"
        Effect   = "Allow"
        Action   = ["mq:DescribeBroker"]
        Resource = [var.broker_arn]
      },
      {
        # The Amazon MQ event source mapping's poller also describes the
        # broker's network (Lambda's documented execution role permissions).
        Sid      = "BrokerPollerNetwork"
        Effect   = "Allow"
        Action   = ["ec2:DescribeSecurityGroups", "ec2:DescribeVpcs"]
        Resource = ["*"]
      },
    ] : [],
    contains(var.uses, "consul") ? [
      {
        Sid      = "ConsulParameters"
        Effect   = "Allow"
        Action   = ["ssm:GetParameter"]
        Resource = var.consul_parameter_arns
      },
    ] : [],
    contains(var.uses, "consul") && var.consul_parameters_kms_key_arn != null ? [
      {
        Sid      = "ConsulParametersKey"
        Effect   = "Allow"
        Action   = ["kms:Decrypt"]
        Resource = [var.consul_parameters_kms_key_arn]
      },
    ] : [],
    contains(var.uses, "secret-key") ? [
      {
        Sid      = "SecretKeyParameter"
        Effect   = "Allow"
        Action   = ["ssm:GetParameter"]
        Resource = [var.secret_key_parameter_arn]
      },
      {
        Sid      = "SecretKeyDecrypt"
        Effect   = "Allow"
        Action   = ["kms:Decrypt"]
        Resource = [var.kms_key_arn]
      },
    ] : [],
    contains(var.uses, "secret-key-create") ? [
      {
        Sid      = "SecretKeyCreate"
        Effect   = "Allow"
        Action   = ["kms:GenerateDataKeyWithoutPlaintext"]
        Resource = [var.kms_key_arn]
      },
      {
        Sid      = "SecretKeyParameterCreate"
        Effect   = "Allow"
        Action   = ["ssm:PutParameter"]
        Resource = [var.secret_key_parameter_arn]
      },
    ] : [],
    contains(var.uses, "admin-keys") ? [
      {
        Sid      = "AdminKeysSecret"
        Effect   = "Allow"
        Action   = ["secretsmanager:PutSecretValue"]
        Resource = [var.admin_keys_secret_arn]
      },
      {
        Sid      = "AdminKeysSecretKey"
        Effect   = "Allow"
        Action   = ["kms:GenerateDataKey"]
        Resource = [var.kms_key_arn]
      },
    ] : [],
  )

  published = var.min_instances > 0
}

resource "aws_cloudwatch_log_group" "this" {
  name              = "/aws/lambda/${var.function_name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
}

resource "aws_iam_role" "this" {
  name        = var.function_name
  description = "Stratus function ${var.name}: only what its manifest uses lists (${join(", ", var.uses)})"

  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Effect    = "Allow"
        Principal = { Service = "lambda.amazonaws.com" }
        Action    = "sts:AssumeRole"
      },
    ]
  })
}

resource "aws_iam_role_policy" "this" {
  name = "stratus-${var.name}"
  role = aws_iam_role.this.id

  policy = jsonencode({
    Version   = "2012-10-17"
    Statement = local.policy_statements
  })
}

resource "aws_lambda_function" "this" {
  #checkov:skip=CKV_AWS_272:Code signing needs AWS Signer profiles and packages uploaded to S3 for signing jobs; the zips are built reproducibly by the package command and pinned by source_code_hash from its checksums.json.
  #checkov:skip=CKV_AWS_116:No dead-letter queue: queue triggers are synchronous invocations by the broker's poller (failures requeue; the broker's delivery-limit dead-letters to stratus.parking), HTTP is synchronous, schedules have retries off (the next tick comes within a minute) and the startup invocation is synchronous.
  function_name    = var.function_name
  description      = "Stratus ${var.name} (${var.binary})"
  role             = aws_iam_role.this.arn
  runtime          = "provided.al2023"
  handler          = "bootstrap"
  architectures    = [var.architecture]
  filename         = var.filename
  source_code_hash = var.source_code_hash
  memory_size      = var.memory_mb
  timeout          = var.timeout_seconds
  publish          = local.published
  kms_key_arn      = var.kms_key_arn

  reserved_concurrent_executions = var.reserve_concurrency ? var.max_instances : -1

  environment {
    variables = var.environment
  }

  vpc_config {
    subnet_ids         = var.subnet_ids
    security_group_ids = var.security_group_ids
  }

  tracing_config {
    mode = "Active"
  }

  logging_config {
    log_format = "Text"
    log_group  = aws_cloudwatch_log_group.this.name
  }

  depends_on = [aws_iam_role_policy.this]
}

# min_instances > 0: a published version behind the alias "live", kept warm.
resource "aws_lambda_alias" "live" {
  count = local.published ? 1 : 0

  name             = "live"
  function_name    = aws_lambda_function.this.function_name
  function_version = aws_lambda_function.this.version
}

resource "aws_lambda_provisioned_concurrency_config" "live" {
  count = local.published ? 1 : 0

  function_name                     = aws_lambda_function.this.function_name
  qualifier                         = aws_lambda_alias.live[0].name
  provisioned_concurrent_executions = var.min_instances
}
