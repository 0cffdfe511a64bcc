"""Hash fields and their codecs: what the client writes into a hash and how the aggregator reads
it back (a provider's ``totals``, the clients' ``stats:clients``, backend metric data and gauge
values). Every value is an integer where Redis adds it up, so totals stay exact under millions
of HINCRBYs.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Final

from gatewayz_protocol.partitions import (
    BUCKET_OF_PARTITION,
    CANCELLED,
    EXTRA_BAND_OF_PARTITION,
    EXTRA_HISTOGRAM_BOUNDS,
    HISTOGRAM_BOUNDS,
    OUTCOMES,
)
from gatewayz_protocol.text import is_text

# -- reading hashes another writer may have touched --------------------------------------------


def int_fields(raw: Mapping[bytes, bytes]) -> tuple[dict[str, int], list[str]]:
    """A hash of counts (HINCRBY's) as read back: the fields that are one, and the names of
    those that are not (not UTF-8, not an integer, negative, beyond 64 bits): a foreign or
    hand-written value is skipped, never a reason for a reader to stop. No writer of this
    project decrements a count (an exposition refuses a negative counter: one made every
    scrape fail)."""
    found: dict[str, int] = {}
    bad: list[str] = []
    for name, value in raw.items():
        try:
            number = int(value)
            if not 0 <= number < 2**63:
                raise ValueError(value)
            found[name.decode()] = number
        except ValueError:  # UnicodeDecodeError is one
            bad.append(name.decode("utf-8", "replace"))
    return found, bad


def text_fields(raw: Mapping[bytes, bytes]) -> tuple[dict[str, str], list[str]]:
    """A hash of text as read back: the fields that are UTF-8, and the names of those that
    are not."""
    found: dict[str, str] = {}
    bad: list[str] = []
    for name, value in raw.items():
        try:
            found[name.decode()] = value.decode()
        except UnicodeDecodeError:
            bad.append(name.decode("utf-8", "replace"))
    return found, bad


# -- a provider's totals hash ------------------------------------------------------------------

COUNT_FIELDS: Final = tuple(f"n:{outcome}" for outcome in OUTCOMES)
"""Calls per outcome class, indexed by outcome code."""


def _bucket_field(index: int) -> str:
    return "b:+Inf" if index == len(HISTOGRAM_BOUNDS) else f"b:{HISTOGRAM_BOUNDS[index]:g}"


HISTOGRAM_FIELDS: Final = tuple(_bucket_field(i) for i in range(len(HISTOGRAM_BOUNDS) + 1))
"""Per-bucket (non-cumulative) call counts, ``b:0.1`` .. ``b:+Inf``."""

EXTRA_BAND_FIELDS: Final = tuple(f"b:{bound:g}" for bound in EXTRA_HISTOGRAM_BOUNDS)
"""Calls of ``b:+Inf`` (above 10 s) in the bands (10, 15], (15, 30] and (30, 60]: ``b:15``,
``b:30``, ``b:60``. ``b:+Inf`` keeps counting them all, so an aggregator that exports the seed's
buckets only reads what it always did; one that exports extra bounds reads these too."""

LATENCY_SUM_FIELD: Final = "lat_us"  # integer microseconds
COST_FIELD: Final = "cost_nusd"  # integer nano-USD
TOKENS_FIELD: Final = "tokens"
BREAKER_REJECTED_FIELD: Final = "breaker_rejected"  # calls allow() turned away
CANCELLED_FIELD: Final = "cancelled"
"""Calls the caller abandoned before the provider's answer (``partitions.CANCELLED``). Not an
``n:`` field: the ``n:`` fields count the calls of the histogram (their sum is its count)."""

MICROS_PER_SECOND: Final = 1_000_000
NANO_USD_PER_USD: Final = 1_000_000_000


def encode_totals(
    tally: Mapping[tuple[int, int], int], latency_sum_s: float, tokens: int, cost_nusd: int
) -> dict[str, int]:
    """The increments of a provider's ``totals`` for a batch: ``tally`` counts its events by
    (outcome code, latency partition). A cancelled call counts in ``cancelled`` only, usage
    added to a call booked earlier in no count: neither is in the histogram."""
    fields: dict[str, int] = {}
    for (outcome, latency_part), count in tally.items():
        if outcome >= len(OUTCOMES):
            if outcome == CANCELLED:
                fields[CANCELLED_FIELD] = fields.get(CANCELLED_FIELD, 0) + count
            continue
        name = COUNT_FIELDS[outcome]
        fields[name] = fields.get(name, 0) + count
        name = HISTOGRAM_FIELDS[BUCKET_OF_PARTITION[latency_part]]
        fields[name] = fields.get(name, 0) + count
        band = EXTRA_BAND_OF_PARTITION[latency_part]
        if band is not None and band < len(EXTRA_BAND_FIELDS):
            name = EXTRA_BAND_FIELDS[band]
            fields[name] = fields.get(name, 0) + count
    fields[LATENCY_SUM_FIELD] = round(latency_sum_s * MICROS_PER_SECOND)
    if tokens:
        fields[TOKENS_FIELD] = int(tokens)
    if cost_nusd:
        fields[COST_FIELD] = int(cost_nusd)
    return fields


@dataclass(frozen=True)
class ProviderTotals:
    """A provider's cumulative counters, decoded."""

    requests: dict[str, int]
    """Calls by outcome class."""
    histogram_cumulative: tuple[int, ...]
    """Cumulative counts for the bounds asked for (HISTOGRAM_BOUNDS by default), then +Inf
    (== count)."""
    latency_sum_seconds: float
    cost_usd: float
    tokens: int
    breaker_rejected: int
    cancelled: int = 0
    """Calls the caller abandoned before the provider's answer (not in ``requests``)."""


def histogram_bounds_ok(bounds: tuple[float, ...]) -> bool:
    """Whether ``decode_totals`` can count ``bounds``: the seed's, then any of the extra ones,
    increasing."""
    seed = len(HISTOGRAM_BOUNDS)
    extra = bounds[seed:]
    return (
        bounds[:seed] == HISTOGRAM_BOUNDS
        and set(extra) <= set(EXTRA_HISTOGRAM_BOUNDS)
        and list(extra) == sorted(set(extra))
    )


def decode_totals(
    raw: Mapping[str, int], bounds: tuple[float, ...] = HISTOGRAM_BOUNDS
) -> ProviderTotals:
    """The counters of a ``totals`` hash, its histogram counted at ``bounds``
    (``histogram_bounds_ok``). Bands that hold more than ``b:+Inf`` (written by something else
    than a client) count as ``b:+Inf``: the histogram stays cumulative."""
    running, cumulative = 0, []
    for name in HISTOGRAM_FIELDS[:-1]:
        running += raw.get(name, 0)
        cumulative.append(running)
    count = running + raw.get(HISTOGRAM_FIELDS[-1], 0)
    bands = dict(zip(EXTRA_HISTOGRAM_BOUNDS, EXTRA_BAND_FIELDS, strict=True))
    for bound in bounds[len(HISTOGRAM_BOUNDS) :]:
        running = sum(raw.get(bands[b], 0) for b in EXTRA_HISTOGRAM_BOUNDS if b <= bound)
        cumulative.append(min(cumulative[len(HISTOGRAM_BOUNDS) - 1] + running, count))
    cumulative.append(count)
    return ProviderTotals(
        requests={o: raw.get(f, 0) for o, f in zip(OUTCOMES, COUNT_FIELDS, strict=True)},
        histogram_cumulative=tuple(cumulative),
        latency_sum_seconds=raw.get(LATENCY_SUM_FIELD, 0) / MICROS_PER_SECOND,
        cost_usd=raw.get(COST_FIELD, 0) / NANO_USD_PER_USD,
        tokens=raw.get(TOKENS_FIELD, 0),
        breaker_rejected=raw.get(BREAKER_REJECTED_FIELD, 0),
        cancelled=raw.get(CANCELLED_FIELD, 0),
    )


# -- the clients' stats hash -------------------------------------------------------------------

REJECTED_FIELD_PREFIX: Final = "rejected:"
LOG_RECORDS_DROPPED_FIELD: Final = "log_records_dropped"
"""Log records the processes' Loki senders gave up on (Loki slow or down): each process adds what
``hooks.NewLogDrops`` takes."""


DROPPED_FIELD_PREFIX: Final = "dropped:"
LEGACY_DROPPED_FIELD: Final = "dropped"
"""Where clients before drop causes counted their drops: all of them buffer evictions."""


def rejected_field(cause: str) -> str:
    return REJECTED_FIELD_PREFIX + cause


def dropped_field(cause: str) -> str:
    return DROPPED_FIELD_PREFIX + cause


def decode_client_stats(raw: Mapping[str, int]) -> tuple[dict[str, int], dict[str, int]]:
    """(calls rejected by cause, events dropped by cause) from ``stats:clients``."""
    rejected: dict[str, int] = {}
    dropped: dict[str, int] = {}
    for name, count in raw.items():
        if name.startswith(REJECTED_FIELD_PREFIX):
            rejected[name.removeprefix(REJECTED_FIELD_PREFIX)] = count
        elif name.startswith(DROPPED_FIELD_PREFIX):
            cause = name.removeprefix(DROPPED_FIELD_PREFIX)
            dropped[cause] = dropped.get(cause, 0) + count
        elif name == LEGACY_DROPPED_FIELD:
            dropped["buffer_full"] = dropped.get("buffer_full", 0) + count
    return rejected, dropped


# -- writers' clocks: ``<host>:<pid>`` -> ``<offset seconds>|<Redis time of the measurement>`` -


def clock_offset_value(offset: float, measured_at: float) -> str:
    return f"{offset!r}|{measured_at!r}"


def decode_clock_offsets(raw: Mapping[str, str]) -> dict[str, tuple[float, float]]:
    """writer -> (offset, measured at); entries no client wrote are skipped
    (``read_clock_offsets`` names them)."""
    return read_clock_offsets(raw)[0]


def read_clock_offsets(raw: Mapping[str, str]) -> tuple[dict[str, tuple[float, float]], list[str]]:
    """writer -> (offset, measured at), finite numbers, and the writers whose entry is not one."""
    offsets = {}
    bad = []
    for writer, value in raw.items():
        offset, _, measured_at = value.partition("|")
        try:
            pair = (float(offset), float(measured_at))
        except ValueError:
            bad.append(writer)
            continue
        if all(map(math.isfinite, pair)):
            offsets[writer] = pair
        else:
            bad.append(writer)
    return offsets, bad


# -- exemplars: the latest per histogram bucket (and series), as JSON --------------------------
# A provider's ``exemplars`` hash: ``<bucket index>`` -> exemplar; a backend metric's:
# ``<bucket index>:<sid>`` -> exemplar. An exemplar links a bucket to a trace (``trace_id``).

Exemplar = tuple[dict[str, str], float, float]
"""(labels such as {"trace_id": ...}, observed value, unix time on the shared clock)"""


MAX_EXEMPLAR_LABEL_CHARACTERS: Final = 128
"""OpenMetrics' bound on an exemplar's label names and values together (in characters)."""
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def exemplar_labels_ok(labels: Mapping[str, str]) -> bool:
    """Whether ``labels`` may be an exemplar's in OpenMetrics: names of its label grammar,
    values that are text (``is_text``: no lone surrogate), at most
    ``MAX_EXEMPLAR_LABEL_CHARACTERS`` in all. One that is not makes the strict parsers
    (Prometheus's) refuse the whole scrape, or no encoder write it."""
    size = 0
    for name, value in labels.items():
        if not isinstance(name, str) or not is_text(value):
            return False
        if not _LABEL_NAME.fullmatch(name):
            return False
        size += len(name) + len(value)
    return size <= MAX_EXEMPLAR_LABEL_CHARACTERS


def encode_exemplar(exemplar: Exemplar) -> str:
    labels, value, at = exemplar
    return json.dumps({"l": labels, "v": value, "t": at}, separators=(",", ":"))


def decode_exemplar(raw: str) -> Exemplar | None:
    """None for what no client wrote, or what OpenMetrics would refuse (``exemplar_labels_ok``,
    a value or time that is not a finite number)."""
    try:
        data = json.loads(raw)
        labels = {str(k): str(v) for k, v in data["l"].items()}
        value, at = float(data["v"]), float(data["t"])
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None
    if not (exemplar_labels_ok(labels) and math.isfinite(value) and math.isfinite(at)):
        return None
    return labels, value, at


def exemplar_field(bucket: int, sid: str = "") -> str:
    return f"{bucket}:{sid}" if sid else str(bucket)


# -- backend metric values ---------------------------------------------------------------------
# A counter or histogram series keeps its value as an integer part ``i:<sid>`` plus integer
# nano-units ``n:<sid>`` (the instruments script carries whole units out of the nano-units), and
# a histogram its per-bucket counts ``b<k>:<sid>``. The scripts rely on these prefixes.

NANO: Final = 1_000_000_000
SERIES_DROPPED_FIELD: Final = "!dropped"  # updates to series beyond the cardinality cap
VALUES_REJECTED_FIELD: Final = "!rejected"  # invalid values (negative increments, NaN, inf)
CONFLICTS_FIELD: Final = "!conflicts"
"""updates refused: their process declared the metric otherwise than the declaration in Redis"""
TRUNCATED_FIELD: Final = "!truncated"  # label values cut to the bound (``labels``)


def int_field(sid: str) -> str:
    return f"i:{sid}"


def nano_field(sid: str) -> str:
    return f"n:{sid}"


def bucket_field(index: int, sid: str) -> str:
    return f"b{index}:{sid}"


def split_amount(amount: float) -> tuple[int, int]:
    """(integer part, nano-units) of a finite non-negative number."""
    if type(amount) is int:
        return amount, 0
    whole = math.floor(amount)
    return int(whole), round((amount - whole) * NANO)


def join_amount(ints: int, nanos: int) -> float:
    """An integer part plus nano-units as one float, carrying whole units first."""
    whole, rest = divmod(nanos, NANO)
    return float(ints + whole) + rest / NANO


def series_value(data: Mapping[str, int], sid: str) -> float:
    return join_amount(data.get(int_field(sid), 0), data.get(nano_field(sid), 0))


def series_buckets(data: Mapping[str, int], sid: str, buckets: int) -> tuple[int, ...]:
    """Cumulative counts of a histogram series with ``buckets`` bounds (then +Inf); a summary
    keeps its count as a histogram without bounds would (``(count,)``)."""
    running, cumulative = 0, []
    for index in range(buckets + 1):
        running += data.get(bucket_field(index, sid), 0)
        cumulative.append(running)
    return tuple(cumulative)


# -- gauge values: one hash per process, ``<metric>|<sid>`` -> ``<value>|<unix time>`` ---------


GAUGE_CAP_FIELD: Final = "~max_series"
"""In a process's gauge hash: the series cap per metric it runs with (``max_series_per_metric``).
Across processes the aggregator serves at most the largest cap among the processes holding a
gauge's values (no metric name starts with ``~``: never a gauge's field)."""


def gauge_cap(values: Mapping[str, str]) -> int | None:
    """The cap a process's gauge hash declares; None when absent (a client from before) or not a
    positive integer (another writer's data)."""
    raw = values.get(GAUGE_CAP_FIELD)
    if raw is None or not (raw.isascii() and raw.isdigit()) or len(raw) > 9:  # "²" is a digit
        return None
    return int(raw) or None


def read_gauges(raw: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """A process's gauge hash as read: the fields the aggregator can serve, and those it cannot
    (another writer's data: a value or time that is not a finite number, a cap that is not a
    positive integer, a field that is neither). A client writes finite values only."""
    usable, bad = {}, []
    for name, value in raw.items():
        if name == GAUGE_CAP_FIELD:
            ok = gauge_cap(raw) is not None
        else:
            number, _, updated = value.partition("|")
            try:
                ok = "|" in name and math.isfinite(float(number) + float(updated or 0))
            except ValueError:
                ok = False
        if ok:
            usable[name] = value
        else:
            bad.append(name)
    return usable, bad


def gauge_field(metric: str, sid: str) -> str:
    return f"{metric}|{sid}"


def gauge_value(value: float, updated_at: float) -> str:
    return f"{value!r}|{updated_at!r}"


def decode_gauges(values: Mapping[str, str], metric: str) -> Iterator[tuple[str, float, float]]:
    """(series id, value, updated at) of ``metric`` in one process's gauge hash."""
    prefix = metric + "|"
    for name, raw in values.items():
        if name.startswith(prefix):
            value, _, updated = raw.partition("|")
            yield name[len(prefix) :], float(value), float(updated or 0)
