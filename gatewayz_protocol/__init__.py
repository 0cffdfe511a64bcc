"""The Redis contract between the worker client and the aggregator, written once.

Key names (``keys``), what may be a name (``names``), window partitions and outcome classes
(``partitions``), hash fields and their codecs (``fields``, ``breaker_state``), backend metric
specs (``specs``), window member ids (``event_ids``), the text of every Lua script
(``scripts``), the shared clock (``clock``) and the process-wide hooks an optional package
reports through (``hooks``).

Both sides import this package; it imports nothing of either and no Redis client (how a process
connects and runs scripts is ``gatewayz_transport``'s), so the contract can be read, tested and
changed without a transport, in one place.
"""
