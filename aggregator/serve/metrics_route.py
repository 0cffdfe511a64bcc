"""GET and HEAD /metrics answered from the rendered bytes ahead of FastAPI's routing.

A scrape of a body already rendered (``RenderedMetrics.cached``) needs nothing of the framework:
no request object, no dependency, no response object. Answered here, as plain ASGI messages, it
costs a fraction of the GIL time it cost through FastAPI's route, dependency and response layers,
so a scrape waits less behind a cycle's or a render's threads (the tail of a scrape at 1,000
providers is GIL time). Everything else goes to the application as before, and so does a
/metrics request for a body not rendered yet (the route checks the token, then renders it in a
worker thread). A request for a rendered body is checked as the route checks it (the same
guard, one token comparison), and refused as the app refuses it (``Refused.answer``).
It sits inside the trusted-host check, which stays Starlette's own. The answer is the route's,
header for header (the tests compare).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from aggregator.serve.access import Access, Refused
from aggregator.serve.rendering import RenderedMetrics, accepts_gzip

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class MetricsFastPath:
    """ASGI middleware (``app.add_middleware(MetricsFastPath, rendered=..., access=...)``)."""

    def __init__(self, app: ASGIApp, rendered: RenderedMetrics, access: Access) -> None:
        self._app = app
        self._rendered = rendered
        self._access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] == "/metrics"
            and scope["method"] in ("GET", "HEAD")
        ):
            # as Starlette reads them: the first of each name, latin-1
            found: dict[bytes, str] = {}
            for name, value in scope["headers"]:
                if name in _READ and name not in found:
                    found[name] = value.decode("latin-1")
            gzipped = accepts_gzip(found.get(b"accept-encoding"))
            # not asked for here: a body rendered is one asked for (and a request refused
            # below must not make a format rendered every cycle, as through the route)
            cached = self._rendered.cached(found.get(b"accept"), gzipped, ask=False)
            if cached is not None:
                await self._answer(scope, receive, send, cached, gzipped, found)
                return
        await self._app(scope, receive, send)

    async def _answer(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        cached: tuple[bytes, str],
        gzipped: bool,
        found: dict[bytes, str],
    ) -> None:
        """The route's answer: the body, or the reader guard's refusal as FastAPI answers it."""
        try:
            self._access.reader_role(found.get(b"authorization"))
        except Refused as refused:
            await refused.answer()(scope, receive, send)
            return
        body, content_type = cached
        # the headers Starlette's Response writes for the route's: its own, then the length
        # and the type
        raw = [(b"vary", b"Accept-Encoding")]
        if gzipped:
            raw.append((b"content-encoding", b"gzip"))
        raw.append((b"content-length", str(len(body)).encode("latin-1")))
        if content_type.startswith("text/") and "charset=" not in content_type.lower():
            content_type += "; charset=utf-8"
        raw.append((b"content-type", content_type.encode("latin-1")))
        await send({"type": "http.response.start", "status": 200, "headers": raw})
        await send({"type": "http.response.body", "body": body})


_READ = (b"accept", b"accept-encoding", b"authorization")
