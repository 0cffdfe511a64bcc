"""LeaderLease with a fake lease store and an injected clock: when a replica leads, and what its
fencing token is. No Redis, no sleeps."""

from __future__ import annotations

import redis

from aggregator.engine.lease import LeaderLease


class FakeStore:
    """The lease script's rule in memory: one holder at a time, tokens from a counter."""

    def __init__(self) -> None:
        self.holder: str | None = None
        self.token = 0
        self.down = False
        self.released: list[str] = []

    def hold(self, instance: str, ttl: float, refused: int = 0) -> tuple[int, int]:
        if self.down:
            raise redis.ConnectionError("down")
        if self.holder == instance and self.token <= refused:
            self.holder = None  # taken again under a new token (the script jumps the counter)
            self.token += 1000
        if self.holder is None:
            self.token += 1
            self.holder = instance
        return (self.token, 1_000 * self.token) if self.holder == instance else (0, 0)

    def release(self, instance: str) -> None:
        self.released.append(instance)
        if self.holder == instance:
            self.holder = None


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def _lease(store: FakeStore, clock: Clock, instance: str = "a") -> LeaderLease:
    return LeaderLease(store.hold, store.release, instance, ttl_seconds=3.0, monotonic=clock)


def test_the_first_replica_leads_with_a_token_the_second_follows() -> None:
    store, clock = FakeStore(), Clock()
    first, second = _lease(store, clock, "a"), _lease(store, clock, "b")
    assert first.tick() is True
    assert first.fence == 1
    assert second.tick() is False
    assert second.fence == 0


def test_a_leader_that_cannot_renew_stops_leading_when_its_lease_may_have_expired() -> None:
    store, clock = FakeStore(), Clock()
    lease = _lease(store, clock)
    assert lease.tick() is True
    store.down = True
    clock.now += 2.9
    assert lease.tick() is True  # the lease surely lasts 3 s from the last renewal
    clock.now += 0.1
    assert lease.tick() is False
    assert lease.fence == 0  # no write may carry the token any more


def test_a_taken_over_lease_is_noticed_at_the_next_tick() -> None:
    store, clock = FakeStore(), Clock()
    first, second = _lease(store, clock, "a"), _lease(store, clock, "b")
    first.tick()
    store.holder = None  # the lease expired in Redis (a long pause)
    assert second.tick() is True
    assert second.fence == 2
    assert first.is_leader is True  # it cannot know yet: its writes are fenced in Redis
    assert first.tick() is False


def test_a_fenced_write_deposes_and_release_hands_over_at_once() -> None:
    store, clock = FakeStore(), Clock()
    first, second = _lease(store, clock, "a"), _lease(store, clock, "b")
    first.tick()
    first.deposed()
    assert (first.is_leader, first.fence) == (False, 0)
    assert first.tick() is True  # still the holder in Redis: it may lead again
    first.release()
    assert store.released == ["a"]
    assert second.tick() is True
    first.release()  # not leading: nothing to release
    assert store.released == ["a"]


def test_a_new_token_asks_for_the_fences_to_be_raised_once() -> None:
    store, clock = FakeStore(), Clock()
    lease = _lease(store, clock, "a")
    assert lease.tick() and lease.taken_over
    assert lease.valid_until_ms == 1_000  # Redis's end of the lease, as the script said
    lease.taken_over = False  # the cycle raised them
    assert lease.tick() and not lease.taken_over  # renewed: the same token
    store.holder = None  # lost, then taken again under a new token
    assert lease.tick() and lease.fence == 2 and lease.taken_over
    clock.now += 10.0  # past the lease: not leading, no deadline to write under
    assert lease.valid_until_ms is None


def test_a_holder_fenced_off_takes_a_new_token_instead_of_renewing_the_refused_one() -> None:
    # The token counter lost its value with its slot's data while the breakers kept their
    # fences: before, the holder renewed the refused token each tick and was fenced off for good
    # (torture cluster seed 280010: no snapshot for 109 s after the faults healed).
    store, clock = FakeStore(), Clock()
    lease = _lease(store, clock, "a")
    assert lease.tick() and lease.fence == 1
    lease.taken_over = False
    lease.deposed()  # a breaker's fence is above token 1
    assert lease.tick() is True
    assert lease.fence == 1002 and lease.taken_over  # a new token: its fences are raised next
    lease.taken_over = False
    assert lease.tick() and lease.fence == 1002  # renewed as usual from then on
