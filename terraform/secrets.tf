# The root admin's API keys: no version here, the bootstrap function writes
# them (STRATUS_ADMIN_KEYS_SECRET), so they never enter Terraform state.
# Read them with: aws secretsmanager get-secret-value --secret-id <admin_keys_secret_arn>
resource "aws_secretsmanager_secret" "admin_keys" {
  #checkov:skip=CKV2_AWS_57:The keys are CloudStack API keys held in the platform's own store; the bootstrap function writes them here once, and they are rotated through the CloudStack API (registerUserKeys), not by a Secrets Manager rotation function.
  name                    = "${var.name}/admin-keys"
  description             = "Stratus ${var.name}: the root admin's API keys, written by the bootstrap function"
  kms_key_id              = aws_kms_key.stack.arn
  recovery_window_in_days = var.secret_recovery_window_days
}
