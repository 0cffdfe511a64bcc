"""The breaker commands over HTTP: ``python -m aggregator breaker``'s, with its semantics (one
implementation: ``engine.operator_commands``), for operators who work over HTTP.

- ``GET /admin/breakers`` (reader or operator): ``breaker status``;
- ``GET /admin/breakers/{provider}`` (reader or operator): ``breaker status PROVIDER``;
- ``POST /admin/breakers/{provider}/{open|close|reset}[?create=true]`` (operator):
  ``breaker open|close|reset PROVIDER [--create]``.

A change is a POST: no GET changes anything, and every request must carry the token in an
``Authorization`` header, which a browser never adds on its own (no cookie, no CORS: a page of
another origin can neither send it nor read the answer), so a change cannot be forged from a
web page. Answers are JSON: a status answers ``{"namespace", "breakers": [...]}`` (each the
CLI's JSON line; every breaker's adds ``registered``, the names the registry holds, and
``truncated``, true when it holds more than the ``max_providers`` most recently seen shown), a
change the CLI's JSON line; an error ``{"error": code, "detail": text}``:
400 ``invalid_provider``/``unknown_action``/``invalid_create``, 401/403 the access refusals
(``access``: ``token_required``, ``invalid_token``, ``insufficient_scope``, ``commands_off``),
404 ``no_data`` (status) or ``not_registered`` (a change without ``create``), 409 ``conflict``
(the state kept changing), 503 ``redis_error``. Every change asked for, applied or refused, is
one audit log line: the role it came with, what, from where (``gatewayz.aggregator.audit``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

import redis
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from aggregator.core.operator_actions import ACTIONS, CommandResult, command_error, shown_name
from aggregator.engine.cycle import Aggregator, breaker_commands
from aggregator.engine.operator_commands import BreakerCommands, StatusResult
from aggregator.serve.access import Access, error_answer
from aggregator.settings import describe_error

audit = logging.getLogger("gatewayz.aggregator.audit")

RESULT_STATUS: Final = {
    "done": 200,
    "unchanged": 200,
    "no_data": 404,
    "not_registered": 404,
    "conflict": 409,
}
_CREATE_VALUES: Final = {"true": True, "1": True, "false": False, "0": False}


def add_admin(app: FastAPI, aggregator: Aggregator, access: Access) -> None:
    """The ``/admin/breakers`` routes on ``app``."""

    # Built per request: a reader and a writer keep per-instance state (skipped values, op
    # counts) that nothing would take from a long-lived one, nor guard across threads.
    def commands() -> BreakerCommands:
        return breaker_commands(aggregator)

    namespace = aggregator.settings.namespace
    readers = [Depends(access.reader_guard())]
    operators = [Depends(access.operator_guard(_audit_refusal))]

    @app.get(
        "/admin/breakers",
        summary="Every breaker's state (breaker status; reader or operator token)",
        dependencies=readers,
    )
    def breakers() -> JSONResponse:
        return _answer(_run(lambda: commands().status(None)), namespace, every=True)

    @app.get(
        "/admin/breakers/{provider}",
        summary="One breaker's state (breaker status PROVIDER; reader or operator token)",
        dependencies=readers,
    )
    def breaker(provider: str) -> JSONResponse:
        error = command_error("status", provider)
        if error is not None:
            return error_answer(400, "invalid_provider", error)
        return _answer(_run(lambda: commands().status(provider)), namespace)

    @app.post(
        "/admin/breakers/{provider}/{action}",
        summary="Force a breaker open or closed, or reset it (breaker open, close, reset; "
        "operator token)",
        description="action: open, close or reset; create=true forces a provider with no "
        'traffic seen (the CLI\'s --create). README "Circuit breaker".',
        dependencies=operators,
    )
    async def change(
        request: Request, provider: str, action: str, create: str | None = None
    ) -> JSONResponse:
        refusal = _refusal(action, provider, create)
        if refusal is not None:
            _audit(request, action, provider, refusal.status_code, "refused: bad input")
            return refusal
        forced = _CREATE_VALUES[(create or "false").lower()]
        result = await run_in_threadpool(_run, lambda: commands().force(action, provider, forced))
        response = _answer(result, None)
        _audit(request, action, provider, response.status_code, _outcome(result))
        return response


def _refusal(action: str, provider: str, create: str | None) -> JSONResponse | None:
    """The 400 a change's input earns, if any."""
    if action not in ACTIONS:
        listed = ", ".join(ACTIONS)
        return error_answer(400, "unknown_action", f"unknown action {shown_name(action)}: {listed}")
    error = command_error(action, provider)
    if error is not None:
        return error_answer(400, "invalid_provider", error)
    if create is not None and create.lower() not in _CREATE_VALUES:
        return error_answer(
            400, "invalid_create", f"create is true or false, not {shown_name(create)}"
        )
    return None


def _run(command: Callable[[], CommandResult]) -> CommandResult | str:
    """A command's result, or what Redis said instead (credentials redacted)."""
    try:
        return command()
    except (redis.RedisError, OSError) as exc:
        return f"redis: {describe_error(exc)}"


def _answer(
    result: CommandResult | str, namespace: str | None, every: bool = False
) -> JSONResponse:
    """A command's result as the HTTP answer: a status's rows under ``breakers`` (with the
    ``namespace``; ``every`` breaker's: with how many are registered, and whether more than
    shown), a change's one row as it is; an error as ``{"error", "detail"}``."""
    if isinstance(result, str):
        return error_answer(503, "redis_error", result)
    status = RESULT_STATUS[result.kind]
    if status != 200:
        detail = result.message
        if result.kind == "not_registered":
            detail += "; add ?create=true to force it anyway"
        return error_answer(status, result.kind, detail)
    if namespace is not None:
        answer: dict[str, object] = {"namespace": namespace, "breakers": list(result.rows)}
        if every and isinstance(result, StatusResult):
            answer |= {"registered": result.registered, "truncated": result.truncated}
        return JSONResponse(answer)
    (row,) = result.rows
    return JSONResponse(row)


def _outcome(result: CommandResult | str) -> str:
    """What the audit line says a change came to."""
    if isinstance(result, str):
        return "result=redis_error"
    if result.kind != "done":
        return f"result={result.kind}"
    (row,) = result.rows
    return f"result=done state={row['state']} epoch={row['epoch']} forced={row['forced']}"


def _audit(request: Request, action: str, provider: str, status: int, outcome: str) -> None:
    """One line per change asked for: the role, what, from where, what came of it."""
    role = getattr(request.state, "role", None) or "none"
    client = request.client
    where = f"{client.host}:{client.port}" if client else "unknown"
    audit.log(
        logging.INFO if status < 400 else logging.WARNING,
        "breaker command over HTTP: role=%s action=%s provider=%s client=%s status=%d %s",
        role,
        shown_name(action),
        shown_name(provider),
        where,
        status,
        outcome,
    )


def _audit_refusal(request: Request, status: int) -> None:
    params = request.path_params
    action, provider = str(params.get("action", "")), str(params.get("provider", ""))
    reason = "no operator token" if status == 401 else "not the operator role"
    _audit(request, action, provider, status, f"refused: {reason}")
