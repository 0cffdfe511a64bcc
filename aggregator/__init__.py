"""The gatewayz metrics aggregator: one process that turns the Redis windows into one /metrics."""
