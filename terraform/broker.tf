# Amazon MQ for RabbitMQ in the private subnets. The topology (exchanges,
# quorum queues, bindings) is declared by the bootstrap function's startup
# invocation (functions.tf), since a new broker is empty.

# The broker's password, made by Secrets Manager (no provider beyond aws).
# A data source is read again at every plan, so what uses it ignores later
# values: the first apply's password stays until it is rotated on purpose.
data "aws_secretsmanager_random_password" "broker" {
  password_length     = 32
  exclude_punctuation = true
}

resource "aws_mq_broker" "this" {
  #checkov:skip=CKV_AWS_209:Amazon MQ for RabbitMQ has no customer managed key option (encryption_options applies to ActiveMQ only); data at rest is encrypted with an AWS owned key.
  #checkov:skip=CKV_AWS_197:Audit logs are an ActiveMQ feature; RabbitMQ brokers only publish general logs, which are on.
  broker_name                = var.name
  engine_type                = "RabbitMQ"
  engine_version             = var.broker_engine_version
  host_instance_type         = var.broker_instance_type
  deployment_mode            = var.broker_deployment_mode
  subnet_ids                 = var.broker_deployment_mode == "SINGLE_INSTANCE" ? [var.private_subnet_ids[0]] : var.private_subnet_ids
  security_groups            = [aws_security_group.broker.id]
  publicly_accessible        = false
  auto_minor_version_upgrade = true
  apply_immediately          = false

  # RabbitMQ takes a single user at creation; its password also sits in
  # Terraform state (keep the state encrypted). Functions and pollers read it
  # from the secret below.
  user {
    username = var.broker_username
    password = data.aws_secretsmanager_random_password.broker.random_password
  }

  lifecycle {
    ignore_changes = [user]
  }

  logs {
    general = true
  }

  maintenance_window_start_time {
    day_of_week = var.broker_maintenance_window.day_of_week
    time_of_day = var.broker_maintenance_window.time_of_day
    time_zone   = var.broker_maintenance_window.time_zone
  }
}

# The broker credentials {"username","password"}: used by the event source
# mappings (BASIC_AUTH) and by every function (STRATUS_AMQP_CREDENTIALS).
resource "aws_secretsmanager_secret" "broker" {
  #checkov:skip=CKV2_AWS_57:Rotation would have to change the broker's only user through the Amazon MQ API and every running consumer at once; rotate by changing the user's password with `aws mq update-user` and then the secret's value.
  name                    = "${var.name}/broker"
  description             = "Stratus ${var.name}: Amazon MQ for RabbitMQ credentials"
  kms_key_id              = aws_kms_key.stack.arn
  recovery_window_in_days = var.secret_recovery_window_days
}

resource "aws_secretsmanager_secret_version" "broker" {
  secret_id = aws_secretsmanager_secret.broker.id
  secret_string = jsonencode({
    username = var.broker_username
    password = data.aws_secretsmanager_random_password.broker.random_password
  })

  lifecycle {
    ignore_changes = [secret_string]
  }
}

# The manifest's queue triggers. One poller per RabbitMQ mapping: the
# manifest's `concurrency` cannot be set on AWS (raising it takes a support
# request per mapping UUID), so it is not applied here. The mappings wait for
# the startup invocation, which declares the queues they read.
resource "aws_lambda_event_source_mapping" "queue" {
  for_each = local.queue_triggers

  function_name                      = module.function[each.value.function].target_arn
  event_source_arn                   = aws_mq_broker.this.arn
  queues                             = [each.value.queue]
  batch_size                         = try(each.value.batch_size, 100)
  maximum_batching_window_in_seconds = ceil(try(each.value.batching_window_ms, 500) / 1000)
  enabled                            = true

  source_access_configuration {
    type = "BASIC_AUTH"
    uri  = aws_secretsmanager_secret.broker.arn
  }

  source_access_configuration {
    type = "VIRTUAL_HOST"
    uri  = var.broker_vhost
  }

  depends_on = [
    aws_lambda_invocation.startup,
    aws_secretsmanager_secret_version.broker,
  ]
}
