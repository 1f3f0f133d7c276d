"""FailureTracker: grouping, resolution, ordering and a bounded table under a spray."""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from sipwatch.model import AttemptOutcome, RegisterTransaction, Side
from sipwatch.pipeline.failures import (
    SCANNER_USER,
    FailureTracker,
    failure_key,
    is_failure,
)
from sipwatch.pipeline.scanners import ScannerClassifier, ScannerState
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
    with pytest.raises(ValueError, match=r"^max_entries must be >= 1$"):
        FailureTracker(max_entries=0)


def test_defaults_and_a_table_of_one() -> None:
    ft = FailureTracker()
    assert (ft.max_entries, ft.stale_after, ft.latest) == (10_000, 3600.0, 0.0)
    one = FailureTracker(max_entries=1)
    one.observe_transaction(transaction(to_user="a", finished=T0))
    one.observe_transaction(transaction(to_user="b", finished=T0 + 1))  # a was a one-shot
    assert [r.user for r in one.records()] == ["b"]
    assert (one.evicted, one.dropped) == (1, 0)


def test_stale_means_older_than_stale_after_not_equal() -> None:
    """The default ``stale_after`` is an hour of log time: a repeat offender last seen
    exactly an hour before the newest failure still holds its place."""
    ft = FailureTracker(max_entries=1)
    for _ in range(2):
        ft.observe_transaction(transaction(to_user="a", finished=T0))
    ft.observe_transaction(transaction(to_user="b", finished=T0 + 3600))
    assert [r.user for r in ft.records()] == ["a"]
    ft.observe_transaction(transaction(to_user="c", finished=T0 + 3600.5))
    assert [r.user for r in ft.records()] == ["c"]
    assert (ft.dropped, ft.evicted, ft.latest) == (1, 1, T0 + 3600.5)


def test_every_refused_record_is_counted() -> None:
    ft = FailureTracker(max_entries=1)
    ft.observe_transaction(transaction(to_user="a", finished=T0))
    ft.observe_transaction(transaction(to_user="a", finished=T0 + 1))
    for user in ("b", "c", "d"):
        ft.observe_transaction(transaction(to_user=user, finished=T0 + 2))
    assert ft.dropped == 3
    assert [(r.user, r.count) for r in ft.records()] == [("a", 2)]


def test_challenged_once_stays_challenged() -> None:
    ft = FailureTracker()
    ft.observe_transaction(transaction(finished=T0, has_auth=True))
    ft.observe_transaction(transaction(finished=T0 + 1, has_auth=False, user_agent=""))
    (rec,) = ft.records()
    assert rec.challenged is True
    assert rec.user_agent == "Yealink SIP-T46S"  # an empty User-Agent does not erase it
    assert (rec.first_seen, rec.last_seen) == (T0, T0 + 1)


def test_out_of_order_failures_widen_first_and_last_seen() -> None:
    ft = FailureTracker()
    ft.observe_transaction(transaction(finished=T0 + 5))
    ft.observe_transaction(transaction(finished=T0 + 9))
    ft.observe_transaction(transaction(finished=T0 + 1))
    (rec,) = ft.records()
    assert (rec.first_seen, rec.last_seen, rec.count) == (T0 + 1, T0 + 9, 3)
    assert ft.latest == T0 + 9


def test_resolved_records_go_first_oldest_resolution_first() -> None:
    ft = FailureTracker(max_entries=3)
    for user in ("a", "b", "c"):
        for i in range(2):
            ft.observe_transaction(transaction(to_user=user, finished=T0 + i))
    for i, user in enumerate(("c", "a")):  # c resolved before a
        ft.observe_attempt(
            attempt(to_user=user, outcome=AttemptOutcome.SUCCESS, status=200, finished=T0 + 5 + i)
        )
    ft.observe_transaction(transaction(to_user="d", finished=T0 + 10))
    assert sorted(r.user for r in ft.records()) == ["a", "b", "d"]
    ft.observe_transaction(transaction(to_user="e", finished=T0 + 11))
    assert sorted(r.user for r in ft.records()) == ["b", "d", "e"]
    assert (ft.evicted, ft.dropped) == (2, 0)


