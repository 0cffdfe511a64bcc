"""Who may do what over HTTP: two bearer tokens, two roles.

- **reader** (``--auth-token-file``): the data endpoints (/metrics, /health/*, the schema, the
  breakers' status). Without that token they are open, as before.
- **operator** (``--operator-token-file``): whatever a reader may, plus the breaker commands
  that change state (``POST /admin/breakers/...``). Without that token no request may change
  anything over HTTP.

Answers (RFC 6750), JSON as every error of the API, ``{"error": code, "detail": text}``
(``Refused``): no ``Authorization: Bearer`` header (or another scheme, or an empty token) ->
**401** ``token_required`` with ``WWW-Authenticate: Bearer``; a token that is neither -> **401**
``invalid_token`` with ``error="invalid_token"``; the reader's token on an operator route ->
**403** ``insufficient_scope`` with ``error="insufficient_scope"`` (authenticated, not
allowed); an operator route while no operator token is configured -> **403** ``commands_off``.
Tokens are compared in constant time, both of them every time. The role a request was let in
with is left in ``request.state.role`` (``None``: an open route without a token) for the audit
line.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping
from typing import Final, Literal

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse

Role = Literal["reader", "operator"]

OPERATOR_OFF: Final = (
    "breaker commands over HTTP are off: start the aggregator with --operator-token-file"
)


class Refused(HTTPException):
    """A request turned away: answered ``{"error": code, "detail": text}`` (``answer``), with
    its ``WWW-Authenticate`` challenge if any."""

    def __init__(self, status_code: int, code: str, detail: str, challenge: str | None = None):
        headers = None if challenge is None else {"WWW-Authenticate": challenge}
        super().__init__(status_code, detail, headers=headers)
        self.code = code

    def answer(self) -> JSONResponse:
        return error_answer(self.status_code, self.code, self.detail, self.headers)


def error_answer(
    status: int, code: str, detail: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """An error of the API, every one alike: ``{"error": code, "detail": text}``."""
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


async def refused_answer(request: Request, exc: Exception) -> JSONResponse:
    """The app's handler of ``Refused`` (``app.add_exception_handler(Refused, ...)``)."""
    assert isinstance(exc, Refused)
    return exc.answer()


class Access:
    """The two tokens (None: not configured) and the guards built from them."""

    def __init__(self, reader_token: str | None, operator_token: str | None) -> None:
        self._reader = None if reader_token is None else reader_token.encode("ascii")
        self._operator = None if operator_token is None else operator_token.encode("ascii")

    @property
    def operator_enabled(self) -> bool:
        return self._operator is not None

    @property
    def reader_required(self) -> bool:
        """Whether the data endpoints need a token (the reader's or the operator's)."""
        return self._reader is not None

    def role_of(self, authorization: str) -> Role | None:
        """The role an ``Authorization`` header value proves: None for a bearer token that is
        neither; Refused 401 without a bearer token at all."""
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise Refused(401, "token_required", "bearer token required", "Bearer")
        # Starlette decodes header bytes as latin-1: encoding back gives the bytes sent.
        sent = credentials.strip().encode("latin-1")
        is_operator = self._operator is not None and hmac.compare_digest(sent, self._operator)
        is_reader = self._reader is not None and hmac.compare_digest(sent, self._reader)
        if is_operator:
            return "operator"
        return "reader" if is_reader else None

    def reader_guard(self) -> Callable[[Request], Awaitable[None]]:
        """A dependency that lets a request through with either token; with no reader token
        configured, every request (the data endpoints stay open as before)."""

        async def guard(request: Request) -> None:  # async: no thread hop for a header check
            request.state.role = None
            request.state.role = self.reader_role(request.headers.get("authorization"))

        return guard

    def reader_role(self, authorization: str | None) -> Role | None:
        """The role a data endpoint lets a request in with (None: no reader token configured,
        every request is let in); Refused 401 when it is refused."""
        if self._reader is None:
            return None
        role = self.role_of(authorization or "")
        if role is None:
            raise _invalid_token()
        return role

    def operator_guard(
        self, refused: Callable[[Request, int], None] = lambda request, status: None
    ) -> Callable[[Request], Awaitable[None]]:
        """A dependency that lets a request through with the operator token only; ``refused``
        hears of each request turned away (its status) before the answer goes."""

        async def guard(request: Request) -> None:
            request.state.role = None
            if self._operator is None:
                refused(request, 403)
                raise Refused(403, "commands_off", OPERATOR_OFF)
            try:
                role = self.role_of(request.headers.get("authorization", ""))
            except Refused:
                refused(request, 401)
                raise
            request.state.role = role
            if role is None:
                refused(request, 401)
                raise _invalid_token()
            if role != "operator":
                refused(request, 403)
                raise Refused(
                    403,
                    "insufficient_scope",
                    "this token may read, not change: breaker commands need the operator token",
                    'Bearer error="insufficient_scope"',
                )

        return guard


def _invalid_token() -> Refused:
    return Refused(401, "invalid_token", "invalid bearer token", 'Bearer error="invalid_token"')
