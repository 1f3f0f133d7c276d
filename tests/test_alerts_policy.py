"""Incidents, exact counts, throttling, endings, flood grouping and routing, observed at a
real local webhook."""

from __future__ import annotations

import asyncio
import dataclasses

from sipwatch.alerts import AlertInput, AlertManager
from tests.alert_receivers import (
    HttpReceiver,
    RecordingMetrics,
    config,
    registration,
    running,
    scanner,
    settle,
    target,
)
from tests.samples import FakeClock, failure_record
from tests.waiting import until

T0 = 1_790_000_000.0


def titles(http: HttpReceiver) -> list[str]:
    return [r.payload["title"] for r in http.delivered]


# --- 12.3: the numbers are the log's -------------------------------------------------------------


async def test_copies_with_running_totals_are_not_summed(http: HttpReceiver) -> None:
    """15 failures of one user, diagnosed 15 times while the message waits: each copy carries
    the running total (1..15).  The message says 15, not 1+2+...+15 = 120."""
    metrics = RecordingMetrics()
    cfg = config(target("ops", http.url()), group_wait_seconds=0.5)
    async with asyncio.timeout(20), running(cfg, metrics=metrics) as m:
        for n in range(1, 16):
            m.submit(registration(count=n, first_seen=T0, last_seen=T0 + n))
        await http.wait_for(1)
        await settle()
    [got] = http.received
    assert "Seen: 15 times from" in got.payload["message"]
    assert "120" not in got.payload["message"]
    assert metrics.count("ops", "deduplicated") == 14


async def test_groups_of_one_device_add_up_and_later_totals_replace_earlier(
    http: HttpReceiver,
) -> None:
    """One device failing from two addresses (two failure groups): 7 + 5 = 12."""
    cfg = config(target("ops", http.url()), group_wait_seconds=0.5)
    async with asyncio.timeout(20), running(cfg) as m:
        for n in range(1, 8):
            m.submit(registration(count=n, source_ip="203.0.113.7"))
        for n in range(1, 6):
            m.submit(registration(count=n, source_ip="198.51.100.9"))
        await http.wait_for(1)
    assert "Seen: 12 times" in http.received[0].payload["message"]


async def test_group_message_total_is_the_sum_of_exact_incident_totals(
    http: HttpReceiver,
) -> None:
    cfg = config(target("ops", http.url()), group_wait_seconds=0.5)
    async with asyncio.timeout(20), running(cfg) as m:
        for user, failures in (("alice", 15), ("bob", 3), ("carol", 1)):
            for n in range(1, failures + 1):
                m.submit(registration(user=user, count=n))
        await http.wait_for(1)
    payload = http.received[0].payload
    assert payload["title"] == "[CRITICAL] client_missing: 3 devices (19 failures)"
    assert "alice@acme.example.com: 15 failures" in payload["message"]
    assert "bob@acme.example.com: 3 failures" in payload["message"]


# --- throttling -----------------------------------------------------------------------------------


async def test_failures_counted_after_the_diagnosis_count_in_their_own_incident(
    http: HttpReceiver,
) -> None:
    """A burst's last failure is counted after its group was diagnosed (the diagnosis was in
    flight, so no new one was queued).  The message reads the group's live row: it says 50,
    the outage ends with 50, and the next outage counts its own 50, not 51."""
    row = failure_record(
        user="*", domain="*", status=503, count=49, first_seen=T0, last_seen=T0 + 4.9, scanner=True
    )
    cfg = config(target("ops", http.url()), group_wait_seconds=0.3, throttle_seconds=0)
    async with asyncio.timeout(20), running(cfg) as m:
        m.submit(dataclasses.replace(_outage("*", T0, count=49), last_seen=T0 + 4.9, tally=row))
        row.count, row.last_seen = 50, T0 + 5.0  # while the message waits for its group
        await http.wait_for(1)
        m.resolve_device("1000", "acme.example.com", T0 + 4.95)  # before the 50th: not over
        await settle(0.2)
        assert len(http.received) == 1
        m.resolve_device("1000", "acme.example.com", T0 + 20)
        row.count = 51  # a failure after the end, before the ending is rendered
        await http.wait_for(2)
        row.count, row.last_seen = 100, T0 + 125.0  # the next outage: 49 more, then its alert
        m.submit(
            dataclasses.replace(_outage("*", T0 + 120, count=99), last_seen=T0 + 124.9, tally=row)
        )
        await http.wait_for(3)
    first, ended, again = (r.payload for r in http.received)
    assert "Seen: 50 times" in first["message"]
    assert "to 2026-09-21 14:13:25Z" in first["message"]  # the 50th failure (T0 + 5)
    assert "51" not in ended["message"]
    assert again["title"].endswith("(again)")
    assert "Seen: 50 times" in again["message"]


