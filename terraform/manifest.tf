# The only file that reads infra/: the local runner and AWS are described by
# the same manifest, topology and table files, so they cannot drift.
#
# Only these functions may appear in these locals (a test evaluates them with
# hcl-rs): file, jsondecode, jsonencode, merge, flatten, concat, contains,
# length, keys, values, lookup, try, can, regex, tonumber, tostring, min, max,
# floor, ceil, format, replace, lower, upper, join, split, coalesce, distinct,
# toset, tolist.
locals {
  manifest = jsondecode(file("${path.module}/../infra/manifest.json"))
  topology = jsondecode(file("${path.module}/../infra/topology.json"))
  table    = jsondecode(file("${path.module}/../infra/dynamodb-table.json"))

  # Every function of the manifest, by name.
  functions = { for f in local.manifest.functions : f.name => f }

  # "<function>/<queue>" => the queue trigger plus { function }.
  queue_triggers = {
    for q in flatten([
      for f in local.manifest.functions : [
        for t in f.triggers : merge(t, { function = f.name }) if t.type == "queue"
      ]
    ]) : "${q.function}/${q.queue}" => q
  }

  # "<function>/<index of the trigger>" => the schedule trigger plus
  # { function, aws_expression, repeat }. EventBridge's smallest rate is one
  # minute: rate(N second(s)) runs every minute and the function repeats its
  # tick every N s for for_ms within the invocation; any other expression is
  # used unchanged (repeat = null).
  schedules = {
    for s in flatten([
      for f in local.manifest.functions : [
        for i, t in f.triggers : {
          key = "${f.name}/${i}"
          value = merge(t, {
            function       = f.name
            aws_expression = can(regex("^rate\\(([0-9]+) seconds?\\)$", t.expression)) ? "rate(1 minute)" : t.expression
            repeat = try({
              every_ms = tonumber(regex("^rate\\(([0-9]+) seconds?\\)$", t.expression)[0]) * 1000
              for_ms   = min(var.subminute_window_seconds, f.timeout_seconds - 5) * 1000
            }, null)
          })
        } if t.type == "schedule"
      ]
    ]) : s.key => s.value
  }

  # "<METHOD> <route>" (an API Gateway route key) => { function, method, route }.
  # A trigger without methods takes every method (ANY).
  http_routes = {
    for r in flatten([
      for f in local.manifest.functions : [
        for t in f.triggers : [
          for m in concat(try(t.methods, []), length(try(t.methods, [])) > 0 ? [] : ["ANY"]) : {
            function = f.name
            method   = upper(m)
            route    = t.route
          }
        ] if t.type == "http"
      ]
    ]) : "${r.method} ${r.route}" => r
  }

  # Function name => { function, event }: invoked once after apply.
  startups = {
    for f in local.manifest.functions : f.name => {
      function = f.name
      event    = try([for t in f.triggers : t.event if t.type == "startup"][0], {})
    } if contains([for t in f.triggers : t.type], "startup")
  }

  # The topology's queue names (outputs and agent configuration only).
  queues = [for q in local.topology.queues : q.name]
}
