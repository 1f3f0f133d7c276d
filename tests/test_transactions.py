"""REGISTER transaction and attempt reassembly: retransmissions, challenges, timeouts, floods."""

from __future__ import annotations

import tracemalloc

import pytest

from sipwatch.ingest.framing import LogParser
from sipwatch.ingest.transactions import RegisterTracker, new_tracker
from sipwatch.model import (
    AttemptOutcome,
    Direction,
    LogChunk,
    RegisterAttempt,
    RegisterTransaction,
    Side,
    SipMessage,
    Stream,
)
from tests.ingest_support import answer, sip
from tools.synth import Device, Scenario, challenge_header

T0 = 1772366400.0

# every test here runs once per tracker implementation (compiled, and the reference)
pytestmark = pytest.mark.usefixtures("tracker_implementation")


def run(
    text: str, **kw: float
) -> tuple[list[RegisterTransaction], list[RegisterAttempt], RegisterTracker]:
    parser = LogParser()
    tracker = new_tracker(**kw)  # type: ignore[arg-type]
    txs: list[RegisterTransaction] = []
    atts: list[RegisterAttempt] = []

    def take(done: list[RegisterTransaction | RegisterAttempt]) -> None:
        for item in done:
            (txs if isinstance(item, RegisterTransaction) else atts).append(item)  # type: ignore[arg-type]

    for ev in parser.feed(LogChunk("f", Stream.TEXT, text)) + parser.flush():
        if isinstance(ev, SipMessage):
            take(list(tracker.on_message(ev)))
    take(list(tracker.flush()))
    return txs, atts, tracker


def test_challenge_then_success_is_one_attempt_of_two_transactions() -> None:
    sc = Scenario(T0)
    sc.register_ok(Device("1001", "acme.example.com", "203.0.113.1"))
    txs, atts, _ = run("".join(sc.drachtio))
    assert [t.status for t in txs] == [401, 200]
    assert len(atts) == 1
    att = atts[0]
    assert att.outcome is AttemptOutcome.SUCCESS and att.challenged and att.transactions == 2
    assert att.side is Side.INBOUND and att.aor == "1001@acme.example.com"
    assert txs[1].latency is not None and txs[1].latency >= 0


def test_403_without_challenge_vs_after_challenge() -> None:
    sc = Scenario(T0)
    sc.register_rejected(
        Device("1", "x.example.com", "203.0.113.2"),
        403,
        "Forbidden",
        "Unknown or invalid realm",
        challenged=False,
    )
    sc.register_rejected(
        Device("2", "acme.example.com", "203.0.113.3"),
        403,
        "Forbidden",
        "Invalid credentials",
        challenged=True,
    )
    _, atts, _ = run("".join(sc.drachtio))
    by_user = {a.to_user: a for a in atts}
    assert not by_user["1"].challenged and by_user["1"].x_reason == "Unknown or invalid realm"
    assert by_user["2"].challenged and by_user["2"].outcome is AttemptOutcome.FAILURE


def test_retransmissions_are_one_transaction() -> None:
    sc = Scenario(T0)
    dev = Device("3", "acme.example.com", "203.0.113.4")
    req = dev.register()
    for _ in range(3):  # request retransmitted (T1 doubling)
        sc.recv(dev, req)
        sc.tick(0.5)
    resp = dev.response(req, 403, "Forbidden", ["X-Reason: Invalid credentials"])
    sc.send(dev, resp)
    sc.recv(dev, req)  # retransmission after the final answer
    sc.send(dev, resp)  # drachtio re-sends the answer
    txs, atts, tr = run("".join(sc.drachtio))
    assert len(txs) == 1
    assert txs[0].requests == 4 and txs[0].responses == 2 and txs[0].status == 403
    assert tr.stats.retransmitted_requests == 3 and tr.stats.retransmitted_responses == 1
    assert len(atts) == 1