async def test_throttle_suppresses_repeats_until_it_expires(http: HttpReceiver) -> None:
    metrics = RecordingMetrics()
    clock = FakeClock(1000.0)
    cfg = config(target("ops", http.url()), throttle_seconds=600)
    async with asyncio.timeout(20), running(cfg, metrics=metrics, clock=clock) as m:
        m.submit(registration(count=1))
        await http.wait_for(1)
        clock.advance(599)
        m.submit(registration(count=2))
        m.submit(registration(count=3))
        await settle()
        assert len(http.received) == 1
        assert metrics.count("ops", "throttled") == 2
        m.submit(registration(user="bob"))  # another device: its own incident
        await http.wait_for(2)
        clock.advance(2)  # alice's throttle has expired: an update with the current total
        m.submit(registration(count=4))
        await http.wait_for(3)
    assert titles(http)[1].endswith("bob@acme.example.com")
    assert titles(http)[2] == "[CRITICAL] client_missing: alice@acme.example.com (still failing)"
    assert "Seen: 4 times" in http.received[2].payload["message"]


async def test_throttle_key_includes_cause_and_domain(http: HttpReceiver) -> None:
    clock = FakeClock(1000.0)
    async with asyncio.timeout(20), running(config(target("ops", http.url())), clock=clock) as m:
        m.submit(registration())
        await http.wait_for(1)
        m.submit(registration(cause_id="bad_password"))
        await http.wait_for(2)
        m.submit(registration(domain="other.example.com"))
        await http.wait_for(3)
        m.submit(registration(domain="ACME.example.com"))  # domains are case-insensitive
        await settle()
    assert len(http.received) == 3


async def test_escalation_is_not_throttled(http: HttpReceiver) -> None:
    clock = FakeClock(1000.0)
    cfg = config(target("ops", http.url()), min_severity="info")
    async with asyncio.timeout(20), running(cfg, clock=clock) as m:
        m.submit(registration(severity="warning"))
        await http.wait_for(1)
        m.submit(registration(severity="warning"))  # throttled
        m.submit(registration(severity="critical"))  # worse than what was sent: goes out
        await http.wait_for(2)
        m.submit(registration(severity="critical"))  # throttled again
        await settle()
    assert [r.payload["type"] for r in http.received] == ["warning", "failure"]
    assert m.counts[("ops", "throttled")] == 2


async def test_without_throttle_copies_still_merge_while_waiting(http: HttpReceiver) -> None:
    clock = FakeClock(1000.0)
    cfg = config(target("ops", http.url()), throttle_seconds=0)
    async with asyncio.timeout(20), running(cfg, clock=clock) as m:
        m.submit(registration(count=1))
        m.submit(registration(count=2))
        await http.wait_for(1)
        m.submit(registration(count=3))  # no throttle: a new message
        await http.wait_for(2)
        await settle()
    assert len(http.received) == 2
    assert m.counts[("ops", "deduplicated")] == 1
    assert m.counts[("ops", "throttled")] == 0


# --- 12.10 / 12.4: endings ----------------------------------------------------------------------


async def test_ended_notice_only_for_a_success_of_the_same_device(http: HttpReceiver) -> None:
    clock = FakeClock(1000.0)
    async with asyncio.timeout(20), running(config(target("ops", http.url())), clock=clock) as m:
        m.submit(registration(last_seen=T0))
        await http.wait_for(1)
        m.resolve_device("bob", "acme.example.com", T0 + 10)  # never alerted: nothing
        m.resolve_device("alice", "other.example.com", T0 + 10)  # another identity
        m.resolve_device("alice", "acme.example.com", T0 + 10, side="outbound")  # another side
        await settle()
        assert len(http.received) == 1
        m.resolve_device("alice", "ACME.example.com", T0 + 10)
        await http.wait_for(2)
        m.resolve_device("alice", "acme.example.com", T0 + 100)  # already ended
        await settle()
    assert len(http.received) == 2
    ended = http.received[1].payload
    assert ended["title"] == "[RESOLVED] alice@acme.example.com registers again"
    assert ended["type"] == "success"
    assert "(client_missing): registered again at 2026-09-21" in ended["message"]


