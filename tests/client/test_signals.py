"""SIGTERM and os._exit() with real processes: a worker holding buffered events (a long flush
interval keeps them in memory) is signalled by the test, which then counts what reached Redis.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest
import redis

from devtools.redis_server import RedisProcess, start_redis
from gatewayz_protocol.keys import Keys
from tests.support.processes import need_tool, wait_for

ROOT = Path(__file__).resolve().parents[2]

HEAD = """
import os, signal, sys, threading, time
import client._signals as shutdown
from client import ClientSettings, MetricsClient

URL, NAMESPACE = sys.argv[1], sys.argv[2]
SETTINGS = ClientSettings(redis_url=URL, namespace=NAMESPACE, flush_interval_seconds=60)
"""
"""Every worker script starts so: 60 s between flushes, so events stay buffered (fewer than
the 5,000 that wake the flusher early)."""


class Worker:
    """A Python process running ``HEAD`` and then ``parts``; its output is read by threads, so
    the test can wait for a line with a deadline."""

    def __init__(
        self, url: str, namespace: str, *parts: str, env: dict[str, str] | None = None
    ) -> None:
        code = HEAD + "".join(textwrap.dedent(part) for part in parts)
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, url, namespace],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        assert self.process.stdout is not None and self.process.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, self.lines.put)),
            threading.Thread(target=self._read, args=(self.process.stderr, self.stderr.append)),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: IO[str], put: Callable[[str], object]) -> None:
        for line in stream:
            put(line.rstrip("\n"))

    def expect(self, prefix: str, timeout: float = 10.0) -> str:
        """The next line of stdout starting with ``prefix`` (other lines are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no line {prefix!r}; stderr: {self.error_text()}"
            try:
                line = self.lines.get(timeout=min(remaining, 0.1))
            except queue.Empty:
                if self.process.poll() is not None and not self._readers[0].is_alive():
                    raise AssertionError(
                        f"exited without {prefix!r}: {self.error_text()}"
                    ) from None
                continue
            if line.startswith(prefix):
                return line

    def terminate(self, timeout: float = 10.0, asleep: bool = True) -> tuple[int, float]:
        """SIGTERM, once the main thread is blocked (``asleep``: it does block); the exit status
        and the seconds until the process ended."""
        if asleep:
            wait_until_asleep(self.process.pid)
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        return self.wait(timeout), time.monotonic() - started

    def wait(self, timeout: float = 10.0) -> int:
        try:
            status = self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
        for reader in self._readers:
            reader.join(timeout=5)
        return status

    def error_text(self) -> str:
        return "\n".join(self.stderr)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.wait()


def wait_until_asleep(pid: int) -> None:
    """Until the main thread of ``pid`` sleeps in the kernel (its blocking call, usually).

    Python runs a signal handler between two bytecodes of the main thread: a signal that lands
    in the microseconds between the last such point and the start of a blocking wait is handled
    only when that wait ends (any Python handler has this race). Signalling the moment a script
    prints, just before it blocks, would provoke it; a process being stopped does not."""

    def asleep() -> bool:
        with open(f"/proc/{pid}/task/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "S"

    wait_for(asleep, timeout=10, poll=0.005)


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.stop()


def _count(r: redis.Redis, namespace: str, provider: str) -> int:
    value = r.hget(Keys(namespace).totals(provider), "n:success")
    return int(value) if value is not None else 0


BUFFERED = """
metrics = MetricsClient(settings=SETTINGS)
for _ in range(1000):
    metrics.record("openrouter", 0.1)
print("ready", metrics.stats()["buffered"], flush=True)
"""


def test_sigterm_flushes_every_client_then_dies_of_sigterm(
    redis_url: str, namespace: str, r: redis.Redis, workers: list[Worker]
) -> None:
    worker = Worker(
        redis_url,
        namespace,
        """
        built = []  # a client built outside the main thread installs nothing
        thread = threading.Thread(target=lambda: built.append(MetricsClient(settings=SETTINGS)))
        thread.start()
        thread.join()
        print("after thread", signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, flush=True)
        for _ in range(300):
            built[0].record("threaded", 0.1)
        """,
        BUFFERED,  # the main thread's client: installs the one handler
        """
        other = MetricsClient(settings=SETTINGS)  # a third client: still that one handler
        for _ in range(500):
            other.record("anthropic", 0.1)
        print("handler", signal.getsignal(signal.SIGTERM) is shutdown._on_sigterm, flush=True)
        time.sleep(60)
        """,
    )
    workers.append(worker)
    assert worker.expect("after thread") == "after thread True"
    assert worker.expect("ready") == "ready 1000"
    assert worker.expect("handler") == "handler True"
    assert _count(r, namespace, "openrouter") == 0  # still buffered
    status, seconds = worker.terminate()
    print(f"\nSIGTERM -> exit: {seconds * 1000:.0f} ms")
    assert status == -signal.SIGTERM  # killed by SIGTERM, as without the handler
    counts = [_count(r, namespace, p) for p in ("openrouter", "anthropic", "threaded")]
    assert counts == [1000, 500, 300]  # every client, the thread-built one too
    assert worker.error_text() == ""


def test_an_application_handler_set_before_the_client_runs_after_the_flush(
    redis_url: str, namespace: str, r: redis.Redis, workers: list[Worker]
) -> None:
    worker = Worker(
        redis_url,
        namespace,
        """
        def on_term(signum, frame):
            # os._exit skips atexit: what is in Redis now is the handler's flush alone
            print("application handler, settled", metrics.stats()["settled"], flush=True)
            os._exit(3)

        signal.signal(signal.SIGTERM, on_term)
        """,
        BUFFERED,
        "time.sleep(60)\n",
    )
    workers.append(worker)
    worker.expect("ready")
    status, _ = worker.terminate()
    assert worker.expect("application handler") == "application handler, settled 1000"
    assert status == 3  # the application's exit, not ours
    assert _count(r, namespace, "openrouter") == 1000


def test_with_the_setting_off_nothing_is_installed_and_sigterm_loses_the_buffer(
    redis_url: str, namespace: str, r: redis.Redis, workers: list[Worker]
) -> None:
    worker = Worker(
        redis_url,
        namespace,
        """
        metrics = MetricsClient.from_env()
        for _ in range(1000):
            metrics.record("openrouter", 0.1)
        print("default", signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, flush=True)
        time.sleep(60)
        """,
        env={
            "GATEWAYZ_REDIS_URL": redis_url,
            "GATEWAYZ_NAMESPACE": namespace,
            "GATEWAYZ_FLUSH_INTERVAL_SECONDS": "60",
            "GATEWAYZ_HANDLE_SIGTERM": "0",
        },
    )
    workers.append(worker)
    assert worker.expect("default") == "default True"
    status, _ = worker.terminate()
    assert status == -signal.SIGTERM
    assert _count(r, namespace, "openrouter") == 0  # today's behaviour without the handler


# -- close() puts back the handler it replaced -----------------------------------------------

IS = """
def handler_is(expected):
    return signal.getsignal(signal.SIGTERM) is expected
"""
"""Worker scripts below compare the process's SIGTERM handler with what it should be."""


def test_the_last_client_to_close_puts_back_the_default_and_sigterm_kills_as_before(
    redis_url: str, namespace: str, r: redis.Redis, workers: list[Worker]
) -> None:
    worker = Worker(
        redis_url,
        namespace,
        IS,
        """
        print("before", handler_is(signal.SIG_DFL), flush=True)
        first = MetricsClient(settings=SETTINGS)
        second = MetricsClient(settings=SETTINGS)
        print("built", handler_is(shutdown._on_sigterm), flush=True)
        first.close()
        print("first closed", handler_is(shutdown._on_sigterm), flush=True)  # second asks
        second.close()
        print("second closed", handler_is(signal.SIG_DFL), flush=True)
        for _ in range(100):
            second.record("openrouter", 0.1)  # after close(): never booked, counted, logged once
        time.sleep(60)
        """,
    )
    workers.append(worker)
    assert worker.expect("before") == "before True"
    assert worker.expect("built") == "built True"
    assert worker.expect("first closed") == "first closed True"
    assert worker.expect("second closed") == "second closed True"
    status, seconds = worker.terminate()
    assert status == -signal.SIGTERM  # the default action: killed at once, as without us
    assert seconds < 2.0
    assert worker.error_text() == (
        "metrics recorded after close() are dropped (counted as dropped, cause closed); "
        "further ones are only counted"
    )


def test_close_puts_back_the_application_handler_it_chained(
    redis_url: str, namespace: str, r: redis.Redis, workers: list[Worker]
) -> None:
    worker = Worker(
        redis_url,
        namespace,
        IS,
        """
        def on_term(signum, frame):
            print("application handler", flush=True)
            os._exit(3)

        signal.signal(signal.SIGTERM, on_term)
        metrics = MetricsClient(settings=SETTINGS)
        print("chained", handler_is(shutdown._on_sigterm), flush=True)
        metrics.close()
        print("closed", handler_is(on_term), flush=True)
        time.sleep(60)
        """,
    )
    workers.append(worker)
    assert worker.expect("chained") == "chained True"
    assert worker.expect("closed") == "closed True"
    status, _ = worker.terminate()
    assert worker.expect("application handler") == "application handler"
    assert status == 3


def test_a_handler_the_application_set_after_the_client_is_left_alone_by_close(
    redis_url: str, namespace: str, r: redis.Redis, workers: list[Worker]
) -> None:
    worker = Worker(
        redis_url,
        namespace,
        IS,
        """
        metrics = MetricsClient(settings=SETTINGS)

        def mine(signum, frame):
            print("mine", flush=True)
            os._exit(4)

        signal.signal(signal.SIGTERM, mine)  # replaces ours: the application's choice
        metrics.close()
        print("closed", handler_is(mine), flush=True)
        other = MetricsClient(settings=SETTINGS)  # a replacement is final: not chained
        other.close()
        print("again", handler_is(mine), flush=True)
        time.sleep(60)
        """,
    )
    workers.append(worker)
    assert worker.expect("closed") == "closed True"
    assert worker.expect("again") == "again True"
    status, _ = worker.terminate()
    assert worker.expect("mine") == "mine"
    assert status == 4


def test_a_collected_client_puts_back_the_handler_and_a_new_one_installs_again(
    redis_url: str, namespace: str, r: redis.Redis, workers: list[Worker]
) -> None:
    worker = Worker(
        redis_url,
        namespace,
        IS,
        """
        import gc

        metrics = MetricsClient(settings=SETTINGS)
        del metrics
        gc.collect()  # never closed, only collected
        print("collected", handler_is(signal.SIG_DFL), flush=True)
        metrics = MetricsClient(settings=SETTINGS)  # installs again, chaining nothing
        print("again", handler_is(shutdown._on_sigterm), flush=True)
        for _ in range(1000):
            metrics.record("openrouter", 0.1)
        print("recorded", flush=True)
        time.sleep(60)
        """,
    )
    workers.append(worker)
    assert worker.expect("collected") == "collected True"
    assert worker.expect("again") == "again True"
    worker.expect("recorded")  # a signal inside record() waits for nothing recorded after it
    status, _ = worker.terminate()
    assert status == -signal.SIGTERM
    assert _count(r, namespace, "openrouter") == 1000  # flushed by the handler installed again


def test_a_server_that_puts_our_handler_back_after_close_gets_sigterm_as_before(
    redis_url: str, namespace: str, r: redis.Redis, workers: list[Worker]
) -> None:
    """uvicorn's way: it replaces the handler while serving (the application's lifespan closes
    the client meanwhile), then restores ours and re-raises SIGTERM."""
    worker = Worker(
        redis_url,
        namespace,
        IS,
        """
        metrics = MetricsClient(settings=SETTINGS)
        ours = signal.signal(signal.SIGTERM, lambda signum, frame: None)  # serving
        metrics.close()  # not ours now: left alone
        signal.signal(signal.SIGTERM, ours)  # the server restores what it replaced
        print("restored by the server", handler_is(shutdown._on_sigterm), flush=True)
        time.sleep(60)
        """,
    )
    workers.append(worker)
    assert worker.expect("restored by the server") == "restored by the server True"
    status, seconds = worker.terminate()
    assert status == -signal.SIGTERM
    assert seconds < 2.0
    assert worker.error_text() == ""


def test_a_client_closed_in_another_thread_leaves_sigterm_as_without_the_library(
    redis_url: str, namespace: str, r: redis.Redis, workers: list[Worker]
) -> None:
    """Only the main thread may set a handler: ours stays, and does what SIGTERM did before."""
    worker = Worker(
        redis_url,
        namespace,
        IS,
        """
        def on_term(signum, frame):
            print("application handler", flush=True)
            os._exit(5)

        signal.signal(signal.SIGTERM, on_term)
        metrics = MetricsClient(settings=SETTINGS)
        closer = threading.Thread(target=metrics.close)
        closer.start()
        closer.join()
        print("closed elsewhere", handler_is(shutdown._on_sigterm), flush=True)
        time.sleep(60)
        """,
    )
    workers.append(worker)
    assert worker.expect("closed elsewhere") == "closed elsewhere True"
    status, _ = worker.terminate()
    assert worker.expect("application handler") == "application handler"
    assert status == 5
    assert worker.error_text() == ""


def test_a_forked_child_puts_back_its_own_handler_and_leaves_its_parents(
    redis_url: str, namespace: str, r: redis.Redis, workers: list[Worker]
) -> None:
    worker = Worker(
        redis_url,
        namespace,
        IS,
        """
        metrics = MetricsClient(settings=SETTINGS)
        for _ in range(7):
            metrics.record("parent", 0.1)
        pid = os.fork()  # the child inherits the handler and the client (emptied for it)
        if pid == 0:
            metrics.close()
            print("child closed", handler_is(signal.SIG_DFL), os.getpid(), flush=True)
            time.sleep(60)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        print("child exit", os.waitstatus_to_exitcode(status), flush=True)
        print("parent", handler_is(shutdown._on_sigterm), flush=True)
        time.sleep(60)
        """,
    )
    workers.append(worker)
    closed, child = worker.expect("child closed").rsplit(" ", 1)
    assert closed == "child closed True"
    wait_until_asleep(int(child))
    os.kill(int(child), signal.SIGTERM)
    assert worker.expect("child exit") == f"child exit {-signal.SIGTERM}"  # as without us
    assert worker.expect("parent") == "parent True"  # the parent's handler is its own
    status, _ = worker.terminate()
    assert status == -signal.SIGTERM
    assert _count(r, namespace, "parent") == 7  # flushed by the parent's handler
    assert worker.error_text() == ""


@pytest.fixture
def paused_redis() -> Iterator[RedisProcess]:
    """A redis-server of the test's own, to be paused with SIGSTOP (resumed before stopping)."""
    need_tool("redis-server", "apt-get install redis-server")
    server = start_redis()
    yield server
    server.process.send_signal(signal.SIGCONT)
    server.stop()


def test_sigterm_while_flush_waits_on_a_paused_redis_ends_within_the_timeout(
    paused_redis: RedisProcess, namespace: str, workers: list[Worker]
) -> None:
    paused_redis.process.send_signal(signal.SIGSTOP)  # before the worker's first connection
    worker = Worker(
        paused_redis.url,
        namespace,
        """
        shutdown.FLUSH_SECONDS = 1.0  # 5 s by default: shortened to keep the test short
        """,
        BUFFERED,
        """
        metrics.flush(timeout=60)  # waits on the paused Redis when SIGTERM comes
        print("flush returned", flush=True)
        """,
    )
    workers.append(worker)
    worker.expect("ready")
    status, seconds = worker.terminate()  # once the main thread waits in flush()
    print(f"\nSIGTERM with Redis paused -> exit: {seconds:.2f} s")
    assert status == -signal.SIGTERM
    assert 0.9 <= seconds < 3.0  # waited for the flush, at most FLUSH_SECONDS (+ margin)
    assert "1000 recorded events not in Redis are lost" in worker.error_text()
    assert worker.lines.empty()  # flush() never returned: the process ended inside it


def test_sigterm_inside_the_buffer_lock_neither_stalls_nor_loses_events(
    redis_url: str, namespace: str, r: redis.Redis, workers: list[Worker]
) -> None:
    """Deterministically: the signal arrives while record() holds the buffer's lock, which the
    flush needs. The handler lets record() go on, and the flush completes after it."""
    worker = Worker(
        redis_url,
        namespace,
        BUFFERED,
        """
        import collections

        class Trap(collections.deque):
            armed = True

            def append(self, event):  # called by EventBuffer.append under its lock
                super().append(event)
                if Trap.armed:
                    Trap.armed = False
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(0.3)  # still holding the lock, after the handler ran
                    print("lock held through the handler", flush=True)

        buffer = metrics._buffer
        with buffer._lock:
            buffer._events = Trap(buffer._events)
        metrics.record("openrouter", 0.1)  # the 1,001st
        time.sleep(60)
        """,
    )
    workers.append(worker)
    started = time.monotonic()
    worker.expect("ready")
    worker.expect("lock held through the handler")
    status = worker.wait()
    seconds = time.monotonic() - started
    assert status == -signal.SIGTERM
    assert seconds < 4.0  # a handler waiting for the flush would wait FLUSH_SECONDS (5 s)
    assert _count(r, namespace, "openrouter") == 1001
    assert worker.error_text() == ""


@pytest.mark.parametrize("run", range(3))
def test_sigterm_during_a_tight_record_loop_does_not_deadlock(
    run: int, redis_url: str, namespace: str, r: redis.Redis, workers: list[Worker]
) -> None:
    worker = Worker(
        redis_url,
        namespace,
        """
        settings = ClientSettings(redis_url=URL, namespace=NAMESPACE, max_buffer=5_000_000)
        metrics = MetricsClient(settings=settings)
        record, n = metrics.record, 0
        while True:
            record("openrouter", 0.1)
            n += 1
            if n % 20_000 == 0:
                print("recorded", n, flush=True)
        """,
    )
    workers.append(worker)
    recorded = int(worker.expect("recorded 60000").split()[1])
    status, seconds = worker.terminate(asleep=False)  # the loop never blocks
    assert status == -signal.SIGTERM
    assert seconds < 3.0
    # everything recorded before the signal is in Redis (the loop may record more meanwhile)
    assert _count(r, namespace, "openrouter") >= recorded
    assert worker.error_text() == ""


def test_a_forked_child_flushes_its_own_events_not_its_parents(
    redis_url: str, namespace: str, r: redis.Redis, workers: list[Worker]
) -> None:
    worker = Worker(
        redis_url,
        namespace,
        """
        metrics = MetricsClient(settings=SETTINGS)
        for _ in range(7):
            metrics.record("parent", 0.1)
        pid = os.fork()  # the child inherits the handler and the client (emptied for it)
        if pid == 0:
            for _ in range(1000):
                metrics.record("openrouter", 0.1)
            print("child", os.getpid(), flush=True)
            time.sleep(60)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        print("child exit", os.waitstatus_to_exitcode(status), flush=True)
        time.sleep(60)
        """,
    )
    workers.append(worker)
    child = int(worker.expect("child").split()[1])
    wait_until_asleep(child)
    os.kill(child, signal.SIGTERM)
    assert worker.expect("child exit") == f"child exit {-signal.SIGTERM}"
    assert _count(r, namespace, "openrouter") == 1000
    assert _count(r, namespace, "parent") == 0  # the parent's events stay the parent's
    status, _ = worker.terminate()
    assert status == -signal.SIGTERM
    assert _count(r, namespace, "parent") == 7


def test_multiprocessing_children_close_their_clients_before_os_exit(
    redis_url: str, namespace: str, r: redis.Redis, workers: list[Worker]
) -> None:
    worker = Worker(
        redis_url,
        namespace,
        """
        import multiprocessing

        context = multiprocessing.get_context("fork")
        metrics = MetricsClient(settings=SETTINGS)  # inherited by the forked children

        def inherited():
            for _ in range(1000):
                metrics.record("inherited", 0.1)

        def own():
            global mine  # held, as a worker holds its client
            mine = MetricsClient(settings=SETTINGS)
            for _ in range(1000):
                mine.record("own", 0.1)

        def task(n):
            for _ in range(n):
                metrics.record("pool", 0.1)
            return n

        for target in (inherited, own):
            child = context.Process(target=target)
            child.start()
            child.join()
            print(target.__name__, child.exitcode, flush=True)
        with context.Pool(2) as pool:
            print("pool", sum(pool.map(task, [250] * 4)), flush=True)
            pool.close()
            pool.join()
        for close in (False, True):  # a bare fork that calls os._exit(): only close() saves it
            pid = os.fork()
            if pid == 0:
                for _ in range(100):
                    metrics.record(f"bare-{close}", 0.1)
                if close:
                    metrics.close()
                os._exit(0)
            os.waitpid(pid, 0)
        print("done", flush=True)
        """,
    )
    workers.append(worker)
    assert worker.expect("inherited") == "inherited 0"
    assert worker.expect("own") == "own 0"
    assert worker.expect("pool") == "pool 1000"
    worker.expect("done")
    assert worker.wait() == 0
    assert _count(r, namespace, "inherited") == 1000
    assert _count(r, namespace, "own") == 1000
    assert _count(r, namespace, "pool") == 1000
    assert _count(r, namespace, "bare-False") == 0  # os._exit() outside multiprocessing
    assert _count(r, namespace, "bare-True") == 100
    assert worker.error_text() == ""


FORKSERVER_MAIN = """
import os, sys
from client import ClientSettings, MetricsClient

URL, NAMESPACE = sys.argv[1], sys.argv[2]
# built at import: again in each forkserver child, which re-imports this module as __mp_main__
metrics = MetricsClient(
    settings=ClientSettings(redis_url=URL, namespace=NAMESPACE, flush_interval_seconds=60)
)


def work():
    for _ in range(1000):
        metrics.record("forkserver", 0.1)


if __name__ == "__main__":
    import multiprocessing

    child = multiprocessing.get_context("forkserver").Process(target=work)
    child.start()
    child.join()  # the child ended with os._exit()
    print("exit", child.exitcode)
"""


def test_a_forkserver_child_closes_the_client_its_main_module_built(
    redis_url: str, namespace: str, r: redis.Redis, tmp_path: Path
) -> None:
    script = tmp_path / "forkserver_main.py"
    script.write_text(FORKSERVER_MAIN)
    done = subprocess.run(
        [sys.executable, str(script), redis_url, namespace],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "exit 0\n", "")
    assert _count(r, namespace, "forkserver") == 1000
