"""What a replica serves over HTTP, and the process that serves it.

``app`` (the FastAPI routes), ``access`` (the bearer tokens: reader, operator), ``admin`` (the
breaker commands, /admin/breakers), ``http_server`` (its own HTTP/1.1 server with connection
bounds, on httptools: ``http_guard``, ``http_cycle``, ``http_serving``), ``collector`` and
``rendering`` (the /metrics exposition, rendered once per snapshot), ``dashboard`` and
``dashboard_models`` (``/health/dashboard``'s status rules and models), ``process`` (the
scheduler that drives the engine's cycles, started and stopped with the server).

Imports: ``engine`` (to drive it and read its served state), ``core``, ``settings``,
``observability``; never ``cli``.
"""
