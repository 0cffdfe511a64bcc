"""The gatewayz metrics aggregator: one process that turns the Redis windows into one /metrics.

Four rooms, every import running downwards (``make lint`` checks it with import-linter):

- ``cli``, ``serve``: what runs at the top: the operator and inspection commands, and the HTTP
  server with the scheduler that drives the cycles;
- ``observability``: the process's logging and tracing set-up;
- ``engine``: one cycle as explicit steps (lease, read, evaluate, commit, publish or follow),
  the only Redis reader and the only Redis writer;
- ``settings``: one settings object from flags and environment;
- ``core``: pure functions and immutable data (health math, the breaker state machine, the
  snapshot and what a replica serves): no I/O, no clock of its own, no Redis client.

``__main__`` (``python -m aggregator``) only dispatches to ``serve`` or a ``cli`` command.
"""
