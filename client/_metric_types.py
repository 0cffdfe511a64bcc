"""Counter, Gauge, Histogram, Summary and Info handles with labels, with prometheus_client's
methods and signatures, over the instrument store.

``labels()`` with the wrong label names or count raises ValueError (as prometheus_client does:
a programming error that shows at the first call). Every update (``inc``, ``dec``, ``set``,
``observe``, ``info``...) never raises: an invalid value (a negative counter increment, NaN, inf,
not a number) is rejected and counted; an update past the series cap is dropped and counted; an
update of a declaration that conflicts with the metric's first one is refused and counted. Label
values longer than the store's bound are truncated (``gatewayz_protocol.labels``) and counted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from client._exemplars import valid_exemplar
from client._instruments import InstrumentStore, Series
from client._timing import Scope
from gatewayz_protocol.labels import bounded_label_value
from gatewayz_protocol.names import is_valid_label_name
from gatewayz_protocol.specs import MetricSpec

MAX_VALUE = 1e15
"""Largest magnitude one update may carry: far above any real increment, far below the 64-bit
integers Redis adds (so a pre-aggregated batch can never overflow a hash field)."""


def _number(amount: object, allow_negative: bool = False) -> float | None:
    """``amount`` as a float when it is a valid update, else None (never raises)."""
    try:
        number = float(amount)  # type: ignore[arg-type]
    except Exception:
        return None
    low = -MAX_VALUE if allow_negative else 0.0
    return number if low <= number <= MAX_VALUE else None


def _label_value(value: object) -> str:
    """A label value as a string Redis can store: ``str()`` (as prometheus_client), with lone
    surrogates replaced, and a placeholder for an object whose ``str()`` fails."""
    try:
        text = value if type(value) is str else str(value)
    except Exception:
        text = f"<unprintable {type(value).__name__}>"
    return text.encode("utf-8", "replace").decode("utf-8")


class _Metric:
    def __init__(self, store: InstrumentStore, spec: MetricSpec, refused: bool = False):
        """``refused``: a declaration that conflicts with the metric's first one in this
        process; every update of it is counted as refused (``count_conflict``)."""
        self._store = store
        self.spec = spec
        self._children: dict[tuple[str, ...], Any] = {}
        self._refused = (
            _Refused(store, lambda: store.count("conflicts", spec.name)) if refused else None
        )

    def labels(self, *values: object, **named: object) -> Any:
        """The child for one label set (as prometheus_client's ``labels()``)."""
        if named or len(values) != len(self.spec.labelnames):
            values = self._values(values, named)
        key = tuple(map(_label_value, values))
        # A character is at most 4 bytes: most label sets are cleared by their total length.
        if len("".join(key)) * 4 > self._store.max_label_value_bytes:
            key = self._bounded(key, count=True)
        if self._refused is not None:
            return self._refused
        child = self._children.get(key)
        if child is None:
            series = self._store.get_series(self.spec, key)
            if series is None:
                return _Refused(self._store, lambda: self._store.count_drop(self.spec.name))
            child = self._children[key] = self._child(series)
        return child

    def remove(self, *values: object) -> None:
        """Forget one label set in this process, as prometheus_client's ``remove()``: a gauge's
        or info's value is withdrawn at the next flush; a counter's or histogram's total stays
        in Redis (other processes add to it) until it expires."""
        if not self.spec.labelnames:
            raise ValueError(f"{self.spec.name} has no labels")
        key = self._bounded(tuple(map(_label_value, self._values(values, {}))), count=False)
        self._children.pop(key, None)
        self._store.remove(self.spec, [key])

    def clear(self) -> None:
        """Forget every label set in this process (``remove()`` of each)."""
        keys, self._children = list(self._children), {}
        self._store.remove(self.spec, keys)

    def _values(
        self, values: tuple[object, ...], named: Mapping[str, object]
    ) -> tuple[object, ...]:
        """The label values in declaration order; ValueError for the wrong names or count."""
        names = self.spec.labelnames
        if named:
            if values or set(named) != set(names):
                raise ValueError(f"{self.spec.name}: labels are {names}, got {sorted(named)}")
            values = tuple(named[n] for n in names)
        if len(values) != len(names):
            raise ValueError(f"{self.spec.name}: expected {len(names)} label values")
        return values

    def _bounded(self, key: tuple[str, ...], count: bool) -> tuple[str, ...]:
        """Each value at most the store's bound (``bounded_label_value``); ``count``: the
        values cut are counted."""
        limit = self._store.max_label_value_bytes
        bounded = tuple(bounded_label_value(text, limit) for text in key)
        cut = sum(b is not text for b, text in zip(bounded, key, strict=True))
        if cut and count:
            self._store.count("truncated", self.spec.name, cut)
        return bounded

    def series(self, *values: object) -> Series | None:
        """The series ``labels(*values)`` updates; None past the cardinality cap (its updates
        are dropped and counted) or for a refused declaration."""
        series: Series | None = getattr(self.labels(*values), "_series", None)
        return series

    def count_drop(self) -> None:
        """One update of a series past the cap (or of a refused declaration), counted."""
        if self._refused is not None:
            self._store.count("conflicts", self.spec.name)
        else:
            self._store.count_drop(self.spec.name)

    def _child(self, series: Series) -> Any:
        raise NotImplementedError

    def _unlabelled(self) -> Any:
        if self.spec.labelnames:
            raise ValueError(f"{self.spec.name} has labels: use .labels(...)")
        return self.labels()


class _Refused:
    """A series past the cardinality cap, or of a conflicting declaration: every update is
    counted (``count``), none is kept. Has every child's methods."""

    def __init__(self, store: InstrumentStore, count: Callable[[], None]):
        self._clock, self._count = store.clock, count

    def _refuse(self, *_: object, **__: object) -> None:
        self._count()

    inc = dec = set = observe = info = set_to_current_time = _refuse

    def time(self) -> Scope:
        return Scope(self._clock, lambda _, __: self._count())

    def track_inprogress(self) -> Scope:
        return Scope(self._clock, lambda _, __: self._count(), self._count)

    def count_exceptions(self, exception: Any = Exception) -> Scope:
        return Scope(
            self._clock, lambda _, exc: self._count() if isinstance(exc, exception) else None
        )


class _Child:
    def __init__(self, store: InstrumentStore, series: Series):
        self._store, self._series = store, series

    def _valid(self, value: object, allow_negative: bool) -> float | None:
        number = _number(value, allow_negative)
        if number is None:
            self._store.count_reject(self._series.spec.name)
        return number


class _CounterChild(_Child):
    def inc(self, amount: float = 1, exemplar: Mapping[str, str] | None = None) -> None:
        """As prometheus_client's: ``exemplar`` labels (``{"trace_id": ...}``) link the
        increment to a trace on the OpenMetrics ``_total`` sample (an invalid one is left
        out)."""
        number = _number(amount)
        if number is None:
            self._store.count_reject(self._series.spec.name)
        else:
            labels = valid_exemplar(exemplar) if exemplar is not None else None
            self._store.add(self._series, amount if type(amount) is int else number, labels)

    def count_exceptions(self, exception: Any = Exception) -> Scope:
        """Count the exceptions of type ``exception`` (a class or a tuple of them) that leave a
        block or a decorated function; they are re-raised."""
        return Scope(
            self._store.clock, lambda _, exc: self.inc() if isinstance(exc, exception) else None
        )


class CounterMetric(_Metric):
    def _child(self, series: Series) -> _CounterChild:
        return _CounterChild(self._store, series)

    def inc(self, amount: float = 1, exemplar: Mapping[str, str] | None = None) -> None:
        self._unlabelled().inc(amount, exemplar)

    def count_exceptions(self, exception: Any = Exception) -> Scope:
        return self._unlabelled().count_exceptions(exception)  # type: ignore[no-any-return]


class _GaugeChild(_Child):
    def set(self, value: float) -> None:
        number = self._valid(value, allow_negative=True)
        if number is not None:
            self._store.set_gauge(self._series, number)

    def inc(self, amount: float = 1) -> None:
        number = self._valid(amount, allow_negative=True)
        if number is not None:
            self._store.set_gauge(self._series, None, number)

    def dec(self, amount: float = 1) -> None:
        number = self._valid(amount, allow_negative=True)
        if number is not None:
            self._store.set_gauge(self._series, None, -number)

    def set_to_current_time(self) -> None:
        """The current Unix time, in seconds."""
        self.set(self._store.wall())

    def track_inprogress(self) -> Scope:
        """Up by one while a block or a decorated function runs."""
        return Scope(self._store.clock, lambda _, __: self.dec(), self.inc)

    def time(self) -> Scope:
        """Set to the duration of a block or a decorated function, in seconds."""
        return Scope(self._store.clock, lambda seconds, _: self.set(seconds))


class GaugeMetric(_Metric):
    def _child(self, series: Series) -> _GaugeChild:
        return _GaugeChild(self._store, series)

    def set(self, value: float) -> None:
        self._unlabelled().set(value)

    def inc(self, amount: float = 1) -> None:
        self._unlabelled().inc(amount)

    def dec(self, amount: float = 1) -> None:
        self._unlabelled().dec(amount)

    def set_to_current_time(self) -> None:
        self._unlabelled().set_to_current_time()

    def track_inprogress(self) -> Scope:
        return self._unlabelled().track_inprogress()  # type: ignore[no-any-return]

    def time(self) -> Scope:
        return self._unlabelled().time()  # type: ignore[no-any-return]


class _HistogramChild(_Child):
    def __init__(self, store: InstrumentStore, series: Series):
        super().__init__(store, series)
        self._negative_ok = series.spec.buckets[0] < 0

    def observe(self, amount: float, exemplar: Mapping[str, str] | None = None) -> None:
        """As prometheus_client's: ``exemplar`` labels (e.g. ``{"trace_id": ...}``) link the
        observation's bucket to a trace in the OpenMetrics exposition (an invalid one is left
        out). A negative value is valid when the first bucket is negative (the histogram then
        has no ``_sum``); else it is rejected: OpenMetrics refuses a negative ``_sum``."""
        number = _number(amount, self._negative_ok)
        if number is None:
            self._store.count_reject(self._series.spec.name)
        else:
            labels = valid_exemplar(exemplar) if exemplar is not None else None
            self._store.observe(self._series, number, labels)

    def time(self) -> Scope:
        """Observe the duration of a block or a decorated function, in seconds."""
        return Scope(self._store.clock, lambda seconds, _: self.observe(seconds))


class HistogramMetric(_Metric):
    def _child(self, series: Series) -> _HistogramChild:
        return _HistogramChild(self._store, series)

    def observe(self, amount: float, exemplar: Mapping[str, str] | None = None) -> None:
        self._unlabelled().observe(amount, exemplar)

    def time(self) -> Scope:
        return self._unlabelled().time()  # type: ignore[no-any-return]


class _SummaryChild(_Child):
    def observe(self, amount: float) -> None:
        """Counted and summed (``_count``, ``_sum``: no quantiles, as prometheus_client's
        multiprocess mode). A negative value is rejected: OpenMetrics refuses a negative
        ``_sum``."""
        number = self._valid(amount, allow_negative=False)
        if number is not None:
            self._store.observe(self._series, number)

    def time(self) -> Scope:
        return Scope(self._store.clock, lambda seconds, _: self.observe(seconds))


class SummaryMetric(_Metric):
    def _child(self, series: Series) -> _SummaryChild:
        return _SummaryChild(self._store, series)

    def observe(self, amount: float) -> None:
        self._unlabelled().observe(amount)

    def time(self) -> Scope:
        return self._unlabelled().time()  # type: ignore[no-any-return]


class _InfoChild(_Child):
    def info(self, val: Mapping[str, str]) -> None:
        """Served as ``<name>_info{<labels>, <val's labels>} 1`` while this process lives. Info
        label names must be label names other than the metric's (else the update is rejected
        and counted); values are bounded like every label value."""
        spec, store = self._series.spec, self._store
        try:
            items = sorted((str(k), _label_value(v)) for k, v in dict(val).items())
        except Exception:
            items = []
        names = {name for name, _ in items}
        limit = store.max_label_value_bytes
        if (
            not items
            or names & set(spec.labelnames)
            or not all(is_valid_label_name(name) and len(name) <= limit for name in names)
        ):
            store.count_reject(spec.name)
            return
        bounded = [(name, bounded_label_value(value, limit)) for name, value in items]
        cut = sum(b is not v for (_, b), (_, v) in zip(bounded, items, strict=True))
        if cut:
            store.count("truncated", spec.name, cut)
        store.set_info(self._series, bounded)


class InfoMetric(_Metric):
    def _child(self, series: Series) -> _InfoChild:
        return _InfoChild(self._store, series)

    def info(self, val: Mapping[str, str]) -> None:
        self._unlabelled().info(val)
