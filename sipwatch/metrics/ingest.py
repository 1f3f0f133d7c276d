"""Metrics of the ingest stage: lines, records and parse errors, SIP messages, service events.

Is sipwatch reading the logs?  A dead follower or a broken parser must show here first.

The parser already counts lines, records and errors per channel in plain ints
(``LogParser.stats_by_source``); this collector reads them at scrape time instead of copying
every increment (``observe_parse_stats`` only remembers the parser).  What the parser cannot
count - a chunk the daemon could not parse at all, or counts fed by hand - is added on top.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.metrics_core import Metric

from sipwatch.metrics import names
from sipwatch.metrics.cardinality import OTHER
from sipwatch.metrics.families import CounterVec, GaugeVec, LabelValues, VecCollector
from sipwatch.metrics.labels import PINO_LEVELS, RECORD_KINDS, CappedLabel, fixed, method_label
from sipwatch.model import ServiceEvent, SipMessage

if TYPE_CHECKING:
    from sipwatch.ingest.framing import LogParser


class IngestCollector(VecCollector):
    """A prometheus-client collector for the ingest stage; fed by the pipeline's
    ``observe_message``/``observe_event``/``observe_parse_stats`` hooks."""

    def __init__(self, source: CappedLabel, kind: CappedLabel) -> None:
        self._source = source
        self._kind = kind
        self._parsers: list[LogParser] = []
        self.lines = CounterVec(names.LOG_LINES, "Raw log lines read.", ["source"])
        self.records = CounterVec(
            names.LOG_RECORDS,
            "Framed log records by kind (sip, service, other, api).",
            ["source", "kind"],
        )
        self.parse_errors = CounterVec(
            names.PARSE_ERRORS, "Records that could not be parsed.", ["source", "kind"]
        )
        self.messages = CounterVec(
            names.SIP_MESSAGES,
            "Network SIP messages parsed, retransmissions included.",
            ["source", "direction", "type", "method"],
        )
        self.truncated = CounterVec(
            names.SIP_TRUNCATED, "SIP messages drachtio logged truncated.", ["source"]
        )
        self.service_events = CounterVec(
            names.SERVICE_EVENTS,
            "Non-SIP service log events by origin, kind and level.",
            ["source", "origin", "kind", "level"],
        )
        self.last_event = GaugeVec(
            names.SOURCE_LAST_EVENT,
            "Log timestamp of the newest event seen from the source.",
            ["source"],
            unit="seconds",
        )

    # ------------------------------------------------------------------ hooks
    def observe_parse_stats(self, parser: LogParser, source: str) -> None:
        """The parser's counters are read at scrape time: remember the parser (once)."""
        if not any(p is parser for p in self._parsers):
            self._parsers.append(parser)

    def observe_lines(self, source: str, lines: int) -> None:
        if lines > 0:
            self.lines.inc((self._source(source),), lines)

    def observe_record(self, source: str, kind: str, count: int = 1) -> None:
        """Framed records of ``kind`` (sip, service, other, api); ``count`` for batches."""
        if count > 0:
            self.records.inc((self._source(source), fixed(kind, RECORD_KINDS)), count)

    def observe_parse_error(self, source: str, kind: str, count: int = 1) -> None:
        if count > 0:
            self.parse_errors.inc((self._source(source), self._kind(kind)), count)

    def observe_message(self, msg: SipMessage) -> None:
        source = self._source(msg.source)
        self.messages.inc(
            (
                source,
                msg.direction.value,
                "request" if msg.is_request else "response",
                method_label(msg.method),
            )
        )
        if msg.truncated:
            self.truncated.inc((source,))
        if msg.ts > 0:
            self.last_event.set((source,), msg.ts)

    def observe_event(self, ev: ServiceEvent) -> None:
        source = self._source(ev.source)
        level = PINO_LEVELS.get(ev.level, OTHER)
        self.service_events.inc((source, ev.origin.value, self._kind(ev.kind), level))
        if ev.ts > 0:
            self.last_event.set((source,), ev.ts)

    # ------------------------------------------------------------------ collector
    def collect(self) -> Iterator[Metric]:
        lines = dict(self.lines.values)
        records = dict(self.records.values)
        errors = dict(self.parse_errors.values)
        for parser in self._parsers:
            for name, st in parser.stats_by_source.items():
                source = self._source(name)
                if st.lines:
                    _add(lines, (source,), st.lines)
                for kind, n in st.records.items():
                    _add(records, (source, fixed(kind, RECORD_KINDS)), n)
                for kind, n in st.errors.items():
                    _add(errors, (source, self._kind(kind)), n)
        yield self.lines.family(lines)
        yield self.records.family(records)
        yield self.parse_errors.family(errors)
        yield self.messages.family()
        yield self.truncated.family()
        yield self.service_events.family()
        yield self.last_event.family()

    def _families(self) -> tuple[CounterVec | GaugeVec, ...]:
        return (
            self.lines,
            self.records,
            self.parse_errors,
            self.messages,
            self.truncated,
            self.service_events,
            self.last_event,
        )


def _add(values: dict[LabelValues, float], key: LabelValues, n: float) -> None:
    values[key] = values.get(key, 0.0) + n