def test_unanswered_request_times_out_after_timer_f_of_log_time() -> None:
    sc = Scenario(T0)
    lost = Device("4", "acme.example.com", "203.0.113.5")
    sc.recv(lost, lost.register())
    sc.tick(10)
    sc.register_ok(Device("5", "acme.example.com", "203.0.113.6"))  # 10 s later: not yet expired
    parser = LogParser()
    tracker = new_tracker()
    done: list[RegisterTransaction | RegisterAttempt] = []
    for ev in parser.feed(LogChunk("f", Stream.TEXT, "".join(sc.drachtio))) + parser.flush():
        if isinstance(ev, SipMessage):
            done += tracker.on_message(ev)
    assert not any(isinstance(d, RegisterTransaction) and d.timed_out for d in done)
    late = tracker.advance(T0 + 40)
    timed = [d for d in late if isinstance(d, RegisterTransaction)]
    assert len(timed) == 1 and timed[0].timed_out and timed[0].outcome_key == "timeout"
    assert any(isinstance(d, RegisterAttempt) and d.outcome is AttemptOutcome.TIMEOUT for d in late)


def test_end_of_input_times_out_open_transactions() -> None:
    sc = Scenario(T0)
    dev = Device("6", "acme.example.com", "203.0.113.7")
    sc.recv(dev, dev.register())
    txs, atts, _ = run("".join(sc.drachtio))
    assert [t.outcome_key for t in txs] == ["timeout"]
    assert atts[0].outcome is AttemptOutcome.TIMEOUT


def test_challenge_without_return_is_abandoned_and_401_loop_detected() -> None:
    sc = Scenario(T0)
    scanner = Device("100", "198.51.100.1", "185.0.0.1", user_agent="friendly-scanner")
    r = scanner.register()
    sc.recv(scanner, r)
    sc.send(scanner, scanner.response(r, 401, "Unauthorized", [challenge_header("x")]))
    looper = Device("7", "acme.example.com", "203.0.113.8")
    for _ in range(3):  # wrong credentials answered with 401 again and again
        r = looper.register(auth=True)
        sc.recv(looper, r)
        sc.send(
            looper, looper.response(r, 401, "Unauthorized", [challenge_header("acme.example.com")])
        )
    _, atts, _ = run("".join(sc.drachtio))
    outcome = {a.to_user: a.outcome for a in atts}
    assert outcome == {"100": AttemptOutcome.ABANDONED, "7": AttemptOutcome.CHALLENGE_LOOP}


def test_orphan_response_counts_once() -> None:
    sc = Scenario(T0)
    dev = Device("8", "acme.example.com", "203.0.113.9")
    req = dev.register()
    resp = dev.response(req, 403, "Forbidden", ["X-Reason: Invalid credentials"])
    sc.send(dev, resp)
    sc.send(dev, resp)
    txs, _, tr = run("".join(sc.drachtio))
    assert len(txs) == 1 and not txs[0].saw_request and txs[0].to_user == "8"
    assert tr.stats.orphan_responses == 1


def test_outbound_registration_is_tagged_outbound() -> None:
    sc = Scenario(T0)
    carrier = Device("trunk1", "carrier.example.net", "192.0.2.50")
    req = carrier.register()
    sc.send(carrier, req)  # jambonz registers to a carrier
    sc.recv(carrier, carrier.response(req, 200, "OK"))
    txs, atts, _ = run("".join(sc.drachtio))
    assert txs[0].side is Side.OUTBOUND and atts[0].side is Side.OUTBOUND


def test_reused_branch_with_other_call_id_is_a_new_transaction() -> None:
    sc = Scenario(T0)
    a = Device("9", "acme.example.com", "203.0.113.10")
    b = Device("10", "acme.example.com", "203.0.113.11")
    ra = a.register(branch="z9hG4bKsame")
    a.cseq = 1
    rb = b.register(branch="z9hG4bKsame")
    b.cseq = 1
    sc.recv(a, ra)
    sc.recv(b, rb)
    sc.send(a, a.response(ra, 200, "OK"))
    sc.send(b, b.response(rb, 403, "Forbidden"))
    txs, _, _ = run("".join(sc.drachtio))
    assert sorted((t.to_user, t.status) for t in txs) == [("10", 403), ("9", 200)]


