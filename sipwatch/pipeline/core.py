"""The pipeline core every driver runs: one definition of what happens to a line of log.

::

    SourceItem ──LogParser──▶ SipMessage ──RegisterTracker──▶ RegisterTransaction / RegisterAttempt
       │                      ServiceEvent                         │
       │                          │                                ▼
       │                          ▼                   ScannerClassifier (first: it decides
       │                  observe_message / observe_event      what counts per user)
       │                                                          ▼
       └─ MessageBatch (HEP) ──────▲              observe_transaction / observe_attempt

The observers are a plain list, like structlog's processors: the failure table, the context
diagnosis reads, and whatever the driver adds (metrics, replay counters, the daemon's
diagnosis hand-off).  ``sipwatch.replay.driver`` drives the pipeline synchronously over files;
``sipwatch.daemon`` drives the very same object from asyncio queues - as fail2ban's offline
``fail2ban-regex`` runs the daemon's own ``Filter`` - so the two can never disagree about
what a log says (a parity test holds them to it).

An observer implements any of ``observe_message``, ``observe_event``, ``observe_transaction``,
``observe_attempt``, ``observe_parse_stats`` and ``observe_source_node``, and
``watch_scanners(classifier)`` / ``watch_tracker(tracker)`` if it reads those stages' state;
hooks it lacks cost nothing (the dispatch lists are built once), and neither do the calls a
hook declared it does not want (``sipwatch.pipeline.interest``: only failed transactions,
only successful attempts).  Hooks run in the order their observers were added.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sipwatch.ingest.framing import LogParser
from sipwatch.ingest.transactions import new_tracker
from sipwatch.model import (
    AttemptOutcome,
    LogChunk,
    MessageBatch,
    ParsedEvent,
    RegisterAttempt,
    RegisterTransaction,
    ServiceEvent,
    SipMessage,
    SourceItem,
)
from sipwatch.pipeline import interest
from sipwatch.pipeline.context import FailureContext
from sipwatch.pipeline.failures import FailureRecord, FailureTracker
from sipwatch.pipeline.scanners import ScannerClassifier
from sipwatch.sip_meaning import TIMER_F

if TYPE_CHECKING:
    from sipwatch.config import Config
    from sipwatch.diagnosis.symptom import Symptom

Completed = RegisterTransaction | RegisterAttempt
_MAX_NODE_SOURCES = 1024


@dataclass(frozen=True)
class PipelineSettings:
    """Everything that changes what the pipeline concludes from a log.  Both drivers build it
    from the same configuration (``from_config``), so replay and run cannot drift."""

    tz_offset: float = 0.0  # seconds east of UTC of drachtio's timestamps
    timer_f: float = TIMER_F
    max_pending_transactions: int = 100_000
    max_pending_attempts: int = 100_000
    scanner_min_users: int = 10
    scanner_window: float = 60.0
    failure_table_size: int = 10_000
    # Where SIP messages are taken from when a HEP feed and logs both carry them: "all" (no
    # HEP configured), "hep" (log sources then give only registrar and drachtio service
    # lines) or "logs" (HEP batches are only forwarded, not analysed).  One source of truth,
    # so no message is counted twice.
    sip_truth: str = "all"

    @classmethod
    def from_config(cls, config: Config, *, tz_offset: float | None = None) -> PipelineSettings:
        """The settings of ``config``; ``tz_offset`` (seconds) overrides its time zone."""
        return cls(
            tz_offset=tz_offset if tz_offset is not None else tz_offset_of(config.sources.timezone),
            timer_f=config.sip.timer_f_seconds,
            max_pending_transactions=config.sip.max_pending_transactions,
            max_pending_attempts=config.sip.max_pending_attempts,
            scanner_min_users=config.diagnosis.scanner_distinct_users,
            scanner_window=config.diagnosis.scanner_window_seconds,
            sip_truth=config.sources.hep.sip_truth if config.sources.hep.listen else "all",
        )

    def replace(self, **changes: Any) -> PipelineSettings:
        return dataclasses.replace(self, **changes)


def tz_offset_of(name: str) -> float:
    """Seconds east of UTC of a time zone, as of now (drachtio logs local time)."""
    if name.upper() in ("UTC", "Z", "GMT"):
        return 0.0
    from sipwatch.config import get_timezone

    offset = datetime.now(UTC).astimezone(get_timezone(name)).utcoffset()
    return offset.total_seconds() if offset else 0.0


class Pipeline:
    """Parser → tracker → scanner classifier → observers; see the module docstring."""

    def __init__(self, settings: PipelineSettings, observers: Iterable[object] = ()) -> None:
        self.settings = settings
        self.parser = LogParser(tz_offset=settings.tz_offset)
        self.tracker = new_tracker(
            timer_f=settings.timer_f,
            max_pending=settings.max_pending_transactions,
            max_pending_attempts=settings.max_pending_attempts,
        )
        self.context = FailureContext()
        self.scanners = ScannerClassifier(
            min_users=settings.scanner_min_users,
            window=settings.scanner_window,
            registered=self._registered,
        )
        self.failures = FailureTracker(
            settings.failure_table_size, scanner_of=self.scanners.scanner_state
        )
        self.scanners.on_detect(self.failures.retract)
        self._sip_from_logs = settings.sip_truth != "hep"
        self._sip_from_wire = settings.sip_truth != "logs"
        self.log_now = 0.0  # newest log timestamp seen
        self.first_ts = 0.0  # oldest log timestamp seen
        self._on_message: list[Callable[[SipMessage], None]] = []
        self._on_event: list[Callable[[ServiceEvent], None]] = []
        # completed items -> the hooks that want them: every hook sees a failed transaction
        # and a successful attempt, the others only the hooks that want everything
        self._on_failed_tx: list[Callable[[RegisterTransaction], None]] = []
        self._on_other_tx: list[Callable[[RegisterTransaction], None]] = []
        self._on_success: list[Callable[[RegisterAttempt], None]] = []
        self._on_other_attempt: list[Callable[[RegisterAttempt], None]] = []
        self._on_parse_stats: list[Callable[[LogParser, str], None]] = []
        self._on_node: list[Callable[[str, str], None]] = []
        self._nodes: dict[str, str] = {}  # source -> the SBC node it said it describes
        for observer in (self.scanners, self.context, self.failures, *observers):
            self.add_observer(observer)

    def add_observer(self, observer: object) -> None:
        """Append an observer; its hooks run after those of the observers before it."""
        for name, hooks in (
            ("observe_message", self._on_message),
            ("observe_event", self._on_event),
            ("observe_parse_stats", self._on_parse_stats),
            ("observe_source_node", self._on_node),
        ):
            hook = getattr(observer, name, None)
            if hook is not None:
                hooks.append(hook)
        for name, all_hooks, some_hooks, wanted in (
            ("observe_transaction", self._on_failed_tx, self._on_other_tx, interest.FAILED),
            ("observe_attempt", self._on_success, self._on_other_attempt, interest.SUCCEEDED),
        ):
            hook = getattr(observer, name, None)
            if hook is not None:
                all_hooks.append(hook)
                if interest.wants(hook) != wanted:
                    some_hooks.append(hook)
        watch = getattr(observer, "watch_scanners", None)
        if watch is not None:  # it asks the classifier about traffic, or hears detections
            watch(self.scanners)
        watch_tracker = getattr(observer, "watch_tracker", None)
        if watch_tracker is not None:  # it reads the tracker's plain counters when asked
            watch_tracker(self.tracker)

    # ------------------------------------------------------------------ input
    def feed(self, item: SourceItem) -> None:
        """One source item: log text (framed and parsed) or already-parsed wire messages."""
        if item.node and self._nodes.get(item.source) != item.node:
            self._node_seen(item.source, item.node)
        if type(item) is LogChunk:
            events: Sequence[ParsedEvent] = self.parser.feed(item)
            if events and self._sip_from_logs is False:
                events = [ev for ev in events if type(ev) is not SipMessage]
            if events:
                self._dispatch(events)
            for publish in self._on_parse_stats:
                publish(self.parser, item.source)
        else:
            assert isinstance(item, MessageBatch)
            if item.messages and self._sip_from_wire:
                self._dispatch(item.messages)

    def advance(self, now: float) -> None:
        """Expire open transactions as of log time ``now`` (the daemon's clock tick)."""
        done = self.tracker.advance(now)
        if done:
            self._completed(list(done))

    def finish(self) -> None:
        """End of input: emit held records and time out everything still open."""
        held = self.parser.flush()
        if not self._sip_from_logs:
            held = [ev for ev in held if type(ev) is not SipMessage]
        self._dispatch(held)
        for source in list(self.parser.stats_by_source):
            for publish in self._on_parse_stats:
                publish(self.parser, source)
        self._completed(list(self.tracker.flush()))

    # ------------------------------------------------------------------ queries
    def symptom(self, record: FailureRecord) -> Symptom:
        """The diagnosis input for one failure group, from everything the pipeline saw."""
        from sipwatch.pipeline.symptoms import symptom_from_record

        return symptom_from_record(record, self.context, self.scanners)

    # ------------------------------------------------------------------ internals
    def _node_seen(self, source: str, node: str) -> None:
        if len(self._nodes) >= _MAX_NODE_SOURCES and source not in self._nodes:
            return  # more sources than any deployment has: keep what is known
        self._nodes[source] = node
        for hook in self._on_node:
            hook(source, node)

    def _registered(self, user: str, domain: str) -> bool:
        return self.context.registered_before(user, domain, math.inf)

    def _dispatch(self, events: Sequence[ParsedEvent]) -> None:
        on_message = self._on_message
        on_event = self._on_event
        track = self.tracker.on_message
        for ev in events:
            if type(ev) is SipMessage:
                ts = ev.ts
                if ts > self.log_now:
                    self.log_now = ts
                if ts and (ts < self.first_ts or not self.first_ts):
                    self.first_ts = ts
                for hook in on_message:
                    hook(ev)
                done = track(ev)
                if done:
                    self._completed(done)
            else:
                assert isinstance(ev, ServiceEvent)
                for event_hook in on_event:
                    event_hook(ev)

    def _completed(self, done: list[Completed]) -> None:
        is_failure = interest.is_failure
        for item in done:
            if type(item) is RegisterTransaction:
                for hook in self._on_failed_tx if is_failure(item) else self._on_other_tx:
                    hook(item)
            else:
                assert isinstance(item, RegisterAttempt)
                success = item.outcome is AttemptOutcome.SUCCESS
                for attempt_hook in self._on_success if success else self._on_other_attempt:
                    attempt_hook(item)
