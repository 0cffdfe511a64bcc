"""Operator and inspection commands: ``python -m aggregator breaker ...`` (``breaker``) and
``python -m aggregator inspect ...`` (``inspection``).

Read-only unless they say so: ``inspect`` and ``breaker status`` never trim, register or
repair; ``breaker open|close|reset`` write one breaker's state, compare-and-set.

Imports: ``engine`` (its reader and writer), ``core``, ``settings``; never ``serve``.
"""
