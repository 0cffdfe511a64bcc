"""Garbage-collection pauses in a gateway worker: a full collection's duration in a process that
imported the example gateway (FastAPI, the client, OpenTelemetry), as it comes and after
``gc.freeze()`` (the recipe in ``examples/gateway/gunicorn.conf.py``'s ``post_fork``); and the
objects ``import client`` adds, next to ``import redis`` (which it needs) and FastAPI.

Under saturation, a worker's p99 latency is its full-collection pauses: they scan every object
the process holds, and a worker holds mostly what it imported.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from multiprocessing.queues import Queue

from bench.common import Context, Figure

Result = tuple[int, float, float]
"""(objects tracked by the collector, full collection ms before freeze, after freeze)"""


def _objects_added(module: str) -> int:
    """In a fresh interpreter: nothing else imported first."""
    code = f"import gc; n = len(gc.get_objects()); import {module}; "
    code += "print(len(gc.get_objects()) - n)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(done.stdout)


def _pauses(url: str, namespace: str, out: Queue[Result]) -> None:
    os.environ.update(
        GATEWAYZ_REDIS_URL=url, GATEWAYZ_NAMESPACE=namespace, GATEWAYZ_HANDLE_SIGTERM="0"
    )
    import examples.gateway.app  # noqa: F401  # what a worker holds

    def full_collection_ms() -> float:
        durations = []
        for _ in range(20):
            started = time.perf_counter()
            gc.collect()
            durations.append((time.perf_counter() - started) * 1000)
        return statistics.median(durations)

    objects = len(gc.get_objects())
    before = full_collection_ms()
    gc.freeze()
    after = full_collection_ms()
    out.put((objects, before, after))


def _spawned(target: object, *args: object) -> object:
    spawn = multiprocessing.get_context("spawn")
    out: Queue[object] = spawn.Queue()
    process = spawn.Process(target=target, args=(*args, out), daemon=True)  # type: ignore[arg-type]
    process.start()
    result = out.get(timeout=120)
    process.join(timeout=10)
    return result


def run(ctx: Context) -> list[Figure]:
    figures = []
    for module in ("redis", "fastapi", "client"):
        added = _objects_added(module)
        figures.append(
            Figure("gc", f"objects added by import {module}", added, "objects",
                   peer="" if module == "client" else "a dependency"),
        )  # fmt: skip
    result = _spawned(_pauses, ctx.redis_url, ctx.namespace("gc"))
    assert isinstance(result, tuple)
    objects, before, after = result
    figures += [
        Figure("gc", "full collection in a gateway worker, as imported", before, "ms",
               peer="no freeze", note=f"{objects:,} objects tracked; median of 20"),
        Figure("gc", "full collection in a gateway worker, after gc.freeze()", after, "ms",
               target="< 1.5 ms", met=after < 1.5, note="median of 20"),
    ]  # fmt: skip
    return figures