def test_flood_of_unanswered_requests_stays_bounded() -> None:
    tracker = new_tracker(max_pending=1000)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    timed_out = 0
    for i in range(20_000):
        msg = SipMessage(
            T0 + i * 0.0001,
            "f",
            Direction.RECV,
            "udp",
            "185.0.0.2",
            5060,
            400,
            True,
            "REGISTER",
            0,
            "",
            "sip:x",
            f"c{i}",
            1,
            f"z9hG4bK{i}",
            str(i),
            "x",
            str(i),
            "x",
            "",
            3600,
            "sipvicious",
            "",
            "",
            False,
            "",
            "",
        )
        timed_out += sum(1 for d in tracker.on_message(msg) if isinstance(d, RegisterTransaction))
    grown = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert tracker.inflight_transactions == 1000  # 2 s of log: nothing expired by time
    assert tracker.inflight_attempts == 1000
    assert tracker.stats.evicted == 19_000 == timed_out
    assert grown < 5_000_000


# ---------------------------------------------------------------- pinned behaviour, message by message
def feed(
    tracker: RegisterTracker, *msgs: SipMessage
) -> list[RegisterTransaction | RegisterAttempt]:
    done: list[RegisterTransaction | RegisterAttempt] = []
    for m in msgs:
        done += tracker.on_message(m)
    return done


def test_a_response_cut_before_its_cseq_is_matched_by_its_via_branch() -> None:
    """The branch is the first key: a response whose CSeq line was cut (cseq 0) still finds
    its request."""
    tr = new_tracker()
    req = sip(T0, cseq=5, branch="z9hG4bKcut")
    done = feed(
        tr, req, sip(T0 + 0.1, status=200, direction=Direction.SEND, cseq=0, branch="z9hG4bKcut")
    )
    tx = [d for d in done if isinstance(d, RegisterTransaction)]
    assert len(tx) == 1 and tx[0].saw_request and tx[0].cseq == 5 and tx[0].status == 200
    assert tr.stats.orphan_responses == 0 and tr.inflight_transactions == 0


def test_a_response_with_another_branch_is_matched_by_call_id_and_cseq() -> None:
    tr = new_tracker()
    req = sip(T0, branch="z9hG4bKreq")
    done = feed(tr, req, answer(req, T0 + 0.1, 403, reason="Forbidden"))
    done = feed(tr, req, sip(T0 + 0.2, status=403, direction=Direction.SEND, branch="other"))
    assert tr.stats.retransmitted_requests == 1 and tr.stats.retransmitted_responses == 1
    assert tr.stats.orphan_responses == 0 and tr.stats.transactions == 1 and done == []


def test_requests_without_branch_rfc2543_pair_on_call_id_and_cseq() -> None:
    tr = new_tracker()
    req = sip(T0, branch="")
    done = feed(tr, req, req, answer(req, T0 + 0.5, 200, reason="OK"))
    txs = [d for d in done if isinstance(d, RegisterTransaction)]
    assert [(t.status, t.requests, t.branch) for t in txs] == [(200, 2, "")]


def test_expiry_is_driven_by_incoming_messages_of_any_method() -> None:
    """Log time moves with every message: an OPTIONS 32 s later times out the REGISTER."""
    tr = new_tracker(timer_f=32.0)
    lost = sip(T0, call_id="lost")
    assert feed(tr, lost) == []
    assert feed(tr, sip(T0 + 31.999, method="OPTIONS", call_id="ping")) == []
    assert tr.inflight_transactions == 1
    done = feed(tr, sip(T0 + 32.0, method="OPTIONS", call_id="ping2"))  # the deadline itself
    tx, att = done
    assert isinstance(tx, RegisterTransaction) and tx.timed_out and tx.outcome_key == "timeout"
    assert tx.finished == T0 + 32.0 and tx.latency is None
    assert isinstance(att, RegisterAttempt) and att.outcome is AttemptOutcome.TIMEOUT
    assert att.finished == T0 + 32.0 and att.status == 0
    assert tr.inflight_transactions == 0 and tr.inflight_attempts == 0
    assert tr.now == T0 + 32.0 and tr.stats.transactions == 1


def test_older_messages_never_move_log_time_back() -> None:
    tr = new_tracker()
    feed(tr, sip(T0 + 10, call_id="a"))
    feed(tr, sip(T0 + 5, call_id="b"))
    assert tr.now == T0 + 10
    assert tr.advance(T0 + 1) == [] and tr.now == T0 + 10
    # expiry walks the transactions in arrival order (a deque: O(1) per message), so "b",
    # logged out of order, waits for "a"; its own times are still its own
    assert tr.advance(T0 + 37) == []
    timed = [d for d in tr.advance(T0 + 42) if isinstance(d, RegisterTransaction)]
    assert [(t.call_id, t.finished) for t in timed] == [("a", T0 + 42), ("b", T0 + 37)]