def test_one_shot_records_go_oldest_first() -> None:
    ft = FailureTracker(max_entries=3)
    for i, user in enumerate(("s1", "rep", "s2")):
        ft.observe_transaction(transaction(to_user=user, finished=T0 + i))
    ft.observe_transaction(transaction(to_user="rep", finished=T0 + 3))
    ft.observe_transaction(transaction(to_user="n1", finished=T0 + 4))  # s1 goes
    assert sorted(r.user for r in ft.records()) == ["n1", "rep", "s2"]
    ft.observe_transaction(transaction(to_user="n2", finished=T0 + 5))  # then s2
    assert sorted(r.user for r in ft.records()) == ["n1", "n2", "rep"]
    ft.observe_transaction(transaction(to_user="n3", finished=T0 + 6))  # then n1
    assert sorted(r.user for r in ft.records()) == ["n2", "n3", "rep"]


def test_a_reopened_record_is_no_longer_first_to_go() -> None:
    ft = FailureTracker(max_entries=2)
    for user in ("a", "b"):
        for i in range(2):
            ft.observe_transaction(transaction(to_user=user, finished=T0 + i))
    ft.observe_attempt(
        attempt(to_user="a", outcome=AttemptOutcome.SUCCESS, status=200, finished=T0 + 2)
    )
    ft.observe_transaction(transaction(to_user="a", finished=T0 + 3))  # failing again
    ft.observe_transaction(transaction(to_user="c", finished=T0 + 4))
    assert sorted((r.user, r.count) for r in ft.records()) == [("a", 3), ("b", 2)]
    assert (ft.dropped, ft.evicted) == (1, 0)


def test_a_resolved_one_shot_leaves_no_trace_when_evicted() -> None:
    """A record evicted as resolved is gone from the one-shot order too: the next one-shot
    eviction takes a record that exists."""
    ft = FailureTracker(max_entries=2)
    ft.observe_transaction(transaction(to_user="a", finished=T0))
    ft.observe_transaction(transaction(to_user="b", finished=T0 + 1))
    ft.observe_attempt(
        attempt(to_user="a", outcome=AttemptOutcome.SUCCESS, status=200, finished=T0 + 2)
    )
    ft.observe_transaction(transaction(to_user="c", finished=T0 + 3))  # resolved a goes
    ft.observe_transaction(transaction(to_user="d", finished=T0 + 4))  # one-shot b goes
    assert sorted(r.user for r in ft.records()) == ["c", "d"]
    assert ft.evicted == 2


def test_success_after_eviction_resolves_what_is_left_of_that_user() -> None:
    ft = FailureTracker(max_entries=2)
    ft.observe_transaction(transaction(to_user="a", peer_ip="203.0.113.1", finished=T0))
    ft.observe_transaction(transaction(to_user="a", peer_ip="203.0.113.2", finished=T0 + 1))
    ft.observe_transaction(transaction(to_user="a", peer_ip="203.0.113.2", finished=T0 + 2))
    ft.observe_transaction(transaction(to_user="b", finished=T0 + 3))  # a from .1 goes
    assert sorted((r.user, r.source_ip) for r in ft.records()) == [
        ("a", "203.0.113.2"),
        ("b", "203.0.113.5"),
    ]
    ft.observe_attempt(
        attempt(to_user="a", outcome=AttemptOutcome.SUCCESS, status=200, finished=T0 + 4)
    )
    assert [(r.user, r.resolved_at) for r in ft.records() if r.resolved_at] == [("a", T0 + 4)]
    ft.observe_transaction(transaction(to_user="b", finished=T0 + 5))
    ft.observe_transaction(transaction(to_user="c", finished=T0 + 6))  # resolved a goes
    ft.observe_attempt(
        attempt(to_user="a", outcome=AttemptOutcome.SUCCESS, status=200, finished=T0 + 7)
    )
    assert sorted((r.user, r.resolved_at) for r in ft.records()) == [("b", None), ("c", None)]


def test_success_of_a_user_without_failures_changes_nothing() -> None:
    ft = FailureTracker()
    ft.observe_transaction(transaction(finished=T0))
    ft.observe_attempt(
        attempt(to_user="zed", outcome=AttemptOutcome.SUCCESS, status=200, finished=T0 + 9)
    )
    assert [r.resolved_at for r in ft.records()] == [None]
    assert ft.latest == T0 + 9


