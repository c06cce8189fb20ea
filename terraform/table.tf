# The one DynamoDB table of the data service, from infra/dynamodb-table.json
# (the same file the local runner creates its table from).
resource "aws_dynamodb_table" "items" {
  name                        = "${var.table_prefix}${local.table.name_suffix}"
  billing_mode                = try(local.table.billing_mode, "PAY_PER_REQUEST")
  hash_key                    = local.table.hash_key
  range_key                   = try(local.table.range_key, null)
  deletion_protection_enabled = var.table_deletion_protection

  dynamic "attribute" {
    for_each = local.table.attributes
    content {
      name = attribute.value.name
      type = attribute.value.type
    }
  }

  dynamic "global_secondary_index" {
    for_each = local.table.global_secondary_indexes
    content {
      name            = global_secondary_index.value.name
      hash_key        = global_secondary_index.value.hash_key
      range_key       = try(global_secondary_index.value.range_key, null)
      projection_type = global_secondary_index.value.projection_type
    }
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = aws_kms_key.stack.arn
  }
}
