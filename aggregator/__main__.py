"""``python -m aggregator``: the scheduler plus the HTTP server."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

import uvicorn
from apscheduler.schedulers.background import BackgroundScheduler

from aggregator.app import create_app
from aggregator.cycle import Aggregator
from aggregator.observability import configure_logging, configure_tracing
from aggregator.settings import AggregatorSettings, parse_settings
from client.writer import connect

log = logging.getLogger("gatewayz.aggregator")


def start_scheduler(aggregator: Aggregator, settings: AggregatorSettings) -> BackgroundScheduler:
    scheduler = BackgroundScheduler(timezone=UTC)
    scheduler.add_job(
        aggregator.run_cycle,
        "interval",
        seconds=settings.interval_seconds,
        next_run_time=datetime.now(UTC),
        max_instances=1,
        coalesce=True,
        id="aggregation_cycle",
        misfire_grace_time=None,
    )
    scheduler.start()
    return scheduler


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_settings(argv)
    configure_logging(settings)
    configure_tracing(settings)
    connection = connect(settings.redis_url, socket_timeout=max(1.0, settings.interval_seconds))
    aggregator = Aggregator(settings, connection)
    scheduler = start_scheduler(aggregator, settings)
    log.info(
        "aggregator serving http://%s:%d/metrics (interval %gs, window %gs)",
        settings.host,
        settings.port,
        settings.interval_seconds,
        settings.window_seconds,
    )
    try:
        uvicorn.run(
            create_app(aggregator),
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level.lower(),
            access_log=False,
        )
    finally:
        scheduler.shutdown(wait=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
