"""The instrument store: every backend metric series of one process (Counters, Gauges,
Histograms, Summaries, Infos), pre-aggregated in memory and drained by the flusher into each
batch.

Values are kept exactly: a counter or a histogram sum is an integer part plus an integer count of
nano-units, so adding 0.1 a million times gives exactly 100000. A metric's values are drained
only once Redis agreed with its declaration (``_declarations``), and at most ``max_batch_bytes``
of counter and histogram values per batch (the rest wait for the next one), so no batch grows
past what Redis can take in one transaction.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections import Counter as _Tally
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from client._declarations import Declarations
from gatewayz_protocol.fields import Exemplar, bucket_field, int_field, nano_field, split_amount
from gatewayz_protocol.labels import DEFAULT_MAX_LABEL_VALUE_BYTES
from gatewayz_protocol.specs import PROCESS_KINDS, MetricSpec, info_series_id, series_id

DEFAULT_MAX_BATCH_BYTES = 1 << 20
"""Counter and histogram values one batch carries at most (series ids and field names)."""
FIELD_OVERHEAD_BYTES = 16
"""What a field costs in a batch besides its name: its increment and the protocol's framing."""


@dataclass
class Series:
    """One label set's pending deltas (counters, histograms, summaries) or current value
    (gauges, infos)."""

    spec: MetricSpec
    labelvalues: tuple[str, ...]
    sid: str
    ints: int = 0
    nanos: int = 0
    buckets: list[int] = field(default_factory=list)  # histogram: per bucket, then +Inf
    value: float = 0.0  # gauge (an info: 1)
    updated_at: float = 0.0  # gauge, info
    updates: int = 0  # updates since the last drain
    dirty: bool = False
    exemplars: dict[int, Exemplar] = field(default_factory=dict)  # bucket (counter: 0) -> latest


