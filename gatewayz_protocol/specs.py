"""Backend metric declarations as stored in ``{metrics}:schema`` (JSON), and series ids: a
series' label values as one hash-field-safe string.

A summary is kept as prometheus_client's multiprocess mode keeps one: a count and a sum (no
quantiles). An info's series id holds its label values, then its info labels as name, value
pairs (``info_series_id``): every distinct set a live process holds is served with the value 1.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Final

from gatewayz_protocol.names import METRIC_NAME_RE, is_valid_label_name
from gatewayz_protocol.text import is_text

KINDS: Final = ("counter", "gauge", "histogram", "summary", "info")
PROCESS_KINDS: Final = ("gauge", "info")
"""Kinds whose values each process writes whole into its own expiring hash (not added up)."""
COMBINE_MODES: Final = ("sum", "max", "min", "latest")
UNIT_RE: Final = re.compile(r"[a-zA-Z0-9_]{1,64}")
"""How workers' values of one gauge series combine."""


@dataclass(frozen=True)
class MetricSpec:
    """What a metric is; the same everywhere it is declared (ValueError when invalid)."""

    name: str
    kind: str  # counter, gauge, histogram
    help: str
    labelnames: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()
    combine: str = ""  # gauges only: sum, max, min, latest
    unit: str = ""  # OpenMetrics' UNIT: the name ends with ``_<unit>``

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not METRIC_NAME_RE.fullmatch(self.name):
            raise ValueError(f"invalid metric name {self.name!r}")
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: unknown metric type {self.kind!r}")
        if not is_text(self.help):
            raise ValueError(f"{self.name}: help must be a string (UTF-8: no lone surrogate)")
        for label in self.labelnames:
            if not isinstance(label, str) or not is_valid_label_name(label):
                raise ValueError(f"invalid label name {label!r} for {self.name}")
        if len(set(self.labelnames)) != len(self.labelnames):
            raise ValueError(f"duplicate label names for {self.name}")
        if self.kind == "histogram":
            if not self.buckets or list(self.buckets) != sorted(set(self.buckets)):
                raise ValueError(f"{self.name}: buckets must be increasing and non-empty")
            if not all(math.isfinite(b) for b in self.buckets):
                raise ValueError(f"{self.name}: buckets must be finite (+Inf is implicit)")
        elif self.buckets:
            raise ValueError(f"{self.name}: only a histogram has buckets")
        if self.kind == "gauge" and self.combine not in COMBINE_MODES:
            raise ValueError(f"{self.name}: combine must be one of {COMBINE_MODES}")
        if self.kind != "gauge" and self.combine:
            raise ValueError(f"{self.name}: only a gauge has a combine mode")
        if self.unit and (
            not UNIT_RE.fullmatch(self.unit)
            or self.kind == "info"
            or not self.name.removesuffix("_total").endswith("_" + self.unit)
        ):
            raise ValueError(f"{self.name}: invalid unit {self.unit!r}")

    def compatible(self, other: MetricSpec) -> bool:
        """Whether updates declared by ``other`` may go into this metric's values: the same
        name, type, label names, buckets, combine mode and unit (the help text may differ: the
        declaration in Redis is the one served)."""
        return replace(other, help=self.help) == self

    def to_json(self) -> str:
        """Without a unit when there is none: the JSON clients wrote before units existed."""
        data = asdict(self)
        if not self.unit:
            del data["unit"]
        return json.dumps(data, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> MetricSpec:
        """Raises ValueError, KeyError or TypeError for what no client wrote."""
        try:
            data = json.loads(text)
        except RecursionError:  # nested too deep for the parser: no client wrote that
            raise ValueError("metric spec nested too deep") from None
        return cls(
            name=data["name"],
            kind=data["kind"],
            help=data["help"],
            labelnames=tuple(data["labelnames"]),
            buckets=tuple(data["buckets"]),
            combine=data["combine"],
            unit=data.get("unit", ""),
        )


@functools.lru_cache(maxsize=1024)
def spec_of(spec_json: str) -> MetricSpec | None:
    """A declaration as read (frozen: one object per text is shared); None when no client wrote
    it."""
    try:
        return MetricSpec.from_json(spec_json)
    except (ValueError, KeyError, TypeError):
        return None


def read_specs(raw: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """The schema hash as read: the declarations a client could have written (each decodes to a
    spec named as its field: ``HSETNX schema <name> <spec>``), and the fields that are not one."""
    usable: dict[str, str] = {}
    bad: list[str] = []
    for name, text in raw.items():
        spec = spec_of(text)
        if spec is not None and spec.name == name:
            usable[name] = text
        else:
            bad.append(name)
    return usable, bad


def read_series(members: Iterable[str], spec: MetricSpec) -> tuple[list[str], list[str]]:
    """A metric's series set as read, sorted: the series ids of ``spec``'s label values, and
    the members that are not one (written under another declaration, or by no client). A gauge
    or info keeps its series in each process's hash: its set is taken as it is."""
    if spec.kind in PROCESS_KINDS:
        return sorted(members), []
    usable: list[str] = []
    bad: list[str] = []
    for sid in members:
        (usable if series_labels(sid, len(spec.labelnames)) is not None else bad).append(sid)
    return sorted(usable), bad


def process_series_problems(values: Iterable[str], schema: Mapping[str, str]) -> list[str]:
    """The fields of a process's gauge hash (``<metric>|<series id>``) whose series id is not
    one of the gauge or info ``schema`` declares under that name (``series_labels``,
    ``info_labels``): written under another declaration, or by no client. Fields of a metric
    not declared as a gauge or info are not judged (never served)."""
    bad = []
    for field in values:
        metric, _, sid = field.partition("|")
        spec = spec_of(schema[metric]) if metric in schema else None
        if spec is None or spec.kind not in PROCESS_KINDS:
            continue
        if spec.kind == "info":
            ok = info_labels(sid, spec.labelnames) is not None
        else:
            ok = series_labels(sid, len(spec.labelnames)) is not None
        if not ok:
            bad.append(field)
    return bad


def series_id(labelvalues: Sequence[str]) -> str:
    """A series' label values as one hash-field-safe string (JSON array)."""
    return json.dumps(list(labelvalues), ensure_ascii=False, separators=(",", ":"))


@functools.lru_cache(maxsize=1 << 16)  # every cycle decodes the same series ids again
def series_labels(sid: str, expected: int) -> tuple[str, ...] | None:
    """The label values of a series id, or None when it is not one of ``expected`` values
    (written under a different declaration, or not by a client: a value no encoder writes,
    ``is_text``). A value that is not a string is its text (``[1]`` is ``["1"]``)."""
    try:
        values = json.loads(sid)
    except (ValueError, RecursionError):
        return None
    if not isinstance(values, list) or len(values) != expected:
        return None
    labels = tuple(str(v) for v in values)
    return labels if all(map(is_text, labels)) else None


def info_series_id(labelvalues: Sequence[str], info: Sequence[tuple[str, str]]) -> str:
    """An info series: its label values, then each info label's name and value, flat."""
    return series_id([*labelvalues, *(item for pair in info for item in pair)])


def info_labels(
    sid: str, labelnames: Sequence[str]
) -> tuple[tuple[str, ...], dict[str, str]] | None:
    """(label values, info labels) of an info series id, or None when it is not one of a metric
    with ``labelnames``: info label names must be label names, other than the metric's and
    each other."""
    try:
        values = json.loads(sid)
    except (ValueError, RecursionError):
        return None
    count = len(labelnames)
    if not isinstance(values, list) or len(values) < count or (len(values) - count) % 2:
        return None
    if not all(map(is_text, values)):
        return None
    pairs = values[count:]
    info = dict(zip(pairs[0::2], pairs[1::2], strict=True))
    names = set(info)
    if len(names) != len(pairs) // 2 or names & set(labelnames):
        return None
    if not all(is_valid_label_name(name) for name in names):
        return None
    return tuple(values[:count]), info
