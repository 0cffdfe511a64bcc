"""What a replica serves over HTTP, and the process that serves it.

``app`` (the FastAPI routes and the bearer token), ``http_server`` (uvicorn's protocol with
connection bounds), ``collector`` and ``rendering`` (the /metrics exposition, rendered once per
snapshot), ``dashboard`` (``/health/dashboard``'s models and status rules), ``process`` (the
scheduler that drives the engine's cycles, started and stopped with the server).

Imports: ``engine`` (to drive it and read its served state), ``core``, ``settings``,
``observability``; never ``cli``.
"""
