"""``sipwatch replay``: the synchronous driver of the pipeline core, over files or stdin.

It runs the daemon's own ``Pipeline`` (``sipwatch.pipeline.core``) with the same settings,
plus one observer of its own, ``ReplayStats``, that counts what the report prints.  A file is
read in whole-line pieces (``sources.textfile.TextFileReader``, stdin through
``sources.stdin.iter_stdin_text``) and nothing waits on an event loop until the optional
diagnosis step at the end.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sipwatch.model import (
    AttemptOutcome,
    Direction,
    LogChunk,
    RegisterAttempt,
    RegisterTransaction,
    ServiceEvent,
    Side,
    SipMessage,
    Stream,
    outcome_key,
)
from sipwatch.pipeline.core import Pipeline, PipelineSettings
from sipwatch.pipeline.failures import FailureRecord, FailureTracker
from sipwatch.sip_meaning import TIMEOUT
from sipwatch.sources.textfile import iter_text_chunks

if TYPE_CHECKING:
    from sipwatch.metrics import SipwatchMetrics

# Failure groups a replay keeps: a scanner's usernames fold into one record per IP, so this
# bounds only genuinely distinct failing devices (about 0.5 kB each).
REPLAY_MAX_FAILURE_RECORDS = 100_000


@dataclass(slots=True)
class ReplayStats:
    """The replay report's counters: an observer of the pipeline.

    Each hook bumps one counter keyed by what it was shown (a member, a tuple); the report's
    vocabulary (status keys, side and outcome names, totals) is derived once, when read,
    instead of once per message."""

    by_direction: Counter[Direction] = field(default_factory=Counter)
    # (side, final status, timed out) -> transactions
    transactions: Counter[tuple[Side, int, bool]] = field(default_factory=Counter)
    attempts: Counter[AttemptOutcome] = field(default_factory=Counter)
    service_events: Counter[str] = field(default_factory=Counter)

    def observe_message(self, msg: SipMessage) -> None:
        self.by_direction[msg.direction] += 1

    def observe_event(self, ev: ServiceEvent) -> None:
        self.service_events[ev.kind] += 1

    def observe_transaction(self, tx: RegisterTransaction) -> None:
        self.transactions[tx.side, tx.status, tx.timed_out] += 1

    def observe_attempt(self, att: RegisterAttempt) -> None:
        self.attempts[att.outcome] += 1

    @property
    def sip_messages(self) -> int:
        return sum(self.by_direction.values())

    @property
    def messages_by_direction(self) -> Counter[str]:
        return Counter({direction.value: n for direction, n in self.by_direction.items()})

    @property
    def register_by_status(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for (_, status, timed_out), n in self.transactions.items():
            out[outcome_key(status, timed_out)] += n
        return out

    @property
    def register_by_side(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for (side, _, _), n in self.transactions.items():
            out[side.value] += n
        return out

    @property
    def attempts_by_outcome(self) -> Counter[str]:
        return Counter({outcome.value: n for outcome, n in self.attempts.items()})


@dataclass
class ReplayResult:
    """Everything a replay learned; rendered by ``sipwatch.replay.report``."""

    inputs: list[str]
    pipeline: Pipeline
    stats: ReplayStats
    metrics: SipwatchMetrics | None = None
    seconds: float = 0.0

    # the report's vocabulary, read from the pipeline's stages
    @property
    def sip_messages(self) -> int:
        return self.stats.sip_messages

    @property
    def messages_by_direction(self) -> Counter[str]:
        return self.stats.messages_by_direction

    @property
    def register_by_status(self) -> Counter[str]:
        return self.stats.register_by_status

    @property
    def register_by_side(self) -> Counter[str]:
        return self.stats.register_by_side

    @property
    def attempts_by_outcome(self) -> Counter[str]:
        return self.stats.attempts_by_outcome

    @property
    def service_events(self) -> Counter[str]:
        return self.stats.service_events

    @property
    def lines(self) -> int:
        return self.pipeline.parser.stats.lines

    @property
    def records(self) -> dict[str, int]:
        return dict(self.pipeline.parser.stats.records)

    @property
    def parse_errors(self) -> dict[str, int]:
        return dict(self.pipeline.parser.stats.errors)

    @property
    def retransmitted_requests(self) -> int:
        return self.pipeline.tracker.stats.retransmitted_requests

    @property
    def orphan_responses(self) -> int:
        return self.pipeline.tracker.stats.orphan_responses

    @property
    def first_ts(self) -> float:
        return self.pipeline.first_ts

    @property
    def last_ts(self) -> float:
        return self.pipeline.log_now

    @property
    def failures(self) -> FailureTracker:
        return self.pipeline.failures

    def failure_records(self) -> list[FailureRecord]:
        return self.pipeline.failures.records()


def _chunks(path: str) -> Iterator[str]:
    if path == "-":
        from sipwatch.sources.stdin import iter_stdin_text

        return iter_stdin_text()
    return iter_text_chunks(path)


def replay_paths(
    paths: list[str],
    *,
    settings: PipelineSettings | None = None,
    metrics: SipwatchMetrics | None = None,
) -> ReplayResult:
    """Replay files in the order given (``-`` is stdin).  Raises OSError for unreadable files."""
    started = time.perf_counter()
    settings = (settings or PipelineSettings()).replace(
        failure_table_size=REPLAY_MAX_FAILURE_RECORDS
    )
    stats = ReplayStats()
    observers: list[object] = [stats] if metrics is None else [stats, metrics]
    pipeline = Pipeline(settings, observers)
    res = ReplayResult(inputs=[], pipeline=pipeline, stats=stats, metrics=metrics)
    for path in paths:
        name = "-" if path == "-" else str(Path(path))
        res.inputs.append(name)
        for text in _chunks(path):
            pipeline.feed(LogChunk(name, Stream.TEXT, text))
        # files are separate channels: end this one's held record now
        pipeline.feed(LogChunk(name, Stream.TEXT, ""))
    pipeline.finish()
    res.seconds = time.perf_counter() - started
    return res


def status_sort_key(status: str) -> tuple[int, str]:
    return (1, status) if status == TIMEOUT else (0, status.zfill(3))
