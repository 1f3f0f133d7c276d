"""Fault tests: the alert endpoint returns 500, hangs, refuses connections, or cannot keep
up.  sipwatch keeps counting, recovers, and loses nothing it was not forced to drop (and
counts what it drops)."""

from __future__ import annotations

import asyncio
import time

import structlog

from sipwatch.alerts import AlertManager
from tests.alert_receivers import (
    HttpReceiver,
    RecordingMetrics,
    config,
    registration,
    running,
    target,
)
from tests.jambonz_db import closed_port
from tests.waiting import until


async def test_500_then_recovery_is_delivered_after_retries(http: HttpReceiver) -> None:
    metrics = RecordingMetrics()
    http.program(["500", "500"])
    cfg = config(target("ops", http.url()), retry_max=3)
    async with asyncio.timeout(20), running(cfg, metrics=metrics) as m:
        m.submit(registration())
        await http.wait_for(1)
    assert [r.answered for r in http.received] == ["500", "500", "ok"]
    # the same notice each time
    assert len({r.payload["message"] for r in http.received}) == 1
    assert metrics.count("ops", "retried") == 2
    assert metrics.count("ops", "sent") == 1
    assert metrics.count("ops", "failed") == 0


async def test_endpoint_down_longer_than_retries_keeps_the_alerts_until_it_answers(
    http: HttpReceiver,
) -> None:
    """Issue 13.7: the receiver answers 500 for ~7 s, longer than the retries last.  The
    alerts are kept and delivered, oldest first and marked as delayed, once it answers -
    each exactly once (nothing is sent again after a 200)."""
    metrics = RecordingMetrics()
    http.fail_for(7.0)
    cfg = config(target("ops", http.url()), retry_max=2)
    manager = AlertManager(cfg, metrics=metrics, backoff_base=0.2, backoff_max=1.0)
    await manager.start()
    try:
        async with asyncio.timeout(30):
            manager.submit(registration())
            await until(lambda: metrics.count("ops", "failed") == 1)
            manager.submit(registration(user="bob"))  # while down: kept, not tried
            await until(lambda: manager.spooled("ops") == 2)
            manager.submit(registration(user="carol"))
            await until(lambda: manager.spooled("ops") == 3)
            await http.wait_for(3)
            await asyncio.sleep(1.5)  # more probes would show up as duplicates
    finally:
        await manager.stop(timeout=3)
    assert http.delivered[0].at - http.received[0].at >= 6.5
    delivered = [r.payload["title"].rsplit(" ", 1)[-1] for r in http.delivered]
    assert delivered == ["alice@acme.example.com", "bob@acme.example.com", "carol@acme.example.com"]
    assert all("Delayed: raised at" in r.payload["message"] for r in http.delivered)
    assert metrics.count("ops", "sent") == 3
    assert metrics.count("ops", "failed") == 1
    assert metrics.count("ops", "dropped") == 0
    assert manager.spooled("ops") == 0


async def test_hanging_endpoint_beyond_the_retries_delivers_once_it_answers(
    http: HttpReceiver,
) -> None:
    metrics = RecordingMetrics()
    http.fail_for(4.0, "hang")
    cfg = config(target("ops", http.url()), retry_max=1, timeout_seconds=1.0)
    manager = AlertManager(cfg, metrics=metrics, backoff_base=0.3, backoff_max=1.0)
    await manager.start()
    try:
        async with asyncio.timeout(40):
            manager.submit(registration())
            await until(lambda: metrics.count("ops", "failed") == 1, timeout=15)
            await http.wait_for(1, timeout=20)
            await asyncio.sleep(1.0)
    finally:
        await manager.stop(timeout=3)
    assert [r.answered for r in http.received][-1] == "ok"
    assert len(http.delivered) == 1
    assert metrics.count("ops", "sent") == 1


async def test_spool_is_bounded_oldest_dropped_and_counted(http: HttpReceiver) -> None:
    metrics = RecordingMetrics()
    http.fail_for(3.0)
    cfg = config(target("ops", http.url()), retry_max=0, spool_size=3)
    manager = AlertManager(cfg, metrics=metrics, backoff_base=0.5, backoff_max=1.0)
    await manager.start()
    try:
        async with asyncio.timeout(30):
            manager.submit(registration(user="u0"))
            await until(lambda: metrics.count("ops", "failed") == 1)
            for i in range(1, 6):  # one message each
                manager.submit(registration(user=f"u{i}"))
                await until(lambda: manager.queue_depth("ops") == manager.spooled("ops"))
            await until(lambda: metrics.count("ops", "dropped") == 3)
            assert manager.spooled("ops") == 3
            await http.wait_for(3, timeout=15)
            await asyncio.sleep(0.5)
    finally:
        await manager.stop(timeout=3)
    delivered = [r.payload["title"].rsplit(" ", 1)[-1] for r in http.delivered]
    assert delivered == ["u3@acme.example.com", "u4@acme.example.com", "u5@acme.example.com"]
    assert metrics.count("ops", "dropped") == 3


