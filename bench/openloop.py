"""An open-loop HTTP load generator: ``python -m bench.openloop PORT PATH RATE SECONDS`` sends GET
requests at a fixed rate, whatever the answers' latency, and prints one JSON object: every
request's latency in seconds, the errors, and how late the sends were against their schedule.

Open loop, unlike ``wrk``: a slow answer does not delay the next request (no coordinated
omission). Each request is timed from the moment it was due to be sent, or later when the
generator itself was late waking up (an event loop's timers fire up to a millisecond late: that
lag is the generator's, measured and printed, not the server's). A request that finds no free
keep-alive connection waits for one, and that wait counts as latency. Run in its own process,
with the collector off, so none of the benchmark's own garbage is timed.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys

CONNECTIONS = 32


async def drive(port: int, path: str, rate: float, seconds: float) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(CONNECTIONS):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    latencies: list[float] = []
    lags: list[float] = []
    errors: list[str] = []

    async def one() -> None:
        started = loop.time()
        reader, writer = await pool.get()
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            latencies.append(loop.time() - started)
            if head[9:12] != b"200":
                errors.append(head[:12].decode(errors="replace"))
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            errors.append(repr(exc))
            return  # the connection is not put back: it is broken
        pool.put_nowait((reader, writer))

    tasks = []
    start = loop.time() + 0.05
    for index in range(int(rate * seconds)):
        due = start + index / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        lags.append(max(0.0, loop.time() - due))
        tasks.append(asyncio.ensure_future(one()))
    await asyncio.gather(*tasks)
    while not pool.empty():
        pool.get_nowait()[1].close()
    return {"latencies": latencies, "errors": errors[:5], "error_count": len(errors),
            "lags": sorted(lags)}  # fmt: skip


def main() -> None:
    port, path, rate, seconds = sys.argv[1:5]
    gc.disable()
    result = asyncio.run(drive(int(port), path, float(rate), float(seconds)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
