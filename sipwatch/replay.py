"""``sipwatch replay``: run the whole analysis over log files (or stdin) once, then report.

Replay is the same pipeline as the daemon (parser -> REGISTER tracker -> failure table,
metrics, context for diagnosis) driven synchronously: a file is read in 1 MiB pieces and
nothing waits on an event loop until the optional diagnosis step at the end.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sipwatch.ingest.framing import LogParser
from sipwatch.ingest.transactions import TIMER_F, RegisterTracker
from sipwatch.metrics import SipwatchMetrics
from sipwatch.model import (
    TIMEOUT,
    LogChunk,
    RegisterAttempt,
    RegisterTransaction,
    ServiceEvent,
    SipMessage,
    Stream,
)
from sipwatch.pipeline.context import FailureContext
from sipwatch.pipeline.failures import FailureRecord, FailureTracker
from sipwatch.sources.file import LineDecoder, iter_text_chunks

REPLAY_MAX_FAILURE_RECORDS = 500_000


@dataclass
class ReplayResult:
    """Everything a replay learned; rendered by ``sipwatch.report``."""

    inputs: list[str]
    seconds: float = 0.0
    sip_messages: int = 0
    messages_by_direction: Counter[str] = field(default_factory=Counter)
    register_by_status: Counter[str] = field(default_factory=Counter)
    register_by_side: Counter[str] = field(default_factory=Counter)
    attempts_by_outcome: Counter[str] = field(default_factory=Counter)
    service_events: Counter[str] = field(default_factory=Counter)
    retransmitted_requests: int = 0
    orphan_responses: int = 0
    lines: int = 0
    records: dict[str, int] = field(default_factory=dict)
    parse_errors: dict[str, int] = field(default_factory=dict)
    failures: FailureTracker = field(
        default_factory=lambda: FailureTracker(REPLAY_MAX_FAILURE_RECORDS)
    )
    context: FailureContext = field(default_factory=FailureContext)
    metrics: SipwatchMetrics | None = None
    first_ts: float = 0.0
    last_ts: float = 0.0

    def failure_records(self) -> list[FailureRecord]:
        return self.failures.records()


class Replayer:
    """Feeds chunks through parser and tracker; one instance per replay."""

    def __init__(
        self,
        *,
        tz_offset: float = 0.0,
        timer_f: float = TIMER_F,
        metrics: SipwatchMetrics | None = None,
    ) -> None:
        self.parser = LogParser(tz_offset=tz_offset)
        self.tracker = RegisterTracker(timer_f=timer_f)
        self.result = ReplayResult(inputs=[], metrics=metrics)
        self._metrics = metrics

    def feed(self, chunk: LogChunk) -> None:
        self._consume(self.parser.feed(chunk))

    def _consume(self, events: Iterable[SipMessage | ServiceEvent]) -> None:
        res = self.result
        on_message = self.tracker.on_message
        metrics = self._metrics
        for ev in events:
            if type(ev) is SipMessage:
                res.sip_messages += 1
                res.messages_by_direction[ev.direction] += 1  # a StrEnum: no .value lookup
                if metrics is not None:
                    metrics.observe_message(ev)
                if ev.ts:
                    if not res.first_ts or ev.ts < res.first_ts:
                        res.first_ts = ev.ts
                    if ev.ts > res.last_ts:
                        res.last_ts = ev.ts
                done = on_message(ev)
                if done:
                    self._completed(done)
            else:
                assert isinstance(ev, ServiceEvent)
                res.service_events[ev.kind] += 1
                res.context.observe_event(ev)
                if metrics is not None:
                    metrics.observe_service_event(ev)

    def _completed(self, done: list[RegisterTransaction | RegisterAttempt]) -> None:
        res = self.result
        metrics = self._metrics
        for item in done:
            if type(item) is RegisterTransaction:
                res.register_by_status[item.outcome_key] += 1
                res.register_by_side[item.side.value] += 1
                res.failures.observe_transaction(item)
                res.context.observe_transaction(item)
                if metrics is not None:
                    metrics.observe_transaction(item)
            else:
                assert isinstance(item, RegisterAttempt)
                res.attempts_by_outcome[item.outcome.value] += 1
                res.failures.observe_attempt(item)
                res.context.observe_attempt(item)
                if metrics is not None:
                    metrics.observe_attempt(item)

    def finish(self) -> ReplayResult:
        self._consume(self.parser.flush())
        self._completed(list(self.tracker.flush()))
        res = self.result
        stats = self.parser.stats
        res.lines = stats.lines
        res.records = dict(stats.records)
        res.parse_errors = dict(stats.errors)
        res.retransmitted_requests = self.tracker.stats.retransmitted_requests
        res.orphan_responses = self.tracker.stats.orphan_responses
        if self._metrics is not None:
            for source, st in self.parser.stats_by_source.items():
                self._metrics.observe_lines(source, st.lines)
                for kind, n in st.records.items():
                    self._metrics.observe_record(source, kind, n)
                for kind, n in st.errors.items():
                    self._metrics.observe_parse_error(source, kind, n)
        return res


def _stdin_chunks() -> Iterator[str]:
    """Whole-line chunks from stdin (binary, decoded leniently, CRLF kept, lines bounded)."""
    buf = sys.stdin.buffer
    decoder = LineDecoder()
    read = buf.read1 if hasattr(buf, "read1") else buf.read
    while data := read(1 << 20):
        text = decoder.feed(data)
        if text:
            yield text
    rest = decoder.flush()
    if rest:
        yield rest


def replay_paths(
    paths: list[str],
    *,
    tz_offset: float = 0.0,
    timer_f: float = TIMER_F,
    metrics: SipwatchMetrics | None = None,
) -> ReplayResult:
    """Replay files in the order given (``-`` is stdin).  Raises OSError for unreadable files."""
    started = time.perf_counter()
    rp = Replayer(tz_offset=tz_offset, timer_f=timer_f, metrics=metrics)
    for path in paths:
        name = "-" if path == "-" else str(Path(path))
        rp.result.inputs.append(name)
        texts = _stdin_chunks() if path == "-" else iter_text_chunks(path)
        for text in texts:
            rp.feed(LogChunk(name, Stream.TEXT, text))
        # files are separate channels: end this one's held record now
        rp.feed(LogChunk(name, Stream.TEXT, ""))
    res = rp.finish()
    res.seconds = time.perf_counter() - started
    return res


def status_sort_key(status: str) -> tuple[int, str]:
    return (1, status) if status == TIMEOUT else (0, status.zfill(3))
