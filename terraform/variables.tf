variable "aws_region" {
  description = "AWS region to deploy to."
  type        = string
  default     = "eu-west-1"
}

variable "name" {
  description = "Stack name: functions are named <name>-<function>, log groups /aws/lambda/<name>-<function>, the secret-key parameter /<name>/secret-key."
  type        = string
  default     = "stratus"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}$", var.name))
    error_message = "The name must be 2-31 characters: lower-case letters, digits and dashes, starting with a letter."
  }
}

variable "tags" {
  description = "Tags added to every resource (besides Project and Stack)."
  type        = map(string)
  default     = {}
}

# --- Packages -----------------------------------------------------------------

variable "package_dir" {
  description = "Directory holding <function>.zip and checksums.json, written by the package command. A relative path is relative to this terraform/ directory."
  type        = string
  default     = "../dist/lambda"
}

variable "architecture" {
  description = "Lambda architecture the packages were built for: x86_64 or arm64."
  type        = string
  default     = "x86_64"

  validation {
    condition     = contains(["x86_64", "arm64"], var.architecture)
    error_message = "The architecture must be x86_64 or arm64."
  }
}

variable "zone_file" {
  description = "Zone description given to the bootstrap function's startup invocation (replaces the manifest's zone_file). A relative path is relative to this terraform/ directory."
  type        = string
  default     = "../infra/simulator-zone.json"
}

variable "reserve_concurrency" {
  description = "Set each function's reserved concurrency to the manifest's max_instances. Needs an account concurrency quota of at least 100 plus the sum of max_instances (new accounts may start at 10)."
  type        = bool
  default     = true
}

# --- Logs -----------------------------------------------------------------------

variable "log_retention_days" {
  description = "Retention of the functions' and the API's log groups, in days."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "The retention must be one of the values CloudWatch Logs accepts."
  }
}

# --- Data -----------------------------------------------------------------------

variable "table_prefix" {
  description = "Prefix of the DynamoDB table's name (STRATUS_TABLE_PREFIX); the table is <prefix><name_suffix of infra/dynamodb-table.json>."
  type        = string
  default     = "stratus_"
}

variable "table_deletion_protection" {
  description = "Protect the DynamoDB table against deletion (set false before terraform destroy)."
  type        = bool
  default     = true
}

# --- Broker ---------------------------------------------------------------------

variable "broker_engine_version" {
  description = "Amazon MQ for RabbitMQ engine version (3.13 runs on mq.t3, mq.m5 and mq.m7g; 4.2 only on mq.m7g)."
  type        = string
  default     = "3.13"
}

variable "broker_instance_type" {
  description = "Amazon MQ host instance type (mq.m7g.medium is meant for tests; mq.m7g.large or larger for production)."
  type        = string
  default     = "mq.m7g.medium"
}

variable "broker_deployment_mode" {
  description = "SINGLE_INSTANCE or CLUSTER_MULTI_AZ (three nodes; needs three private subnets in different AZs)."
  type        = string
  default     = "SINGLE_INSTANCE"

  validation {
    condition     = contains(["SINGLE_INSTANCE", "CLUSTER_MULTI_AZ"], var.broker_deployment_mode)
    error_message = "The deployment mode must be SINGLE_INSTANCE or CLUSTER_MULTI_AZ."
  }
}

variable "broker_username" {
  description = "The broker's user (its password is generated and kept in Secrets Manager)."
  type        = string
  default     = "stratus"
}

variable "broker_vhost" {
  description = "RabbitMQ virtual host (STRATUS_AMQP_VHOST and the event source mappings' VIRTUAL_HOST). A new Amazon MQ broker has only \"/\"; another must be made on the broker (its management API) before apply."
  type        = string
  default     = "/"
}

variable "broker_wait_ms" {
  description = "STRATUS_BROKER_WAIT_MS: the longest any one wait on the broker may take."
  type        = number
  default     = 5000
}

variable "broker_maintenance_window" {
  description = "Weekly maintenance window of the broker (a single-instance broker is unavailable during it)."
  type = object({
    day_of_week = string
    time_of_day = string
    time_zone   = string
  })
  default = {
    day_of_week = "SUNDAY"
    time_of_day = "03:00"
    time_zone   = "UTC"
  }
}

# --- Schedules ------------------------------------------------------------------

variable "subminute_window_seconds" {
  description = "How long one invocation of a sub-minute schedule (rate(N seconds)) keeps ticking, at most; capped at the function's timeout minus 5 s."
  type        = number
  default     = 55
}

# --- Consul ---------------------------------------------------------------------

variable "consul_address_parameter" {
  description = "NAME of the SSM SecureString parameter holding the Consul address (CONSUL_HTTP_ADDR), created by the operator before apply."
  type        = string
  default     = "/stratus/consul/address"
}

variable "consul_token_parameter" {
  description = "NAME of the SSM SecureString parameter holding the Consul ACL token (CONSUL_HTTP_TOKEN), created by the operator before apply; the token never enters Terraform state."
  type        = string
  default     = "/stratus/consul/token"
}

variable "consul_parameters_kms_key_arn" {
  description = "ARN of the customer managed KMS key the Consul parameters are encrypted with; null when they use the AWS managed key alias/aws/ssm (no grant needed)."
  type        = string
  default     = null
}

variable "consul_cidr_blocks" {
  description = "Where the Consul agents the functions talk to are (egress from the functions' security group)."
  type        = list(string)
  default     = []
}

variable "consul_port" {
  description = "Consul HTTP(S) port."
  type        = number
  default     = 8500
}

# --- Network --------------------------------------------------------------------

variable "vpc_id" {
  description = "VPC of the functions, the broker and the endpoints."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets of the functions and the broker (the broker takes the first one in SINGLE_INSTANCE mode)."
  type        = list(string)
}

variable "private_route_table_ids" {
  description = "Route tables of the private subnets (for the DynamoDB gateway endpoint)."
  type        = list(string)
  default     = []
}

variable "create_vpc_endpoints" {
  description = "Create the VPC endpoints the functions and the broker's pollers need when the private subnets have no NAT: a gateway endpoint for DynamoDB, interface endpoints for secretsmanager, ssm, kms, sts, lambda and logs."
  type        = bool
  default     = true
}

variable "agent_cidr_blocks" {
  description = "Networks of the hypervisor hosts whose stratus-agent connects to the broker (AMQPS 5671)."
  type        = list(string)
  default     = []
}

# --- Secrets and API ------------------------------------------------------------

variable "secret_recovery_window_days" {
  description = "Recovery window of the Secrets Manager secrets after destroy (0 deletes at once, 7 to 30 otherwise)."
  type        = number
  default     = 7
}

variable "api_throttling_burst_limit" {
  description = "API Gateway burst limit of the $default stage."
  type        = number
  default     = 200
}

variable "api_throttling_rate_limit" {
  description = "API Gateway steady-state requests per second of the $default stage."
  type        = number
  default     = 100
}
