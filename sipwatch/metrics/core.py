"""``SipwatchMetrics``: sipwatch's metrics, one prometheus-client collector per stage.

::

    pipeline hook                      stage collector (module)
    observe_message / observe_event    IngestCollector      (ingest)     lines, records,
    observe_parse_stats                                                   parse errors, SIP
    observe_transaction                RegisterCollector    (register)   transactions, latency,
    observe_attempt ─────────────┬──▶                                    attempts
                                 └──▶ OffenderCollector    (offenders)  per-user / per-IP
    watch_scanners, expire                                               top-N series
    set_source_up, observe_queue*      SourceCollector      (sources)    sources, queues
    observe_root_cause, ..._alert,     DiagnosisCollector   (diagnosis)  causes, alerts,
    ..._remediation                                                      remediations

Each collector keeps plain state and renders metric families when scraped, as client_python's
own ``ProcessCollector`` and ``GCCollector`` do (``sipwatch.metrics.families`` says why).  This
class only builds them, registers them in one registry and routes every hook straight to the
stage that owns it (the pipeline looks the hooks up once, so routing costs nothing per event).
Metric names live in ``sipwatch.metrics.names``, label vocabularies in
``sipwatch.metrics.labels``.

Not thread-safe: call it and scrape it from the event loop (the aiohttp handler does).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.metrics_core import InfoMetricFamily, Metric

from sipwatch import __version__
from sipwatch.ingest.speedups import IMPLEMENTATION
from sipwatch.metrics import names
from sipwatch.metrics.diagnosis import DiagnosisCollector
from sipwatch.metrics.ingest import IngestCollector
from sipwatch.metrics.labels import CappedLabel
from sipwatch.metrics.offenders import OffenderCollector
from sipwatch.metrics.register import RegisterCollector
from sipwatch.metrics.sources import SourceCollector
from sipwatch.model import RegisterAttempt, RegisterTransaction, ServiceEvent, SipMessage

if TYPE_CHECKING:
    from sipwatch.ingest.framing import LogParser
    from sipwatch.ingest.transactions import RegisterTracker
    from sipwatch.pipeline.scanners import ScannerClassifier

# How many distinct values the labels that come from configuration or code keep before
# newcomers fold into "other" (documented in docs/metrics.md, checked by its test).
SOURCE_LABELS = 64
KIND_LABELS = 64
STAGE_LABELS = 32
NODE_LABELS = 64  # SBC nodes one sipwatch watches (pods' nodes, HEP agents)


class BuildCollector:
    """``sipwatch_build_info``: which version is running, and which implementation of the
    ingest hot path (``sipwatch.ingest.speedups``: "compiled" or "python")."""

    def describe(self) -> list[Metric]:
        return [InfoMetricFamily(names.BUILD_INFO[: -len("_info")], "sipwatch version running.")]

    def collect(self) -> Iterator[Metric]:
        family = self.describe()[0]
        assert isinstance(family, InfoMetricFamily)
        family.add_metric([], {"version": __version__, "implementation": IMPLEMENTATION})
        yield family


class SipwatchMetrics:
    """All sipwatch metrics, fed by the pipeline and the daemon through ``observe_*`` hooks."""

    # hooks served by one stage each (bound in __init__)
    observe_message: Callable[[SipMessage], None]
    observe_event: Callable[[ServiceEvent], None]
    observe_parse_stats: Callable[[LogParser, str], None]
    observe_lines: Callable[[str, int], None]
    observe_transaction: Callable[[RegisterTransaction], None]
    watch_tracker: Callable[[RegisterTracker], None]
    set_inflight: Callable[[int, int], None]
    watch_scanners: Callable[[ScannerClassifier], None]
    expire: Callable[[], None]
    set_source_up: Callable[[str, bool], None]
    observe_source_node: Callable[[str, str], None]
    source_status: Callable[[], dict[str, bool]]
    observe_queue: Callable[[str, int, int], None]
    observe_queue_drop: Callable[[str], None]
    observe_root_cause: Callable[[str, str], None]
    observe_diagnosis_error: Callable[[str], None]
    observe_alert: Callable[[str, str], None]
    observe_remediation: Callable[[str, str], None]

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        top_n: int = 20,
        series_ttl: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
        process_metrics: bool = True,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.top_n = top_n
        self.series_ttl = series_ttl
        source = CappedLabel(SOURCE_LABELS)
        self.ingest = IngestCollector(source, kind=CappedLabel(KIND_LABELS))
        self.register = RegisterCollector(source)
        self.offenders = OffenderCollector(top_n=top_n, series_ttl=series_ttl, clock=clock)
        self.sources = SourceCollector(
            source, stage=CappedLabel(STAGE_LABELS), node=CappedLabel(NODE_LABELS)
        )
        self.diagnosis = DiagnosisCollector()
        for collector in (
            BuildCollector(),
            self.ingest,
            self.sources,
            self.register,
            self.offenders,
            self.diagnosis,
        ):
            self.registry.register(collector)
        if process_metrics:
            ProcessCollector(registry=self.registry)

        ingest, register, offenders = self.ingest, self.register, self.offenders
        self.observe_message = ingest.observe_message
        self.observe_event = ingest.observe_event
        self.observe_parse_stats = ingest.observe_parse_stats
        self.observe_lines = ingest.observe_lines
        self.observe_transaction = register.observe_transaction
        self.watch_tracker = register.watch_tracker
        self.set_inflight = register.set_inflight
        self.watch_scanners = offenders.watch_scanners
        self.expire = offenders.expire
        sources, diagnosis = self.sources, self.diagnosis
        self.set_source_up = sources.set_source_up
        self.observe_source_node = sources.observe_source_node
        self.source_status = sources.source_status
        self.observe_queue = sources.observe_queue
        self.observe_queue_drop = sources.observe_queue_drop
        self.observe_root_cause = diagnosis.observe_root_cause
        self.observe_diagnosis_error = diagnosis.observe_diagnosis_error
        self.observe_alert = diagnosis.observe_alert
        self.observe_remediation = diagnosis.observe_remediation

    def observe_record(self, source: str, kind: str, count: int = 1) -> None:
        """Framed records counted outside the parser (the parser's own are read at scrape)."""
        self.ingest.observe_record(source, kind, count)

    def observe_parse_error(self, source: str, kind: str, count: int = 1) -> None:
        """A chunk the pipeline could not parse at all (the daemon's ``internal`` error)."""
        self.ingest.observe_parse_error(source, kind, count)

    def observe_attempt(self, att: RegisterAttempt) -> None:
        """A completed attempt counts by outcome, and per user/IP when it failed."""
        self.register.observe_attempt(att)
        self.offenders.observe_attempt(att)


def render_text(registry: CollectorRegistry) -> str:
    """The Prometheus text exposition (format 0.0.4) of ``registry``."""
    return generate_latest(registry).decode("utf-8")