def test_resolved_since_includes_its_own_instant() -> None:
    ft = FailureTracker()
    for user in ("a", "b"):
        ft.observe_transaction(transaction(to_user=user, finished=T0))
    ft.observe_attempt(
        attempt(to_user="a", outcome=AttemptOutcome.SUCCESS, status=200, finished=T0 + 10)
    )
    ft.observe_attempt(
        attempt(to_user="b", outcome=AttemptOutcome.SUCCESS, status=200, finished=T0 + 20)
    )
    assert sorted(r.user for r in ft.records(resolved_since=T0 + 10)) == ["a", "b"]
    assert [r.user for r in ft.records(resolved_since=T0 + 10.5)] == ["b"]
    assert ft.records(include_resolved=False, resolved_since=T0) == []


def test_failure_key_names_the_user_or_the_scanner() -> None:
    tx = transaction(to_user="u" * 200, peer_ip="2001:db8::1", status=0, timed_out=True)
    assert failure_key(tx) == ("inbound", "u" * 128, "acme.example.com", "2001:db8::1", "timeout")
    assert failure_key(tx, scanner=True) == (
        "inbound",
        SCANNER_USER,
        SCANNER_USER,
        "2001:db8::1",
        "timeout",
    )


# ----------------------------------------------------------------------------- scanners
SCANNER_IP = "198.51.100.66"


def wired(min_users: int = 3, max_entries: int = 100) -> tuple[ScannerClassifier, FailureTracker]:
    """The classifier and the table wired as ``Pipeline`` wires them (classifier first)."""
    scanners = ScannerClassifier(min_users=min_users, window=60.0)
    ft = FailureTracker(max_entries, scanner_of=scanners.scanner_state)
    scanners.on_detect(ft.retract)
    return scanners, ft


def feed(scanners: ScannerClassifier, ft: FailureTracker, tx: RegisterTransaction) -> None:
    scanners.observe_transaction(tx)
    ft.observe_transaction(tx)


def test_a_scanner_user_agent_folds_into_one_record_per_ip() -> None:
    scanners, ft = wired()
    feed(scanners, ft, transaction(to_user="alice", finished=T0))  # a real device, elsewhere
    spray = {"user_agent": "friendly-scanner", "has_auth": False, "x_reason": ""}
    for i, user in enumerate(("100", "101", "102", "101")):
        feed(
            scanners,
            ft,
            transaction(to_user=user, peer_ip=SCANNER_IP, finished=T0 + 1 + i, **spray),
        )
    scan, real = ft.records()
    assert scan.key == ("inbound", SCANNER_USER, SCANNER_USER, SCANNER_IP, 403)
    assert (scan.scanner, scan.count, scan.distinct_users) == (True, 4, 3)
    assert (scan.first_seen, scan.last_seen) == (T0 + 1, T0 + 4)
    assert (scan.user_agent, scan.challenged) == ("friendly-scanner", False)
    assert scan.who == "scanner (3 usernames)"
    assert (real.scanner, real.distinct_users, real.who) == (False, 0, "alice@acme.example.com")
    assert ft.get(scan.key) is scan
    assert ft.get(("inbound", "nobody", "x", SCANNER_IP, 403)) is None
    assert scan.to_dict() == {
        "side": "inbound",
        "user": SCANNER_USER,
        "domain": SCANNER_USER,
        "source_ip": SCANNER_IP,
        "status": 403,
        "x_reason": "",
        "count": 4,
        "first_seen": T0 + 1,
        "last_seen": T0 + 4,
        "challenged": False,
        "user_agent": "friendly-scanner",
        "resolved_at": None,
        "scanner": True,
        "distinct_users": 3,
        "cause": None,
    }


