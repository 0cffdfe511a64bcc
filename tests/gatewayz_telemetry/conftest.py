"""Fixtures for telemetry tests: a Loki receiver, and a handler on a private logger (the root
logger stays untouched: ``setup()`` itself is tested in subprocesses)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gatewayz_telemetry import TelemetrySettings
from gatewayz_telemetry._handler import LokiLogHandler
from tests.support.loki import Receiver, receiver


@pytest.fixture
def loki() -> Iterator[Receiver]:
    with receiver() as server:
        yield server


@pytest.fixture
def make_logger() -> Iterator[Callable[..., tuple[logging.Logger, LokiLogHandler]]]:
    handlers: list[LokiLogHandler] = []

    def factory(url: str, **settings: Any) -> tuple[logging.Logger, LokiLogHandler]:
        handler = LokiLogHandler(
            TelemetrySettings(service_name="svc-test", loki_url=url, environment="test", **settings)
        )
        logger = logging.getLogger(f"test.telemetry.{uuid.uuid4().hex[:8]}")
        logger.propagate = False
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
        handlers.append(handler)
        return logger, handler

    yield factory
    for handler in handlers:
        handler.close(timeout=2.0)
