"""Metrics of REGISTER transactions and registration attempts (the transaction tracker's
output): final statuses, X-Reasons, latency, retransmissions, outcomes, scanner User-Agents.

A *transaction* is one REGISTER and its final response; an *attempt* is the device's whole
registration (REGISTER, 401/407 challenge, REGISTER with credentials, final answer).  Every
label here is a fixed vocabulary, so none of these series depends on who registers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from sipwatch.metrics import names
from sipwatch.metrics.families import CounterVec, GaugeVec, HistogramVec, described
from sipwatch.metrics.labels import (
    CappedLabel,
    attempt_status,
    latency_result,
    transaction_status,
    x_reason_label,
)
from sipwatch.model import RegisterAttempt, RegisterTransaction
from sipwatch.sip_meaning import scanner_tool

if TYPE_CHECKING:
    from sipwatch.ingest.transactions import RegisterTracker

# Request -> final response.  An SBC answers a REGISTER from memory (a 401 challenge, a cached
# registration) in 100 us to a millisecond, from its database in milliseconds, through a
# registration webhook in up to seconds; Timer F gives up at 32 s.  The low buckets must
# resolve the sub-millisecond answers, or every quantile sits at an interpolation artefact
# of the lowest bucket.
LATENCY_BUCKETS: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 20.0, 32.0,
)  # fmt: skip
# A whole attempt includes the device's challenge round trip and its retransmissions.
ATTEMPT_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 32.0, 64.0,
)  # fmt: skip


class RegisterCollector:
    """A prometheus-client collector for completed REGISTER transactions and attempts."""

    def __init__(self, source: CappedLabel) -> None:
        self._source = source
        self._tracker: RegisterTracker | None = None
        self.transactions = CounterVec(
            names.REGISTER_TRANSACTIONS,
            "Completed REGISTER transactions by final status (or timeout) and X-Reason.",
            ["source", "side", "status", "x_reason"],
        )
        self.retransmissions = CounterVec(
            names.REGISTER_RETRANSMISSIONS,
            "REGISTER request retransmissions seen.",
            ["source", "side"],
        )
        self.latency = HistogramVec(
            names.REGISTER_LATENCY,
            "REGISTER request to final response time.",
            ["source", "side", "result"],
            LATENCY_BUCKETS,
            unit="seconds",
        )
        self.attempts = CounterVec(
            names.REGISTER_ATTEMPTS,
            "Completed registration attempts by outcome, final status, X-Reason and whether a "
            "401/407 challenge preceded the final answer.",
            ["source", "side", "outcome", "status", "x_reason", "challenged"],
        )
        self.attempt_duration = HistogramVec(
            names.REGISTER_ATTEMPT_DURATION,
            "Registration attempt duration, first REGISTER to final outcome.",
            ["source", "side", "outcome"],
            ATTEMPT_BUCKETS,
            unit="seconds",
        )
        self.scanner = CounterVec(
            names.REGISTER_SCANNER_ATTEMPTS,
            "Registration attempts whose User-Agent names a known SIP scanner.",
            ["source", "side", "tool"],
        )
        self.inflight = GaugeVec(
            names.REGISTER_INFLIGHT_TRANSACTIONS,
            "REGISTER transactions awaiting a final response.",
            [],
        )
        self.inflight_attempts = GaugeVec(
            names.REGISTER_INFLIGHT_ATTEMPTS, "Registration attempts not yet finished.", []
        )
        self.set_inflight(0, 0)

    # ------------------------------------------------------------------ hooks
    def watch_tracker(self, tracker: RegisterTracker) -> None:
        """Read the tracker's open state and its plain counters at scrape time."""
        self._tracker = tracker

    def set_inflight(self, transactions: int, attempts: int) -> None:
        self.inflight.set((), transactions)
        self.inflight_attempts.set((), attempts)

    def observe_transaction(self, tx: RegisterTransaction) -> None:
        source = self._source(tx.source)
        side = tx.side.value
        self.transactions.inc((source, side, transaction_status(tx), x_reason_label(tx.x_reason)))
        if tx.requests > 1:
            self.retransmissions.inc((source, side), tx.requests - 1)
        latency = tx.latency
        if latency is not None:
            self.latency.observe((source, side, latency_result(tx.status)), latency)

    def observe_attempt(self, att: RegisterAttempt) -> None:
        source = self._source(att.source)
        side = att.side.value
        outcome = att.outcome.value
        self.attempts.inc(
            (
                source,
                side,
                outcome,
                attempt_status(att),
                x_reason_label(att.x_reason),
                "true" if att.challenged else "false",
            )
        )
        if att.finished:
            self.attempt_duration.observe((source, side, outcome), att.latency)
        tool = scanner_tool(att.user_agent)
        if tool is not None:
            self.scanner.inc((source, side, tool))

    # ------------------------------------------------------------------ collector
    def describe(self) -> list[Metric]:
        out = described(
            (
                self.transactions,
                self.retransmissions,
                self.latency,
                self.attempts,
                self.attempt_duration,
                self.scanner,
                self.inflight,
                self.inflight_attempts,
            )
        )
        return [*out, *self._tracker_families()]

    def collect(self) -> Iterator[Metric]:
        yield self.transactions.family()
        yield self.retransmissions.family()
        yield self.latency.family()
        yield self.attempts.family()
        yield self.attempt_duration.family()
        yield self.scanner.family()
        tracker = self._tracker
        if tracker is None:
            yield self.inflight.family()
            yield self.inflight_attempts.family()
            return
        inflight, inflight_attempts, orphans, evictions = self._tracker_families()
        inflight.add_metric([], tracker.inflight_transactions)
        inflight_attempts.add_metric([], tracker.inflight_attempts)
        stats = tracker.stats
        orphans.add_metric([], stats.orphan_responses)
        evictions.add_metric(["transaction"], stats.evicted)
        evictions.add_metric(["attempt"], stats.evicted_attempts)
        yield from (inflight, inflight_attempts, orphans, evictions)

    def _tracker_families(
        self,
    ) -> tuple[GaugeMetricFamily, GaugeMetricFamily, CounterMetricFamily, CounterMetricFamily]:
        return (
            self.inflight.describe(),
            self.inflight_attempts.describe(),
            CounterMetricFamily(
                names.REGISTER_ORPHAN_RESPONSES,
                "REGISTER responses that matched no open transaction (its request was not "
                "logged, or came before sipwatch started).",
                labels=(),
            ),
            CounterMetricFamily(
                names.REGISTER_STATE_EVICTIONS,
                "Open transactions or attempts dropped to keep the tracker bounded "
                "(sip.max_pending_transactions / max_pending_attempts); counted as timeouts.",
                labels=("kind",),
            ),
        )
