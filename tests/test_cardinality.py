"""The top-N tracker decides who gets a metric series; it must stay bounded and stable."""

from __future__ import annotations

import pytest

from sipwatch.metrics.cardinality import EVICT_DEMOTED, EVICT_EXPIRED, TopNTracker


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(
    top_n: int = 3, capacity: int | None = 16, ttl: float = 100.0
) -> tuple[TopNTracker[str], FakeClock, list[tuple[str, str]]]:
    clock = FakeClock()
    evicted: list[tuple[str, str]] = []
    tracker: TopNTracker[str] = TopNTracker(
        top_n=top_n,
        capacity=capacity,
        ttl=ttl,
        clock=clock,
        on_evict=lambda k, why: evicted.append((k, why)),
    )
    return tracker, clock, evicted


def test_first_keys_are_exposed_then_folded() -> None:
    tracker, _, evicted = make(top_n=3)
    assert [tracker.observe(k) for k in "abc"] == [True, True, True]
    assert tracker.observe("d") is False
    assert tracker.exposed == frozenset("abc")
    assert tracker.folded == 1
    assert evicted == []


def test_repeat_offender_displaces_weakest_with_callback() -> None:
    tracker, _, evicted = make(top_n=3)
    for k in "abc":
        tracker.observe(k)
    tracker.observe("a")  # a=2, b=1, c=1
    assert tracker.observe("x") is False  # x=1 does not beat the floor (1)
    assert tracker.observe("x") is True  # x=2 > 1 * 1.25
    assert "x" in tracker.exposed
    assert len(tracker.exposed) == 3
    assert evicted == [("b", EVICT_DEMOTED)] or evicted == [("c", EVICT_DEMOTED)]
    assert tracker.evicted[EVICT_DEMOTED] == 1
    assert "a" in tracker.exposed  # the strongest stays


def test_spray_of_unique_keys_never_churns_and_stays_bounded() -> None:
    tracker, _, evicted = make(top_n=5, capacity=50)
    for k in ("p1", "p2", "p3", "p4", "p5"):
        tracker.observe(k)
        tracker.observe(k)
    for i in range(100_000):
        assert tracker.observe(f"spray{i}") is False
    assert tracker.exposed == frozenset({"p1", "p2", "p3", "p4", "p5"})
    assert evicted == []
    assert len(tracker) <= 5 + 50
    assert tracker.folded == 100_000


def test_heavy_hitter_is_found_inside_a_spray() -> None:
    """Space-Saving guarantee: a key with > 1/capacity of the traffic enters the table."""
    tracker, _, evicted = make(top_n=2, capacity=32)
    tracker.observe("early1")
    tracker.observe("early2")
    promoted_at = None
    for i in range(20_000):
        tracker.observe(f"spray{i}")
        if i % 10 == 0 and tracker.observe("attacker") and promoted_at is None:
            promoted_at = i
    assert promoted_at is not None
    assert "attacker" in tracker.exposed
    assert tracker.count("attacker") is not None
    assert evicted and evicted[0][1] == EVICT_DEMOTED


def test_two_equal_offenders_do_not_flap() -> None:
    """Two keys failing in alternating bursts: leadership changes on every burst."""
    tracker, _, evicted = make(top_n=1, capacity=8)
    for _ in range(3):
        tracker.observe("a")
    for _ in range(4):
        tracker.observe("b")
    for _ in range(200):
        for key in ("a", "a", "b", "b"):
            tracker.observe(key)
    # Without hysteresis the single slot would swap on every burst (~400 demotions).
    assert len(evicted) <= 2
    assert tracker.exposed_count == 1


def test_ttl_expiry_removes_stale_exposed_keys() -> None:
    tracker, clock, evicted = make(top_n=3, ttl=100.0)
    tracker.observe("old")
    clock.now += 60
    tracker.observe("fresh")
    clock.now += 50  # old: 110 s idle, fresh: 50 s idle
    assert tracker.expire() == 1
    assert evicted == [("old", EVICT_EXPIRED)]
    assert tracker.exposed == frozenset({"fresh"})
    assert "old" not in tracker
    assert tracker.evicted[EVICT_EXPIRED] == 1


def test_expiry_also_runs_lazily_on_observe() -> None:
    tracker, clock, evicted = make(top_n=3, ttl=80.0)
    tracker.observe("a")
    clock.now += 200
    tracker.observe("b")
    assert ("a", EVICT_EXPIRED) in evicted
    assert tracker.exposed == frozenset({"b"})


def test_expired_candidates_free_their_slots() -> None:
    tracker, clock, _ = make(top_n=1, capacity=4, ttl=10.0)
    for k in ("x", "c1", "c2", "c3", "c4"):
        tracker.observe(k)
    assert len(tracker) == 5
    clock.now += 11
    tracker.expire()
    assert len(tracker) == 0


def test_slot_freed_by_expiry_is_reused() -> None:
    tracker, clock, _ = make(top_n=1, ttl=10.0)
    assert tracker.observe("a") is True
    assert tracker.observe("b") is False
    clock.now += 11
    assert tracker.observe("b") is True


def test_zero_top_n_folds_everything() -> None:
    tracker, _, _ = make(top_n=0)
    assert tracker.observe("a") is False
    assert tracker.observe("a") is False
    assert tracker.exposed == frozenset()


@pytest.mark.parametrize(("top_n", "ttl"), [(-1, 10.0), (1, 0.0)])
def test_invalid_parameters(top_n: int, ttl: float) -> None:
    with pytest.raises(ValueError):
        TopNTracker(top_n=top_n, ttl=ttl)
