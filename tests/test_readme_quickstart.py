"""The README's quickstart cannot rot: its FastAPI app and its ``gunicorn.conf.py``, taken from
the README's fenced blocks as they are, run under a real Gunicorn with two workers against the
test's Redis namespace, next to the aggregator started with the README's command; the traffic
sent through the app (successes, an upstream's 503s and 429s, an unknown provider) shows in the
aggregator's ``/metrics`` with exact counts, recorded by the workers. The README's scrape target is
the aggregator's port, and every block of it sits within the README's first 120 lines.

The upstream is a fake OpenAI-style ``/chat/completions`` served by this test (the app reads
its base URL from ``OPENROUTER_BASE_URL``, as the README's app does), which checks the key."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from devtools.redis_server import free_port
from tests.support.processes import wait_for
from tests.support.scrape import Samples, samples, scrape_url

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
INPUT_TOKENS, OUTPUT_TOKENS = 11, 7
UPSTREAM_STATUS = {"broken": 503, "limited": 429}  # model name -> the fake upstream's answer


def _blocks() -> list[tuple[str, str, int]]:
    """The README's fenced blocks: (language, text, line number of the closing fence)."""
    found = []
    for match in re.finditer(r"^```(\w*)\n(.*?)^```$", README.read_text(), re.M | re.S):
        line = README.read_text()[: match.end()].count("\n") + 1
        found.append((match[1], match[2], line))
    return found


def _block(language: str, needle: str) -> tuple[str, int]:
    (found,) = [
        (text, line) for lang, text, line in _blocks() if lang == language and needle in text
    ]
    return found


def _aggregator_command() -> list[str]:
    shell, _ = _block("sh", "python -m aggregator")
    (line,) = [line for line in shell.splitlines() if "python -m aggregator" in line]
    words = shlex.split(line)
    return words[words.index("python") :]  # without the GATEWAYZ_REDIS_URL=... the test sets


def test_the_quickstart_is_in_the_first_120_lines() -> None:
    for language, needle in (
        ("python", "FastAPI(lifespan=lifespan)"),
        ("python", "def post_fork"),
        ("sh", "python -m aggregator"),
        ("yaml", "scrape_configs"),
        ("sh", "docker compose up"),
    ):
        _, end = _block(language, needle)
        assert end <= 120, f"the README's {needle!r} block ends on line {end}"
    app, _ = _block("python", "FastAPI(lifespan=lifespan)")
    for part in ("MetricsClient", "MetricsMiddleware", "allow_async", ".inference(", "close("):
        assert part in app, part
    assert len(README.read_text().splitlines()) <= 250
    command = _aggregator_command()
    port = command[command.index("--port") + 1]
    scrape_config, _ = _block("yaml", "scrape_configs")
    assert f":{port}" in scrape_config


def test_the_docs_quickstart_page_includes_the_readmes() -> None:
    page = (ROOT / "docs" / "getting-started" / "quickstart.md").read_text()
    assert '--8<-- "README.md:quickstart"' in page
    readme = README.read_text()
    start, end = "<!-- --8<-- [start:quickstart] -->", "<!-- --8<-- [end:quickstart] -->"
    region = readme.split(start, 1)[1].split(end, 1)[0]
    for needle in ("FastAPI(lifespan=lifespan)", "def post_fork", "python -m aggregator"):
        assert needle in region, needle
    assert "](" not in region  # a README link would not resolve on the docs site


