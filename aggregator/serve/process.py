"""The serving process: the scheduler that drives the engine's cycles, started and stopped with
the HTTP server (``serve``), which ``python -m aggregator`` runs without a command."""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler
from fastapi import FastAPI

from aggregator.engine.cycle import Aggregator, woken_breakers
from aggregator.engine.wake import BLOCK_SECONDS
from aggregator.observability import configure_logging, configure_tracing
from aggregator.option_table import PORT
from aggregator.serve.app import Lifespan, create_app
from aggregator.serve.http_guard import HttpLimits
from aggregator.serve.http_serving import ListenError, listen, serve_http
from aggregator.settings import AggregatorSettings, describe_error, redact
from gatewayz_transport.connection import connect

log = logging.getLogger("gatewayz.aggregator")

WAKE_SOCKET_TIMEOUT = BLOCK_SECONDS + 5.0
"""The wake listener's reads block up to ``BLOCK_SECONDS``: its connection waits longer."""


@contextmanager
def collector_paused() -> Iterator[None]:
    """No automatic garbage collection inside: a cycle allocates hundreds of thousands of
    objects at 1,000 providers, which set off full collections (20-90 ms each, twice a second)
    that hold the GIL while scrapes wait. What a cycle allocates is freed by reference
    counting when it ends; a cycle of garbage made meanwhile waits for the next collection.
    Jobs overlapping: collection resumes when the one that paused it ends, never later."""
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def start_scheduler(
    aggregator: Aggregator,
    settings: AggregatorSettings,
    after_cycle: Callable[[], None] = lambda: None,
) -> BackgroundScheduler:
    def cycle_then() -> None:
        with collector_paused():
            aggregator.run_cycle()
            after_cycle()

    def breaker_cycle() -> None:
        with collector_paused():
            aggregator.run_breaker_cycle()

    scheduler = BackgroundScheduler(timezone=UTC)
    now = datetime.now(UTC)
    common = {"max_instances": 1, "coalesce": True, "misfire_grace_time": None}
    scheduler.add_job(
        aggregator.tick_lease,
        "interval",
        seconds=settings.breaker_interval_seconds / 2,
        next_run_time=now,
        id="leader_lease",
        **common,
    )
    scheduler.add_job(
        breaker_cycle,
        "interval",
        seconds=settings.breaker_interval_seconds,
        next_run_time=now,
        id="breaker_cycle",
        **common,
    )
    scheduler.add_job(
        cycle_then,
        "interval",
        seconds=settings.interval_seconds,
        next_run_time=now,
        id="aggregation_cycle",
        **common,
    )
    scheduler.start()
    return scheduler


def serving_lifespan(aggregator: Aggregator, settings: AggregatorSettings) -> Lifespan:
    """Start the scheduler with the server; on shutdown stop it and release the leader lease
    so a follower takes over at once (``http_serving``: after the responses under way)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # render /metrics once per snapshot, in the scheduler's thread: scrapes serve bytes
        scheduler = start_scheduler(aggregator, settings, app.state.rendered.prime)
        # breakers woken by workers, evaluated at once (its reads block: its own connection)
        wakes = woken_breakers(aggregator).listener(
            connect(settings.redis_url, WAKE_SOCKET_TIMEOUT)
        )
        wakes.start()
        try:
            yield
        finally:
            wakes.stop()
            scheduler.shutdown(wait=True)
            try:
                aggregator.release_lease()
            except Exception as exc:
                log.warning("could not release the leader lease: %s", describe_error(exc))

    return lifespan


def http_limits(settings: AggregatorSettings) -> HttpLimits:
    """The HTTP connection bounds ``settings`` asks for."""
    return HttpLimits(
        max_header_bytes=settings.max_header_bytes,
        header_timeout_seconds=settings.header_timeout_seconds,
        keepalive_timeout_seconds=settings.keepalive_timeout_seconds,
        send_timeout_seconds=settings.send_timeout_seconds,
        max_connections=settings.max_connections,
    )


PORT_HINT = f'; pick another port with {PORT.flag} N or {PORT.env} (make run ARGS="{PORT.flag} N")'
"""What a port in use adds to its error (another aggregator may be running there)."""


def serve(settings: AggregatorSettings) -> int:
    """Serve /metrics with ``settings`` until SIGTERM or SIGINT (the default command). Exit
    code 2 with a one-line error when its address cannot be listened on."""
    # Listen first: a port in use (another aggregator still running) or a host that does not
    # resolve must stop it before it takes the leader lease or touches Redis at all, with a
    # settings error's one line, not a traceback after stealing leadership for a while.
    try:
        sockets = listen(settings.host, settings.port)
    except ListenError as exc:
        print(f"aggregator: error: {exc}{PORT_HINT if exc.in_use else ''}", file=sys.stderr)
        return 2
    # Hand the GIL over within 0.2 ms (default 5 ms): a scrape needs it a few times, and a
    # cycle or a render holding it for the default interval each time was its tail latency.
    sys.setswitchinterval(0.0002)
    configure_logging(settings)
    configure_tracing(settings)
    connection = connect(
        settings.redis_url, socket_timeout=max(1.0, min(5.0, settings.interval_seconds))
    )
    aggregator = Aggregator(settings, connection)
    log.info(
        "aggregator %s serving http://%s:%d/metrics (dashboard /dashboard) from %s, namespace "
        "%r (interval %gs, breaker %gs, window %gs)",
        settings.instance,
        settings.host,
        settings.port,
        redact(settings.redis_url),
        settings.namespace,
        settings.interval_seconds,
        settings.breaker_interval_seconds,
        settings.window_seconds,
    )
    app = create_app(aggregator, serving_lifespan(aggregator, settings))
    # What is imported and built so far lives as long as the process: out of the collector's
    # sight, a full collection scans thousands of objects instead of 70,000.
    gc.freeze()
    # Every connection through the guarded protocol (no WebSocket upgrade: the app has no
    # WebSocket route).
    serve_http(app, sockets, http_limits(settings))
    return 0
