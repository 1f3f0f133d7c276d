"""Prometheus metrics for sipwatch, with every label set bounded.

Why the care: every label value here is derived from log text that arrives from the internet
(SIP status codes, X-Reason headers, usernames, peer IPs).  A metric label taken verbatim from
such text lets an attacker create unbounded series and exhaust both sipwatch's memory and the
Prometheus server's.  So:

* fixed vocabularies (status codes, X-Reasons, outcomes, directions) map unknown values to a
  class (``4xx``) or to ``other``;
* names that come from configuration or code (sources, stages, rule ids, alert targets) are
  still capped (``_CappedLabel``), so a bug upstream cannot explode the series count;
* per-user and per-IP series exist only for the top-N offenders (``sipwatch.metrics.cardinality``),
  everything else is folded into ``other`` and stale series are removed after a TTL.

The metrics live in a private registry and are exposed through one collector registered in the
injected registry.  That collector drops the ``*_created`` series by default: in the text
format each one is an extra gauge series per counter child (doubling per-user series), and
``prometheus_client.disable_created_metrics()`` is a process-wide switch that would also change
other libraries' metrics.  Pass ``created_series=True`` to keep them.

Metric names are module constants so dashboards, alert rules and tests refer to one spelling.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics_core import Metric

from sipwatch import __version__
from sipwatch.metrics.cardinality import OTHER, TopNTracker
from sipwatch.model import (
    AttemptOutcome,
    RegisterAttempt,
    RegisterTransaction,
    ServiceEvent,
    Side,
    SipMessage,
)
from sipwatch.sip_meaning import (
    TIMEOUT,
    is_challenge,
    scanner_tool,
    x_reason_id,
)

if TYPE_CHECKING:
    from sipwatch.ingest.framing import LogParser
    from sipwatch.pipeline.scanners import ScannerClassifier, ScannerState

# --------------------------------------------------------------------------- metric names
# Full exposed names (counters with ``_total``; histograms: the base name of the family).
BUILD_INFO = "sipwatch_build_info"
LOG_LINES = "sipwatch_log_lines_total"
LOG_RECORDS = "sipwatch_log_records_total"
PARSE_ERRORS = "sipwatch_parse_errors_total"
SIP_MESSAGES = "sipwatch_sip_messages_total"
SIP_TRUNCATED = "sipwatch_sip_truncated_messages_total"
SERVICE_EVENTS = "sipwatch_service_events_total"
SOURCE_UP = "sipwatch_source_up"
SOURCE_RECONNECTS = "sipwatch_source_reconnects_total"
SOURCE_LAST_EVENT = "sipwatch_source_last_event_timestamp_seconds"
QUEUE_DEPTH = "sipwatch_queue_depth"
QUEUE_CAPACITY = "sipwatch_queue_capacity"
QUEUE_DROPS = "sipwatch_queue_drops_total"

REGISTER_TRANSACTIONS = "sipwatch_register_transactions_total"
REGISTER_RETRANSMISSIONS = "sipwatch_register_retransmissions_total"
REGISTER_LATENCY = "sipwatch_register_latency_seconds"
REGISTER_ATTEMPTS = "sipwatch_register_attempts_total"
REGISTER_ATTEMPT_DURATION = "sipwatch_register_attempt_duration_seconds"
REGISTER_INFLIGHT_TRANSACTIONS = "sipwatch_register_inflight_transactions"
REGISTER_INFLIGHT_ATTEMPTS = "sipwatch_register_inflight_attempts"
REGISTER_SCANNER_ATTEMPTS = "sipwatch_register_scanner_attempts_total"

USER_FAILURES = "sipwatch_register_user_failures_total"
USER_FAILING = "sipwatch_register_user_failing"
IP_FAILURES = "sipwatch_register_ip_failures_total"
IP_DISTINCT_USERS = "sipwatch_register_ip_distinct_users"

LABEL_TRACKER_EXPOSED = "sipwatch_label_tracker_exposed"
LABEL_TRACKER_TRACKED = "sipwatch_label_tracker_tracked"
LABEL_TRACKER_LIMIT = "sipwatch_label_tracker_limit"
LABEL_TRACKER_FOLDED = "sipwatch_label_tracker_folded_total"
LABEL_TRACKER_EVICTIONS = "sipwatch_label_tracker_evictions_total"

ROOT_CAUSES = "sipwatch_root_causes_total"
DIAGNOSIS_ERRORS = "sipwatch_diagnosis_errors_total"
ALERTS = "sipwatch_alerts_total"
REMEDIATIONS = "sipwatch_remediations_total"

# --------------------------------------------------------------------------- vocabularies
# REGISTER answers seen in practice (jambonz passes a registration webhook's HTTP status
# through as the SIP status, hence some HTTP-looking codes).  Anything else becomes its class.
KNOWN_STATUS_CODES = frozenset(
    {
        100, 200, 202, 301, 302, 305, 380,
        400, 401, 402, 403, 404, 405, 406, 407, 408, 410, 412, 413, 414, 415, 416, 420, 421,
        423, 429, 480, 481, 482, 483, 484, 485, 486, 487, 488, 489, 491, 493, 494,
        500, 501, 502, 503, 504, 505, 513, 580,
        600, 603, 604, 606, 607, 608,
    }
)  # fmt: skip
STATUS_TIMEOUT = TIMEOUT
STATUS_NONE = "none"
STATUS_INVALID = "invalid"

X_REASON_NONE = "none"

SIP_METHODS = frozenset(
    {
        "REGISTER", "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "SUBSCRIBE", "NOTIFY",
        "MESSAGE", "INFO", "PRACK", "UPDATE", "REFER", "PUBLISH",
    }
)  # fmt: skip
RECORD_KINDS = frozenset({"sip", "service", "pino", "truncation", "embedded", "other", "api"})
PINO_LEVELS = {10: "trace", 20: "debug", 30: "info", 40: "warn", 50: "error", 60: "fatal"}
SEVERITIES = frozenset({"info", "warning", "error", "critical"})
DIAGNOSIS_ERROR_KINDS = ("db_unavailable", "timeout", "missing_table", "redis_unavailable")
ALERT_RESULTS = frozenset(
    {"sent", "failed", "retried", "throttled", "deduplicated", "dropped", "grouped"}
)
REMEDIATION_RESULTS = frozenset({"applied", "dry_run", "refused", "failed"})

FAILURE_OUTCOMES = frozenset(
    {
        AttemptOutcome.FAILURE,
        AttemptOutcome.CHALLENGE_LOOP,
        AttemptOutcome.ABANDONED,
        AttemptOutcome.TIMEOUT,
    }
)

# Request -> final response.  Cached 200s take about a millisecond, DB-backed auth tens of
# milliseconds, webhook auth up to seconds; Timer F gives up at 32 s.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 32.0,
)  # fmt: skip
# A whole attempt includes the device's challenge round trip and its retransmissions.
ATTEMPT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 32.0, 64.0)

USER_LABEL_MAX = 96
IP_LABEL_MAX = 45  # longest textual IPv6 address
NAME_LABEL_MAX = 128
DISTINCT_USERS_CAP = 256  # per exposed IP; enough to show enumeration, bounded in memory

# Characters that would break the exposition encoding (lone surrogates from
# surrogateescape-decoded logs), hide text (control characters), spoof it in Grafana (bidi
# overrides, zero-width characters) or break a PromQL string when Grafana interpolates a
# label value into a query (quote, backslash).
_UNSAFE = re.compile('["\\\\\x00-\x1f\x7f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]')


def clean_label(value: str, max_len: int = NAME_LABEL_MAX) -> str:
    """Make attacker-controlled text safe and short enough to be a label value."""
    return _UNSAFE.sub("?", value[: max_len * 2]).strip()[:max_len]


def status_label(status: int | str) -> str:
    """Bounded label for a SIP status: known codes verbatim, others as their class."""
    if isinstance(status, str):
        return STATUS_TIMEOUT if status == STATUS_TIMEOUT else STATUS_INVALID
    if status == 0:
        return STATUS_NONE
    if status in KNOWN_STATUS_CODES:
        return str(status)
    if 100 <= status <= 699:
        return f"{status // 100}xx"
    return STATUS_INVALID


def x_reason_label(x_reason: str) -> str:
    """A jambonz X-Reason header as a fixed label (``none``; ``other`` when unknown)."""
    ident = x_reason_id(x_reason)
    if ident is None:
        return OTHER
    return ident or X_REASON_NONE


def user_label(user: str, domain: str) -> str:
    """``user@domain``, cleaned and truncated; never equal to the ``other`` bucket."""
    return clean_label(f"{user}@{domain}", USER_LABEL_MAX)


def ip_label(ip: str) -> str:
    return clean_label(ip, IP_LABEL_MAX) or "unknown"


def attempt_status(att: RegisterAttempt) -> str:
    if att.outcome is AttemptOutcome.TIMEOUT:
        return STATUS_TIMEOUT
    return status_label(att.status)


def transaction_status(tx: RegisterTransaction) -> str:
    return STATUS_TIMEOUT if tx.timed_out else status_label(tx.status)


def _latency_result(status: int) -> str:
    if 200 <= status < 300:
        return "success"
    if is_challenge(status):
        return "challenge"
    return "failure"


class _CappedLabel:
    """Accept the first ``limit`` distinct values of a code- or config-defined label.

    Later newcomers become ``other``: sources and rule ids are few, so hitting the cap means
    a bug or hostile input, and an ``other`` series is the safe way to surface it.
    """

    def __init__(self, limit: int, known: Iterable[str] = ()) -> None:
        self._limit = limit
        self._seen: set[str] = set(known)

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        cleaned = clean_label(value) or "unknown"
        if cleaned in self._seen:
            return cleaned
        if len(self._seen) >= self._limit:
            return OTHER
        self._seen.add(cleaned)
        return cleaned


def _exposed_count(tracker: TopNTracker[tuple[str, str]]) -> Callable[[], float]:
    return lambda: float(tracker.exposed_count)


def _fixed(value: str, allowed: frozenset[str]) -> str:
    return value if value in allowed else OTHER


_MetricT = TypeVar("_MetricT", Counter, Gauge, Histogram)


class _Children(Generic[_MetricT]):
    """Memoised ``metric.labels(...)`` for the hot path.

    ``labels()`` costs a few microseconds (validation, lock, string conversion) and a SIP
    message touches several metrics.  Only for label sets that are never removed and come from
    bounded vocabularies, so the cache is bounded too.  Per-user/IP series do not use it.
    """

    def __init__(self, metric: _MetricT) -> None:
        self._metric: _MetricT = metric
        self._cache: dict[tuple[str, ...], _MetricT] = {}

    def __call__(self, *values: str) -> _MetricT:
        child = self._cache.get(values)
        if child is None:
            child = self._cache[values] = self._metric.labels(*values)
        return child


class _FilteredCollector:
    """Expose a private registry, optionally without the ``*_created`` series."""

    _CREATED_TYPES = frozenset({"counter", "histogram", "summary"})

    def __init__(self, inner: CollectorRegistry, keep_created: bool) -> None:
        self._inner = inner
        self._keep_created = keep_created

    def describe(self) -> list[Metric]:
        out = []
        for family in self._inner.collect():
            out.append(Metric(family.name, family.documentation, family.type, family.unit))
        return out

    def collect(self) -> Iterable[Metric]:
        for family in self._inner.collect():
            if self._keep_created or family.type not in self._CREATED_TYPES:
                yield family
                continue
            copy = Metric(family.name, family.documentation, family.type, family.unit)
            copy.samples = [s for s in family.samples if not s.name.endswith("_created")]
            yield copy


@dataclass(slots=True)
class _IpState:
    """Distinct usernames tried from one exposed IP (hashes, capped)."""

    users: set[int]


class SipwatchMetrics:
    """All sipwatch metrics, fed by the pipeline through ``observe_*`` calls.

    Not thread-safe beyond what prometheus-client guarantees; call it from the event loop.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        top_n: int = 20,
        series_ttl: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
        created_series: bool = False,
        process_metrics: bool = True,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.top_n = top_n
        self.series_ttl = series_ttl
        self._clock = clock
        own = CollectorRegistry()
        self._own = own

        self._source = _CappedLabel(64)
        self._kind = _CappedLabel(64)
        self._stage = _CappedLabel(32)
        self._cause = _CappedLabel(256)
        self._diag_kind = _CappedLabel(32, DIAGNOSIS_ERROR_KINDS)
        self._target = _CappedLabel(32)
        self._action = _CappedLabel(32)
        self._source_state: dict[str, bool] = {}
        self._scanners: ScannerClassifier | None = None
        # parser counters already published, per parser channel: (lines, records, errors)
        self._parse_seen: dict[str, tuple[int, dict[str, int], dict[str, int]]] = {}

        info = Info("sipwatch_build", "sipwatch version running.", registry=own)
        info.info({"version": __version__})

        # ---- pipeline self-metrics: a dead follower or a broken parser must be visible
        self._lines = Counter(LOG_LINES, "Raw log lines read.", ["source"], registry=own)
        self._records = Counter(
            LOG_RECORDS,
            "Framed log records by kind (sip, service, other, api).",
            ["source", "kind"],
            registry=own,
        )
        self._parse_errors = Counter(
            PARSE_ERRORS, "Records that could not be parsed.", ["source", "kind"], registry=own
        )
        self._messages = Counter(
            SIP_MESSAGES,
            "Network SIP messages parsed, retransmissions included.",
            ["source", "direction", "type", "method"],
            registry=own,
        )
        self._truncated = Counter(
            SIP_TRUNCATED,
            "SIP messages drachtio logged truncated.",
            ["source"],
            registry=own,
        )
        self._service_events = Counter(
            SERVICE_EVENTS,
            "Non-SIP service log events by origin, kind and level.",
            ["source", "origin", "kind", "level"],
            registry=own,
        )
        self._source_up = Gauge(
            SOURCE_UP, "1 when the log source is connected and followed.", ["source"], registry=own
        )
        self._reconnects = Counter(
            SOURCE_RECONNECTS,
            "Times a source came back after being down.",
            ["source"],
            registry=own,
        )
        self._last_event = Gauge(
            SOURCE_LAST_EVENT,
            "Log timestamp of the newest event seen from the source.",
            ["source"],
            unit="seconds",
            registry=own,
        )
        self._queue_depth = Gauge(
            QUEUE_DEPTH, "Items waiting in a pipeline queue.", ["stage"], registry=own
        )
        self._queue_capacity = Gauge(
            QUEUE_CAPACITY, "Capacity of a pipeline queue.", ["stage"], registry=own
        )
        self._queue_drops = Counter(
            QUEUE_DROPS, "Items dropped because a pipeline queue was full.", ["stage"], registry=own
        )

        # ---- REGISTER
        self._transactions = Counter(
            REGISTER_TRANSACTIONS,
            "Completed REGISTER transactions by final status (or timeout) and X-Reason.",
            ["source", "side", "status", "x_reason"],
            registry=own,
        )
        self._retransmissions = Counter(
            REGISTER_RETRANSMISSIONS,
            "REGISTER request retransmissions seen.",
            ["source", "side"],
            registry=own,
        )
        self._latency = Histogram(
            REGISTER_LATENCY,
            "REGISTER request to final response time.",
            ["source", "side", "result"],
            unit="seconds",
            buckets=LATENCY_BUCKETS,
            registry=own,
        )
        self._attempts = Counter(
            REGISTER_ATTEMPTS,
            "Completed registration attempts by outcome, final status, X-Reason and whether a "
            "401/407 challenge preceded the final answer.",
            ["source", "side", "outcome", "status", "x_reason", "challenged"],
            registry=own,
        )
        self._attempt_duration = Histogram(
            REGISTER_ATTEMPT_DURATION,
            "Registration attempt duration, first REGISTER to final outcome.",
            ["source", "side", "outcome"],
            unit="seconds",
            buckets=ATTEMPT_BUCKETS,
            registry=own,
        )
        self._inflight_tx = Gauge(
            REGISTER_INFLIGHT_TRANSACTIONS, "REGISTER transactions awaiting a final response.",
            registry=own,
        )  # fmt: skip
        self._inflight_att = Gauge(
            REGISTER_INFLIGHT_ATTEMPTS, "Registration attempts not yet finished.", registry=own
        )
        self._scanner = Counter(
            REGISTER_SCANNER_ATTEMPTS,
            "Registration attempts whose User-Agent names a known SIP scanner.",
            ["source", "side", "tool"],
            registry=own,
        )

        # ---- per-user / per-IP, bounded by top-N trackers
        self._user_failures = Counter(
            USER_FAILURES,
            f"Failed registration attempts per user@domain; only the top {top_n} users have "
            'their own series, the rest are summed in user="other".',
            ["side", "user", "status"],
            registry=own,
        )
        self._user_failing = Gauge(
            USER_FAILING,
            "1 while the latest registration attempt of a tracked user failed, 0 after a success.",
            ["side", "user"],
            registry=own,
        )
        self._ip_failures = Counter(
            IP_FAILURES,
            f"Failed registration attempts per peer IP; only the top {top_n} IPs have their own "
            'series, the rest are summed in ip="other".',
            ["side", "ip", "status"],
            registry=own,
        )
        self._ip_distinct = Gauge(
            IP_DISTINCT_USERS,
            f"Distinct user@domain that failed from a tracked IP (capped at {DISTINCT_USERS_CAP}).",
            ["side", "ip"],
            registry=own,
        )
        self._users: TopNTracker[tuple[str, str]] = TopNTracker(
            top_n=top_n, ttl=series_ttl, clock=clock, on_evict=self._evict_user
        )
        self._ips: TopNTracker[tuple[str, str]] = TopNTracker(
            top_n=top_n, ttl=series_ttl, clock=clock, on_evict=self._evict_ip
        )
        self._user_series: dict[tuple[str, str], set[str]] = {}  # key -> statuses exposed
        self._ip_series: dict[tuple[str, str], set[str]] = {}
        self._ip_users: dict[tuple[str, str], _IpState] = {}

        tracked = Gauge(
            LABEL_TRACKER_TRACKED,
            "Keys in the bounded top-N table (exposed and candidates).",
            ["dimension"],
            registry=own,
        )
        exposed = Gauge(
            LABEL_TRACKER_EXPOSED, "Keys that have their own series.", ["dimension"], registry=own
        )
        limit = Gauge(
            LABEL_TRACKER_LIMIT, "Maximum keys with their own series.", ["dimension"], registry=own
        )
        self._folded = Counter(
            LABEL_TRACKER_FOLDED,
            'Observations folded into the "other" series.',
            ["dimension"],
            registry=own,
        )
        self._evictions = Counter(
            LABEL_TRACKER_EVICTIONS,
            "Per-key series removed (demoted by a bigger offender, or expired).",
            ["dimension", "reason"],
            registry=own,
        )
        for dim, tracker in (("user", self._users), ("ip", self._ips)):
            tracked.labels(dim).set_function(tracker.__len__)
            exposed.labels(dim).set_function(_exposed_count(tracker))
            limit.labels(dim).set(top_n)
            self._folded.labels(dim)
            for reason in ("demoted", "expired", "scanner"):
                self._evictions.labels(dim, reason)

        # ---- later stages (diagnosis, alerting, remediation)
        self._root_causes = Counter(
            ROOT_CAUSES, "Diagnosed root causes.", ["cause", "severity"], registry=own
        )
        self._diag_errors = Counter(
            DIAGNOSIS_ERRORS,
            "Diagnosis checks that could not run.",
            ["kind"],
            registry=own,
        )
        for kind in DIAGNOSIS_ERROR_KINDS:
            self._diag_errors.labels(kind)
        self._alerts = Counter(
            ALERTS, "Alert notifications by target and result.", ["target", "result"], registry=own
        )
        self._remediations = Counter(
            REMEDIATIONS, "Remediation actions by result.", ["action", "result"], registry=own
        )

        self._lines_c = _Children(self._lines)
        self._records_c = _Children(self._records)
        self._messages_c = _Children(self._messages)
        self._truncated_c = _Children(self._truncated)
        self._last_event_c = _Children(self._last_event)
        self._transactions_c = _Children(self._transactions)
        self._retransmissions_c = _Children(self._retransmissions)
        self._latency_c = _Children(self._latency)
        self._attempts_c = _Children(self._attempts)
        self._attempt_duration_c = _Children(self._attempt_duration)
        self._scanner_c = _Children(self._scanner)
        self._folded_c = _Children(self._folded)
        # "other" series are never removed, so they may be memoised like the rest.
        self._user_other_c = _Children(self._user_failures)
        self._ip_other_c = _Children(self._ip_failures)

        self.registry.register(_FilteredCollector(own, keep_created=created_series))
        if process_metrics:
            ProcessCollector(registry=self.registry)

    # ------------------------------------------------------------------ pipeline
    def observe_lines(self, source: str, lines: int) -> None:
        if lines > 0:
            self._lines_c(self._source(source)).inc(lines)

    def observe_record(self, source: str, kind: str, count: int = 1) -> None:
        """Framed records of ``kind`` (sip, service, other, api); ``count`` for batches."""
        if count > 0:
            self._records_c(self._source(source), _fixed(kind, RECORD_KINDS)).inc(count)

    def observe_message(self, msg: SipMessage) -> None:
        source = self._source(msg.source)
        method = msg.method.upper()
        self._messages_c(
            source,
            msg.direction.value,
            "request" if msg.is_request else "response",
            method if method in SIP_METHODS else OTHER,
        ).inc()
        if msg.truncated:
            self._truncated_c(source).inc()
        if msg.ts > 0:
            self._last_event_c(source).set(msg.ts)

    def observe_parse_stats(self, parser: LogParser, source: str) -> None:
        """Publish the parser's plain counters of ``source`` (and of the channels it was
        demultiplexed into, ``<source>/<service>``) as increments since the last call."""
        seen = self._parse_seen
        for name, st in parser.stats_by_source.items():
            if name != source and not name.startswith(source + "/"):
                continue
            lines, records, errors = seen.get(name, (0, {}, {}))
            self.observe_lines(name, st.lines - lines)
            for kind, n in st.records.items():
                self.observe_record(name, kind, n - records.get(kind, 0))
            for kind, n in st.errors.items():
                self.observe_parse_error(name, kind, n - errors.get(kind, 0))
            seen[name] = (st.lines, dict(st.records), dict(st.errors))

    def observe_parse_error(self, source: str, kind: str, count: int = 1) -> None:
        if count > 0:
            self._parse_errors.labels(self._source(source), self._kind(kind)).inc(count)

    def observe_event(self, ev: ServiceEvent) -> None:
        source = self._source(ev.source)
        self._service_events.labels(
            source, ev.origin.value, self._kind(ev.kind), PINO_LEVELS.get(ev.level, OTHER)
        ).inc()
        if ev.ts > 0:
            self._last_event_c(source).set(ev.ts)

    def set_source_up(self, source: str, up: bool) -> None:
        label = self._source(source)
        previous = self._source_state.get(label)
        if up and previous is False:
            self._reconnects.labels(label).inc()
        self._source_state[label] = up
        self._source_up.labels(label).set(1 if up else 0)
        self._reconnects.labels(label)

    def source_status(self) -> dict[str, bool]:
        """Current up/down state of every source reported so far (a ``readiness`` callable)."""
        return dict(self._source_state)

    def observe_queue(self, stage: str, depth: int, capacity: int) -> None:
        label = self._stage(stage)
        self._queue_depth.labels(label).set(depth)
        self._queue_capacity.labels(label).set(capacity)
        self._queue_drops.labels(label)

    def observe_queue_drop(self, stage: str) -> None:
        self._queue_drops.labels(self._stage(stage)).inc()

    # ------------------------------------------------------------------ REGISTER
    def observe_transaction(self, tx: RegisterTransaction) -> None:
        source = self._source(tx.source)
        side = tx.side.value
        self._transactions_c(
            source, side, transaction_status(tx), x_reason_label(tx.x_reason)
        ).inc()
        if tx.requests > 1:
            self._retransmissions_c(source, side).inc(tx.requests - 1)
        latency = tx.latency
        if latency is not None:
            self._latency_c(source, side, _latency_result(tx.status)).observe(latency)

    def watch_scanners(self, scanners: ScannerClassifier) -> None:
        """Account attack traffic per source IP only, and drop the per-user series of
        usernames a source tried before it was recognised as a scanner."""
        self._scanners = scanners
        scanners.on_detect(self._retract_scanner)

    def _retract_scanner(self, state: ScannerState, aors: list[tuple[str, str]]) -> None:
        for user, domain in aors:
            key = (Side.INBOUND.value, user_label(user, domain))
            if self._users.remove(key):
                self._evict_user(key, "scanner")

    def observe_attempt(self, att: RegisterAttempt) -> None:
        source = self._source(att.source)
        side = att.side.value
        status = attempt_status(att)
        self._attempts_c(
            source,
            side,
            att.outcome.value,
            status,
            x_reason_label(att.x_reason),
            "true" if att.challenged else "false",
        ).inc()
        if att.finished:
            self._attempt_duration_c(source, side, att.outcome.value).observe(att.latency)
        tool = scanner_tool(att.user_agent)
        if tool is not None:
            self._scanner_c(source, side, tool).inc()

        scanners = self._scanners
        attack = scanners is not None and scanners.is_scanner(att.peer_ip, att.user_agent)
        user_key = (side, user_label(att.to_user, att.to_host))
        if att.outcome is AttemptOutcome.SUCCESS:
            if self._users.is_exposed(user_key):
                self._user_failing.labels(*user_key).set(0)
            return
        if att.outcome not in FAILURE_OUTCOMES:
            return
        if not attack:
            self._count_user_failure(user_key, status)
        self._count_ip_failure((side, ip_label(att.peer_ip)), user_key[1], status)

    def _count_user_failure(self, key: tuple[str, str], status: str) -> None:
        side, user = key
        if self._users.observe(key):
            self._user_failures.labels(side, user, status).inc()
            self._user_series.setdefault(key, set()).add(status)
            self._user_failing.labels(side, user).set(1)
        else:
            self._user_other_c(side, OTHER, status).inc()
            self._folded_c("user").inc()

    def _count_ip_failure(self, key: tuple[str, str], user: str, status: str) -> None:
        side, ip = key
        if self._ips.observe(key):
            self._ip_failures.labels(side, ip, status).inc()
            self._ip_series.setdefault(key, set()).add(status)
            state = self._ip_users.setdefault(key, _IpState(set()))
            if len(state.users) < DISTINCT_USERS_CAP:
                state.users.add(hash(user))
            self._ip_distinct.labels(side, ip).set(len(state.users))
        else:
            self._ip_other_c(side, OTHER, status).inc()
            self._folded_c("ip").inc()

    def _evict_user(self, key: tuple[str, str], reason: str) -> None:
        side, user = key
        for status in self._user_series.pop(key, ()):
            self._user_failures.remove(side, user, status)
        self._user_failing.remove(side, user)
        self._evictions.labels("user", reason).inc()

    def _evict_ip(self, key: tuple[str, str], reason: str) -> None:
        side, ip = key
        for status in self._ip_series.pop(key, ()):
            self._ip_failures.remove(side, ip, status)
        if self._ip_users.pop(key, None) is not None:
            self._ip_distinct.remove(side, ip)
        self._evictions.labels("ip", reason).inc()

    def set_inflight(self, transactions: int, attempts: int) -> None:
        self._inflight_tx.set(transactions)
        self._inflight_att.set(attempts)

    def expire(self) -> None:
        """Drop per-user/per-IP series not seen for ``series_ttl`` seconds."""
        self._users.expire()
        self._ips.expire()

    # ------------------------------------------------------- diagnosis and actions
    def observe_root_cause(self, cause_id: str, severity: str) -> None:
        self._root_causes.labels(self._cause(cause_id), _fixed(severity, SEVERITIES)).inc()

    def observe_diagnosis_error(self, kind: str) -> None:
        self._diag_errors.labels(self._diag_kind(kind)).inc()

    def observe_alert(self, target: str, result: str) -> None:
        self._alerts.labels(self._target(target), _fixed(result, ALERT_RESULTS)).inc()

    def observe_remediation(self, action: str, result: str) -> None:
        self._remediations.labels(self._action(action), _fixed(result, REMEDIATION_RESULTS)).inc()


def render_text(registry: CollectorRegistry) -> str:
    """The Prometheus text exposition (format 0.0.4) of ``registry``."""
    return generate_latest(registry).decode("utf-8")