def test_provisional_responses_finish_nothing() -> None:
    tr = new_tracker()
    req = sip(T0)
    assert feed(tr, req, answer(req, T0 + 0.01, 100, reason="Trying")) == []
    assert tr.inflight_transactions == 1 and tr.stats.orphan_responses == 0
    done = feed(tr, answer(req, T0 + 0.02, 199))
    assert done == [] and tr.inflight_transactions == 1
    done = feed(tr, answer(req, T0 + 0.03, 200, reason="OK"))
    assert [d.status for d in done if isinstance(d, RegisterTransaction)] == [200]


def test_a_407_challenge_then_success_is_one_challenged_attempt() -> None:
    tr = new_tracker()
    r1 = sip(T0, direction=Direction.SEND, cseq=1, branch="b1")
    r2 = sip(T0 + 0.2, direction=Direction.SEND, cseq=2, branch="b2", auth="trunk")
    done = feed(
        tr,
        r1,
        answer(
            r1, T0 + 0.1, 407, reason="Proxy Authentication Required", challenge='Digest realm="c"'
        ),
        r2,
        answer(r2, T0 + 0.3, 200, reason="OK"),
    )
    txs = [d for d in done if isinstance(d, RegisterTransaction)]
    atts = [d for d in done if isinstance(d, RegisterAttempt)]
    assert [(t.side, t.status, t.reason) for t in txs] == [
        (Side.OUTBOUND, 407, "Proxy Authentication Required"),
        (Side.OUTBOUND, 200, "OK"),
    ]
    assert txs[0].www_authenticate == 'Digest realm="c"' and txs[0].latency == pytest.approx(0.1)
    (att,) = atts
    assert att.outcome is AttemptOutcome.SUCCESS and att.side is Side.OUTBOUND
    assert (att.challenged, att.challenges, att.auth_rejections) == (True, 1, 0)
    assert (att.transactions, att.last_cseq, att.status) == (2, 2, 200)
    assert att.auth_username == "trunk" and att.finished == T0 + 0.3


@pytest.mark.parametrize("status", [401, 407])
def test_credentials_answered_by_three_challenges_is_a_loop(status: int) -> None:
    tr = new_tracker()
    done: list[RegisterTransaction | RegisterAttempt] = []
    for i in range(1, 4):
        req = sip(T0 + i, cseq=i, branch=f"b{i}", auth="1001")
        done += feed(tr, req, answer(req, T0 + i + 0.01, status))
    atts = [d for d in done if isinstance(d, RegisterAttempt)]
    assert len(atts) == 1 and atts[0].outcome is AttemptOutcome.CHALLENGE_LOOP
    assert (atts[0].challenges, atts[0].auth_rejections, atts[0].status) == (3, 3, status)
    assert tr.inflight_attempts == 0


def test_two_challenges_to_credentials_then_silence_is_a_loop_and_none_is_abandoned() -> None:
    tr = new_tracker(timer_f=32.0)
    done: list[RegisterTransaction | RegisterAttempt] = []
    r1 = sip(T0, cseq=1, branch="b1", call_id="creds")
    done += feed(tr, r1, answer(r1, T0 + 0.01, 401))
    r2 = sip(T0 + 1, cseq=2, branch="b2", call_id="creds", auth="1001")
    done += feed(tr, r2, answer(r2, T0 + 1.01, 401))
    plain = sip(T0 + 2, cseq=1, branch="b3", call_id="plain")
    done += feed(tr, plain, answer(plain, T0 + 2.01, 401))
    assert not [d for d in done if isinstance(d, RegisterAttempt)]
    assert tr.inflight_attempts == 2
    # the waits end 32 s after each challenge: 1.01 + 32 for "creds", 2.01 + 32 for "plain"
    assert feed(tr, sip(T0 + 33.0, method="OPTIONS")) == []
    late = feed(tr, sip(T0 + 34.5, method="OPTIONS"))
    assert [(a.call_id, a.outcome, a.challenges, a.auth_rejections) for a in late] == [
        ("creds", AttemptOutcome.CHALLENGE_LOOP, 2, 1),
        ("plain", AttemptOutcome.ABANDONED, 1, 0),
    ]


