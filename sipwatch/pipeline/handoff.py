"""The daemon's observer: what leaves the in-memory pipeline for the network-facing stages.

* A failing inbound transaction becomes a diagnosis request for its failure group (one
  request in flight per group; the engine caches its lookups).  Devices and scanners wait in
  separate bounded queues and devices always go first, so a username spray can fill only
  its own small queue and never delay the diagnosis - and the alert - of a real device.  A
  scanner's failures fold into one group per source IP (``failures.failure_key``), so a
  scanner is diagnosed once, not once per username.
* A successful inbound attempt becomes a recovery (alerts send "resolved", remediation
  confirms a fix).

Requests wait ``delay`` seconds before they are served: the registrar's lines arrive on
another stream (another container, another file) and a diagnosis made before they are in
would miss them.  Queue overflow is dropped and counted, never blocking the parse stage.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from sipwatch.model import AttemptOutcome, RegisterAttempt, RegisterTransaction, Side
from sipwatch.pipeline.failures import FailureKey, failure_key
from sipwatch.pipeline.interest import is_failure, only_failed, only_succeeded
from sipwatch.pipeline.scanners import ScannerClassifier
from sipwatch.waits import wait_event

DEVICE_QUEUE = 1000
SCANNER_QUEUE = 64
DELAY = 0.5


@dataclass(slots=True, frozen=True)
class Recovery:
    """A device that registered successfully: (user, domain, source IP) at log time."""

    user: str
    domain: str
    source_ip: str
    at: float


class DiagnosisHandoff:
    """Pipeline observer feeding the daemon's diagnosis worker; see the module docstring."""

    def __init__(
        self,
        *,
        device_capacity: int = DEVICE_QUEUE,
        scanner_capacity: int = SCANNER_QUEUE,
        delay: float = DELAY,
        on_drop: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.device_capacity = device_capacity
        self.scanner_capacity = scanner_capacity
        self.delay = delay
        self._on_drop = on_drop
        self._clock = clock
        self._devices: OrderedDict[FailureKey, float] = OrderedDict()  # key -> due
        self._scanners_q: OrderedDict[FailureKey, float] = OrderedDict()
        self._in_flight: set[FailureKey] = set()
        self._wakeup = asyncio.Event()
        self._scanners: ScannerClassifier | None = None
        self.recovered: list[Recovery] = []

    # ------------------------------------------------------------------ observer hooks
    def watch_scanners(self, scanners: ScannerClassifier) -> None:
        self._scanners = scanners

    @only_failed
    def observe_transaction(self, tx: RegisterTransaction) -> None:
        if tx.side is not Side.INBOUND or not is_failure(tx):
            return
        scanner = self._scanners is not None and (
            self._scanners.scanner_state(tx.peer_ip) is not None
        )
        key = failure_key(tx, scanner=scanner)
        if key in self._in_flight or key in self._devices or key in self._scanners_q:
            return
        queue, capacity, name = (
            (self._scanners_q, self.scanner_capacity, "diagnosis_scanner")
            if scanner
            else (self._devices, self.device_capacity, "diagnosis")
        )
        if len(queue) >= capacity:
            if self._on_drop is not None:
                self._on_drop(name)
            return
        queue[key] = self._clock() + self.delay
        self._wakeup.set()

    @only_succeeded
    def observe_attempt(self, att: RegisterAttempt) -> None:
        if att.outcome is AttemptOutcome.SUCCESS and att.side is Side.INBOUND:
            self.recovered.append(Recovery(att.to_user, att.to_host, att.peer_ip, att.finished))

    # ------------------------------------------------------------------ worker side
    def depth(self) -> int:
        return len(self._devices) + len(self._scanners_q)

    @property
    def capacity(self) -> int:
        return self.device_capacity + self.scanner_capacity

    async def next(self) -> FailureKey:
        """The next failure group to diagnose, devices first, each once it is due."""
        while True:
            queue = self._devices or self._scanners_q
            if not queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            key, due = next(iter(queue.items()))
            wait = due - self._clock()
            if wait > 0:
                # a device request may arrive meanwhile and must not wait behind a scanner
                self._wakeup.clear()
                await wait_event(self._wakeup, wait)
                continue
            del queue[key]
            self._in_flight.add(key)
            return key

    def done(self, key: FailureKey) -> None:
        self._in_flight.discard(key)

    def take_recoveries(self) -> list[Recovery]:
        out, self.recovered = self.recovered, []
        return out
