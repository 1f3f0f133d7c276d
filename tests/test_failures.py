"""FailureTracker: grouping, resolution, ordering and a bounded table under a spray."""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from sipwatch.model import AttemptOutcome, Side
from sipwatch.pipeline.failures import FailureTracker, is_failure
from tests.test_metrics import attempt, transaction

T0 = 1767268800.0


def test_groups_failures_and_counts() -> None:
    ft = FailureTracker()
    ft.observe_transaction(transaction(finished=T0 + 1))
    ft.observe_transaction(transaction(finished=T0 + 5, user_agent="Yealink 2"))
    ft.observe_transaction(transaction(finished=T0 + 3, peer_ip="203.0.113.9"))
    ft.observe_transaction(transaction(finished=T0 + 4, status=404, x_reason=""))
    recs = ft.records()
    assert [(r.source_ip, r.status, r.count) for r in recs] == [
        ("203.0.113.5", 403, 2),
        ("203.0.113.5", 404, 1),  # most recent first among equal counts
        ("203.0.113.9", 403, 1),
    ]
    top = recs[0]
    assert (top.side, top.user, top.domain) == ("inbound", "alice", "acme.example.com")
    assert (top.first_seen, top.last_seen) == (T0 + 1, T0 + 5)
    assert top.x_reason == "Invalid credentials"
    assert top.challenged is True
    assert top.user_agent == "Yealink 2"
    assert top.resolved_at is None


@pytest.mark.parametrize(
    ("status", "timed_out", "recorded"),
    [
        (200, False, False),
        (401, False, False),
        (407, False, False),
        (400, False, True),  # jambonz: no Contact / no expires
        (403, False, True),
        (404, False, True),
        (500, False, True),
        (503, False, True),
        (0, True, True),
    ],
)
def test_which_transactions_are_failures(status: int, timed_out: bool, recorded: bool) -> None:
    tx = transaction(status=status, timed_out=timed_out)
    assert is_failure(tx) is recorded
    ft = FailureTracker()
    ft.observe_transaction(tx)
    assert len(ft) == (1 if recorded else 0)


def test_timeouts_are_keyed_as_timeout() -> None:
    ft = FailureTracker()
    ft.observe_transaction(transaction(status=0, timed_out=True, x_reason="", has_auth=False))
    (rec,) = ft.records()
    assert rec.status == "timeout"
    assert rec.challenged is False


def test_success_resolves_every_record_of_that_user_and_side_only() -> None:
    ft = FailureTracker()
    ft.observe_transaction(transaction(finished=T0 + 1))
    ft.observe_transaction(transaction(finished=T0 + 2, peer_ip="203.0.113.9", status=500))
    ft.observe_transaction(transaction(finished=T0 + 3, to_user="bob"))
    ft.observe_transaction(transaction(finished=T0 + 4, side=Side.OUTBOUND))
    ft.observe_attempt(attempt(outcome=AttemptOutcome.FAILURE, finished=T0 + 9))
    assert all(r.resolved_at is None for r in ft.records())
    ft.observe_attempt(attempt(outcome=AttemptOutcome.SUCCESS, status=200, finished=T0 + 10))
    open_ = {(r.side, r.user) for r in ft.records(include_resolved=False)}
    assert open_ == {("inbound", "bob"), ("outbound", "alice")}
    resolved = [r for r in ft.records() if r.resolved_at is not None]
    assert len(resolved) == 2
    assert {r.resolved_at for r in resolved} == {T0 + 10}


def test_failing_again_reopens_a_resolved_record() -> None:
    ft = FailureTracker()
    ft.observe_transaction(transaction(finished=T0 + 1))
    ft.observe_attempt(attempt(outcome=AttemptOutcome.SUCCESS, status=200, finished=T0 + 2))
    ft.observe_transaction(transaction(finished=T0 + 3))
    (rec,) = ft.records(include_resolved=False)
    assert rec.count == 2
    assert rec.resolved_at is None


def test_long_fields_are_truncated() -> None:
    ft = FailureTracker()
    ft.observe_transaction(
        transaction(
            to_user="u" * 5000, to_host="h" * 5000, user_agent="a" * 5000, x_reason="x" * 5000
        )
    )
    (rec,) = ft.records()
    assert len(rec.user) <= 128
    assert len(rec.domain) <= 255
    assert len(rec.user_agent) <= 256
    assert len(rec.x_reason) <= 256


def test_full_table_prefers_resolved_then_one_shot_records() -> None:
    ft = FailureTracker(max_entries=3)
    for user in ("a", "b", "c"):
        ft.observe_transaction(transaction(to_user=user, finished=T0))
        ft.observe_transaction(transaction(to_user=user, finished=T0 + 1))
    ft.observe_attempt(
        attempt(to_user="b", outcome=AttemptOutcome.SUCCESS, status=200, finished=T0 + 2)
    )
    ft.observe_transaction(transaction(to_user="d", finished=T0 + 3))  # evicts resolved b
    assert {r.user for r in ft.records()} == {"a", "c", "d"}
    ft.observe_transaction(transaction(to_user="e", finished=T0 + 4))  # evicts singleton d
    assert {r.user for r in ft.records()} == {"a", "c", "e"}
    assert ft.evicted == 2
    assert ft.dropped == 0


def test_full_table_of_repeat_offenders_drops_new_records() -> None:
    ft = FailureTracker(max_entries=2)
    for user in ("a", "b"):
        for i in range(3):
            ft.observe_transaction(transaction(to_user=user, finished=T0 + i))
    ft.observe_transaction(transaction(to_user="c", finished=T0 + 5))
    assert {r.user for r in ft.records()} == {"a", "b"}
    assert ft.dropped == 1


def test_stale_records_make_room() -> None:
    ft = FailureTracker(max_entries=2, stale_after=3600)
    for user in ("a", "b"):
        for _ in range(2):
            ft.observe_transaction(transaction(to_user=user, finished=T0))
    ft.observe_transaction(transaction(to_user="c", finished=T0 + 7200))
    assert {r.user for r in ft.records()} == {"b", "c"}
    assert ft.dropped == 0


def test_username_spray_keeps_table_and_memory_bounded() -> None:
    ft = FailureTracker(max_entries=1000)
    for i in range(3):
        for _ in range(2):  # a real device failing repeatedly
            ft.observe_transaction(transaction(to_user=f"real{i}", finished=T0 + i))
    tx = transaction(peer_ip="198.51.100.66", user_agent="friendly-scanner", has_auth=False)

    def spray(start: int, stop: int) -> None:
        for i in range(start, stop):
            tx.to_user = f"{i:06d}"
            tx.finished = T0 + 10 + i * 0.001
            ft.observe_transaction(tx)

    spray(0, 5000)
    gc.collect()
    tracemalloc.start()
    try:
        spray(5000, 10_000)
        gc.collect()
        mem_10k, _ = tracemalloc.get_traced_memory()
        spray(10_000, 100_000)
        gc.collect()
        mem_100k, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(ft) == 1000
    users = {r.user for r in ft.records()}
    assert {"real0", "real1", "real2"} <= users  # repeat offenders survive the spray
    assert ft.evicted == 100_000 - (1000 - 3)
    assert mem_100k - mem_10k < 64 * 1024, (mem_10k, mem_100k)


def test_invalid_size() -> None:
    with pytest.raises(ValueError):
        FailureTracker(max_entries=0)