class InstrumentStore:
    """Every declared metric and series of one process; the flusher drains it."""

    def __init__(
        self,
        max_series_per_metric: int,
        clock: Callable[[], float] = time.time,
        on_update: Callable[[], None] = lambda: None,
        *,
        max_label_value_bytes: int = DEFAULT_MAX_LABEL_VALUE_BYTES,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        wall: Callable[[], float] = time.time,
        check_declarations: bool = False,
        on_declare: Callable[[], None] | None = None,
    ):
        """``clock``: the client's (durations, and times moved onto the shared clock when
        written); ``wall``: Unix time (``Gauge.set_to_current_time()``);
        ``check_declarations``: a metric's values wait until Redis agreed with its declaration
        (the client's writer answers; a sink that does not leaves it off); ``on_declare``:
        called for a new declaration (default: ``on_update``). The client's wakes a running
        flusher and starts none: a Gunicorn master that preloads the app declares its metrics
        and then forks, and a thread running in it then could hold a lock its workers inherit
        held."""
        self.lock = threading.Lock()
        self.max_series = max_series_per_metric
        self.max_label_value_bytes = max_label_value_bytes
        self.max_batch_bytes = max_batch_bytes
        self.clock = clock
        self.wall = wall
        self.on_update = on_update  # starts the flusher; called outside the lock
        self.on_declare = on_declare or on_update
        self.version = 0  # counts updates: flush() waits for the drained version to reach it
        self._drained_up_to = 0  # the version the last drain that left nothing behind reached
        self.declarations = Declarations(clock, check_declarations)
        self.series: dict[str, dict[tuple[str, ...], Series]] = {}
        self.dirty: list[Series] = []
        self._values_removed = False  # a gauge or info series was removed: rewrite them
        self._unblocked = False  # a declaration became writable (``take_unblocked``)
        self.counts = _counts()
        """Per kind (``COUNTS``), per metric: updates noted since the last drain."""
        self.closed = False
        self.refused_after_close = 0
        """Updates made after ``close()``: counted here, never applied (nothing would write
        them, and a flusher stopping must not wait for them)."""

    def declare(self, spec: MetricSpec) -> MetricSpec | None:
        """The spec the name is declared with in this process (``spec`` the first time), or
        None when ``spec`` conflicts with it (see ``Declarations.declare``)."""
        with self.lock:
            declared = self.declarations.declare(spec)
            if declared is spec:
                self.series[spec.name] = {}
        if declared is spec:
            self.on_declare()  # the declaration is written with the next batch
        return declared

    def get_series(self, spec: MetricSpec, labelvalues: tuple[str, ...]) -> Series | None:
        """The series for these label values, or None past the per-metric cap."""
        with self.lock:
            table = self.series[spec.name]
            found = table.get(labelvalues)
            if found is None:
                if len(table) >= self.max_series:
                    return None
                found = Series(spec, labelvalues, series_id(labelvalues))
                if spec.kind in ("histogram", "summary"):  # a summary: its count only
                    found.buckets = [0] * (len(spec.buckets) + 1)
                table[labelvalues] = found
            return found

    def remove(self, spec: MetricSpec, labelvalues: Iterable[tuple[str, ...]]) -> None:
        """Forget series of this process: a gauge's or an info's value is withdrawn from Redis
        at the next batch; a counter's or histogram's pending increments are still written
        (the fleet's total stays in Redis)."""
        with self.lock:
            table = {} if self._refused(1) else self.series.get(spec.name, {})
            for values in labelvalues:
                if table.pop(values, None) is not None and spec.kind in PROCESS_KINDS:
                    self._values_removed = True
                    self.version += 1
        self.on_update()

    def close(self) -> None:
        """Take no update from now on: each is counted in ``refused_after_close`` instead (the
        client closed). Under the lock: an update is either in before it, or counted after."""
        with self.lock:
            self.closed = True

    def _refused(self, updates: int) -> bool:
        """Under the lock: whether the store is closed (``updates`` are then counted)."""
        if self.closed:
            self.refused_after_close += updates
        return self.closed

    def reset_after_fork(self) -> None:
        """A forked child keeps every declaration but none of its parent's pending values (the
        parent ships those) and declares everything again (the parent may never have)."""
        self.lock = threading.Lock()
        self.dirty = []
        for table in self.series.values():
            for series in table.values():
                series.ints = series.nanos = series.updates = 0
                series.buckets = [0] * len(series.buckets)
                series.value = series.updated_at = 0.0
                series.dirty = False
                series.exemplars = {}
        self.counts = _counts()
        self.declarations.reset_after_fork()
        self.version = self._drained_up_to = self.refused_after_close = 0

    def _mark(self, series: Series) -> None:
        self.version += 1
        series.updates += 1
        if not series.dirty:
            series.dirty = True
            self.dirty.append(series)

    def add(self, series: Series, amount: float, exemplar: dict[str, str] | None = None) -> None:
        with self.lock:
            if not self._refused(1):
                self._add(series, amount, exemplar)
        self.on_update()

    def observe(self, series: Series, value: float, exemplar: dict[str, str] | None = None) -> None:
        with self.lock:
            if not self._refused(1):
                self._observe(series, value, exemplar)
        self.on_update()

    def update(
        self,
        adds: Sequence[tuple[Series, float]],
        observes: Sequence[tuple[Series, float, dict[str, str] | None]] = (),
    ) -> None:
        """Counter increments and histogram observations under one lock, with one
        ``on_update``: what one request or one model call books, as ``add()`` and ``observe()``
        one by one would (values already checked by the caller)."""
        with self.lock:
            if not self._refused(len(adds) + len(observes)):
                for series, amount in adds:
                    self._add(series, amount, None)
                for series, value, labels in observes:
                    self._observe(series, value, labels)
        self.on_update()

    def _add(self, series: Series, amount: float, exemplar: dict[str, str] | None) -> None:
        """Under the lock."""
        if exemplar is not None:
            series.exemplars[0] = (exemplar, float(amount), self.clock())
        ints, nanos = split_amount(amount)
        series.ints += ints
        series.nanos += nanos
        self._mark(series)

    def _observe(self, series: Series, value: float, exemplar: dict[str, str] | None) -> None:
        """Under the lock."""
        index = bisect_left(series.spec.buckets, value)  # "le": the first bound >= value
        if exemplar is not None:
            series.exemplars[index] = (exemplar, value, self.clock())
        series.buckets[index] += 1
        ints, nanos = split_amount(value)
        series.ints += ints
        series.nanos += nanos
        self._mark(series)

    def set_gauge(self, series: Series, value: float | None, delta: float = 0.0) -> None:
        with self.lock:
            if not self._refused(1):
                series.value = (series.value + delta) if value is None else value
                series.updated_at = self.clock()
                self._mark(series)
        self.on_update()

    def set_info(self, series: Series, info: Sequence[tuple[str, str]]) -> None:
        """An info series' labels now: the series id names them (the old ones are withdrawn
        with the next rewrite of this process's values)."""
        with self.lock:
            if not self._refused(1):
                series.sid = info_series_id(series.labelvalues, info)
                series.value = 1.0
                series.updated_at = self.clock()
                self._mark(series)
        self.on_update()

    def count(self, kind: str, name: str, count: int = 1) -> None:
        """``count`` of ``name``'s updates noted as ``kind`` (one of ``COUNTS``)."""
        with self.lock:
            if not self._refused(count):
                self.counts[kind][name] += count
                self.version += 1
        self.on_update()

    def count_drop(self, name: str) -> None:
        """An update to a series past the cap."""
        self.count("dropped", name)

    def count_reject(self, name: str) -> None:
        """An invalid value."""
        self.count("rejected", name)

    def answered(self, stored: Iterable[tuple[str, str | None]]) -> None:
        """What Redis holds for the declarations a batch carried (``Declarations.answered``)."""
        with self.lock:
            if self.declarations.answered(stored):
                self._unblocked = True
                self.version += 1  # values held for them are written now
        self.on_update()

    def take_unblocked(self) -> bool:
        """Whether a declaration became writable since the last call: the flusher writes the
        values held for it at once, not an interval later (a ``flush()`` may wait for them)."""
        with self.lock:
            unblocked, self._unblocked = self._unblocked, False
        return unblocked

    @property
    def has_gauges(self) -> bool:
        """Whether a gauge or info holds a value (its hash in Redis needs its TTL refreshed)."""
        with self.lock:
            return any(
                s.spec.kind in PROCESS_KINDS and s.updated_at
                for table in self.series.values()
                for s in table.values()
            )

    def drain(self, include_all_gauges: bool) -> Drained:
        """Take the pending counter/histogram deltas (zeroing them) and the gauge values to
        write: the changed ones, or all of them when ``include_all_gauges`` (a TTL refresh).
        Values of a metric Redis has not agreed with yet, and deltas beyond
        ``max_batch_bytes``, stay for a later drain; those of a refused one are counted."""
        return _drain(self, include_all_gauges)