def test_the_scanner_estimate_is_kept_after_the_classifier_forgets_the_ip() -> None:
    """``get`` and ``records`` refresh a scanner record's username estimate; it never falls
    back, and a record nobody read before the IP was forgotten still counts its first one."""
    scanners, ft = wired()
    key = ("inbound", SCANNER_USER, SCANNER_USER, SCANNER_IP, 403)
    for i in range(5):
        feed(
            scanners,
            ft,
            transaction(to_user=f"x{i}", peer_ip=SCANNER_IP, user_agent="sipvicious", finished=T0),
        )
    feed(
        scanners,
        ft,
        transaction(to_user="y", peer_ip=SCANNER_IP, user_agent="sipvicious", status=404),
    )
    record = ft.get(key)
    assert record is not None and record.distinct_users == 6
    # quiet for longer than the classifier's hold: the IP is no scanner any more
    scanners.observe_attempt(attempt(peer_ip=SCANNER_IP, finished=T0 + scanners.hold + 1))
    assert scanners.scanner_state(SCANNER_IP) is None
    assert [(r.status, r.distinct_users) for r in ft.records()] == [(403, 6), (404, 6)]
    assert ft.get(key) is record and record.distinct_users == 6


def test_a_scanner_record_unread_before_the_ip_is_forgotten_still_counts_a_username() -> None:
    scanners, ft = wired()
    feed(
        scanners,
        ft,
        transaction(to_user="x", peer_ip=SCANNER_IP, user_agent="sipvicious", finished=T0),
    )
    scanners.observe_attempt(attempt(peer_ip=SCANNER_IP, finished=T0 + scanners.hold + 1))
    (record,) = ft.records()
    assert record.who == "scanner (1 usernames)"


def test_usernames_tried_before_detection_move_into_the_scanner_record() -> None:
    scanners, ft = wired(min_users=3)
    feed(scanners, ft, transaction(to_user="u1", peer_ip="203.0.113.1", finished=T0))  # not it
    for i, user in enumerate(("u1", "u2", "u2")):
        tx = transaction(to_user=user, peer_ip=SCANNER_IP, finished=T0 + 10 + i)
        tx.x_reason, tx.user_agent, tx.has_auth = f"r{i}", f"ua{i}", i == 0
        feed(scanners, ft, tx)
    assert sorted((r.user, r.source_ip, r.count) for r in ft.records()) == [
        ("u1", SCANNER_IP, 1),
        ("u1", "203.0.113.1", 1),
        ("u2", SCANNER_IP, 2),
    ]
    third = transaction(to_user="u3", peer_ip=SCANNER_IP, has_auth=False, finished=T0 + 20)
    scanners.observe_transaction(third)  # detection: u1 and u2 move
    scan, other = ft.records()
    assert (other.user, other.source_ip, other.count) == ("u1", "203.0.113.1", 1)
    assert scan.key == ("inbound", SCANNER_USER, SCANNER_USER, SCANNER_IP, 403)
    assert (scan.count, scan.first_seen, scan.last_seen) == (3, T0 + 10, T0 + 12)
    # the fields of the first record moved (u1's) describe it until the next failure
    assert (scan.x_reason, scan.user_agent, scan.challenged) == ("r0", "ua0", True)
    ft.observe_transaction(third)
    assert (scan.count, scan.first_seen, scan.last_seen) == (4, T0 + 10, T0 + 20)
    assert (scan.x_reason, scan.user_agent, scan.challenged) == (
        "Invalid credentials",
        "Yealink SIP-T46S",
        True,
    )
    assert (scan.scanner, scan.distinct_users) == (True, 3)
    assert (ft.evicted, ft.dropped, len(ft)) == (0, 0, 2)
    # the moved records are gone for good: a success of u1 resolves only the other IP's
    ft.observe_attempt(
        attempt(to_user="u1", outcome=AttemptOutcome.SUCCESS, status=200, finished=T0 + 30)
    )
    assert [(r.source_ip, r.resolved_at) for r in ft.records() if r.resolved_at] == [
        ("203.0.113.1", T0 + 30)
    ]