async def test_a_success_before_the_last_failure_ends_nothing(http: HttpReceiver) -> None:
    """The diagnosis of a failure may arrive after a later... or an earlier success."""
    async with asyncio.timeout(20), running(config(target("ops", http.url()))) as m:
        m.submit(registration(first_seen=T0, last_seen=T0 + 60))
        await http.wait_for(1)
        m.resolve_device("alice", "acme.example.com", T0 + 30)
        await settle()
        assert len(http.received) == 1


async def test_ending_never_rearms_the_throttle(http: HttpReceiver) -> None:
    """realm_is_ip for alice@127.0.0.1 failing every 30 s while alice@acme registers every
    30 s: one alert in ten minutes, no "resolved" (issue 12.10: it used to re-alert every
    ~30 s after each false resolve)."""
    clock = FakeClock(1000.0)
    cfg = config(target("ops", http.url()), throttle_seconds=900)
    async with asyncio.timeout(30), running(cfg, clock=clock) as m:
        for i in range(20):
            m.submit(
                registration(
                    cause_id="realm_is_ip",
                    severity="error",
                    domain="127.0.0.1",
                    count=i + 1,
                    first_seen=T0,
                    last_seen=T0 + 30 * i,
                )
            )
            m.resolve_device("alice", "acme.example.com", T0 + 30 * i + 1)
            clock.advance(30)
            await asyncio.sleep(0.01)
        await settle()
    assert titles(http) == ["[ERROR] realm_is_ip: alice@127.0.0.1"]


async def test_failing_again_after_a_true_end_is_news_but_flapping_is_damped(
    http: HttpReceiver,
) -> None:
    """A second outage after a real recovery is reported at once ("again"); a device that
    keeps flapping is reported again at most FLAP_LIMIT (2) times per throttle window."""
    clock = FakeClock(1000.0)
    cfg = config(target("ops", http.url()), throttle_seconds=900)
    async with asyncio.timeout(30), running(cfg, clock=clock) as m:
        count = 0
        for cycle in range(4):
            count += 3
            at = T0 + 100 * cycle
            m.submit(registration(count=count, first_seen=T0, last_seen=at))
            await settle(0.1)
            m.resolve_device("alice", "acme.example.com", at + 50)
            await settle(0.1)
            clock.advance(100)
        assert len(http.received) == 6  # alert, ended, again, ended, again, ended: then quiet
        clock.advance(900)
        m.submit(registration(count=count + 4, first_seen=T0, last_seen=T0 + 1500))
        await http.wait_for(7)
    assert titles(http) == [
        "[CRITICAL] client_missing: alice@acme.example.com",
        "[RESOLVED] alice@acme.example.com registers again",
        "[CRITICAL] client_missing: alice@acme.example.com (again)",
        "[RESOLVED] alice@acme.example.com registers again",
        "[CRITICAL] client_missing: alice@acme.example.com (again)",
        "[RESOLVED] alice@acme.example.com registers again",
        "[CRITICAL] client_missing: alice@acme.example.com (again)",
    ]
    assert "Seen: 3 times" in http.received[2].payload["message"]  # its own failures only
    assert "Seen: 4 times" in http.received[6].payload["message"]  # since the last end


async def test_a_late_diagnosis_of_an_old_failure_does_not_reopen(http: HttpReceiver) -> None:
    cfg = config(target("ops", http.url()), throttle_seconds=0)
    async with asyncio.timeout(20), running(cfg) as m:
        m.submit(registration(count=1, first_seen=T0, last_seen=T0))
        await http.wait_for(1)
        m.resolve_device("alice", "acme.example.com", T0 + 5)
        await http.wait_for(2)
        m.submit(registration(count=1, first_seen=T0, last_seen=T0))  # diagnosed late
        await settle()
        assert len(http.received) == 2
        assert m.counts[("ops", "deduplicated")] == 1


async def test_resolve_notices_off_sends_no_ending(http: HttpReceiver) -> None:
    cfg = config(target("ops", http.url()), resolve_notices=False)
    async with asyncio.timeout(20), running(cfg) as m:
        m.submit(registration())
        await http.wait_for(1)
        m.resolve_device("alice", "acme.example.com", 0.0)
        await settle()
    assert len(http.received) == 1


