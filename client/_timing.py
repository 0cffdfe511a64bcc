"""A block timed or watched by a metric, as a context manager and as a decorator: the shape of
prometheus_client's ``Histogram.time()``, ``Gauge.track_inprogress()`` and
``Counter.count_exceptions()``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

_F = TypeVar("_F", bound=Callable[..., Any])

Exit = Callable[[float, BaseException | None], None]
"""Called after the block: its duration in seconds and the exception leaving it (or None)."""


class Scope:
    """``with metric.time():`` or ``@metric.time()``: ``on_enter()`` before the block,
    ``on_exit(seconds, exception)`` after it. The exception is never swallowed. As a decorator,
    each call of the function gets a scope of its own (safe across threads)."""

    def __init__(
        self, clock: Callable[[], float], on_exit: Exit, on_enter: Callable[[], None] | None = None
    ) -> None:
        self._clock = clock
        self._on_exit = on_exit
        self._on_enter = on_enter
        self._started = 0.0

    def __enter__(self) -> Scope:
        if self._on_enter is not None:
            self._on_enter()
        self._started = self._clock()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._on_exit(max(0.0, self._clock() - self._started), exc)

    def __call__(self, function: _F) -> _F:
        @functools.wraps(function)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            with Scope(self._clock, self._on_exit, self._on_enter):
                return function(*args, **kwargs)

        return wrapped  # type: ignore[return-value]
