"""De-duplication, throttling, resolved notices, flood grouping and routing, observed at a
real local webhook."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sipwatch.alerts import AlertInput, AlertManager
from tests.alert_receivers import FakeClock, HttpReceiver, RecordingMetrics
from tests.test_alerts_delivery import config, registration, running, target


def scanner(ip: str, user: str, **kw: Any) -> AlertInput:
    values: dict[str, Any] = {
        "kind": "security",
        "severity": "warning",
        "cause_id": "scanner",
        "summary": f"{ip} is trying usernames it does not know (a SIP scanner)",
        "user": user,
        "domain": "203.0.113.1",
        "source_ip": ip,
        "status": 403,
        "user_agent": "friendly-scanner",
        "fix_steps": ("Block the address at the firewall.",),
    }
    values.update(kw)
    return AlertInput(**values)


@pytest.fixture
async def http() -> AsyncIterator[HttpReceiver]:
    async with HttpReceiver() as receiver:
        yield receiver


async def _settle(seconds: float = 0.3) -> None:
    """Give the worker time to send something it should not send."""
    await asyncio.sleep(seconds)


async def test_copies_waiting_together_are_deduplicated(http: HttpReceiver) -> None:
    metrics = RecordingMetrics()
    clock = FakeClock()
    async with (
        asyncio.timeout(20),
        running(config(target("ops", http.url())), metrics=metrics, clock=clock) as m,
    ):
        for _ in range(3):  # no await in between: all three wait in the same bucket
            m.submit(registration())
        await http.wait_for(1)
        await _settle()
    assert len(http.received) == 1
    assert "Repeats: 2 similar alerts merged into this one" in http.received[0].payload["message"]
    assert metrics.count("ops", "deduplicated") == 2
    assert metrics.count("ops", "sent") == 1


async def test_throttle_suppresses_repeats_until_it_expires(http: HttpReceiver) -> None:
    metrics = RecordingMetrics()
    clock = FakeClock()
    cfg = config(target("ops", http.url()), throttle_seconds=600)
    async with asyncio.timeout(20), running(cfg, metrics=metrics, clock=clock) as m:
        m.submit(registration())
        await http.wait_for(1)
        clock.advance(599)
        m.submit(registration())
        m.submit(registration())
        await _settle()
        assert len(http.received) == 1
        assert metrics.count("ops", "throttled") == 2
        m.submit(registration(user="bob"))  # another user: its own key
        await http.wait_for(2)
        clock.advance(2)  # alice's throttle has expired
        m.submit(registration())
        await http.wait_for(3)
    titles = [r.payload["title"] for r in http.received]
    assert titles[1].endswith("bob@acme.example.com")
    assert titles[2].endswith("alice@acme.example.com")
    assert "Repeats: 2 similar alerts" in http.received[2].payload["message"]


async def test_throttle_key_includes_cause_and_domain(http: HttpReceiver) -> None:
    clock = FakeClock()
    async with asyncio.timeout(20), running(config(target("ops", http.url())), clock=clock) as m:
        m.submit(registration())
        await http.wait_for(1)
        m.submit(registration(cause_id="bad_password"))
        await http.wait_for(2)
        m.submit(registration(domain="other.example.com"))
        await http.wait_for(3)
        m.submit(registration(domain="ACME.example.com"))  # domains are case-insensitive
        await _settle()
    assert len(http.received) == 3


async def test_resolved_notice_after_the_user_registers_again(http: HttpReceiver) -> None:
    clock = FakeClock()
    async with asyncio.timeout(20), running(config(target("ops", http.url())), clock=clock) as m:
        m.submit(registration())
        await http.wait_for(1)
        m.resolve("bob", "acme.example.com", 1_790_000_000.0)  # never alerted: nothing
        m.resolve("alice", "acme.example.com", 1_790_000_000.0)
        await http.wait_for(2)
        m.resolve("alice", "acme.example.com", 1_790_000_100.0)  # already resolved
        await _settle()
        assert len(http.received) == 2
        # the incident is over: a new failure alerts at once despite the throttle window
        m.submit(registration())
        await http.wait_for(3)
    resolved = http.received[1].payload
    assert resolved["title"] == "[RESOLVED] alice@acme.example.com registers again"
    assert resolved["type"] == "success"
    assert "was: client_missing" in resolved["message"]
    assert "2026-09-21" in resolved["message"]
    assert http.received[2].payload["title"].startswith("[CRITICAL] client_missing")


async def test_resolve_notices_off_still_clears_the_throttle(http: HttpReceiver) -> None:
    clock = FakeClock()
    cfg = config(target("ops", http.url()), resolve_notices=False)
    async with asyncio.timeout(20), running(cfg, clock=clock) as m:
        m.submit(registration())
        await http.wait_for(1)
        m.resolve("alice", "acme.example.com", 0.0)
        await _settle()
        assert len(http.received) == 1
        m.submit(registration())
        await http.wait_for(2)


async def test_many_recoveries_are_one_message(http: HttpReceiver) -> None:
    cfg = config(target("ops", http.url()), group_window_seconds=0.3)
    async with asyncio.timeout(20), running(cfg) as m:
        for i in range(30):
            m.submit(registration(user=f"u{i}"))
        await http.wait_for(1)
        for i in range(30):
            m.resolve(f"u{i}", "acme.example.com", 0.0)
        await http.wait_for(2)
        await _settle(0.5)
    assert len(http.received) == 2
    assert http.received[0].payload["title"] == "[CRITICAL] client_missing: 30 users (30 alerts)"
    assert http.received[1].payload["title"] == "[RESOLVED] 30 users register again"


async def test_scanner_flood_is_one_message(http: HttpReceiver) -> None:
    metrics = RecordingMetrics()
    cfg = config(target("sec", http.url()), group_window_seconds=0.5)
    async with asyncio.timeout(20), running(cfg, metrics=metrics) as m:
        for i in range(1000):
            m.submit(scanner("185.243.5.17", f"{1000 + i}"))
            if i % 100 == 0:
                await asyncio.sleep(0)  # let the worker run mid-flood: must not split it
        await http.wait_for(1)
        await _settle(0.8)
    assert len(http.received) == 1
    payload = http.received[0].payload
    assert payload["title"] == "[WARNING] scanner: 185.243.5.17 tried 1,000 usernames"
    assert "185.243.5.17: 1,000 usernames, 1,000 failures in 1,000 alerts" in payload["message"]
    assert "Block the address at the firewall." in payload["message"]
    assert metrics.count("sec", "grouped") == 999
    assert metrics.count("sec", "sent") == 1


async def test_flood_from_many_sources_lists_the_top_offenders(http: HttpReceiver) -> None:
    cfg = config(target("sec", http.url()), group_window_seconds=0.3)
    async with asyncio.timeout(20), running(cfg) as m:
        for n in range(40):  # source 10.0.0.n tries n+1 usernames
            for u in range(n + 1):
                m.submit(scanner(f"10.0.0.{n}", f"user{u}"))
        await http.wait_for(1)
        await _settle(0.5)
    assert len(http.received) == 1
    message = http.received[0].payload["message"]
    assert http.received[0].payload["title"] == "[WARNING] scanner: 40 sources tried 40 usernames"
    assert "10.0.0.39: 40 usernames" in message  # the worst first
    assert "10.0.0.30: 31 usernames" in message
    assert "10.0.0.29:" not in message  # only the top 10 are listed
    assert "and 30 more" in message


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
        await _settle()

    def titles(path: str) -> list[str]:
        return sorted(r.payload["title"] for r in http.received if r.path == path)

    assert titles("/security") == ["[WARNING] scanner: 185.243.5.17"]
    assert titles("/oncall") == [
        "[CRITICAL] client_missing: alice@acme.example.com",
        "[CRITICAL] registrar_down",
        "[WARNING] scanner: 185.243.5.17",
    ]
    assert titles("/pager") == [
        "[CRITICAL] client_missing: alice@acme.example.com",
        "[CRITICAL] registrar_down",
    ]
    assert titles("/platform") == ["[CRITICAL] registrar_down"]


async def test_explicit_severities_override_min_severity(http: HttpReceiver) -> None:
    cfg = config(target("info", http.url(), severities=("info",)), min_severity="critical")
    async with asyncio.timeout(20), running(cfg) as m:
        m.submit(registration(severity="info"))
        m.submit(registration(user="bob", severity="critical"))
        await http.wait_for(1)
        await _settle()
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
    manager.resolve(None, None, None)  # type: ignore[arg-type]
    loop = asyncio.new_event_loop()
    try:
        start = loop.time()
        for i in range(10_000):
            manager.submit(scanner("185.243.5.17", str(i)))
        assert loop.time() - start < 2.0
    finally:
        loop.close()
    assert manager.queue_depth("ops") <= 50
    assert manager.counts[("ops", "grouped")] >= 9_999


async def test_escalation_is_not_throttled(http: HttpReceiver) -> None:
    clock = FakeClock()
    cfg = config(target("ops", http.url()), min_severity="info")
    async with asyncio.timeout(20), running(cfg, clock=clock) as m:
        m.submit(registration(severity="warning"))
        await http.wait_for(1)
        m.submit(registration(severity="warning"))  # throttled
        m.submit(registration(severity="critical"))  # worse than what was sent: goes out
        await http.wait_for(2)
        m.submit(registration(severity="critical"))  # throttled again
        await _settle()
    assert [r.payload["type"] for r in http.received] == ["warning", "failure"]
    assert m.counts[("ops", "throttled")] == 2


async def test_without_throttle_copies_still_merge_while_waiting(http: HttpReceiver) -> None:
    clock = FakeClock()
    cfg = config(target("ops", http.url()), throttle_seconds=0)
    async with asyncio.timeout(20), running(cfg, clock=clock) as m:
        m.submit(registration())
        m.submit(registration())
        await http.wait_for(1)
        m.submit(registration())  # no throttle: a new notice
        await http.wait_for(2)
        await _settle()
    assert len(http.received) == 2
    assert m.counts[("ops", "deduplicated")] == 1
    assert m.counts[("ops", "throttled")] == 0
