"""An operator command with every Redis command it sends logged:
``python -m devtools.torture.opcmd LOG.json -- breaker status ...`` runs
``python -m aggregator breaker status ...`` unchanged, except that each command leaving any
redis-py connection (plain, pipelined or routed to a cluster node) is parsed from the bytes
sent and written to LOG.json when it exits: ``[[name, key...], ...]``.

The checker asks Redis which of them write (``COMMAND INFO`` flags), so "read-only commands
changed nothing" is checked against what was sent, not against what the code meant to send.
"""

from __future__ import annotations

import atexit
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from redis.connection import AbstractConnection

SENT: list[list[str]] = []


def parse_requests(data: bytes) -> Iterator[list[bytes]]:
    """The RESP arrays of bulk strings in ``data`` (what a client sends), in order."""
    at = 0
    while at < len(data):
        if data[at : at + 1] != b"*":
            return
        end = data.index(b"\r\n", at)
        count, at = int(data[at + 1 : end]), end + 2
        args = []
        for _ in range(count):
            end = data.index(b"\r\n", at)
            size = int(data[at + 1 : end])
            args.append(data[end + 2 : end + 2 + size])
            at = end + 2 + size + 2
        yield args


def _keys_of(args: list[bytes]) -> list[str]:
    """The keys a command names: every KEYS[] of a script, else its first argument."""
    name = args[0].decode().upper()
    if name in ("EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO") and len(args) > 2:
        count = int(args[2])
        return [a.decode("utf-8", "replace") for a in args[3 : 3 + count]]
    return [args[1].decode("utf-8", "replace")] if len(args) > 1 else []


def _record(command: Any) -> None:
    chunks = [command] if isinstance(command, bytes | bytearray | memoryview) else command
    data = b"".join(bytes(chunk) for chunk in chunks)
    for args in parse_requests(data):
        if args:
            SENT.append([args[0].decode().upper(), *_keys_of(args)])


def install(log: Path) -> None:
    original: Any = AbstractConnection.send_packed_command

    def send_packed_command(self: Any, command: Any, check_health: bool = True) -> None:
        try:
            _record(command)
        except Exception as exc:  # a parse failure must show, not hide a write
            SENT.append(["UNPARSED", type(exc).__name__])
        original(self, command, check_health)

    AbstractConnection.send_packed_command = send_packed_command  # type: ignore[method-assign]
    atexit.register(lambda: log.write_text(json.dumps(SENT)))


def main(argv: list[str]) -> int:
    log, rest = Path(argv[0]), argv[1:]
    if rest[:1] == ["--"]:
        rest = rest[1:]
    install(log)
    from aggregator.__main__ import main as aggregator_main

    try:
        return aggregator_main(rest)
    finally:
        log.write_text(json.dumps(SENT))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