async def test_one_target_down_keeps_its_own_and_the_other_is_not_delayed() -> None:
    async with HttpReceiver() as down, HttpReceiver() as up:
        down.fail_for(3.0)
        cfg = config(target("down", down.url()), target("up", up.url()), retry_max=1)
        manager = AlertManager(cfg, backoff_base=0.3, backoff_max=1.0)
        await manager.start()

        def users(receiver: HttpReceiver) -> set[str]:
            text = " ".join(r.payload["message"] for r in receiver.delivered)
            return {u for u in ("a@", "b@", "c@") if u in text}

        try:
            async with asyncio.timeout(30):
                for n, user in enumerate(("a", "b", "c"), 1):
                    manager.submit(registration(user=user))
                    await up.wait_for(n, timeout=2)  # while "down" is failing
                assert manager.spooled("up") == 0
                await until(lambda: users(down) == {"a@", "b@", "c@"}, timeout=15)
        finally:
            await manager.stop(timeout=3)
        assert users(up) == {"a@", "b@", "c@"}
        assert all("Delayed:" in r.payload["message"] for r in down.delivered)
        assert not any("Delayed:" in r.payload["message"] for r in up.delivered)


async def test_stop_tries_the_spool_once_and_counts_what_is_lost(http: HttpReceiver) -> None:
    metrics = RecordingMetrics()
    http.default = "500"
    cfg = config(target("ops", http.url()), retry_max=0)
    manager = AlertManager(cfg, metrics=metrics, backoff_base=30.0, backoff_max=30.0)
    await manager.start()
    manager.submit(registration())
    await until(lambda: metrics.count("ops", "failed") == 1)
    manager.submit(registration(user="bob"))
    await until(lambda: manager.spooled("ops") == 2)
    async with asyncio.timeout(10):
        start = time.monotonic()
        await manager.stop(timeout=5)
        assert time.monotonic() - start < 3  # no 30 s backoff at shutdown
    assert len(http.received) == 2  # the first try, then one try of the spool at shutdown
    assert metrics.count("ops", "dropped") == 2


async def test_hanging_endpoint_times_out_and_does_not_delay_other_targets() -> None:
    async with HttpReceiver() as slow, HttpReceiver() as fast:
        slow.program(["hang"])
        metrics = RecordingMetrics()
        cfg = config(
            target("slow", slow.url()), target("fast", fast.url()), timeout_seconds=1.0, retry_max=2
        )
        async with asyncio.timeout(30), running(cfg, metrics=metrics) as m:
            submitted = time.monotonic()
            m.submit(registration())
            await fast.wait_for(1, timeout=0.9)
            assert fast.received[0].at - submitted < 0.9  # before the slow one even timed out
            await slow.wait_for(1, delivered=False)
            # While the slow target hangs the daemon keeps accepting and counting.
            start = time.perf_counter()
            for i in range(5):
                m.submit(registration(cause_id=f"cause_{i}"))
            assert time.perf_counter() - start < 0.05
            await fast.wait_for(6, timeout=2)
            # The slow target recovers: everything arrives, nothing lost.
            await slow.wait_for(6, timeout=15)
        assert slow.received[0].answered == "hang"
        assert metrics.count("slow", "retried") == 1
        assert metrics.count("slow", "sent") == 6
        assert metrics.count("fast", "sent") == 6
        assert metrics.count("fast", "retried") == 0
        slow_titles = sorted(r.payload["title"] for r in slow.delivered)
        fast_titles = sorted(r.payload["title"] for r in fast.delivered)
        assert slow_titles == fast_titles


async def test_refused_connection_fails_fast_and_other_target_delivers(http: HttpReceiver) -> None:
    metrics = RecordingMetrics()
    dead = f"json://127.0.0.1:{closed_port()}/hook"
    cfg = config(target("dead", dead), target("ops", http.url()), retry_max=1)
    async with asyncio.timeout(20), running(cfg, metrics=metrics) as m:
        m.submit(registration())
        await http.wait_for(1)
        await until(lambda: metrics.count("dead", "failed") == 1)
        assert m.spooled("dead") == 1  # kept for when it comes back
    assert metrics.count("dead", "retried") >= 1
    assert metrics.count("dead", "sent") == 0
    assert metrics.count("dead", "dropped") == 1  # still undeliverable at shutdown
    assert metrics.count("ops", "sent") == 1


