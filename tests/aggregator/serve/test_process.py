"""The serving process (aggregator/serve/process.py): the scheduler's jobs, the collector paused
inside them, the HTTP bounds from the settings, and a lifespan that starts the cycles with the
server and hands the lease over when it stops."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import redis
from fastapi.testclient import TestClient

from aggregator.engine.cycle import Aggregator
from aggregator.serve.app import create_app
from aggregator.serve.http_server import HttpLimits
from aggregator.serve.process import (
    collector_paused,
    http_limits,
    serving_lifespan,
    start_scheduler,
)
from aggregator.settings import AggregatorSettings, redact
from devtools.processes import stop_process
from devtools.redis_server import free_port
from gatewayz_protocol.keys import Keys
from tests.support.processes import wait_for


def test_no_automatic_collection_inside_and_the_outer_one_resumes_it() -> None:
    was = gc.isenabled()
    gc.enable()
    try:
        with collector_paused():
            assert not gc.isenabled()
            with collector_paused():
                assert not gc.isenabled()
            assert not gc.isenabled()  # the inner one did not pause it: it does not resume it
        assert gc.isenabled()
        gc.disable()
        with collector_paused():
            pass
        assert not gc.isenabled()  # paused by someone else before: left as it was
    finally:
        (gc.enable if was else gc.disable)()


def test_http_limits_are_the_settings() -> None:
    settings = AggregatorSettings(
        max_header_bytes=4096,
        header_timeout_seconds=3.0,
        keepalive_timeout_seconds=2.0,
        send_timeout_seconds=7.0,
        max_connections=9,
    )
    assert http_limits(settings) == HttpLimits(
        max_header_bytes=4096,
        header_timeout_seconds=3.0,
        keepalive_timeout_seconds=2.0,
        send_timeout_seconds=7.0,
        max_connections=9,
    )


class _Recorder:
    """Stands in for the Aggregator: records which job ran, with the collector's state."""

    def __init__(self) -> None:
        self.ran: dict[str, bool] = {}
        self.all_ran = threading.Event()

    def _mark(self, job: str) -> None:
        self.ran.setdefault(job, gc.isenabled())
        if len(self.ran) == 3:
            self.all_ran.set()

    def tick_lease(self) -> bool:
        self._mark("lease")
        return True

    def run_cycle(self) -> None:
        self._mark("cycle")

    def run_breaker_cycle(self) -> list[object]:
        self._mark("breaker")
        return []


def test_the_scheduler_runs_each_job_at_once_then_at_its_interval() -> None:
    recorder = _Recorder()
    primed = threading.Event()
    settings = AggregatorSettings(interval_seconds=30.0, breaker_interval_seconds=4.0)
    scheduler = start_scheduler(recorder, settings, primed.set)  # type: ignore[arg-type]
    try:
        intervals = {job.id: job.trigger.interval.total_seconds() for job in scheduler.get_jobs()}
        assert intervals == {"leader_lease": 2.0, "breaker_cycle": 4.0, "aggregation_cycle": 30.0}
        assert all(job.max_instances == 1 and job.coalesce for job in scheduler.get_jobs())
        assert recorder.all_ran.wait(10) and primed.wait(10)
    finally:
        scheduler.shutdown(wait=True)
    # the cycles ran with the collector paused; the lease tick did not need to
    assert recorder.ran["cycle"] is False and recorder.ran["breaker"] is False


def test_the_lifespan_cycles_while_serving_and_hands_the_lease_over_after(
    make_aggregator: Callable[..., Aggregator], r: redis.Redis, keys: Keys
) -> None:
    aggregator = make_aggregator(interval_seconds=0.2, breaker_interval_seconds=0.2)
    app = create_app(aggregator, serving_lifespan(aggregator, aggregator.settings))
    with TestClient(app, base_url="http://127.0.0.1") as http:
        wait_for(lambda: http.get("/metrics").text.count("gatewayz_aggregator_leader") > 0)
        wait_for(lambda: aggregator.is_leader and r.exists(keys.leader_lease) == 1)
    assert r.exists(keys.leader_lease) == 0  # released: a follower takes over at once
    assert not aggregator.is_leader


def test_the_process_names_its_redis_and_namespace_and_says_when_no_provider_is_there(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    """A wrong namespace or Redis must not fail silently: both are named at start (the
    password redacted), and a warning says no provider is registered there."""
    # A user named with the password: Redis's default user (nopass) takes `AUTH default <any>`,
    # while the one-argument `AUTH <password>` redis-py sends on RESP2 (redis-py 5.0's default
    # protocol) is refused where no password is set. Either way the password must not show.
    url = (
        redis_url.replace("redis://", "redis://default:s3cret@")
        if "@" not in redis_url
        else redis_url
    )
    log = tmp_path / "aggregator.log"
    port = free_port()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "aggregator", "--port", str(port), "--interval", "1"],
            env={**os.environ, "GATEWAYZ_REDIS_URL": url, "GATEWAYZ_NAMESPACE": namespace},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: "no provider registered" in log.read_text(), timeout=30)
    finally:
        stop_process(process)
    text = log.read_text()
    assert "s3cret" not in text
    shown = redact(url)
    assert f"from {shown}, namespace {namespace!r}" in text
    assert f"no provider registered in namespace {namespace!r} on {shown}" in text


def test_without_its_extra_the_aggregator_says_which_to_install() -> None:
    script = (
        "import runpy, sys; sys.modules['apscheduler'] = None; "
        "sys.argv = ['aggregator']; runpy.run_module('aggregator', run_name='__main__')"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "aggregator: error: the aggregator needs its extra: pip install "
        "'gatewayz-metrics[aggregator]' (module 'apscheduler' is not installed)"
    )


def test_a_module_of_the_project_missing_is_a_broken_install_not_a_missing_extra() -> None:
    script = (
        "import runpy, sys; sys.modules['gatewayz_telemetry'] = None; "
        "sys.argv = ['aggregator']; runpy.run_module('aggregator', run_name='__main__')"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 1
    assert "pip install" not in done.stderr
    assert done.stderr.strip().endswith(
        "ModuleNotFoundError: import of gatewayz_telemetry halted; None in sys.modules"
    )