def test_a_device_that_comes_back_within_timer_f_is_not_abandoned() -> None:
    tr = new_tracker(timer_f=32.0)
    r1 = sip(T0, cseq=1, branch="b1")
    feed(tr, r1, answer(r1, T0 + 0.01, 401))
    r2 = sip(T0 + 31, cseq=2, branch="b2", auth="1001")  # slow, but within the wait
    done = feed(tr, r2)
    done += feed(tr, sip(T0 + 40, method="OPTIONS"))  # the first wait is over: not abandoned
    assert not [d for d in done if isinstance(d, RegisterAttempt)]
    done = feed(tr, answer(r2, T0 + 40.5, 403, x_reason="Invalid credentials"))
    (att,) = [d for d in done if isinstance(d, RegisterAttempt)]
    assert att.outcome is AttemptOutcome.FAILURE and att.x_reason == "Invalid credentials"
    assert att.challenged and att.transactions == 2 and att.latency == pytest.approx(40.5)


def test_the_answer_to_an_old_transaction_does_not_close_a_newer_one() -> None:
    """The attempt times out only when its newest transaction does."""
    tr = new_tracker(timer_f=32.0)
    r1 = sip(T0, cseq=1, branch="b1")
    r2 = sip(T0 + 20, cseq=2, branch="b2")  # the device gave up on CSeq 1 and sent CSeq 2
    feed(tr, r1, r2)
    done = feed(tr, sip(T0 + 33, method="OPTIONS"))  # CSeq 1 times out, CSeq 2 still open
    assert [type(d) for d in done] == [RegisterTransaction] and tr.inflight_attempts == 1
    done = feed(tr, answer(r2, T0 + 34, 200))
    (att,) = [d for d in done if isinstance(d, RegisterAttempt)]
    assert att.outcome is AttemptOutcome.SUCCESS and att.transactions == 2


def test_transaction_and_attempt_fields_follow_the_messages() -> None:
    tr = new_tracker()
    req = sip(T0, to_user="", expires=60, auth="alice")
    done = feed(
        tr, req, answer(req, T0 + 0.25, 403, to_user="1001", reason="Forbidden", x_reason="Nope")
    )
    tx, att = done
    assert isinstance(tx, RegisterTransaction) and isinstance(att, RegisterAttempt)
    assert (tx.to_user, tx.to_host) == ("1001", "acme.example.com")  # filled from the answer
    assert (tx.request_uri, tx.auth_username, tx.has_auth, tx.expires) == (
        "sip:acme.example.com",
        "alice",
        True,
        60,
    )
    assert (tx.status, tx.reason, tx.x_reason, tx.finished) == (403, "Forbidden", "Nope", T0 + 0.25)
    assert (tx.requests, tx.responses, tx.saw_request, tx.latency) == (1, 1, True, 0.25)
    assert (att.status, att.reason, att.x_reason, att.outcome) == (
        403,
        "Forbidden",
        "Nope",
        AttemptOutcome.FAILURE,
    )
    assert (att.auth_username, att.expires, att.started, att.request_uri) == (
        "alice",
        60,
        T0,
        "sip:acme.example.com",
    )
    assert not att.challenged and att.challenges == 0


def test_an_orphan_answer_is_one_transaction_and_one_attempt() -> None:
    tr = new_tracker()
    resp = sip(T0, status=200, direction=Direction.SEND, reason="OK")
    done = feed(tr, resp)
    tx, att = done
    assert isinstance(tx, RegisterTransaction) and isinstance(att, RegisterAttempt)
    assert (tx.saw_request, tx.requests, tx.responses, tx.request_uri, tx.has_auth) == (
        False,
        0,
        1,
        "",
        False,
    )
    assert tx.latency is None and tx.side is Side.INBOUND
    assert att.outcome is AttemptOutcome.SUCCESS and att.transactions == 1
    assert tr.stats.orphan_responses == 1 and tr.inflight_transactions == 0
    assert tr.inflight_attempts == 0
    # an orphan 401 waits for the device like any challenge
    feed(tr, sip(T0 + 1, status=401, direction=Direction.SEND, call_id="c2"))
    assert tr.inflight_attempts == 1
    assert [a.outcome for a in tr.flush() if isinstance(a, RegisterAttempt)] == [
        AttemptOutcome.ABANDONED
    ]


