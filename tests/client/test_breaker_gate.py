"""BreakerGate with fake I/O and an injected clock: when allow() costs a round trip and what it
answers when Redis is gone; what status() (breaker(), admit()) says, taking nothing."""

from __future__ import annotations

import pytest

from client import BreakerStatus
from client._breaker_gate import BreakerGate, Stored, stored_breaker


class FakeRedisSide:
    """A BreakerStore in memory that counts its round trips."""

    def __init__(self) -> None:
        self.known: dict[str, str] = {}
        self.deadlines: dict[str, float] = {}
        self.forced: set[str] = set()
        self.permits_left = 2
        self.fetches: list[list[str]] = []
        self.permit_calls = 0
        self.down = False

    def states(self, providers: list[str]) -> dict[str, Stored]:
        if self.down:
            raise ConnectionError("redis down")
        self.fetches.append(list(providers))
        return {
            p: Stored(self.known.get(p, "closed"), self.deadlines.get(p, 0.0), p in self.forced)
            for p in providers
        }

    def take_permit(self, provider: str, holder: str) -> tuple[str, bool]:
        if self.down:
            raise ConnectionError("redis down")
        self.permit_calls += 1
        state = self.known.get(provider, "closed")
        if state != "half_open" or self.permits_left == 0:
            return state, False
        self.permits_left -= 1
        return state, True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def side() -> FakeRedisSide:
    return FakeRedisSide()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def gate(side: FakeRedisSide, clock: Clock) -> BreakerGate:
    return BreakerGate(side, "w1", refresh_seconds=1.0, monotonic=clock)


def test_closed_costs_one_lookup_then_none(gate: BreakerGate, side: FakeRedisSide) -> None:
    assert all(gate.allow("openrouter") for _ in range(1000))
    assert side.fetches == [["openrouter"]]
    assert side.permit_calls == 0


def test_open_rejects_without_io(gate: BreakerGate, side: FakeRedisSide) -> None:
    side.known["openrouter"] = "open"
    assert not any(gate.allow("openrouter") for _ in range(100))
    assert len(side.fetches) == 1
    assert side.permit_calls == 0


def test_refresh_picks_up_a_new_state_only_when_due(
    gate: BreakerGate, side: FakeRedisSide, clock: Clock
) -> None:
    assert gate.allow("openrouter")
    side.known["openrouter"] = "open"
    clock.now += 0.9
    gate.refresh_if_due()
    assert gate.allow("openrouter")  # not due yet: still the cached closed
    clock.now += 0.1
    gate.refresh_if_due()
    assert not gate.allow("openrouter")
    assert side.fetches == [["openrouter"], ["openrouter"]]


def test_half_open_grants_permits_then_remembers_the_denial(
    gate: BreakerGate, side: FakeRedisSide, clock: Clock
) -> None:
    side.known["p"] = "half_open"
    answers = [gate.allow("p") for _ in range(10)]
    assert answers == [True, True] + [False] * 8
    assert side.permit_calls == 3  # two grants, one denial, then the cached denial
    clock.now += 1.0  # the denial is remembered until the next refresh interval
    assert gate.allow("p") is False
    assert side.permit_calls == 4


def test_half_open_answer_follows_a_state_change_seen_by_the_permit_script(
    gate: BreakerGate, side: FakeRedisSide
) -> None:
    side.known["p"] = "half_open"
    assert gate.allow("p")
    side.known["p"] = "closed"
    assert gate.allow("p")  # permit script said closed: no permit needed any more
    assert gate.state("p") == "closed"
    calls = side.permit_calls
    assert gate.allow("p")
    assert side.permit_calls == calls


def test_fails_open_with_no_known_state(gate: BreakerGate, side: FakeRedisSide) -> None:
    side.down = True
    assert gate.allow("openrouter")
    assert gate.state("openrouter") is None


def test_keeps_the_last_known_state_while_redis_is_down(
    gate: BreakerGate, side: FakeRedisSide, clock: Clock
) -> None:
    side.known["p"] = "open"
    assert not gate.allow("p")
    side.down = True
    clock.now += 5
    gate.refresh_if_due()
    assert not gate.allow("p")
    side.known["q"] = "half_open"
    side.down = False
    assert gate.allow("q")  # learned half_open while up, and got one of the two permits
    side.down = True
    clock.now += 5
    assert gate.allow("q") is False  # half-open without Redis: no permit can be had


def test_invalid_provider_names_are_let_through_without_io(
    gate: BreakerGate, side: FakeRedisSide
) -> None:
    assert gate.allow("bad name}")
    assert side.fetches == []


def test_a_flood_of_names_keeps_the_cache_bounded(side: FakeRedisSide, clock: Clock) -> None:
    gate = BreakerGate(side, "w1", refresh_seconds=1.0, monotonic=clock, max_entries=100)
    side.known["flood-0"] = "open"
    assert gate.allow("flood-0") is False
    for i in range(1, 1_000):
        assert gate.allow(f"flood-{i}") is True
    assert len(gate) == 100
    assert len(side.fetches) == 100  # past the bound, unknown names cost no round trip
    assert gate.allow("flood-0") is False  # a cached state is kept


