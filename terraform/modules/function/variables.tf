variable "name" {
  description = "The function's name in infra/manifest.json."
  type        = string
}

variable "function_name" {
  description = "The Lambda function's name (<stack>-<name>); its log group is /aws/lambda/<function_name>."
  type        = string
}

variable "binary" {
  description = "The binary packaged as bootstrap (for the description)."
  type        = string
}

variable "filename" {
  description = "Path of the function's zip (bootstrap at its root)."
  type        = string
}

variable "source_code_hash" {
  description = "base64sha256 of the zip, from checksums.json."
  type        = string
}

variable "architecture" {
  description = "x86_64 or arm64."
  type        = string
}

variable "memory_mb" {
  description = "Memory from the manifest."
  type        = number
}

variable "timeout_seconds" {
  description = "Timeout from the manifest."
  type        = number
}

variable "max_instances" {
  description = "The manifest's max_instances: the reserved concurrency when reserve_concurrency is set."
  type        = number
}

variable "reserve_concurrency" {
  description = "Set reserved_concurrent_executions to max_instances (false: unreserved, -1)."
  type        = bool
  default     = true
}

variable "min_instances" {
  description = "The manifest's min_instances: above 0, a version is published with an alias live and provisioned concurrency."
  type        = number
  default     = 0
}

variable "environment" {
  description = "The process environment (the common Config plus the function's own)."
  type        = map(string)
}

variable "uses" {
  description = "The manifest's uses: table, broker, consul, secret-key, secret-key-create, admin-keys."
  type        = list(string)

  validation {
    condition     = length(setsubtract(var.uses, ["table", "broker", "consul", "secret-key", "secret-key-create", "admin-keys"])) == 0
    error_message = "Unknown entry in uses."
  }
}

variable "queue_triggered" {
  description = "The function has a queue trigger: Lambda's poller uses its role (mq:DescribeBroker and the broker secret)."
  type        = bool
  default     = false
}

variable "subnet_ids" {
  description = "Private subnets of the function."
  type        = list(string)
}

variable "security_group_ids" {
  description = "Security groups of the function."
  type        = list(string)
}

variable "kms_key_arn" {
  description = "The stack key (environment, log group)."
  type        = string
}

variable "log_retention_days" {
  description = "Retention of the function's log group."
  type        = number
}

variable "partition" {
  description = "AWS partition (aws, aws-cn, ...)."
  type        = string
}

variable "region" {
  description = "AWS region."
  type        = string
}

variable "account_id" {
  description = "AWS account id."
  type        = string
}

variable "table_arn" {
  description = "ARN of the DynamoDB table (uses table)."
  type        = string
}

variable "broker_arn" {
  description = "ARN of the Amazon MQ broker (queue-triggered functions)."
  type        = string
}

variable "broker_secret_arn" {
  description = "ARN of the broker credentials secret (uses broker, queue-triggered functions)."
  type        = string
}

variable "consul_parameter_arns" {
  description = "ARNs of the Consul address and token parameters (uses consul)."
  type        = list(string)
}

variable "consul_parameters_kms_key_arn" {
  description = "Customer managed key of the Consul parameters, or null (AWS managed alias/aws/ssm)."
  type        = string
  default     = null
}

variable "secret_key_parameter_arn" {
  description = "ARN of the secret-key parameter (uses secret-key, secret-key-create)."
  type        = string
}

variable "admin_keys_secret_arn" {
  description = "ARN of the admin-keys secret (uses admin-keys)."
  type        = string
}