class _Upstream(BaseHTTPRequestHandler):
    """An OpenAI-style chat completion: usage with fixed token counts, or the status the model
    name asks for."""

    def do_POST(self) -> None:
        assert self.headers["authorization"] == "Bearer sk-test"
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        status = UPSTREAM_STATUS.get(body["model"], 200)
        answer = {"choices": [{"message": {"role": "assistant", "content": "hi"}}]}
        answer["usage"] = {"prompt_tokens": INPUT_TOKENS, "completion_tokens": OUTPUT_TOKENS}
        data = json.dumps(answer if status == 200 else {"error": "upstream"}).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _start(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, cwd=cwd, env=env, stderr=subprocess.DEVNULL)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _post(url: str, body: dict[str, object]) -> int:
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_the_readme_app_under_gunicorn_reaches_the_aggregators_metrics(
    tmp_path: Path, redis_url: str, namespace: str, upstream: str
) -> None:
    app, _ = _block("python", "FastAPI(lifespan=lifespan)")
    conf, _ = _block("python", "def post_fork")
    (tmp_path / "app.py").write_text(app)
    (tmp_path / "gunicorn.conf.py").write_text(conf)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "GATEWAYZ_REDIS_URL": redis_url,
        "GATEWAYZ_NAMESPACE": namespace,
        "OPENROUTER_BASE_URL": upstream,
        "OPENROUTER_API_KEY": "sk-test",
    }
    for telemetry in ("GATEWAYZ_LOKI_URL", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        env.pop(telemetry, None)  # the hook runs; nothing is shipped anywhere
    gateway_port, aggregator_port = free_port(), free_port()
    gunicorn = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"]
    gunicorn += ["-b", f"127.0.0.1:{gateway_port}", "-w", "2", "app:app"]
    aggregator = [sys.executable, *_aggregator_command()[1:]]  # "python" -> this interpreter
    aggregator[aggregator.index("--host") + 1] = "127.0.0.1"
    aggregator[aggregator.index("--port") + 1] = str(aggregator_port)
    aggregator += ["--interval", "1", "--log-level", "WARNING"]
    processes = [_start(gunicorn, tmp_path, env), _start(aggregator, tmp_path, env)]
    try:
        chat = f"http://127.0.0.1:{gateway_port}/v1/chat/completions"
        messages = [{"role": "user", "content": "hello"}]

        def ask(provider: str, model: str) -> int:
            return _post(chat, {"provider": provider, "model": model, "messages": messages})

        wait_for(lambda: ask("nope", "m1") == 404, timeout=30)  # a worker answers
        calls = [("openrouter", "m1")] * 40 + [("openrouter", "broken")] * 10
        calls += [("openrouter", "limited")] * 5 + [("nope", "m1")] * 2
        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(pool.map(lambda call: ask(*call), calls))
        assert statuses == [200] * 40 + [502] * 15 + [404] * 2

        route = {"app_name": "my-gateway", "method": "POST", "path": "/v1/chat/completions"}
        openrouter = {"provider": "openrouter"}
        m1 = {**openrouter, "model": "m1"}
        expected: list[tuple[str, dict[str, str], float]] = [
            ("gatewayz_provider_requests_total", {**openrouter, "outcome": "success"}, 40),
            ("gatewayz_provider_requests_total", {**openrouter, "outcome": "failure"}, 10),
            ("gatewayz_provider_requests_total", {**openrouter, "outcome": "rate_limited"}, 5),
            ("gatewayz_provider_tokens_total", openrouter, 40 * (INPUT_TOKENS + OUTPUT_TOKENS)),
            ("provider_response_time_seconds_count", openrouter, 55),
            ("model_inference_requests_total", {**m1, "status": "success"}, 40),
            ("model_inference_requests_total", {**openrouter, "model": "broken",
                                                "status": "failure"}, 10),
            ("model_inference_requests_total", {**openrouter, "model": "limited",
                                                "status": "rate_limited"}, 5),
            ("tokens_used_total", {**m1, "token_type": "input"}, 40 * INPUT_TOKENS),
            ("tokens_used_total", {**m1, "token_type": "output"}, 40 * OUTPUT_TOKENS),
            ("fastapi_requests_total", {**route, "status_code": "200", "status_class": "2xx"}, 40),
            ("fastapi_requests_total", {**route, "status_code": "502", "status_class": "5xx"}, 15),
            # the unknown provider's 404s: the probe's one, and the 2 of the traffic
            ("fastapi_requests_total", {**route, "status_code": "404", "status_class": "4xx"}, 3),
            ("fastapi_requests_duration_seconds_count", route, 55 + 3),
        ]  # fmt: skip
        want = {(name, tuple(sorted(labels.items()))): value for name, labels, value in expected}
        scraped: Samples = {}

        def arrived() -> bool:
            nonlocal scraped
            scraped = samples(scrape_url(aggregator_port))
            return all(scraped.get(key) == value for key, value in want.items())

        with contextlib.suppress(AssertionError):  # the comparison below says what is missing
            wait_for(arrived, timeout=15, poll=0.25)
        assert {key: scraped.get(key) for key in want} == want
        # the calls were recorded by Gunicorn's workers (forked after the preload), never by
        # the master that imported the app
        offsets = "gatewayz_client_clock_offset_seconds"
        writers = {dict(labels)["writer"] for name, labels in scraped if name == offsets}
        master = processes[0].pid
        workers = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        assert writers and {writer.rsplit(":", 1)[1] for writer in writers} <= set(workers)
        assert len(workers) == 2
    finally:
        for process in processes:
            _stop(process)
