"""The Redis contract between the worker client and the aggregator, written once.

Key names (``keys``), what may be a name (``names``), window partitions and outcome classes
(``partitions``), hash fields and their codecs (``fields``, ``breaker_state``), backend metric
specs (``specs``), window member ids (``event_ids``), every Lua script (``scripts``) and how a
process connects and runs them (``connection``).

Both sides import this package; it imports nothing of either, so the aggregator never loads the
worker stack and a change to the contract is made in one place.
"""