def _drain(store: InstrumentStore, include_all_gauges: bool) -> Drained:
    """``store.drain()``: see there."""
    with store.lock:
        declarations = store.declarations
        deltas: list[tuple[MetricSpec, str, int, list[tuple[str, int]]]] = []
        exemplars: list[tuple[str, str, int, Exemplar]] = []
        held: list[Series] = []
        values_changed, store._values_removed = store._values_removed, False
        budget = store.max_batch_bytes
        for s in store.dirty:
            name = s.spec.name
            if declarations.refused(name):
                store.counts["conflicts"][name] += s.updates
                _clear(s)
            elif not declarations.writable(name) or (budget <= 0 and deltas):
                held.append(s)
            elif s.spec.kind in PROCESS_KINDS:
                values_changed = True
                s.dirty, s.updates = False, 0
            else:
                fields = [(int_field(s.sid), s.ints), (nano_field(s.sid), s.nanos)]
                fields += [(bucket_field(i, s.sid), c) for i, c in enumerate(s.buckets) if c]
                fields = [(f, v) for f, v in fields if v]
                budget -= sum(len(f) + FIELD_OVERHEAD_BYTES for f, _ in fields)
                deltas.append((s.spec, s.sid, s.updates, fields))
                exemplars += [(name, s.sid, b, e) for b, e in s.exemplars.items()]
                _clear(s)
        store.dirty = held
        changed = values_changed or include_all_gauges
        gauges = _process_values(store.series, declarations) if changed else []
        if not held:
            store._drained_up_to = store.version
        counts, store.counts = store.counts, _counts()
        return Drained(
            deltas,
            gauges,
            declarations.to_send({d[0].name for d in deltas} | {g[0] for g in gauges}),
            _take(counts["dropped"]),
            _take(counts["rejected"]),
            store._drained_up_to,
            exemplars,
            _take(counts["truncated"]),
            _take(counts["conflicts"]),
        )


def _process_values(
    series: dict[str, dict[tuple[str, ...], Series]], declarations: Declarations
) -> list[tuple[str, str, float, float]]:
    """Every gauge and info value a process holds, of metrics Redis agreed with. A process
    writes them all at once (one hash that expires as a whole)."""
    return [
        (s.spec.name, s.sid, s.value, s.updated_at)
        for name, table in series.items()
        if declarations.writable(name)
        for s in table.values()
        if s.spec.kind in PROCESS_KINDS and s.updated_at
    ]


def _clear(series: Series) -> None:
    """A series' pending deltas, taken."""
    series.dirty = False
    series.exemplars = {}
    series.ints = series.nanos = series.updates = 0
    series.buckets = [0] * len(series.buckets)


COUNTS = ("dropped", "rejected", "truncated", "conflicts")
"""What is counted per metric: updates past the series cap, invalid values, label values cut to
the bound, updates of a declaration Redis holds otherwise."""


def _counts() -> dict[str, _Tally[str]]:
    return {kind: _Tally() for kind in COUNTS}


def _take(tally: _Tally[str]) -> dict[str, int]:
    return {name: count for name, count in tally.items() if count}


@dataclass(frozen=True)
class Drained:
    deltas: list[tuple[MetricSpec, str, int, list[tuple[str, int]]]]
    """(spec, series id, updates, [(hash field, increment)])"""
    gauges: list[tuple[str, str, float, float]]  # (metric, series id, value, updated_at)
    specs: list[MetricSpec]
    dropped: dict[str, int]
    rejected: dict[str, int]
    version: int = 0
    exemplars: list[tuple[str, str, int, Exemplar]] = field(default_factory=list)
    """(metric, series id, bucket, exemplar): the latest per bucket since the last drain"""
    truncated: dict[str, int] = field(default_factory=dict)
    """label values cut to the bound, per metric"""
    conflicts: dict[str, int] = field(default_factory=dict)
    """updates refused, per metric: this process declared it otherwise than Redis holds"""

    @property
    def empty(self) -> bool:
        return not (
            self.deltas
            or self.gauges
            or self.specs
            or self.dropped
            or self.rejected
            or self.truncated
            or self.conflicts
        )

    @property
    def updates(self) -> int:
        """Counter and histogram updates the deltas add up (what is lost if they are)."""
        return sum(updates for _, _, updates, _ in self.deltas)

    def increments(self) -> Drained:
        """Only the counter and histogram increments, of the same version: what is sent again
        when their script call did nothing (the rest of the batch was applied)."""
        return Drained(self.deltas, [], [], {}, {}, self.version)
