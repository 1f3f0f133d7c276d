"""REGISTER transaction and attempt reassembly: retransmissions, challenges, timeouts, floods."""

from __future__ import annotations

import tracemalloc

from sipwatch.ingest.framing import LogParser
from sipwatch.ingest.transactions import RegisterTracker
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
from tools.synth import Device, Scenario, challenge_header

T0 = 1772366400.0


def run(
    text: str, **kw: float
) -> tuple[list[RegisterTransaction], list[RegisterAttempt], RegisterTracker]:
    parser = LogParser()
    tracker = RegisterTracker(**kw)  # type: ignore[arg-type]
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
    tracker = RegisterTracker()
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
    tracker = RegisterTracker(max_pending=1000)
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
    assert tracker.inflight_transactions <= 1000
    assert tracker.stats.evicted >= 19_000
    assert timed_out == 20_000 - tracker.inflight_transactions
    assert grown < 5_000_000