async def test_many_endings_are_one_message(http: HttpReceiver) -> None:
    cfg = config(target("ops", http.url()), group_window_seconds=0.3)
    async with asyncio.timeout(20), running(cfg) as m:
        for i in range(30):
            m.submit(registration(user=f"u{i}"))
        await http.wait_for(1)
        for i in range(30):
            m.resolve_device(f"u{i}", "acme.example.com", 0.0)
        await http.wait_for(2)
        await settle(0.5)
    assert titles(http) == [
        "[CRITICAL] client_missing: 30 devices (30 failures)",
        "[RESOLVED] 30 problems ended",
    ]


def _outage(user: str, at: float, count: int = 1) -> AlertInput:
    return AlertInput(
        kind="system",
        severity="critical",
        cause_id="registrar_down",
        summary=f"drachtio answered 503 to {user}: no registrar connected",
        user=user,
        domain="acme.example.com",
        source_ip="198.51.100.77",
        status=503,
        count=count,
        first_seen=at,
        last_seen=at,
        ends_when="registrar",
    )


async def test_registrar_outage_is_one_incident_that_ends_when_devices_register(
    http: HttpReceiver,
) -> None:
    cfg = config(target("ops", http.url()), group_wait_seconds=0.3)
    async with asyncio.timeout(20), running(cfg) as m:
        for i in range(50):
            m.submit(_outage(f"{1000 + i}", T0 + i * 0.1, count=2))
        await http.wait_for(1)
        m.resolve_device("1000", "acme.example.com", T0 + 1)  # before the last 503: not over
        await settle()
        assert len(http.received) == 1
        m.resolve_device("1000", "acme.example.com", T0 + 10)  # any device, after: over
        await http.wait_for(2)
    first, ended = (r.payload for r in http.received)
    assert first["title"] == "[CRITICAL] registrar_down: 50 devices failing"
    assert "Affected: 50 devices" in first["message"]
    assert "Seen: 100 times" in first["message"]
    assert ended["title"] == "[RESOLVED] registrar_down: devices register again"


async def test_scanner_is_one_incident_per_source_and_ends_when_quiet(http: HttpReceiver) -> None:
    """Many usernames from one address: one message naming the address, with the username
    count of the newest diagnosis; an "ended" message once it is quiet."""
    cfg = config(target("sec", http.url()), group_wait_seconds=0.3, quiet_seconds=0.6)
    async with asyncio.timeout(20), running(cfg) as m:
        for n in range(1, 301):
            m.submit(
                scanner(
                    "185.243.5.17",
                    count=n,
                    distinct_users=n,
                    evidence={"distinct_users_from_ip": str(n)},
                    last_seen=T0 + n,
                )
            )
        await http.wait_for(2, timeout=10)
        await settle(0.3)
    first, ended = (r.payload for r in http.delivered)
    assert first["title"] == "[WARNING] scanner: 185.243.5.17 tried 300 usernames"
    assert "distinct_users_from_ip: 300" in first["message"]
    assert "Seen: 300 times" in first["message"]
    assert ended["title"] == "[RESOLVED] scanner: 185.243.5.17 no new failures"
    assert len(http.delivered) == 2


async def test_scanner_usernames_before_folding_are_one_incident(http: HttpReceiver) -> None:
    """Alerts about single usernames from the same address (diagnosed before the classifier
    folded them) belong to the address's incident: one message, failures added up."""
    cfg = config(target("sec", http.url()), group_wait_seconds=0.3)
    async with asyncio.timeout(20), running(cfg) as m:
        for i in range(40):
            m.submit(scanner("185.243.5.17", f"{100 + i}", distinct_users=i + 1))
        await http.wait_for(1)
        await settle()
    [got] = http.received
    assert got.payload["title"] == "[WARNING] scanner: 185.243.5.17 tried 40 usernames"
    assert "Seen: 40 times" in got.payload["message"]