def test_orphan_challenges_cannot_grow_open_attempts_past_the_bound() -> None:
    """Found by the fuzzer: 401s whose request is not in the log opened attempts unbounded."""
    tr = new_tracker(max_pending=10)
    closed = []
    for i in range(100):
        resp = sip(T0 + i * 0.01, status=401, direction=Direction.SEND, call_id=f"o{i}")
        closed += [d for d in tr.on_message(resp) if isinstance(d, RegisterAttempt)]
        assert tr.inflight_attempts <= 10
    assert tr.inflight_attempts == 10  # 91 closed the oldest first, one or two at a time
    assert [a.call_id for a in closed] == [f"o{i}" for i in range(90)]
    assert {a.outcome for a in closed} == {AttemptOutcome.ABANDONED}
    assert tr.stats.evicted_attempts == 90


def test_a_flood_of_call_ids_closes_the_oldest_attempts_first() -> None:
    tr = new_tracker(max_pending=100)
    closed: list[RegisterAttempt] = []
    for i in range(251):  # odd: one past a multiple of the bound
        closed += [
            d
            for d in tr.on_message(sip(T0 + i * 0.001, call_id=f"c{i}", branch=f"b{i}"))
            if isinstance(d, RegisterAttempt)
        ]
    assert tr.inflight_attempts == 100 and tr.inflight_transactions == 100
    assert [a.call_id for a in closed] == [f"c{i}" for i in range(151)]
    assert {a.outcome for a in closed} == {AttemptOutcome.TIMEOUT}
    assert tr.stats.evicted == 151 and tr.stats.transactions == 151


def test_defaults() -> None:
    tr = new_tracker()
    assert (tr.timer_f, tr.max_pending, tr.now) == (32.0, 100_000, 0.0)
    assert tr.advance(0.5) == [] and tr.now == 0.5


def test_an_attempt_wait_expires_on_its_own_deadline() -> None:
    """No transaction is left to time out, only the wait for the device's second REGISTER:
    a message exactly at that deadline ends it."""
    tr = new_tracker(timer_f=32.0)
    req = sip(T0)
    feed(tr, req, answer(req, T0 + 10, 401))  # a slow challenge: the wait ends at T0 + 42
    assert feed(tr, sip(T0 + 33, method="OPTIONS")) == []  # the transaction leaves the timeline
    assert feed(tr, sip(T0 + 41.999, method="OPTIONS")) == []
    (att,) = feed(tr, sip(T0 + 42, method="OPTIONS"))
    assert isinstance(att, RegisterAttempt) and att.outcome is AttemptOutcome.ABANDONED
    assert att.finished == T0 + 10 and att.status == 401


def test_counters_count_every_occurrence() -> None:
    tr = new_tracker()
    open_req = sip(T0, call_id="open")
    feed(tr, open_req)
    for i in range(3):  # three orphans while a request is open
        feed(tr, sip(T0 + i, status=200, direction=Direction.SEND, call_id=f"o{i}"))
    assert tr.stats.orphan_responses == 3 and tr.inflight_transactions == 1
    req = sip(T0 + 5, call_id="r")
    resp = answer(req, T0 + 5.1, 403)
    feed(tr, req, resp, resp, resp)
    assert tr.stats.retransmitted_responses == 2 and tr.stats.transactions == 4
    feed(tr, req, req)
    assert tr.stats.retransmitted_requests == 2


def test_a_late_copy_after_expiry_is_a_new_orphan_not_a_retransmission() -> None:
    """Expired transactions leave both indexes (by branch and by Call-ID+CSeq)."""
    for branch in ("z9hG4bKlate", ""):
        tr = new_tracker(timer_f=32.0)
        req = sip(T0, branch=branch)
        resp = answer(req, T0 + 0.1, 200)
        feed(tr, req, resp)
        feed(tr, sip(T0 + 40, method="OPTIONS"))  # the transaction expires
        done = feed(tr, answer(req, T0 + 41, 200))
        assert [type(d) for d in done] == [RegisterTransaction, RegisterAttempt]
        assert tr.stats.orphan_responses == 1 and tr.stats.retransmitted_responses == 0


