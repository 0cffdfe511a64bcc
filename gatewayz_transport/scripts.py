"""Lua scripts run by their SHA, alone or queued in pipelines, loaded again when Redis forgot
them (a restart, a failover, ``SCRIPT FLUSH``). The scripts' text is the contract's
(``gatewayz_protocol.scripts``)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from typing import Any

import redis
from redis.client import Pipeline
from redis.commands.core import Script
from redis.typing import EncodableT, KeyT

from gatewayz_transport.connection import Connection

_CALLED = re.compile(r"""redis\.p?call\(\s*['"]([A-Za-z|-]+)['"]""")
_bodies: dict[str, str] = {}
"""SHA -> body of every script this process made (both forms of a flagged one), so a refusal
that names a script's line can say which command that line runs."""


def command_at(sha: str, line: int) -> str | None:
    """The command (lower case) that line ``line`` of the script ``sha`` runs, if this process
    knows the script and the line names one."""
    lines = _bodies.get(sha, "").split("\n")
    if not 0 < line <= len(lines):
        return None
    called = _CALLED.search(lines[line - 1])
    return called.group(1).lower() if called else None


class FlaggedScript(Script):
    """A script that may start with a Redis 7 flags line (``#!lua flags=...``). A server that
    cannot run it (Redis 6, fakeredis: "unexpected symbol near '#'") gets it without the line:
    the same script, without the flags' privileges."""

    def __init__(self, registered_client: Any, script: str) -> None:
        super().__init__(registered_client, script)
        _bodies[self.sha] = script
        if script.startswith("#!"):
            unflagged = script.split("\n", 1)[1]
            _bodies[hashlib.sha1(unflagged.encode()).hexdigest()] = unflagged

    def load(self) -> str:
        """Load the script into Redis's cache; returns the SHA later calls use."""
        try:
            self.sha = self.registered_client.script_load(self.script)
        except redis.ResponseError as exc:
            if not self._drop_flags(exc):
                raise
            self.sha = self.registered_client.script_load(self.script)
        return self.sha

    def __call__(
        self,
        keys: Sequence[KeyT] | None = None,
        args: Iterable[EncodableT] | None = None,
        client: Any = None,
    ) -> Any:
        """EVALSHA; when Redis does not know the script (or cannot run its flags), load it and
        run it again. (For pipelines: ScriptCalls.)"""
        keys, args = list(keys or []), list(args or [])
        connection = self.registered_client if client is None else client
        for attempt in range(3):  # unknown, then (fakeredis) unreadable flags, then run
            try:
                return connection.evalsha(self.sha, len(keys), *keys, *args)
            except redis.ResponseError as exc:
                if attempt == 2 or not may_run_again(exc):
                    raise
                if not self._drop_flags(exc):
                    self.load()
        raise AssertionError("unreachable")

    def _drop_flags(self, exc: BaseException) -> bool:
        """Drop the flags line when ``exc`` says the server cannot read it; True if dropped."""
        body = self.script if isinstance(self.script, str) else bytes(self.script).decode()
        if not (body.startswith("#!") and _no_flags_support(exc)):
            return False
        self.script = body.split("\n", 1)[1]
        self.sha = self.registered_client.script_load(self.script)
        return True


def _no_flags_support(exc: BaseException) -> bool:
    text = str(exc)
    return "near '#'" in text or "shebang" in text.lower()


def may_run_again(exc: BaseException) -> bool:
    """A script call that did nothing because Redis did not know the script, or could not
    read its flags line: loading it and calling again is safe."""
    return isinstance(exc, redis.exceptions.NoScriptError) or _no_flags_support(exc)


def register(connection: Connection, source: str) -> FlaggedScript:
    """``connection.register_script(source)`` for scripts that may carry Redis 7 flags."""
    return FlaggedScript(connection, source)


class ScriptCalls:
    """Script calls queued in one pipeline by their SHA (EVALSHA).

    redis-py's own pipelined scripts cost a ``SCRIPT EXISTS`` round trip before every
    execution; here the script body travels only when Redis does not know it (a restart, a
    failover, ``SCRIPT FLUSH``). A call that met NOSCRIPT did nothing, while the rest of its
    pipeline (or transaction: Redis reports NOSCRIPT at EXEC time and runs the other commands)
    did: ``rerun_missing`` runs exactly those calls again, loading their script, so each call
    takes effect once.
    """

    def __init__(self, pipe: Pipeline) -> None:
        self._pipe = pipe
        self._calls: list[tuple[int, FlaggedScript, Sequence[Any], Sequence[Any]]] = []

    def queue(self, script: FlaggedScript, keys: Sequence[Any], args: Sequence[Any]) -> int:
        """Queue one call; returns the index of its reply in the pipeline's replies."""
        index = len(self._pipe)
        # EVALSHA by name: a cluster pipeline refuses ``evalsha()`` but routes this by its keys
        self._pipe.execute_command(  # type: ignore[no-untyped-call]
            "EVALSHA", script.sha, len(keys), *keys, *args
        )
        self._calls.append((index, script, keys, args))
        return index

    @property
    def indexes(self) -> list[int]:
        """Where the queued calls' replies are, in the pipeline's replies."""
        return [index for index, _, _, _ in self._calls]

    def missing(self, replies: list[Any]) -> list[int]:
        """The indexes, in ``replies``, of the calls that did nothing because Redis did not know
        their script (or could not read its flags): for a caller that sends them again itself,
        after loading the script, instead of ``rerun_missing()`` (whose run outside the
        transaction may itself be refused, for memory say, when nothing retries it)."""
        return [
            index
            for index, _, _, _ in self._calls
            if isinstance(replies[index], Exception) and may_run_again(replies[index])
        ]

    def rerun_missing(self, replies: list[Any]) -> list[Any]:
        """``replies`` (from ``execute(raise_on_error=False)``) with every NOSCRIPT reply
        replaced by the reply of the call run again, or by the error that run met: the
        pipeline itself ran, so an error here must not make the caller send it again."""
        for index, script, keys, args in self._calls:
            if may_run_again(replies[index]):
                try:
                    replies[index] = script(keys=keys, args=args)
                except (redis.RedisError, OSError) as exc:
                    replies[index] = exc
        return replies
