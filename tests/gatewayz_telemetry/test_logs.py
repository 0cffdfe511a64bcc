"""Records reach Loki with exactly the labels app/env/service/level and a logfmt line carrying
the extras and the span's ids; a process that exits cleanly delivers everything; nothing
configured starts nothing."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider

from gatewayz_telemetry._handler import LokiLogHandler
from tests.support.loki import Receiver
from tests.support.processes import wait_for

ROOT = Path(__file__).resolve().parents[2]
MakeLogger = Callable[..., tuple[logging.Logger, LokiLogHandler]]


def _run(script: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done


def test_labels_are_exactly_app_env_service_level_and_extras_go_in_the_line(
    loki: Receiver, make_logger: MakeLogger
) -> None:
    logger, _ = make_logger(loki.url)
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("chat") as span:
        logger.info(
            "chat completion %s",
            "ok",
            extra={"provider": "openrouter", "model": "gpt 4o", "user_id": 42, "duration_s": 0.25},
        )
        ids = span.get_span_context()
    logger.error("upstream failed", extra={"provider": "flakyai"})

    wait_for(lambda: len(loki.lines()) == 2, timeout=10)
    info, error = sorted(loki.lines(), key=lambda line: line.timestamp_ns)
    base = {"app": "svc-test", "env": "test", "service": "svc-test"}
    assert info.labels == {**base, "level": "info"}
    assert error.labels == {**base, "level": "error"}
    assert info.fields() == {
        "msg": "chat completion ok",
        "logger": logger.name,
        "provider": "openrouter",
        "model": "gpt 4o",
        "user_id": "42",
        "duration_s": "0.25",
        "trace_id": f"{ids.trace_id:032x}",
        "span_id": f"{ids.span_id:016x}",
    }
    assert "trace_id" not in error.fields()  # logged outside any span
    assert error.fields()["provider"] == "flakyai"


def test_a_traceback_stays_one_line_and_a_huge_message_is_cut(
    loki: Receiver, make_logger: MakeLogger
) -> None:
    logger, _ = make_logger(loki.url, max_line_chars=1000)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("failed")
    logger.warning("x" * 100_000)
    wait_for(lambda: len(loki.lines()) == 2, timeout=10)
    failed, huge = sorted(loki.lines(), key=lambda line: line.timestamp_ns)
    assert "\n" not in failed.line
    assert "RuntimeError: boom" in failed.fields()["exc"]
    assert len(huge.line) <= 1000
    assert huge.line.endswith("truncated=true")


def test_many_records_are_batched_into_few_pushes(loki: Receiver, make_logger: MakeLogger) -> None:
    logger, handler = make_logger(loki.url)
    for i in range(2000):
        logger.info("line %d", i)
    assert handler.drain(timeout=10)
    assert [int(line.fields()["msg"].split()[1]) for line in loki.lines()] == list(range(2000))
    assert loki.pushes < 2000 / 10  # several hundred records per push, not one each


def test_a_process_that_exits_cleanly_delivers_every_record(loki: Receiver) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "GATEWAYZ_LOKI_URL": loki.url,
        "GATEWAYZ_LOKI_APP": "gatewayz-api",
    }
    _run(
        """
        import logging, gatewayz_telemetry
        gatewayz_telemetry.setup("worker-test")
        log = logging.getLogger("app")
        for i in range(5000):
            log.info("line %d", i, extra={"i": i})
        # no flush: the exit drains the queue
        """,
        env,
    )
    lines = loki.lines()
    assert sorted(int(line.fields()["i"]) for line in lines) == list(range(5000))
    assert {tuple(sorted(line.labels.items())) for line in lines} == {
        (("app", "gatewayz-api"), ("env", "dev"), ("level", "info"), ("service", "worker-test"))
    }


def test_a_forked_child_ships_its_own_records_with_a_sender_of_its_own(loki: Receiver) -> None:
    env = {"PATH": "/usr/bin:/bin", "GATEWAYZ_LOKI_URL": loki.url}
    _run(
        """
        import logging, os, gatewayz_telemetry
        gatewayz_telemetry.setup("fork-test")
        log = logging.getLogger("app")
        for i in range(100):
            log.info("parent", extra={"who": "parent"})
        pid = os.fork()
        if pid == 0:
            for i in range(50):
                log.info("child", extra={"who": "child"})
            ok = gatewayz_telemetry.flush(10)
            os._exit(0 if ok and gatewayz_telemetry.log_records_dropped() == 0 else 1)
        _, status = os.waitpid(pid, 0)
        assert status == 0, status
        for i in range(100):
            log.info("parent", extra={"who": "parent"})
        """,
        env,
    )
    whos = [line.fields()["who"] for line in loki.lines()]
    assert (whos.count("parent"), whos.count("child")) == (200, 50)


def test_nothing_configured_nothing_started_nothing_imported() -> None:
    done = _run(
        """
        import json, logging, sys, threading, gatewayz_telemetry
        result = gatewayz_telemetry.setup("idle", env={})
        logging.getLogger("app").warning("to nobody")
        print(json.dumps({
            "logs": result.logs,
            "threads": threading.active_count(),
            "loaded": sorted(m for m in ("logging_loki", "requests", "gatewayz_telemetry._handler")
                             if m in sys.modules),
            "handlers": len(logging.getLogger().handlers),
            "dropped": gatewayz_telemetry.log_records_dropped(),
        }))
        """,
        {"PATH": "/usr/bin:/bin"},
    )
    assert json.loads(done.stdout) == {
        "logs": False,
        "threads": 1,
        "loaded": [],
        "handlers": 0,
        "dropped": 0,
    }