def test_cached_answers_only_without_io(gate: BreakerGate, side: FakeRedisSide) -> None:
    side.known.update({"down": "open", "trial": "half_open"})
    assert gate.cached("never-asked") is None  # allow() would have to ask Redis
    assert gate.cached("bad name!") is True  # no breaker can exist for it
    for name in ("never-asked", "down", "trial"):
        gate.allow(name)
    fetches, permits = len(side.fetches), side.permit_calls
    assert gate.cached("never-asked") is True
    assert gate.cached("down") is False
    side.permits_left = 0
    assert gate.allow("trial") is False  # denied: remembered until the next refresh
    assert gate.cached("trial") is False
    assert (len(side.fetches), side.permit_calls) == (fetches, permits + 1)


class WallClock:
    """The shared clock breaker deadlines are on (Redis's), apart from the monotonic one."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_status_says_the_state_and_until_when_taking_nothing(
    side: FakeRedisSide, clock: Clock
) -> None:
    wall = WallClock()
    gate = BreakerGate(side, "w1", refresh_seconds=1.0, monotonic=clock, now=wall)
    side.known.update({"down": "open", "held": "open", "trial": "half_open", "up": "closed"})
    side.deadlines["down"] = wall.now + 30.5
    side.forced.add("held")
    assert gate.status("down") == BreakerStatus("down", "open", False, 30.5, wall.now + 30.5)
    assert gate.status("held") == BreakerStatus("held", "open", False, None, None, forced=True)
    assert gate.status("up") == BreakerStatus("up", "closed", True)
    assert gate.status("trial") == BreakerStatus("trial", "half_open", True)  # may be admitted
    assert side.permit_calls == 0  # a status takes no permit
    assert len(side.fetches) == 4  # one read per provider never asked about, then the cache
    for _ in range(100):
        gate.status("down"), gate.status("trial")
    assert (len(side.fetches), side.permit_calls) == (4, 0)
    wall.now += 40  # past the deadline, not yet half-open: retry now
    assert gate.status("down").retry_after_s == 0.0
    assert not gate.status("down")  # false when not allowed


def test_a_half_open_denial_says_when_this_process_asks_again(
    gate: BreakerGate, side: FakeRedisSide, clock: Clock
) -> None:
    side.known["trial"] = "half_open"
    side.permits_left = 0
    assert gate.allow("trial") is False
    denied = gate.status("trial", False)
    assert denied == BreakerStatus("trial", "half_open", False, 1.0)
    assert gate.status("trial") == denied  # breaker(): the remembered denial, no permit asked
    clock.now += 0.75
    assert gate.status("trial").retry_after_s == 0.25
    assert side.permit_calls == 1


def test_status_of_what_has_no_state_here(gate: BreakerGate, side: FakeRedisSide) -> None:
    assert gate.knows("bad name!") and not gate.knows("never-asked")
    assert gate.status("bad name!") == BreakerStatus("bad name!", None, True)
    side.down = True
    assert gate.status("never-asked") == BreakerStatus("never-asked", None, True)  # fail open
    assert gate.knows("never-asked")


def test_a_refresh_and_a_permit_answer_move_the_deadline(
    gate: BreakerGate, side: FakeRedisSide, clock: Clock
) -> None:
    side.known["p"] = "half_open"
    assert gate.allow("p")
    side.known["p"], side.deadlines["p"] = "open", 2e9
    assert gate.allow("p") is False  # the permit script said open: its deadline not known yet
    assert gate.status("p") == BreakerStatus("p", "open", False)
    clock.now += 1.0
    gate.refresh_if_due()
    assert gate.status("p").open_until == 2e9


def test_a_breaker_hash_is_read_leniently() -> None:
    assert stored_breaker(b"open", b"1800000030.5", b"0") == Stored("open", 1_800_000_030.5, False)
    assert stored_breaker(b"open", None, b"1") == Stored("open", 0.0, True)
    assert stored_breaker(None, b"nan", None) == Stored("closed", 0.0, False)
    assert stored_breaker(b"odd", b"soon", b"yes") == Stored("closed", 0.0, False)


def test_a_hurried_provider_is_refreshed_every_tenth_of_a_second_until_it_opens() -> None:
    side, clock = FakeRedisSide(), Clock()
    gate = BreakerGate(side, "w", refresh_seconds=0.5, monotonic=clock)
    assert gate.allow("down") is True and gate.allow("fine") is True
    side.fetches.clear()
    gate.hurry(["down", "never-asked"], until=clock.now + 5.0)
    clock.now += 0.1
    assert gate.seconds_until_refresh() == 0.0
    gate.refresh_if_due()
    assert side.fetches == [["down"]]  # "fine" waits for its 0.5 s; "never-asked" is not cached
    side.known["down"] = "open"
    clock.now += 0.1
    gate.refresh_if_due()
    assert gate.allow("down") is False
    clock.now += 0.1
    gate.refresh_if_due()  # open: no longer hurried
    assert side.fetches == [["down"], ["down"]]
    assert gate.seconds_until_refresh() == pytest.approx(0.2)  # "fine", asked 0.3 s ago
