"""``setup()``'s own logic (gatewayz_telemetry._setup), in this process: what it installs for
which settings, how a second call replaces the logs' handler and keeps its drops, and what
``flush``, ``shutdown`` and the drop counts ask of the handler and of the traces module. The
module's globals, the root logger and the hook registration are restored after each test; the
tracer provider is never set here (``_traces``' install is replaced: test_traces.py covers it,
and setup() end to end runs in subprocesses in test_logs.py and test_traces.py)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from gatewayz_telemetry import TelemetrySettings, _setup
from gatewayz_telemetry._handler import LokiLogHandler
from gatewayz_telemetry._setup import (
    Telemetry,
    flush,
    log_records_dropped,
    setup,
    shutdown,
    spans_dropped,
)
from tests.support.loki import Receiver

TRACES_MODULE = "gatewayz_telemetry._traces"


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Callable[[], int]]]:
    """A fresh module state: no handler, no retired drops, no exit hook registered from here,
    hook registrations recorded instead of made; the root logger restored afterwards."""
    calls: list[Callable[[], int]] = []
    monkeypatch.setattr(_setup, "_handler", None)
    monkeypatch.setattr(_setup, "_retired_drops", 0)
    monkeypatch.setattr(_setup, "_atexit_registered", True)
    monkeypatch.setattr(_setup, "register_log_drops", calls.append)
    monkeypatch.delitem(sys.modules, TRACES_MODULE, raising=False)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield calls
    if _setup._handler is not None:
        _setup._handler.close(timeout=1.0)
    for handler in list(root.handlers):  # only ours: pytest's own come and go per phase
        if isinstance(handler, LokiLogHandler) and handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def _ours() -> list[LokiLogHandler]:
    return [h for h in logging.getLogger().handlers if isinstance(h, LokiLogHandler)]


def _unformattable() -> logging.LogRecord:
    return logging.LogRecord("app", logging.ERROR, __file__, 1, "%d items", ("many",), None)


def test_nothing_configured_installs_nothing(registered: list[Callable[[], int]]) -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    assert setup("svc", env={}) == Telemetry(
        settings=TelemetrySettings(service_name="svc"),
        logs=False,
        traces=False,
        instrumented=False,
    )
    assert root.handlers == before
    assert registered == []
    assert _setup._handler is None
    assert log_records_dropped() == 0


def test_a_loki_url_installs_one_root_handler_and_registers_its_drops(
    registered: list[Callable[[], int]], loki: Receiver
) -> None:
    logging.getLogger().setLevel(logging.WARNING)  # a process that never configured logging
    result = setup("svc", env={"GATEWAYZ_LOKI_URL": loki.url, "GATEWAYZ_LOG_LEVEL": "info"})
    assert (result.logs, result.traces, result.instrumented) == (True, False, False)
    assert result.settings.loki_url == loki.url
    [handler] = _ours()
    assert handler is _setup._handler
    assert handler.level == logging.INFO
    assert logging.getLogger().level == logging.INFO  # lowered, or INFO would ship nothing
    assert registered == [log_records_dropped]


def test_a_root_logger_more_verbose_than_the_handler_is_left_alone(
    registered: list[Callable[[], int]], loki: Receiver
) -> None:
    logging.getLogger().setLevel(logging.DEBUG)
    setup("svc", env={"GATEWAYZ_LOKI_URL": loki.url, "GATEWAYZ_LOG_LEVEL": "warning"})
    assert logging.getLogger().level == logging.DEBUG


def test_settings_given_win_over_the_environment(registered: list[Callable[[], int]]) -> None:
    chosen = TelemetrySettings(service_name="other")
    result = setup("svc", env={"GATEWAYZ_LOKI_URL": "http://loki:3100"}, settings=chosen)
    assert result == Telemetry(settings=chosen, logs=False)
    assert _ours() == []


def test_env_defaults_to_the_process_environment(
    registered: list[Callable[[], int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (
        "GATEWAYZ_LOKI_URL",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GATEWAYZ_LOKI_ENV", "from-os-environ")
    assert setup("svc").settings.environment == "from-os-environ"


def test_a_second_setup_replaces_the_handler_and_keeps_its_drops(
    registered: list[Callable[[], int]], loki: Receiver
) -> None:
    setup("svc", env={"GATEWAYZ_LOKI_URL": loki.url})
    first = _setup._handler
    assert first is not None
    first.handle(_unformattable())
    assert log_records_dropped() == 1
    setup("svc", env={"GATEWAYZ_LOKI_URL": loki.url, "GATEWAYZ_LOKI_APP": "second"})
    second = _setup._handler
    assert second is not None and second is not first
    assert _ours() == [second]
    first.handle(_unformattable())  # closed when replaced: dropped, but no longer ours
    second.handle(_unformattable())
    second.handle(_unformattable())
    assert log_records_dropped() == 1 + 2
    setup("svc", env={})  # logs off: the handler goes, its drops stay counted
    assert _ours() == [] and _setup._handler is None
    assert log_records_dropped() == 3
    assert first.counts().dropped == 2


def test_flush_waits_for_the_records_logged_so_far(
    registered: list[Callable[[], int]], loki: Receiver
) -> None:
    assert flush(timeout=0)  # nothing set up: settled
    setup("svc", env={"GATEWAYZ_LOKI_URL": loki.url})
    logger = logging.getLogger("test.setup.flush")
    for i in range(3):
        logger.warning("line %d", i)
    assert flush(timeout=10)
    assert [line.fields()["msg"] for line in loki.lines()] == ["line 0", "line 1", "line 2"]


def test_shutdown_stops_shipping_and_counts_what_is_logged_afterwards(
    registered: list[Callable[[], int]], loki: Receiver
) -> None:
    setup("svc", env={"GATEWAYZ_LOKI_URL": loki.url})
    logging.getLogger("test.setup.shutdown").warning("before")
    shutdown(timeout=5)
    assert len(loki.lines()) == 1
    logging.getLogger("test.setup.shutdown").warning("after")
    assert _ours() == [_setup._handler]  # still installed
    assert log_records_dropped() == 1
    assert len(loki.lines()) == 1


class FakeTraces:
    """Stands in for ``gatewayz_telemetry._traces`` (which would set the process's provider)."""

    def __init__(self, exported: bool, dropped: int = 0) -> None:
        self.exported = exported
        self.dropped = dropped
        self.calls: list[tuple[str, Any]] = []

    def install(self, settings: TelemetrySettings) -> bool:
        self.calls.append(("install", settings.otlp_traces_endpoint))
        return self.exported

    def spans_exported(self) -> bool:
        return self.exported

    def instrument(self, app: object) -> None:
        self.calls.append(("instrument", app))

    def spans_dropped(self) -> int:
        return self.dropped

    def flush(self, timeout: float) -> bool:
        self.calls.append(("flush", timeout))
        return True

    def shutdown(self) -> None:
        self.calls.append(("shutdown", None))


@pytest.fixture
def fake_traces(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakeTraces]:
    import gatewayz_telemetry

    def install(exported: bool, dropped: int = 0) -> FakeTraces:
        fake = FakeTraces(exported, dropped)
        monkeypatch.setattr(gatewayz_telemetry, "_traces", fake, raising=False)
        monkeypatch.setitem(sys.modules, TRACES_MODULE, fake)  # type: ignore[arg-type]
        return fake

    return install


def test_an_otlp_endpoint_installs_traces_and_instruments_the_app(
    registered: list[Callable[[], int]], fake_traces: Callable[..., FakeTraces]
) -> None:
    traces = fake_traces(exported=True)
    app = SimpleNamespace(name="app")
    result = setup("svc", app=app, env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://tempo:4318"})
    assert (result.logs, result.traces, result.instrumented) == (False, True, True)
    assert traces.calls == [("install", "http://tempo:4318/v1/traces"), ("instrument", app)]


def test_traces_not_exported_leave_the_app_alone(
    registered: list[Callable[[], int]], fake_traces: Callable[..., FakeTraces]
) -> None:
    traces = fake_traces(exported=False)  # another provider was there first
    result = setup("svc", app=object(), env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://tempo:4318"})
    assert (result.traces, result.instrumented) == (False, False)
    assert traces.calls == [("install", "http://tempo:4318/v1/traces")]


def test_without_an_app_nothing_is_instrumented(
    registered: list[Callable[[], int]], fake_traces: Callable[..., FakeTraces]
) -> None:
    traces = fake_traces(exported=True)
    result = setup("svc", env={"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:1/x"})
    assert (result.traces, result.instrumented) == (True, False)
    assert traces.calls == [("install", "http://t:1/x")]


def test_span_drops_flush_and_shutdown_go_to_the_traces_module_when_loaded(
    registered: list[Callable[[], int]], fake_traces: Callable[..., FakeTraces]
) -> None:
    assert spans_dropped() == 0  # not loaded: nothing exported, nothing dropped
    traces = fake_traces(exported=True, dropped=7)
    assert spans_dropped() == 7
    assert flush(timeout=2.5)
    shutdown(timeout=0)
    assert traces.calls == [("flush", 2.5), ("shutdown", None)]