async def test_flood_from_many_sources_lists_the_top_offenders(http: HttpReceiver) -> None:
    cfg = config(target("sec", http.url()), group_wait_seconds=0.3)
    async with asyncio.timeout(20), running(cfg) as m:
        for n in range(40):  # source 10.0.0.n tried n+1 usernames
            m.submit(scanner(f"10.0.0.{n}", count=n + 1, distinct_users=n + 1))
        await http.wait_for(1)
        await settle(0.5)
    assert len(http.received) == 1
    message = http.received[0].payload["message"]
    assert http.received[0].payload["title"] == "[WARNING] scanner: 40 sources (820 failures)"
    assert "10.0.0.39: 40 usernames, 40 failures" in message  # the worst first
    assert "10.0.0.30: 31 usernames" in message
    assert "10.0.0.29:" not in message  # only the top 10 are listed
    assert "and 30 more" in message


async def test_a_scanner_flood_cannot_push_device_incidents_out(http: HttpReceiver) -> None:
    cfg = config(target("ops", http.url()), group_wait_seconds=0.2, max_queue=50)
    async with asyncio.timeout(30), running(cfg) as m:
        m.submit(registration(last_seen=T0))
        await http.wait_for(1)
        for n in range(5000):  # more scanner sources than incidents kept per kind
            m.submit(scanner(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}", count=1))
        m.submit(registration(user="bob", last_seen=T0))  # a real device, amid the flood
        await until(lambda: any("bob@" in t for t in titles(http)))
        m.resolve_device("alice", "acme.example.com", T0 + 1)
        await until(lambda: any(t.startswith("[RESOLVED] alice@") for t in titles(http)))
    assert len(m.book) <= 10_000 + 2_000 + 256


# --- 12.8: time to know, floods grouped -------------------------------------------------------------


async def test_new_problems_go_out_at_once_and_a_flood_is_grouped(http: HttpReceiver) -> None:
    """Up to three messages per cause within the window, each sent as soon as its problem is
    known; what comes after waits for the window and goes out as one message."""
    cfg = config(target("ops", http.url()), group_window_seconds=2.0)
    async with asyncio.timeout(30), running(cfg) as m:
        for i in range(3):
            m.submit(registration(user=f"early{i}"))
            await http.wait_for(i + 1, timeout=1.5)  # each one alone, immediately
        for i in range(20):
            m.submit(registration(user=f"flood{i}"))
        m.submit(registration(user="pager", cause_id="registrar_db_error", kind="system"))
        await http.wait_for(4, timeout=1.5)  # another cause is not held back by the flood
        assert titles(http)[3].startswith("[CRITICAL] registrar_db_error")
        await http.wait_for(5, timeout=5)
        await settle()
    assert titles(http)[4] == "[CRITICAL] client_missing: 20 devices (20 failures)"
    assert len(http.received) == 5


# --- routing -----------------------------------------------------------------------------------


async def test_routing_by_kind_cause_and_severity(http: HttpReceiver) -> None:
    cfg = config(
        target("security", http.url("/security"), kind="security"),
        target("oncall", http.url("/oncall")),
        target("pager", http.url("/pager"), severities=("critical",)),
        target("platform", http.url("/platform"), causes=("registrar_down",)),
        min_severity="warning",
    )
    system = AlertInput(
        kind="system",
        severity="critical",
        cause_id="registrar_down",
        summary="drachtio answers 503: no registrar connected",
    )
    async with asyncio.timeout(20), running(cfg) as m:
        m.submit(scanner("185.243.5.17", "100"))
        m.submit(registration())
        m.submit(system)
        m.submit(registration(user="carol", severity="info"))  # below min_severity
        await http.wait_for(6)
        await settle()

    def by_path(path: str) -> list[str]:
        return sorted(r.payload["title"] for r in http.received if r.path == path)

    assert by_path("/security") == ["[WARNING] scanner: 185.243.5.17"]
    assert by_path("/oncall") == [
        "[CRITICAL] client_missing: alice@acme.example.com",
        "[CRITICAL] registrar_down",
        "[WARNING] scanner: 185.243.5.17",
    ]
    assert by_path("/pager") == [
        "[CRITICAL] client_missing: alice@acme.example.com",
        "[CRITICAL] registrar_down",
    ]
    assert by_path("/platform") == ["[CRITICAL] registrar_down"]


async def test_explicit_severities_override_min_severity(http: HttpReceiver) -> None:
    cfg = config(target("info", http.url(), severities=("info",)), min_severity="critical")
    async with asyncio.timeout(20), running(cfg) as m:
        m.submit(registration(severity="info"))
        m.submit(registration(user="bob", severity="critical"))
        await http.wait_for(1)
        await settle()
    assert [r.payload["type"] for r in http.received] == ["info"]


async def test_unknown_severity_is_treated_as_warning(http: HttpReceiver) -> None:
    async with asyncio.timeout(20), running(config(target("ops", http.url()))) as m:
        m.submit(registration(severity="page-everyone!!"))
        await http.wait_for(1)
    assert http.received[0].payload["title"].startswith("[WARNING] client_missing")


def test_submit_is_fast_and_never_raises() -> None:
    """No event loop, no start(): submit still only queues, for any input."""
    manager = AlertManager(config(target("ops", "json://127.0.0.1:9/x"), max_queue=50))
    weird = AlertInput(
        kind="registration",
        severity=None,  # type: ignore[arg-type]
        cause_id=None,  # type: ignore[arg-type]
        summary=None,  # type: ignore[arg-type]
        user=None,  # type: ignore[arg-type]
        count="many",  # type: ignore[arg-type]
        evidence=None,  # type: ignore[arg-type]
    )
    manager.submit(weird)  # repaired, not lost
    assert manager.queue_depth("ops") == 1
    manager.resolve_device(None, None, None)  # type: ignore[arg-type]
    loop = asyncio.new_event_loop()
    try:
        start = loop.time()
        for i in range(10_000):
            manager.submit(scanner("185.243.5.17", str(i)))
            manager.submit(scanner(f"10.0.{i // 256}.{i % 256}"))
        assert loop.time() - start < 5.0
    finally:
        loop.close()
    assert manager.queue_depth("ops") <= 50
    assert manager.counts[("ops", "grouped")] >= 9_999


async def test_registrar_outage_also_ends_when_the_failures_stop(http: HttpReceiver) -> None:
    """No device registers (they back off), but no 503 either for quiet_seconds: over."""
    cfg = config(target("ops", http.url()), quiet_seconds=0.5)
    async with asyncio.timeout(20), running(cfg) as m:
        m.submit(_outage("1000", T0))
        await http.wait_for(2, timeout=5)
    assert titles(http) == [
        "[CRITICAL] registrar_down: 1 device failing",
        "[RESOLVED] registrar_down: no new failures",
    ]


async def test_a_reload_keeps_incidents_throttles_and_waiting_messages(
    http: HttpReceiver,
) -> None:
    """SIGHUP builds a new manager; it takes over the old one's state: no re-announcement
    of open problems, their endings still come, a waiting message is sent once."""
    old = AlertManager(config(target("ops", http.url())))
    await old.start()
    async with asyncio.timeout(20):
        old.submit(registration(last_seen=T0))
        await http.wait_for(1)
        old.submit(registration(user="bob", cause_id="x"))  # waits (nothing awaited yet)
        new = AlertManager(config(target("ops", http.url()), group_wait_seconds=0.2))
        new.take_over(old)
        await old.stop(timeout=3)
        await new.start()
        try:
            await http.wait_for(2)  # bob's, sent once by the new manager
            new.submit(registration(count=2, last_seen=T0 + 1))  # throttled: told already
            new.resolve_device("alice", "acme.example.com", T0 + 5)
            await http.wait_for(3)
            await settle()
        finally:
            await new.stop(timeout=3)
    assert titles(http) == [
        "[CRITICAL] client_missing: alice@acme.example.com",
        "[CRITICAL] x: bob@acme.example.com",
        "[RESOLVED] alice@acme.example.com registers again",
    ]
    assert old.counts[("ops", "dropped")] == 0


async def test_a_scanners_first_guesses_are_not_announced_as_devices(http: HttpReceiver) -> None:
    """Before the classifier had enough usernames, a scanner's guesses were diagnosed as
    ordinary device failures; once it is known as a scanner, those not yet sent are part of
    its incident, not messages of their own.  Real devices elsewhere are untouched."""
    cfg = config(target("ops", http.url()), group_wait_seconds=0.5)
    async with asyncio.timeout(20), running(cfg) as m:
        for i in range(9):
            m.submit(registration(user=f"{100 + i}", source_ip="185.243.5.17"))
        m.submit(registration(user="carol", source_ip="203.0.113.9"))
        m.submit(scanner("185.243.5.17", count=10, distinct_users=10))
        await http.wait_for(2)
        await settle(0.8)
    assert sorted(titles(http)) == [
        "[CRITICAL] client_missing: carol@acme.example.com",
        "[WARNING] scanner: 185.243.5.17 tried 10 usernames",
    ]
