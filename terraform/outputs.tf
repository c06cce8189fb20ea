# Nothing secret here: references (ARNs, parameter names) only.

output "api_url" {
  description = "The CloudStack API endpoint (give it to cs/cloudmonkey with the admin's keys)."
  value       = local.api_url
}

output "admin_keys_secret_arn" {
  description = "Secrets Manager secret holding the root admin's API keys, written by the bootstrap function."
  value       = aws_secretsmanager_secret.admin_keys.arn
}

output "broker_endpoint" {
  description = "AMQPS endpoint of the Amazon MQ broker (no credentials in it)."
  value       = local.broker_endpoint
}

output "broker_credentials_secret_arn" {
  description = "Secrets Manager secret holding the broker's {username, password}."
  value       = aws_secretsmanager_secret.broker.arn
}

output "table_name" {
  description = "The DynamoDB table."
  value       = aws_dynamodb_table.items.name
}

output "kms_key_arn" {
  description = "The stack's KMS key."
  value       = aws_kms_key.stack.arn
}

output "secret_key_parameter" {
  description = "Name of the SSM parameter holding the sealed secret key (kms:<CiphertextBlob>), made by the bootstrap function."
  value       = local.secret_key_parameter
}

output "functions" {
  description = "Lambda function name of each manifest function."
  value       = { for name, f in module.function : name => f.function_name }
}

output "queues" {
  description = "The broker topology's queues (declared by the bootstrap function)."
  value       = local.queues
}

# What a hypervisor host running stratus-agent needs (infra/agent.env.example):
# the same references the functions get, resolved by the agent at start. The
# host's IAM identity needs secretsmanager:GetSecretValue on the broker secret,
# ssm:GetParameter on the two Consul parameters and kms:Decrypt on the keys
# protecting them (agent_host_policy_json).
output "agent_host" {
  description = "Environment of a host agent and the name of its queue (replace <host> by the host's name)."
  value = {
    STRATUS_AMQP_URL         = local.broker_endpoint
    STRATUS_AMQP_CREDENTIALS = "secretsmanager:${aws_secretsmanager_secret.broker.arn}"
    STRATUS_AMQP_VHOST       = var.broker_vhost
    STRATUS_EVENTS_EXCHANGE  = "cloudstack-events"
    STRATUS_BROKER_WAIT_MS   = tostring(var.broker_wait_ms)
    STRATUS_AMQP_HEARTBEAT   = "10"
    CONSUL_HTTP_ADDR         = "ssm:${var.consul_address_parameter}"
    CONSUL_HTTP_TOKEN        = "ssm:${var.consul_token_parameter}"
    queue                    = replace(try(local.topology.instance_queues[0].name, "stratus.agent.{instance}"), "{instance}", "<host>")
    region                   = local.region
  }
}

output "agent_host_policy_json" {
  description = "IAM policy a host agent's identity needs to resolve its references."
  value = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid      = "BrokerSecret"
        Effect   = "Allow"
        Action   = ["secretsmanager:GetSecretValue"]
        Resource = [aws_secretsmanager_secret.broker.arn]
      },
      {
        Sid      = "ConsulParameters"
        Effect   = "Allow"
        Action   = ["ssm:GetParameter"]
        Resource = local.consul_parameter_arns
      },
      {
        Sid      = "Keys"
        Effect   = "Allow"
        Action   = ["kms:Decrypt"]
        Resource = compact([aws_kms_key.stack.arn, var.consul_parameters_kms_key_arn])
      },
    ]
  })
}
