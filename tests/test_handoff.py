"""DiagnosisHandoff: which failures leave for diagnosis, in what order, when, and what is
dropped when the network-facing stages fall behind."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sipwatch.model import AttemptOutcome, Side
from sipwatch.pipeline.failures import SCANNER_USER
from sipwatch.pipeline.handoff import DiagnosisHandoff, Recovery
from sipwatch.pipeline.scanners import ScannerClassifier
from tests.test_metrics import attempt, transaction

T0 = 1767268800.0
SCANNER_IP = "198.51.100.66"


def handoff(**kw: Any) -> tuple[DiagnosisHandoff, list[str]]:
    dropped: list[str] = []
    h = DiagnosisHandoff(**{"delay": 0.0, "on_drop": dropped.append, **kw})
    return h, dropped


def with_scanner(h: DiagnosisHandoff) -> ScannerClassifier:
    """A classifier that knows SCANNER_IP as a scanner (by its User-Agent)."""
    scanners = ScannerClassifier()
    h.watch_scanners(scanners)
    scanners.observe_transaction(transaction(peer_ip=SCANNER_IP, user_agent="sipvicious"))
    assert scanners.scanner_state(SCANNER_IP) is not None
    return scanners


def test_defaults() -> None:
    h = DiagnosisHandoff()
    assert (h.device_capacity, h.scanner_capacity, h.delay) == (1000, 64, 0.5)
    assert (h.capacity, h.depth()) == (1064, 0)


def test_only_inbound_failures_are_handed_over_once_per_group() -> None:
    h, dropped = handoff()
    h.observe_transaction(transaction(side=Side.OUTBOUND))
    h.observe_transaction(transaction(status=200, reason="OK"))
    h.observe_transaction(transaction(status=401))
    assert h.depth() == 0
    h.observe_transaction(transaction(finished=T0))
    h.observe_transaction(transaction(finished=T0 + 1))  # the same group: already queued
    h.observe_transaction(transaction(peer_ip="203.0.113.9"))
    h.observe_transaction(transaction(status=0, timed_out=True))
    assert (h.depth(), dropped) == (3, [])


async def test_devices_are_served_before_scanners_and_once_at_a_time() -> None:
    h, _ = handoff()
    with_scanner(h)
    for user in ("100", "101", "102"):  # a spray: one group for the address
        h.observe_transaction(transaction(to_user=user, peer_ip=SCANNER_IP))
    h.observe_transaction(transaction(to_user="alice"))
    assert h.depth() == 2
    first = await asyncio.wait_for(h.next(), 1)
    assert first == ("inbound", "alice", "acme.example.com", "203.0.113.5", 403)
    second = await asyncio.wait_for(h.next(), 1)
    assert second == ("inbound", SCANNER_USER, SCANNER_USER, SCANNER_IP, 403)
    assert h.depth() == 0
    # while a group is being diagnosed, its failures do not queue it again
    h.observe_transaction(transaction(to_user="alice"))
    assert h.depth() == 0
    h.done(first)
    h.observe_transaction(transaction(to_user="alice"))
    assert h.depth() == 1
    h.done(first)  # done twice is harmless


def test_full_queues_drop_and_say_which() -> None:
    h, dropped = handoff(device_capacity=2, scanner_capacity=1)
    with_scanner(h)
    for ip in ("203.0.113.1", "203.0.113.2", "203.0.113.3"):
        h.observe_transaction(transaction(peer_ip=ip))
    h.observe_transaction(transaction(peer_ip=SCANNER_IP))
    h.observe_transaction(transaction(peer_ip=SCANNER_IP, status=404))
    assert dropped == ["diagnosis", "diagnosis_scanner"]
    assert (h.depth(), h.capacity) == (3, 3)
    # a group that is queued already is no new request: nothing to drop
    h.observe_transaction(transaction(peer_ip="203.0.113.1"))
    h.observe_transaction(transaction(to_user="999", peer_ip=SCANNER_IP))
    assert dropped == ["diagnosis", "diagnosis_scanner"]
    quiet = DiagnosisHandoff(device_capacity=1, delay=0.0)  # no drop callback
    quiet.observe_transaction(transaction(peer_ip="203.0.113.1"))
    quiet.observe_transaction(transaction(peer_ip="203.0.113.2"))
    assert quiet.depth() == 1


async def test_a_request_waits_for_its_delay() -> None:
    h, _ = handoff(delay=0.05)
    start = time.monotonic()
    h.observe_transaction(transaction())
    await asyncio.wait_for(h.next(), 1)
    assert time.monotonic() - start >= 0.05


async def test_a_waiting_worker_wakes_up_for_new_work() -> None:
    h, _ = handoff()
    worker = asyncio.create_task(h.next())
    await asyncio.sleep(0.01)
    assert not worker.done()
    h.observe_transaction(transaction())
    key = await asyncio.wait_for(worker, 1)
    assert key[1] == "alice"


async def test_a_device_arriving_while_a_scanner_waits_goes_first() -> None:
    h, _ = handoff(delay=0.1)
    with_scanner(h)
    h.observe_transaction(transaction(peer_ip=SCANNER_IP))
    worker = asyncio.create_task(h.next())
    await asyncio.sleep(0.02)
    h.observe_transaction(transaction(to_user="bob"))
    first = await asyncio.wait_for(worker, 1)
    assert first[1] == "bob"
    assert (await asyncio.wait_for(h.next(), 1))[1] == SCANNER_USER


def test_inbound_successes_are_recoveries() -> None:
    h, _ = handoff()
    success = {"outcome": AttemptOutcome.SUCCESS, "status": 200}
    h.observe_attempt(attempt(**success, finished=T0 + 3))
    h.observe_attempt(attempt(**success, side=Side.OUTBOUND))
    h.observe_attempt(attempt())  # a failure
    assert h.take_recoveries() == [Recovery("alice", "acme.example.com", "203.0.113.5", T0 + 3)]
    assert h.take_recoveries() == []
    assert h.recovered == []
