"""Bounded label values: every label sipwatch exposes goes through one of these.

Why the care: label values are derived from log text that arrives from the internet (SIP
status codes, X-Reason headers, usernames, peer IPs).  A label taken verbatim from such text
lets an attacker create unbounded series and exhaust both sipwatch's memory and the
Prometheus server's.  So:

* fixed vocabularies (status codes, X-Reasons, outcomes, directions) map unknown values to a
  class (``4xx``) or to ``other``; the SIP facts among them come from ``sipwatch.sip_meaning``;
* names that come from configuration or code (sources, stages, rule ids, alert targets) are
  still capped (``CappedLabel``), so a bug upstream cannot explode the series count;
* per-user and per-IP values are cleaned and cut here and ranked by
  ``sipwatch.metrics.cardinality`` (only the top-N get a series).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from sipwatch.diagnosis.error_kinds import DiagnosisErrorKind
from sipwatch.ingest import framing
from sipwatch.metrics.cardinality import OTHER
from sipwatch.model import AttemptOutcome, RegisterAttempt, RegisterTransaction
from sipwatch.sip_meaning import (
    REGISTER_STATUS_CODES,
    SIP_METHODS,
    TIMEOUT,
    is_challenge,
    x_reason_id,
)

__all__ = [
    "ALERT_RESULTS",
    "DIAGNOSIS_ERROR_KINDS",
    "DISTINCT_USERS_CAP",
    "IP_LABEL_MAX",
    "KNOWN_STATUS_CODES",
    "NAME_LABEL_MAX",
    "OTHER",
    "PINO_LEVELS",
    "RECORD_KINDS",
    "REMEDIATION_RESULTS",
    "SEVERITIES",
    "SIP_METHODS",
    "STATUS_INVALID",
    "STATUS_NONE",
    "STATUS_TIMEOUT",
    "USER_LABEL_MAX",
    "X_REASON_NONE",
    "CappedLabel",
    "attempt_status",
    "clean_label",
    "fixed",
    "ip_label",
    "latency_result",
    "method_label",
    "status_label",
    "transaction_status",
    "user_label",
    "x_reason_label",
]

KNOWN_STATUS_CODES: Final = REGISTER_STATUS_CODES
STATUS_TIMEOUT: Final = TIMEOUT
STATUS_NONE: Final = "none"
STATUS_INVALID: Final = "invalid"
X_REASON_NONE: Final = "none"

#: The framer's record kinds (defined where the records are made).
RECORD_KINDS: Final = frozenset(framing.RECORD_KINDS)
PINO_LEVELS: Final = {10: "trace", 20: "debug", 30: "info", 40: "warn", 50: "error", 60: "fatal"}
SEVERITIES: Final = frozenset({"info", "warning", "error", "critical"})
DIAGNOSIS_ERROR_KINDS: Final = tuple(k.value for k in DiagnosisErrorKind)
ALERT_RESULTS: Final = frozenset(
    {"sent", "failed", "retried", "throttled", "deduplicated", "dropped", "grouped"}
)
REMEDIATION_RESULTS: Final = frozenset({"applied", "dry_run", "refused", "failed"})

USER_LABEL_MAX: Final = 96
IP_LABEL_MAX: Final = 45  # longest textual IPv6 address
NAME_LABEL_MAX: Final = 128
DISTINCT_USERS_CAP: Final = 256  # per exposed IP; enough to show enumeration, bounded in memory

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


def method_label(method: str) -> str:
    upper = method.upper()
    return upper if upper in SIP_METHODS else OTHER


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


def latency_result(status: int) -> str:
    """``success``, ``challenge`` or ``failure``: what a REGISTER's latency measured."""
    if 200 <= status < 300:
        return "success"
    if is_challenge(status):
        return "challenge"
    return "failure"


def fixed(value: str, allowed: frozenset[str]) -> str:
    return value if value in allowed else OTHER


class CappedLabel:
    """Accept the first ``limit`` distinct values of a code- or config-defined label.

    Later newcomers become ``other``: sources and rule ids are few, so hitting the cap means
    a bug or hostile input, and an ``other`` series is the safe way to surface it.
    """

    __slots__ = ("_limit", "_seen")

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
