provider "aws" {
  region = var.aws_region

  default_tags {
    tags = merge({ Project = "stratus", Stack = var.name }, var.tags)
  }
}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

data "aws_region" "current" {}

locals {
  account_id  = data.aws_caller_identity.current.account_id
  partition   = data.aws_partition.current.partition
  region      = data.aws_region.current.name
  name_prefix = "${var.name}-"

  # Relative paths are relative to this directory (terraform/).
  package_dir = startswith(var.package_dir, "/") ? var.package_dir : "${path.module}/${var.package_dir}"
  zone_file   = startswith(var.zone_file, "/") ? var.zone_file : "${path.module}/${var.zone_file}"

  # Written by the package command: { "<function>": { zip, base64sha256, bytes } }.
  checksums = jsondecode(file("${local.package_dir}/checksums.json"))

  # Made by the bootstrap function (secret-key-create), not by Terraform.
  secret_key_parameter = "/${var.name}/secret-key"

  # ARN of a parameter: arn:...:parameter/<name without its leading slash>.
  ssm_parameter_arn        = "arn:${local.partition}:ssm:${local.region}:${local.account_id}:parameter"
  secret_key_parameter_arn = "${local.ssm_parameter_arn}/${trimprefix(local.secret_key_parameter, "/")}"
  consul_parameter_arns    = [for p in [var.consul_address_parameter, var.consul_token_parameter] : "${local.ssm_parameter_arn}/${trimprefix(p, "/")}"]

  broker_endpoint = aws_mq_broker.this.instances[0].endpoints[0]

  # The Config every function gets (shared/contracts/src/config.rs,
  # Config::to_env), but for the references below.
  common_environment = {
    STRATUS_AMQP_URL        = local.broker_endpoint
    STRATUS_AMQP_VHOST      = var.broker_vhost
    STRATUS_STORE           = "dynamodb:https://dynamodb.${local.region}.amazonaws.com"
    STRATUS_TABLE_PREFIX    = var.table_prefix
    STRATUS_HOME            = "/tmp/stratus"
    STRATUS_EVENTS_EXCHANGE = "cloudstack-events"
    STRATUS_BROKER_WAIT_MS  = tostring(var.broker_wait_ms)
    STRATUS_AMQP_HEARTBEAT  = "10"
  }

  # The references (ssm:, secretsmanager:) and names a function gets only when
  # its manifest `uses` lists the resource, which its role may then read: a
  # process resolves every reference it is given, at start.
  use_environment = {
    "broker" = {
      STRATUS_AMQP_CREDENTIALS = "secretsmanager:${aws_secretsmanager_secret.broker.arn}"
    }
    "consul" = {
      CONSUL_HTTP_ADDR  = "ssm:${var.consul_address_parameter}"
      CONSUL_HTTP_TOKEN = "ssm:${var.consul_token_parameter}"
    }
    "secret-key" = {
      STRATUS_SECRET_KEY = "ssm:${local.secret_key_parameter}"
    }
    "secret-key-create" = {
      STRATUS_KMS_KEY_ID = aws_kms_key.stack.arn
    }
    "admin-keys" = {
      STRATUS_ADMIN_KEYS_SECRET = aws_secretsmanager_secret.admin_keys.arn
    }
  }
}

# The stack's key: Lambda environments, log groups, the DynamoDB table, the
# secrets, and the sealed secret key (kms:<CiphertextBlob> made by bootstrap).
resource "aws_kms_key" "stack" {
  description             = "Stratus ${var.name}: functions' environment, logs, table, secrets and the sealed secret key"
  enable_key_rotation     = true
  deletion_window_in_days = 30

  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "AccountAdministersAndDelegatesToIam"
        Effect    = "Allow"
        Principal = { AWS = "arn:${local.partition}:iam::${local.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        # As in the AWS managed key aws/dynamodb: principals of this account
        # may use the key through DynamoDB only, so reading the table needs
        # no KMS grant in the functions' roles (their table grant suffices).
        Sid       = "DynamoDbOfThisAccount"
        Effect    = "Allow"
        Principal = { AWS = "*" }
        Action = [
          "kms:Encrypt",
          "kms:Decrypt",
          "kms:ReEncrypt*",
          "kms:GenerateDataKey*",
          "kms:CreateGrant",
          "kms:DescribeKey",
        ]
        Resource = "*"
        Condition = {
          StringEquals = {
            "kms:ViaService"    = "dynamodb.${local.region}.amazonaws.com"
            "kms:CallerAccount" = local.account_id
          }
        }
      },
      {
        Sid       = "CloudWatchLogsOfThisAccount"
        Effect    = "Allow"
        Principal = { Service = "logs.${local.region}.amazonaws.com" }
        Action = [
          "kms:Encrypt*",
          "kms:Decrypt*",
          "kms:ReEncrypt*",
          "kms:GenerateDataKey*",
          "kms:Describe*",
        ]
        Resource = "*"
        Condition = {
          ArnLike = {
            "kms:EncryptionContext:aws:logs:arn" = "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:*"
          }
        }
      },
    ]
  })
}

resource "aws_kms_alias" "stack" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.stack.key_id
}
