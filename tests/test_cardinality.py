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
    assert len(tracker) == 5 + 50  # every candidate slot in use, never more
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
    # Without hysteresis the single slot would swap on every burst (~400 demotions); with
    # it, b (4 > 3 * 1.25) takes the slot once and keeps it.
    assert evicted == [("a", EVICT_DEMOTED)]
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
    assert len(tracker) == 6 + 64


# ----------------------------------------------------------------------- exact edges
def test_defaults_scale_with_top_n() -> None:
    small: TopNTracker[str] = TopNTracker(top_n=4)
    assert (small.capacity, small.ttl, small.half_life) == (128, 900.0, 300.0)
    large: TopNTracker[str] = TopNTracker(top_n=20, ttl=60.0)
    assert (large.capacity, large.ttl, large.half_life) == (160, 60.0, 20.0)
    given: TopNTracker[str] = TopNTracker(top_n=4, ttl=60.0, half_life=7.0, capacity=9)
    assert (given.capacity, given.half_life) == (9, 7.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"top_n": -1}, "top_n must be >= 0"),
        ({"top_n": 1, "ttl": 0.0}, "ttl must be > 0"),
        ({"top_n": 1, "ttl": -5.0}, "ttl must be > 0"),
        ({"top_n": 1, "half_life": 0.0}, "half_life must be > 0"),
    ],
)
def test_invalid_parameters_say_which(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        TopNTracker(**kwargs)  # type: ignore[arg-type]


def test_sub_second_ttl_and_half_life_are_valid() -> None:
    clock = FakeClock()
    tracker: TopNTracker[str] = TopNTracker(top_n=1, ttl=0.5, half_life=0.25, clock=clock)
    assert tracker.observe("a") is True
    clock.now += 0.5
    assert tracker.expire() == 1


def test_a_capacity_below_one_still_keeps_one_candidate() -> None:
    tracker, _, _ = make(top_n=0, capacity=0)
    tracker.observe("a")
    tracker.observe("b")  # replaces a, inheriting its count as the error
    assert ("a" in tracker, "b" in tracker, len(tracker)) == (False, True, 1)
    assert tracker.count("b") == 1
    assert tracker.count("a") is None
    assert tracker.is_exposed("b") is False


def test_the_margin_is_a_quarter_above_the_weakest() -> None:
    """Against a weakest exposed count of 4 a candidate needs more than 5 (4 * 1.25)."""
    tracker, _, evicted = make(top_n=1)
    for _ in range(4):
        tracker.observe("a")
    assert [tracker.observe("b") for _ in range(6)] == [False] * 5 + [True]
    assert evicted == [("a", EVICT_DEMOTED)]
    # a keeps its count among the candidates and must now beat 6 * 1.25 = 7.5
    assert (tracker.is_exposed("a"), tracker.count("a")) == (False, 4)
    assert [tracker.observe("a") for _ in range(4)] == [False] * 3 + [True]
    assert tracker.evicted == {EVICT_DEMOTED: 2, EVICT_EXPIRED: 0}
    assert evicted == [("a", EVICT_DEMOTED), ("b", EVICT_DEMOTED)]


def test_a_demoted_key_with_one_failure_stays_a_candidate() -> None:
    tracker, _, _ = make(top_n=1)
    tracker.observe("a")
    tracker.observe("b")
    tracker.observe("b")  # 2 > 1 * 1.25: b takes the slot
    assert tracker.exposed == frozenset({"b"})
    assert ("a" in tracker, tracker.count("a"), len(tracker)) == (True, 1, 2)


def test_a_demoted_key_aged_to_nothing_is_forgotten() -> None:
    tracker, clock, evicted = make(top_n=2, ttl=900.0)
    tracker.observe("a")
    tracker.observe("b")
    clock.now += tracker.half_life
    tracker.expire()  # a and b: aged to 0, still exposed
    assert (tracker.count("a"), tracker.count("b"), len(tracker)) == (0, 0, 2)
    assert tracker.observe("c") is True  # 1 beats 0: a, the least recently seen, goes
    assert evicted == [("a", EVICT_DEMOTED)]
    assert ("a" in tracker, len(tracker)) == (False, 2)


def test_aging_halves_the_error_with_the_count() -> None:
    tracker, clock, _ = make(top_n=0, capacity=1, ttl=900.0)
    for _ in range(3):
        tracker.observe("a")
    for _ in range(3):
        tracker.observe("b")  # count 3 + 3, error 3
    assert tracker.count("b") == 3
    clock.now += tracker.half_life
    tracker.expire()
    assert tracker.count("b") == 3 - 1  # (6 >> 1) - (3 >> 1)
    clock.now += 2 * tracker.half_life
    tracker.expire()
    assert tracker.count("b") is None  # 6 >> 3 == 0: forgotten


def test_an_expired_candidate_is_no_space_saving_victim() -> None:
    clock = FakeClock()
    # a half-life longer than the ttl: expiry, not aging, drops the idle key
    tracker: TopNTracker[str] = TopNTracker(
        top_n=0, capacity=1, ttl=10.0, half_life=100.0, clock=clock
    )
    tracker.observe("old")
    clock.now += 10
    tracker.observe("c2")  # the lazy expiry drops old first
    assert ("old" in tracker, len(tracker)) == (False, 1)
    tracker.observe("c3")  # the table is full: c2 (count 1) is the victim
    assert ("c2" in tracker, tracker.count("c3"), len(tracker)) == (False, 1, 1)


def test_expiry_counts_every_exposed_key_it_drops() -> None:
    tracker, clock, evicted = make(top_n=3, ttl=100.0)
    for key in ("a", "b"):
        tracker.observe(key)
    clock.now += 50
    tracker.observe("c")
    clock.now += 50  # a and b: idle for exactly the ttl
    assert tracker.expire() == 2
    assert sorted(evicted) == [("a", EVICT_EXPIRED), ("b", EVICT_EXPIRED)]
    assert tracker.evicted == {EVICT_DEMOTED: 0, EVICT_EXPIRED: 2}
    assert tracker.observe("c") is True  # the survivor is still served after the change
    assert tracker.exposed == frozenset({"c"})


def _vanishes_after(ttl: float, half_life: float | None, first_at: float) -> float:
    """Seconds after construction at which a key observed once at ``first_at`` is gone, with
    another key observed every half second (the lazy expiry only runs on ``observe``)."""
    clock = FakeClock(1000.0)
    tracker: TopNTracker[str] = TopNTracker(top_n=2, ttl=ttl, half_life=half_life, clock=clock)
    clock.now += first_at
    tracker.observe("once")
    for _ in range(4000):
        if "once" not in tracker:
            break
        clock.now += 0.5
        tracker.observe("steady")
    return clock.now - 1000.0


@pytest.mark.parametrize(
    ("ttl", "half_life", "first_at", "gone_after"),
    [
        (80.0, None, 0.0, 80.0),  # every ttl / 8 = 10 s: idle for exactly the ttl at 80
        (80.0, None, 2.0, 90.0),  # the schedule runs from construction, not first use
        (80.0, 5.0, 2.0, 85.0),  # every half-life when that is shorter
        (900.0, None, 30.0, 960.0),  # at most every 60 s
    ],
)
def test_the_lazy_expiry_runs_on_a_fixed_schedule(
    ttl: float, half_life: float | None, first_at: float, gone_after: float
) -> None:
    """Expiry runs every min(ttl / 8, half-life, 60 s) from construction, so an idle series
    outlives its ttl by at most that period."""
    assert _vanishes_after(ttl, half_life, first_at) == gone_after


def test_remove_forgets_a_key_without_the_callback() -> None:
    tracker, _, evicted = make(top_n=2, capacity=1)
    for key in ("a", "b", "c"):
        tracker.observe(key)
    assert tracker.exposed == frozenset({"a", "b"})
    assert tracker.remove("a") is True  # its series is the caller's to remove
    assert tracker.remove("c") is False  # a candidate: it had no series
    assert tracker.remove("zzz") is False
    assert (len(tracker), tracker.exposed, evicted) == (1, frozenset({"b"}), [])
    assert tracker.observe("b") is True  # the remaining exposed key is still served
    tracker.observe("d")  # the free slot goes to the next key
    assert tracker.exposed == frozenset({"b", "d"})
    tracker.observe("e")  # a candidate again; c left no trace in the victim order
    tracker.observe("f")  # replaces e (capacity 1)
    assert ("e" in tracker, tracker.count("f"), len(tracker)) == (False, 1, 3)
