"""One process's declarations and what Redis answered about them (client/_declarations.py):
values wait for an agreeing answer, a conflicting one refuses them (logged once), every
declaration is sent again each REDECLARE_SECONDS. Pure, with an injected clock."""

from __future__ import annotations

import logging

import pytest

from client._declarations import REASSERT_SECONDS, REDECLARE_SECONDS, Declarations
from gatewayz_protocol.specs import MetricSpec

JOBS = MetricSpec("jobs", "counter", "Jobs", ("kind",))
LAT = MetricSpec("lat", "histogram", "Latency", (), (1.0, 2.0))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_values_wait_for_redis_to_agree_with_the_declaration() -> None:
    clock = Clock()
    declarations = Declarations(clock)
    assert declarations.declare(JOBS) is JOBS
    assert declarations.declare(LAT) is LAT
    assert not declarations.writable("jobs")
    assert declarations.to_send() == [JOBS, LAT]  # the first batch: every declaration
    assert declarations.to_send() == []  # unanswered: not in every batch (a refusal: 20/s)...
    clock.now += REASSERT_SECONDS
    assert declarations.to_send() == [JOBS, LAT]  # ...but once a second
    other_help = MetricSpec("jobs", "counter", "Jobs done", ("kind",))
    declarations.answered([("jobs", other_help.to_json()), ("lat", None)])  # lat: not read
    assert declarations.writable("jobs")  # the help text may differ
    assert not declarations.writable("lat") and not declarations.refused("lat")
    assert declarations.to_send() == []
    clock.now += REASSERT_SECONDS
    assert declarations.to_send() == [LAT]
    declarations.answered([("lat", LAT.to_json())])
    assert declarations.to_send() == []
    clock.now += REDECLARE_SECONDS
    assert declarations.to_send() == [JOBS, LAT]  # every one, once a minute
    assert declarations.to_send() == []


def test_an_incompatible_or_unreadable_declaration_in_redis_refuses_ours(
    caplog: pytest.LogCaptureFixture,
) -> None:
    declarations = Declarations(Clock())
    declarations.declare(JOBS)
    declarations.declare(LAT)
    other_buckets = MetricSpec("lat", "histogram", "Latency", (), (1.0, 3.0))
    with caplog.at_level(logging.ERROR, logger="gatewayz.metrics.client"):
        declarations.answered([("lat", other_buckets.to_json()), ("jobs", "not json")])
        declarations.answered([("lat", other_buckets.to_json())])
    assert declarations.refused("lat") and declarations.refused("jobs")
    assert len(caplog.records) == 2  # once per metric
    declarations.answered([("lat", LAT.to_json())])  # Redis holds ours now (it expired)
    assert declarations.writable("lat")


def test_a_conflicting_declaration_in_the_process_gets_none() -> None:
    declarations = Declarations(Clock())
    declarations.declare(LAT)
    assert declarations.declare(MetricSpec("lat", "histogram", "Other help", (), (1.0, 2.0))) is LAT
    assert declarations.declare(MetricSpec("lat", "histogram", "Latency", (), (1.0,))) is None
    assert declarations.declare(MetricSpec("lat", "summary", "Latency")) is None
    assert list(declarations.specs.values()) == [LAT]


def test_unchecked_declarations_are_writable_at_once_and_a_fork_declares_again() -> None:
    clock = Clock()
    declarations = Declarations(clock, checked=False)
    declarations.declare(JOBS)
    assert declarations.writable("jobs")
    assert declarations.to_send() == [JOBS]
    assert declarations.to_send() == []
    declarations.reset_after_fork()
    assert declarations.to_send() == [JOBS]


def test_a_metric_whose_values_a_batch_carries_is_declared_again_each_second() -> None:
    # A schema Redis lost (restarted empty) comes back with the next values, not a minute later.
    clock = Clock()
    declarations = Declarations(clock)
    declarations.declare(JOBS)
    declarations.declare(LAT)
    assert declarations.to_send(["jobs"]) == [JOBS, LAT]
    declarations.answered([("jobs", JOBS.to_json()), ("lat", LAT.to_json())])
    clock.now += REASSERT_SECONDS / 2
    assert declarations.to_send(["jobs", "lat"]) == []  # sent half a second ago
    clock.now += REASSERT_SECONDS / 2
    assert declarations.to_send(["jobs"]) == [JOBS]  # lat has no values in this batch
    assert declarations.to_send(["jobs"]) == []
    clock.now += 10 * REASSERT_SECONDS
    assert declarations.to_send() == []  # an idle process sends nothing
    assert declarations.to_send(["lat", "unknown"]) == [LAT]
