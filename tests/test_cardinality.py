"""The top-N tracker decides who gets a metric series; it must stay bounded and stable."""

from __future__ import annotations

import random

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


# ----------------------------------------------------------------------- ranking, not arrival
def _stream(counts: dict[str, int]) -> list[str]:
    return [key for key, n in counts.items() for _ in range(n)]


@pytest.mark.parametrize("seed", range(40))
def test_exposed_set_is_the_top_n_whatever_the_arrival_order(seed: int) -> None:
    """When the top-N are clearly ahead (by more than the hysteresis margin), the exposed
    set is exactly them for any order of the observations - also when the one-shots and the
    weak keys arrive first and fill every slot."""
    counts = {f"dev{i}": 5 + i for i in range(4)}  # the four worst: 5..8 failures each
    counts |= {f"weak{i}": 1 + i % 3 for i in range(30)}  # 1..3 failures each
    stream = _stream(counts)
    rng = random.Random(seed)
    rng.shuffle(stream)
    if seed % 4 == 0:  # adversarial: every weak key first
        stream.sort(key=lambda k: k.startswith("dev"))
    tracker, _, _ = make(top_n=4, capacity=64, ttl=1000.0)
    for key in stream:
        tracker.observe(key)
    assert tracker.exposed == frozenset(f"dev{i}" for i in range(4))


def test_one_shots_that_came_first_do_not_keep_their_slots() -> None:
    """Twenty one-off probes take every slot; a half-life later a device failing once is
    exposed (their aged counts are 0) - before aging, the one-shots were pinned until TTL."""
    tracker, clock, evicted = make(top_n=20, capacity=64, ttl=900.0)
    for i in range(20):
        assert tracker.observe(f"probe{i}") is True
    assert tracker.observe("phone") is False  # a tie (1 vs 1) keeps the incumbent
    clock.now += tracker.half_life
    assert tracker.observe("phone") is True
    assert "phone" in tracker.exposed
    assert evicted == [("probe0", EVICT_DEMOTED)]  # the oldest one-shot gave way


def test_aging_forgets_idle_candidates_and_keeps_steady_offenders() -> None:
    tracker, clock, _ = make(top_n=2, capacity=32, ttl=900.0)
    for _ in range(8):
        tracker.observe("steady")
    for i in range(20):
        tracker.observe(f"once{i}")
    assert len(tracker) == 21
    clock.now += tracker.half_life
    tracker.expire()
    # the one-shots halved to 0 and are forgotten (the exposed once0 keeps its series at 0)
    assert len(tracker) == 2
    assert tracker.count("steady") == 4
    assert tracker.exposed == frozenset({"steady", "once0"})


def test_a_distributed_spray_never_displaces_devices_failing_now() -> None:
    """100,000 one-shot usernames (a spray from many IPs, which the scanner classifier cannot
    pin on one source) while four devices fail every few seconds: the devices keep their
    series, and the spray churns at most one series per slot and half-life."""
    tracker, clock, evicted = make(top_n=6, capacity=64, ttl=900.0)
    devices = [f"dev{i}" for i in range(4)]
    for i in range(100_000):
        if i % 50 == 0:  # every device fails once per 50 spray attempts
            for dev in devices:
                assert tracker.observe(dev) is True or i == 0
        tracker.observe(f"spray{i}")
        clock.now += 0.01  # 1,000 s in all: three half-lives
    assert set(devices) <= tracker.exposed
    assert not any(key in devices for key, _ in evicted)
    demoted = sum(why == EVICT_DEMOTED for _, why in evicted)
    assert demoted <= 2 * 4  # the two spare slots, at most once per half-life
    assert len(tracker) <= 6 + 64 + 1
