"""ScannerClassifier and its DistinctCounter: what makes a source IP a scanner, for how long,
and what the listeners are handed back."""

from __future__ import annotations

from typing import Any

import pytest

from sipwatch.model import Side
from sipwatch.pipeline.scanners import Aor, DistinctCounter, ScannerClassifier, ScannerState
from tests.test_metrics import attempt, transaction

T0 = 1767268800.0
IP = "198.51.100.66"
DOMAIN = "acme.example.com"


def rejected(user: str, ts: float, *, ip: str = IP, **kw: Any) -> Any:
    """A 403 for ``user`` from ``ip`` at log time ``ts``."""
    return transaction(to_user=user, peer_ip=ip, started=ts - 0.1, finished=ts, **kw)


class Heard:
    """A listener that keeps what ``on_detect`` handed it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float | None, list[Aor], int]] = []

    def __call__(self, state: ScannerState, retracted: list[Aor]) -> None:
        # what the state says while the listener runs (recent is cleared afterwards)
        self.calls.append(
            (state.ip, state.reason, state.scanner_since, list(retracted), len(state.recent))
        )


def classifier(**kw: Any) -> tuple[ScannerClassifier, Heard]:
    heard = Heard()
    sc = ScannerClassifier(**{"min_users": 3, "window": 60.0, **kw})
    sc.on_detect(heard)
    return sc, heard


# ----------------------------------------------------------------------------- DistinctCounter
def test_distinct_counter_is_exact_while_small() -> None:
    counter = DistinctCounter()
    assert counter.count() == 0
    for i in range(64):
        counter.add(f"user{i}")
        counter.add(f"user{i}")  # a repeat is no new username
    assert counter.count() == 64


@pytest.mark.parametrize("n", [65, 300, 2_000, 100_000])
def test_distinct_counter_estimates_within_its_error_beyond_64(n: int) -> None:
    """256 registers: a standard error of about 6.5 %; 20 % is three of them."""
    counter = DistinctCounter()
    for i in range(n):
        counter.add(f"{i:06d}")
    for i in range(n):  # repeats change nothing
        counter.add(f"{i:06d}")
    assert abs(counter.count() - n) <= 0.2 * n
    assert counter.count() != n or n < 100  # an estimate, no longer the exact set


def test_distinct_counter_takes_any_text() -> None:
    counter = DistinctCounter()
    for value in ("", "\udcff", "ü" * 1000, "\x00"):
        counter.add(value)
    assert counter.count() == 4


# ----------------------------------------------------------------------------- settings
def test_settings_and_their_defaults() -> None:
    sc = ScannerClassifier()
    assert (sc.min_users, sc.window, sc.hold, sc.max_ips) == (10, 60.0, 300.0, 20_000)
    assert ScannerClassifier(window=600.0).hold == 600.0  # never shorter than the window
    assert ScannerClassifier(hold=30.0).hold == 30.0
    assert ScannerClassifier(min_users=2).min_users == 2
    with pytest.raises(ValueError, match=r"^min_users must be >= 2$"):
        ScannerClassifier(min_users=1)


# ----------------------------------------------------------------------------- evidence
def test_usernames_rejected_within_the_window_make_a_scanner() -> None:
    sc, heard = classifier()
    sc.observe_transaction(rejected("100", T0))
    sc.observe_transaction(rejected("101", T0 + 1))
    assert sc.scanner_state(IP) is None
    assert (sc.distinct_users(IP), sc.rejections(IP), sc.is_scanner(IP)) == (2, 2, False)
    sc.observe_transaction(rejected("102", T0 + 2))
    state = sc.scanner_state(IP)
    assert state is not None
    assert (state.scanner_since, state.reason, state.tool) == (T0 + 2, "usernames", "")
    # the first two reached the observers as ordinary failures; the third did not
    assert heard.calls == [(IP, "usernames", T0 + 2, [("100", DOMAIN), ("101", DOMAIN)], 3)]
    assert state.recent == {}
    assert (state.folded, state.rejections, state.last_seen) == (1, 3, T0 + 2)
    assert (sc.distinct_users(IP), sc.detected, sc.is_scanner(IP)) == (3, 1, True)
    assert sc.scanners() == [state]


def test_a_repeated_username_is_retracted_when_it_triggers() -> None:
    sc, heard = classifier()
    for i, user in enumerate(("100", "101", "100", "102")):
        sc.observe_transaction(rejected(user, T0 + i))
    assert heard.calls[0][3] == [("100", DOMAIN), ("101", DOMAIN)]
    sc2, heard2 = classifier()
    for i, user in enumerate(("100", "101", "102", "102")):
        sc2.observe_transaction(rejected(user, T0 + i))
    assert heard2.calls[0][3] == [("100", DOMAIN), ("101", DOMAIN)]


def test_only_a_new_username_crosses_the_threshold_and_it_is_not_retracted() -> None:
    """Repeats of known usernames never trigger; the one that does has not reached the
    observers yet (its failure is folded), every earlier one has."""
    sc, heard = classifier(min_users=3, window=10.0)
    for i, user in enumerate(("100", "101", "101", "100", "101")):
        sc.observe_transaction(rejected(user, T0 + i))
    assert sc.scanner_state(IP) is None
    sc.observe_transaction(rejected("102", T0 + 5))
    assert heard.calls[0][3] == [("100", DOMAIN), ("101", DOMAIN)]
    sc2, heard2 = classifier(min_users=2)
    sc2.observe_transaction(rejected("200", T0))
    sc2.observe_transaction(rejected("200", T0 + 1, to_host="other.example.com"))
    assert heard2.calls[0][3] == [("200", DOMAIN)]  # an AOR is user and domain


def test_a_username_rejected_before_the_window_is_a_new_guess_again() -> None:
    """Its first rejection stays an ordinary failure, like every one older than the window."""
    sc, heard = classifier(min_users=3, window=60.0)
    sc.observe_transaction(rejected("100", T0))
    sc.observe_transaction(rejected("101", T0 + 1))
    sc.observe_transaction(rejected("102", T0 + 100))  # 100 and 101 fall out of the window
    sc.observe_transaction(rejected("103", T0 + 101))
    sc.observe_transaction(rejected("100", T0 + 102))
    assert heard.calls == [(IP, "usernames", T0 + 102, [("102", DOMAIN), ("103", DOMAIN)], 3)]


def test_usernames_older_than_the_window_do_not_count() -> None:
    sc, heard = classifier(window=60.0)
    sc.observe_transaction(rejected("100", T0))
    sc.observe_transaction(rejected("101", T0 + 1))
    sc.observe_transaction(rejected("102", T0 + 61))  # 100 fell out: 61 s old
    assert sc.scanner_state(IP) is None
    assert sc.distinct_users(IP) == 2
    sc.observe_transaction(rejected("103", T0 + 61))  # 101 is exactly 60 s old: it counts
    assert heard.calls == [(IP, "usernames", T0 + 61, [("101", DOMAIN), ("102", DOMAIN)], 3)]


def test_a_scanner_user_agent_is_a_scanner_at_once() -> None:
    sc, heard = classifier()
    sc.observe_transaction(rejected("100", T0))
    sc.observe_transaction(rejected("101", T0 + 1, user_agent="friendly-scanner", status=500))
    state = sc.scanner_state(IP)
    assert state is not None
    assert (state.reason, state.tool, state.scanner_since) == (
        "user_agent:sipvicious",
        "sipvicious",
        T0 + 1,
    )
    # a 500 is no rejection, but the tool's name is evidence enough
    assert (state.rejections, state.folded) == (1, 1)
    assert heard.calls == [(IP, "user_agent:sipvicious", T0 + 1, [("100", DOMAIN)], 1)]
    assert sc.distinct_users(IP) == 2


def test_what_is_no_evidence() -> None:
    sc, heard = classifier(min_users=2)
    sc.observe_transaction(rejected("100", T0, side=Side.OUTBOUND))
    sc.observe_transaction(rejected("101", T0, ip=""))
    sc.observe_transaction(rejected("102", T0, timed_out=True, status=0))
    sc.observe_transaction(rejected("103", T0, status=200, user_agent="sipvicious"))
    sc.observe_transaction(rejected("104", T0, status=401))
    for i in range(5):  # an office NAT during a registrar outage
        sc.observe_transaction(rejected(f"2{i}", T0 + i, status=503))
        sc.observe_transaction(rejected(f"3{i}", T0 + i, status=400))
    assert (len(sc), sc.detected, heard.calls) == (0, 0, [])
    assert sc.is_scanner(IP) is False
    assert (sc.distinct_users(IP), sc.rejections(IP)) == (0, 0)


def test_registered_usernames_are_no_guesses() -> None:
    sc, heard = classifier(min_users=2, registered=lambda user, domain: user == "100")
    sc.observe_transaction(rejected("100", T0))
    sc.observe_transaction(rejected("101", T0 + 1))
    assert sc.scanner_state(IP) is None
    assert (sc.rejections(IP), sc.distinct_users(IP)) == (2, 1)
    sc.observe_transaction(rejected("102", T0 + 2))
    assert heard.calls[0][3] == [("101", DOMAIN)]


def test_a_scanner_outage_answer_still_counts_as_its_traffic() -> None:
    sc, _ = classifier(min_users=2)
    sc.observe_transaction(rejected("100", T0))
    sc.observe_transaction(rejected("101", T0 + 1))
    state = sc.scanner_state(IP)
    assert state is not None and state.folded == 1
    sc.observe_transaction(rejected("102", T0 + 5, status=503))
    assert (state.folded, state.last_seen) == (2, T0 + 5)  # the answer's time, not the request's
    sc.observe_transaction(rejected("103", T0 + 6, status=404))
    assert (state.folded, state.rejections, state.last_seen) == (3, 3, T0 + 6)
    assert sc.distinct_users(IP) == 4  # 100 and 101 at detection, 102 and 103 since
    # another address's 503 is not tracked at all
    sc.observe_transaction(rejected("104", T0 + 7, status=503, ip="203.0.113.1"))
    assert len(sc) == 1


# ----------------------------------------------------------------------------- ending
def test_quiet_for_longer_than_hold_ends_the_classification() -> None:
    sc, _ = classifier(min_users=2, hold=100.0)
    sc.observe_transaction(rejected("100", T0))
    sc.observe_transaction(rejected("101", T0 + 1))
    sc.observe_attempt(attempt(peer_ip=IP, finished=T0 + 101))  # exactly hold: still one
    assert sc.is_scanner(IP) is True
    sc.observe_attempt(attempt(peer_ip="203.0.113.1", finished=T0 + 500))  # another IP
    assert sc.is_scanner(IP) is True
    held = sc.scanner_state(IP)  # as a listener keeps it
    assert held is not None and held.reason == "usernames"
    sc.observe_attempt(attempt(peer_ip=IP, finished=T0 + 101.5))
    assert sc.is_scanner(IP) is False
    assert sc.scanners() == []
    # the state it handed out says so too
    assert (held.scanner_since, held.reason, held.users, held.recent) == (None, "", None, {})
    assert (sc.rejections(IP), sc.distinct_users(IP), len(sc)) == (0, 0, 1)  # starts afresh
    # an attempt from an address that is no scanner changes nothing
    sc.observe_attempt(attempt(peer_ip=IP, finished=T0 + 900))
    assert len(sc) == 1


def test_a_rejection_after_a_long_quiet_starts_the_count_afresh() -> None:
    sc, heard = classifier(min_users=2, hold=100.0)
    sc.observe_transaction(rejected("100", T0))
    sc.observe_transaction(rejected("101", T0 + 1))
    sc.observe_transaction(rejected("102", T0 + 101))  # exactly hold: still the scanner's
    assert sc.is_scanner(IP) is True
    sc.observe_transaction(rejected("103", T0 + 201.5))  # quiet for longer: forgotten
    assert sc.is_scanner(IP) is False
    assert (sc.rejections(IP), sc.distinct_users(IP)) == (1, 1)
    sc.observe_transaction(rejected("104", T0 + 202))
    assert sc.is_scanner(IP) is True
    assert [call[3] for call in heard.calls] == [[("100", DOMAIN)], [("103", DOMAIN)]]
    assert sc.detected == 2


def test_is_scanner_by_user_agent_alone() -> None:
    sc = ScannerClassifier()
    assert sc.is_scanner("203.0.113.1", "sipcli/v1.8") is True
    assert sc.is_scanner("203.0.113.1", "Yealink SIP-T46S") is False
    assert sc.is_scanner("203.0.113.1", "") is False
    assert sc.is_scanner("203.0.113.1") is False


# ----------------------------------------------------------------------------- bounds
def test_the_least_recently_failing_ip_that_is_no_scanner_goes_first() -> None:
    sc, _ = classifier(min_users=2, max_ips=3)
    sc.observe_transaction(rejected("100", T0, ip="10.0.0.1"))
    sc.observe_transaction(rejected("101", T0 + 1, ip="10.0.0.1"))  # a scanner, oldest
    sc.observe_transaction(rejected("100", T0 + 2, ip="10.0.0.2"))
    sc.observe_transaction(rejected("100", T0 + 3, ip="10.0.0.3"))
    sc.observe_transaction(rejected("100", T0 + 4, ip="10.0.0.2"))  # .2 failed again: newer
    assert sc.is_scanner("10.0.0.1") is True
    sc.observe_transaction(rejected("100", T0 + 5, ip="10.0.0.4"))
    rejections = {ip: sc.rejections(ip) for ip in ("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4")}
    assert rejections == {"10.0.0.1": 2, "10.0.0.2": 2, "10.0.0.3": 0, "10.0.0.4": 1}  # .3 went
    assert len(sc) == 3


def test_when_every_ip_is_a_scanner_the_oldest_goes() -> None:
    """The new address is tracked (and can be classified); the oldest scanner makes room.
    It used to be the other way round: the new IP, the one non-scanner, was dropped at once
    and classified on an orphaned state, so later failures from it were never folded."""
    sc, heard = classifier(max_ips=2)
    for i, ip in enumerate(("10.0.0.1", "10.0.0.2", "10.0.0.3")):
        sc.observe_transaction(rejected("100", T0 + i, ip=ip, user_agent="sipvicious"))
    assert [s.ip for s in sc.scanners()] == ["10.0.0.2", "10.0.0.3"]
    assert (len(sc), sc.detected, len(heard.calls)) == (2, 3, 3)
    assert sc.scanner_state("10.0.0.3") is not None
    sc.observe_transaction(rejected("101", T0 + 9, ip="10.0.0.3", user_agent="sipvicious"))
    assert (sc.detected, sc.distinct_users("10.0.0.3")) == (3, 2)


def test_a_new_address_gets_room_among_scanners_and_can_become_one() -> None:
    sc, _ = classifier(min_users=2, max_ips=2)
    for i, ip in enumerate(("10.0.0.1", "10.0.0.2")):
        sc.observe_transaction(rejected("100", T0 + i, ip=ip, user_agent="sipvicious"))
    sc.observe_transaction(rejected("100", T0 + 5, ip="10.0.0.9"))
    sc.observe_transaction(rejected("101", T0 + 6, ip="10.0.0.9"))
    assert [s.ip for s in sc.scanners()] == ["10.0.0.2", "10.0.0.9"]


def test_before_classification_at_most_min_users_names_are_kept() -> None:
    sc, _ = classifier(min_users=3, window=1.0)
    for i in range(100):  # one username a second: never three in the window
        sc.observe_transaction(rejected(f"u{i}", T0 + i))
    assert sc.scanner_state(IP) is None
    assert sc.distinct_users(IP) <= 3
    assert sc.rejections(IP) == 100
