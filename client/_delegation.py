"""``delegated``: a method of one of the client's parts, offered as the client's own.

The client composes small parts (a metric registry, the breaker queries...) instead of mixing
their methods in; a delegated method keeps the part's signature (for type checkers) and
docstring (for ``help()`` and the API docs), and costs one attribute lookup per call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

P = ParamSpec("P")
R = TypeVar("R")


class delegated(Generic[P, R]):
    """``counter = delegated("_metrics", MetricRegistry.counter)``: ``client.counter(...)`` calls
    ``client._metrics.counter(...)``."""

    def __init__(self, part: str, method: Callable[Concatenate[Any, P], R]) -> None:
        self._part = part
        self._name = method.__name__
        self.__doc__ = method.__doc__
        self.__wrapped__ = method

    @overload
    def __get__(self, owner: None, kind: type) -> delegated[P, R]: ...

    @overload
    def __get__(self, owner: object, kind: type) -> Callable[P, R]: ...

    def __get__(self, owner: object | None, kind: type) -> delegated[P, R] | Callable[P, R]:
        if owner is None:
            return self
        method: Callable[P, R] = getattr(getattr(owner, self._part), self._name)
        return method