def test_the_answer_does_not_rename_the_transaction() -> None:
    tr = new_tracker()
    req = sip(T0, to_user="1001")
    (tx, _) = feed(tr, req, answer(req, T0 + 0.1, 200, to_user="other"))
    assert isinstance(tx, RegisterTransaction) and tx.to_user == "1001"


def test_fields_copied_from_the_request_to_transaction_and_attempt() -> None:
    tr = new_tracker()
    req = sip(T0)
    tx, att = feed(tr, req, answer(req, T0 + 0.1, 200))
    for item in (tx, att):
        assert (item.source, item.peer_ip, item.peer_port, item.transport) == (
            "f",
            "203.0.113.5",
            5060,
            "udp",
        )
        assert (item.from_user, item.user_agent, item.to_host) == (
            "1001",
            "Yealink",
            "acme.example.com",
        )


def test_attempt_expires_follows_the_newest_request_that_says_it() -> None:
    tr = new_tracker()
    r1 = sip(T0, cseq=1, branch="b1", expires=3600)
    r2 = sip(T0 + 1, cseq=2, branch="b2", expires=None, auth="1001")
    feed(tr, r1, answer(r1, T0 + 0.1, 401), r2)
    (att,) = [d for d in feed(tr, answer(r2, T0 + 1.1, 200)) if isinstance(d, RegisterAttempt)]
    assert att.expires == 3600
    r3 = sip(T0 + 2, cseq=3, branch="b3", call_id="bye", expires=0)  # an un-REGISTER
    (att,) = [d for d in feed(tr, r3, answer(r3, T0 + 2.1, 200)) if isinstance(d, RegisterAttempt)]
    assert att.expires == 0
    # an orphan answer's attempt takes the answer's Expires
    (_, att) = feed(tr, sip(T0 + 3, status=200, direction=Direction.SEND, call_id="o", expires=60))
    assert isinstance(att, RegisterAttempt) and att.expires == 60


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, AttemptOutcome.SUCCESS),
        (202, AttemptOutcome.SUCCESS),
        (299, AttemptOutcome.SUCCESS),
        (300, AttemptOutcome.FAILURE),
        (302, AttemptOutcome.FAILURE),
        (403, AttemptOutcome.FAILURE),
        (503, AttemptOutcome.FAILURE),
    ],
)
def test_final_answers_decide_the_outcome(status: int, outcome: AttemptOutcome) -> None:
    tr = new_tracker()
    req = sip(T0)
    (_, att) = feed(tr, req, answer(req, T0 + 0.1, status))
    assert isinstance(att, RegisterAttempt) and att.outcome is outcome


def test_trimming_open_attempts_keeps_nine_tenths_oldest_out_first() -> None:
    tr = new_tracker(max_pending=100)
    closed: list[RegisterAttempt] = []
    for i in range(101):
        resp = sip(T0 + i * 0.01, status=401, direction=Direction.SEND, call_id=f"o{i}")
        closed += [d for d in tr.on_message(resp) if isinstance(d, RegisterAttempt)]
    assert tr.inflight_attempts == 91  # 100 reached: the oldest 10 closed, then one more
    assert [a.call_id for a in closed] == [f"o{i}" for i in range(10)]
    assert tr.stats.evicted_attempts == 10


def test_trimmed_attempts_that_were_never_challenged_time_out() -> None:
    """Open requests first, then challenges fill the attempts: the oldest (unchallenged,
    their transaction still open) are closed as timeouts, the challenged ones abandoned."""
    tr = new_tracker(max_pending=10)
    closed: list[RegisterAttempt] = []
    for i in range(3):
        closed += [
            d
            for d in tr.on_message(sip(T0, call_id=f"open{i}", branch=f"o{i}"))
            if isinstance(d, RegisterAttempt)
        ]
    for i in range(11):
        req = sip(T0 + 1 + i, call_id=f"ch{i}", branch=f"c{i}")
        closed += [
            d
            for d in feed(tr, req, answer(req, T0 + 1.5 + i, 401))
            if isinstance(d, RegisterAttempt)
        ]
    assert [(a.call_id, a.outcome, a.challenged) for a in closed] == [
        ("open0", AttemptOutcome.TIMEOUT, False),
        ("open1", AttemptOutcome.TIMEOUT, False),
        ("open2", AttemptOutcome.TIMEOUT, False),
        ("ch0", AttemptOutcome.ABANDONED, True),
    ]
