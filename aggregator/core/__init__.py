"""The aggregator's functional core: pure functions over plain, immutable data.

Health math (``health``), the breaker state machine and its guard (``breaker``), what a read
returns (``readings``), the snapshot and how a cycle builds it (``snapshot``), the workers' own
metric families (``backend``), the dashboard's per-minute points (``history``) and its other
figures (``dashboard_figures``), what an operator's breaker command sets (``operator_actions``)
and what a replica serves (``served``). Time is always a parameter.

Imports: the contract (``gatewayz_protocol``) and the standard library only; never the engine,
serving or the commands, never a Redis client or a web framework (import-linter contracts).
"""
