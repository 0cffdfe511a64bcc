"""The aggregator's engine: one cycle as explicit steps, and the only Redis I/O.

``cycle`` (``Aggregator``) runs the steps: take the lease (``lease``), read (``reader`` with the
read plans of ``plan``), evaluate the breakers (``evaluate``), commit what they decided with the
cycle's bookkeeping in one round trip (``writer``), then publish the snapshot or follow the
leader's (``cycle``). ``reader`` is the only module that reads Redis, ``writer`` the only one
that writes it. ``operator_commands`` runs the operator's breaker commands with them (for the CLI
and the HTTP API alike).

Imports: ``core``, ``settings``, the contract and the transport; never ``serve`` or ``cli``,
never a web framework.
"""
