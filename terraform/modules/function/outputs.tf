output "function_name" {
  description = "The Lambda function's name."
  value       = aws_lambda_function.this.function_name
}

output "qualifier" {
  description = "The alias every trigger invokes (live) when a version is published, else null ($LATEST)."
  value       = local.published ? aws_lambda_alias.live[0].name : null
}

output "target_arn" {
  description = "What triggers invoke: the alias live's ARN when published, else the function's ARN."
  value       = local.published ? aws_lambda_alias.live[0].arn : aws_lambda_function.this.arn
}

output "invoke_arn" {
  description = "Invoke ARN for API Gateway (the alias's when published)."
  value       = local.published ? aws_lambda_alias.live[0].invoke_arn : aws_lambda_function.this.invoke_arn
}

output "role_arn" {
  description = "The function's IAM role."
  value       = aws_iam_role.this.arn
}

output "log_group_name" {
  description = "The function's log group."
  value       = aws_cloudwatch_log_group.this.name
}

output "policy_statements" {
  description = "The statements of the function's inline policy."
  value       = local.policy_statements
}

output "settings" {
  description = "What the function is created with (terraform test asserts on it): memory, timeout, reserved concurrency, runtime, handler, architectures and the environment's variables (references only, nothing secret)."
  value = {
    memory_size                    = aws_lambda_function.this.memory_size
    timeout                        = aws_lambda_function.this.timeout
    reserved_concurrent_executions = aws_lambda_function.this.reserved_concurrent_executions
    runtime                        = aws_lambda_function.this.runtime
    handler                        = aws_lambda_function.this.handler
    architectures                  = aws_lambda_function.this.architectures
    environment                    = aws_lambda_function.this.environment[0].variables
  }
}
