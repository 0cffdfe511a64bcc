"""ASGI middleware recording ``fastapi_requests_total`` and ``fastapi_requests_duration_seconds``
with the route template (``/v1/chat/{id}``), never the raw path, as the ``path`` label."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from client._gateway import GatewayMetrics
from client._instruments import Series
from client._outcome import plain_status

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("gatewayz.metrics.client")

MAX_CACHED_REQUESTS = 1024
"""(method, route, status) combinations whose series are remembered (beyond: looked up)."""

UNMATCHED = "__unmatched__"
"""The ``path`` label of a request no route matched (404s): raw paths would be unbounded."""


def route_template(scope: Scope) -> str:
    """The matched route's path template, with the mount prefix of a mounted sub-application.
    FastAPI puts its routes in the scope; a plain Starlette route (FastAPI's own ``/docs``,
    ``/openapi.json``) leaves only its endpoint there, found back in the router."""
    route = scope.get("route")
    if route is None and scope.get("endpoint") is not None:
        endpoint = scope["endpoint"]
        for candidate in getattr(scope.get("router"), "routes", ()):
            if getattr(candidate, "endpoint", None) is endpoint:
                route = candidate
                break
    path = getattr(route, "path", None) or getattr(route, "path_format", None)
    if not isinstance(path, str):
        return UNMATCHED
    return f"{scope.get('root_path', '')}{path}" if scope.get("root_path") else path


class MetricsMiddleware:
    """``app.add_middleware(MetricsMiddleware, gateway=GatewayMetrics(metrics, "gatewayz"))``.

    Times the whole request (the streamed body included) and counts it with the status its
    response started with. An exception escaping the app before that counts as a 500; one after
    it (a stream broken mid-body) counts with the status already sent, which is what the client
    got. Lifespan and websocket traffic pass through untouched."""

    def __init__(self, app: ASGIApp, gateway: GatewayMetrics) -> None:
        self.app = app
        self.gateway = gateway
        # (method, path, status) -> the two series a request updates: resolved once, not per
        # request (two label lookups were most of the booking's cost). Bounded: the method
        # comes from the client.
        self._booked: dict[tuple[str, str, int], tuple[Series | None, Series | None]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message.get("type") == "http.response.start":
                status = message.get("status", 500)
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            self._book(scope, status, time.perf_counter() - started)

    def _book(self, scope: Scope, status: object, seconds: float) -> None:
        """Count the request; whatever the app put in the scope, never raise into it."""
        try:
            method = str(scope.get("method", ""))
            path = route_template(scope)
            code = plain_status(status)  # Starlette sends an HTTPStatus as it was given
            if type(code) is not int:
                code = 500
            key = (method, path, code)
            booked = self._booked.get(key)
            if booked is None:
                booked = self._resolve(key)
            requests, duration = booked
            if requests is None:
                self.gateway.requests.count_drop()
            if duration is None:
                self.gateway.request_duration.count_drop()
            self.gateway.client._instruments.update(
                [(requests, 1)] if requests is not None else (),
                [(duration, seconds, None)] if duration is not None else (),
            )
        except Exception:
            log.exception("request metrics not recorded")

    def _resolve(self, key: tuple[str, str, int]) -> tuple[Series | None, Series | None]:
        method, path, code = key
        gateway = self.gateway
        booked = (
            gateway.requests.series(gateway.app_name, method, path, str(code), f"{code // 100}xx"),
            gateway.request_duration.series(gateway.app_name, method, path),
        )
        if len(self._booked) < MAX_CACHED_REQUESTS:
            self._booked[key] = booked
        return booked