def test_retract_keeps_statuses_apart_and_widens_the_existing_record() -> None:
    ft = FailureTracker()
    ip = SCANNER_IP
    ft.observe_transaction(transaction(to_user="a", peer_ip=ip, finished=T0 + 5))
    ft.observe_transaction(transaction(to_user="b", peer_ip=ip, finished=T0 + 1))
    ft.observe_transaction(transaction(to_user="b", peer_ip=ip, finished=T0 + 9))
    ft.observe_transaction(transaction(to_user="c", peer_ip=ip, status=404, finished=T0 + 3))
    ft.observe_transaction(transaction(to_user="d", side=Side.OUTBOUND, peer_ip=ip, finished=T0))
    state = ScannerState(ip, scanner_since=T0 + 10)
    ft.retract(state, [("a", "acme.example.com"), ("b", "acme.example.com")])
    assert [(r.user, r.status, r.count) for r in ft.records()] == [
        (SCANNER_USER, 403, 3),
        ("c", 404, 1),
        ("d", 403, 1),
    ]
    scan = ft.records()[0]
    assert (scan.first_seen, scan.last_seen) == (T0 + 1, T0 + 9)
    ft.retract(state, [("c", "acme.example.com"), ("nobody", "acme.example.com")])
    assert [(r.user, r.status, r.count, r.side) for r in ft.records()] == [
        (SCANNER_USER, 403, 3, "inbound"),
        (SCANNER_USER, 404, 1, "inbound"),
        ("d", 403, 1, "outbound"),  # retract is about inbound REGISTERs only
    ]
    assert ft.evicted == 0


def test_retract_matches_truncated_usernames() -> None:
    ft = FailureTracker()
    long_user, long_host = "u" * 300, "h" * 300
    ft.observe_transaction(
        transaction(to_user=long_user, to_host=long_host, peer_ip=SCANNER_IP, finished=T0)
    )
    ft.retract(ScannerState(SCANNER_IP, scanner_since=T0), [(long_user, long_host)])
    assert [(r.user, r.count) for r in ft.records()] == [(SCANNER_USER, 1)]


def test_a_retracted_resolved_record_leaves_no_trace() -> None:
    """A resolved record moved into a scanner record is no longer first in line to make
    room: the next eviction takes one that exists."""
    ft = FailureTracker(max_entries=3)
    ft.observe_transaction(transaction(to_user="a", peer_ip=SCANNER_IP, finished=T0))
    ft.observe_attempt(
        attempt(to_user="a", outcome=AttemptOutcome.SUCCESS, status=200, finished=T0 + 1)
    )
    ft.retract(ScannerState(SCANNER_IP, scanner_since=T0 + 2), [("a", "acme.example.com")])
    for user in ("b", "c", "d"):
        ft.observe_transaction(transaction(to_user=user, finished=T0 + 3))
    assert sorted(r.user for r in ft.records()) == [SCANNER_USER, "c", "d"]
    assert ft.evicted == 1


def test_a_retracted_scanner_record_unread_before_the_ip_is_forgotten_keeps_its_count() -> None:
    scanners, ft = wired(min_users=3)
    for i, user in enumerate(("u1", "u2", "u3")):
        feed(scanners, ft, transaction(to_user=user, peer_ip=SCANNER_IP, finished=T0 + i))
    scanners.observe_attempt(attempt(peer_ip=SCANNER_IP, finished=T0 + scanners.hold + 10))
    assert scanners.scanner_state(SCANNER_IP) is None
    (record,) = ft.records()
    # the estimate taken at detection: the two usernames that moved (the third failure was
    # folded after it; a read while the IP was still classified would have counted it)
    assert (record.count, record.who) == (3, "scanner (2 usernames)")


def test_no_registration_resolves_a_scanner_record() -> None:
    """Not even one whose AOR spells the scanner record's ``*@*``."""
    scanners, ft = wired(min_users=3)
    for i, user in enumerate(("u1", "u2", "u3", "u4")):
        feed(scanners, ft, transaction(to_user=user, peer_ip=SCANNER_IP, finished=T0 + i))
    feed(scanners, ft, transaction(peer_ip=SCANNER_IP, user_agent="sipcli", status=404))
    for user in ("u1", "u4", SCANNER_USER):
        ft.observe_attempt(
            attempt(
                to_user=user,
                to_host=SCANNER_USER,
                outcome=AttemptOutcome.SUCCESS,
                status=200,
                finished=T0 + 9,
            )
        )
    assert [(r.status, r.count, r.resolved_at) for r in ft.records()] == [
        (403, 4, None),
        (404, 1, None),
    ]