async def test_queue_overflow_drops_the_oldest_and_counts_it(http: HttpReceiver) -> None:
    metrics = RecordingMetrics()
    cfg = config(target("ops", http.url()), max_queue=5)
    manager = AlertManager(cfg, metrics=metrics, backoff_base=0.05)
    for i in range(20):  # distinct causes: nothing can be merged
        manager.submit(registration(cause_id=f"cause_{i:02d}"))
    assert manager.queue_depth("ops") == 5
    assert metrics.count("ops", "dropped") == 15
    async with asyncio.timeout(20):
        await manager.start()
        try:
            await http.wait_for(5)
            await asyncio.sleep(0.3)
        finally:
            await manager.stop(timeout=3)
    causes = sorted(r.payload["title"].split(":")[0].split()[-1] for r in http.received)
    assert causes == [f"cause_{i}" for i in range(15, 20)]
    assert metrics.count("ops", "sent") == 5


async def test_overflow_while_the_endpoint_hangs(http: HttpReceiver) -> None:
    metrics = RecordingMetrics()
    http.program(["hang"])
    cfg = config(target("ops", http.url()), max_queue=3, timeout_seconds=1.0, retry_max=1)
    async with asyncio.timeout(30), running(cfg, metrics=metrics) as m:
        m.submit(registration(cause_id="first"))
        await http.wait_for(1, delivered=False)  # "first" is in flight, hanging
        for i in range(10):
            m.submit(registration(cause_id=f"c{i}"))
        assert m.queue_depth("ops") == 3
        await http.wait_for(4, timeout=15)
        await asyncio.sleep(0.3)
    delivered = [r.payload["title"].split(":")[0].split()[-1] for r in http.delivered]
    assert delivered == ["first", "c7", "c8", "c9"]
    assert metrics.count("ops", "dropped") == 7


async def test_stop_drains_waiting_alerts(http: HttpReceiver) -> None:
    metrics = RecordingMetrics()
    cfg = config(target("ops", http.url()), group_wait_seconds=60)
    manager = AlertManager(cfg, metrics=metrics)
    await manager.start()
    for i in range(3):
        manager.submit(registration(cause_id=f"cause_{i}"))
    await asyncio.sleep(0.2)
    assert http.received == []  # still inside the group window
    async with asyncio.timeout(10):
        start = time.monotonic()
        await manager.stop(timeout=5)
        assert time.monotonic() - start < 3
    assert len(http.delivered) == 3
    assert metrics.count("ops", "sent") == 3
    assert metrics.count("ops", "dropped") == 0


async def test_stop_skips_backoff_waits(http: HttpReceiver) -> None:
    http.program(["500"])
    cfg = config(target("ops", http.url()), retry_max=3)
    manager = AlertManager(cfg, backoff_base=30.0, backoff_max=30.0)
    await manager.start()
    manager.submit(registration())
    async with asyncio.timeout(10):
        await http.wait_for(1, delivered=False)
        start = time.monotonic()
        await manager.stop(timeout=5)
        assert time.monotonic() - start < 3
    assert len(http.delivered) == 1
    assert manager.counts[("ops", "sent")] == 1


async def test_stop_deadline_counts_what_is_left(http: HttpReceiver) -> None:
    metrics = RecordingMetrics()
    http.default = "hang"
    cfg = config(target("ops", http.url()), timeout_seconds=20.0)
    manager = AlertManager(cfg, metrics=metrics)
    await manager.start()
    for i in range(3):
        manager.submit(registration(cause_id=f"cause_{i}"))
    async with asyncio.timeout(10):
        await http.wait_for(1, delivered=False)
        start = time.monotonic()
        await manager.stop(timeout=0.5)
        assert time.monotonic() - start < 2
    assert metrics.count("ops", "dropped") == 3  # one in flight, two waiting
    assert metrics.count("ops", "sent") == 0
    manager.submit(registration(user="late"))  # after stop: counted, not raised
    assert metrics.count("ops", "dropped") == 4


async def test_stop_without_start_delivers_what_was_queued(http: HttpReceiver) -> None:
    manager = AlertManager(config(target("ops", http.url()), group_wait_seconds=60))
    manager.submit(registration())
    async with asyncio.timeout(10):
        await manager.stop(timeout=5)
    assert len(http.delivered) == 1


async def test_unusable_target_is_skipped_and_others_work(http: HttpReceiver) -> None:
    bad_url = "bogus://token-VALUE-123@nowhere"
    cfg = config(target("broken", bad_url), target("ops", http.url()))
    with structlog.testing.capture_logs() as events:
        async with asyncio.timeout(20), running(cfg) as m:
            assert m.target_names == ("ops",)
            m.submit(registration())
            await http.wait_for(1)
    rejected = [e for e in events if e["event"] == "alert target URL rejected by apprise; disabled"]
    assert [e["target"] for e in rejected] == ["broken"]
    assert all("token-VALUE-123" not in repr(e) for e in events)
