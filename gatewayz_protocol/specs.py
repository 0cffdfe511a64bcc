"""Backend metric declarations as stored in ``{metrics}:schema`` (JSON), and series ids: a
series' label values as one hash-field-safe string."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Final

from gatewayz_protocol.names import METRIC_NAME_RE, is_valid_label_name

KINDS: Final = ("counter", "gauge", "histogram")
COMBINE_MODES: Final = ("sum", "max", "min", "latest")
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

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not METRIC_NAME_RE.fullmatch(self.name):
            raise ValueError(f"invalid metric name {self.name!r}")
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: unknown metric type {self.kind!r}")
        if not isinstance(self.help, str):
            raise ValueError(f"{self.name}: help must be a string")
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
        if self.kind == "gauge" and self.combine not in COMBINE_MODES:
            raise ValueError(f"{self.name}: combine must be one of {COMBINE_MODES}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

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
        )


def series_id(labelvalues: Sequence[str]) -> str:
    """A series' label values as one hash-field-safe string (JSON array)."""
    return json.dumps(list(labelvalues), ensure_ascii=False, separators=(",", ":"))


@functools.lru_cache(maxsize=1 << 16)  # every cycle decodes the same series ids again
def series_labels(sid: str, expected: int) -> tuple[str, ...] | None:
    """The label values of a series id, or None when it is not one of ``expected`` values
    (written under a different declaration, or not by a client)."""
    try:
        values = json.loads(sid)
    except (ValueError, RecursionError):
        return None
    if not isinstance(values, list) or len(values) != expected:
        return None
    return tuple(str(v) for v in values)
