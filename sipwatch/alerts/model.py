"""The data that flows through alerting: what the diagnosis stage submits (``AlertInput``)
and what one delivery to one target says (``Notice``).

Every string in an ``AlertInput`` may hold attacker-controlled text (usernames, domains and
User-Agents arrive from the internet, and the diagnosis ``summary`` has them filled in).
Nothing here escapes anything: ``sipwatch.alerts.render`` does, once per target format, at
the last moment, so the escaping always matches where the text ends up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

KINDS: tuple[str, ...] = ("registration", "security", "system")
SEVERITIES: tuple[str, ...] = ("info", "warning", "critical")
SEVERITY_RANK: Mapping[str, int] = {name: rank for rank, name in enumerate(SEVERITIES)}


def normalise_severity(value: str) -> str:
    """An unknown severity is treated as "warning": dropping it (as "info" usually is) could
    hide a real problem, and paging for it (as "critical") would let a buggy rule page."""
    return value if value in SEVERITY_RANK else "warning"


@dataclass(frozen=True)
class AlertInput:
    """One diagnosed problem, as the diagnosis/detection stages hand it to ``AlertManager``.

    ``count`` is how many failures this alert stands for (the caller may already have
    aggregated), ``first_seen``/``last_seen`` are log times (epoch seconds, 0 = unknown).
    ``evidence`` maps a short label to what was observed ("redis user:alice@acme" -> "absent").
    ``fix_steps``/``fix_command`` come from the root-cause rules, possibly with the user and
    domain filled in, so they are untrusted too.
    """

    kind: str  # "registration" | "security" | "system"
    severity: str  # "info" | "warning" | "critical"
    cause_id: str  # e.g. "client_missing", "scanner", "registrar_down", "source_down"
    summary: str  # one-sentence diagnosis
    user: str = ""
    domain: str = ""
    source_ip: str = ""
    status: int | str | None = None
    x_reason: str = ""
    count: int = 1
    first_seen: float = 0.0
    last_seen: float = 0.0
    evidence: Mapping[str, str] = field(default_factory=dict)
    fix_steps: tuple[str, ...] = ()
    fix_command: str | None = None
    user_agent: str = ""


NoticeKind = Literal["alert", "group", "resolved"]


@dataclass(frozen=True, slots=True)
class Offender:
    """One line of a grouped message: a source IP (security) or a user@domain (others).

    ``distinct`` is how many different usernames the source tried (security groups only);
    ``distinct_capped`` says the count hit the tracking budget and is a lower bound.
    """

    label: str
    alerts: int
    failures: int
    distinct: int = 0
    distinct_capped: bool = False


@dataclass(frozen=True, slots=True)
class Recovery:
    """A user that registered again after sipwatch alerted about it."""

    user: str
    domain: str
    at: float  # log time of the successful registration (epoch seconds, 0 = unknown)
    causes: tuple[str, ...]  # what it had been alerted for


@dataclass(frozen=True)
class Notice:
    """One message to one target.

    * ``alert``: a single problem (``sample`` is the alert, ``repeats`` the copies merged in
      or suppressed since the previous notice for the same key);
    * ``group``: several alerts of one cause merged during the group window; ``sample`` is
      the first one (its diagnosis and fix apply to all), ``offenders`` the top entries;
    * ``resolved``: users that register again (``recoveries``).
    """

    notice: NoticeKind
    severity: str
    kind: str
    cause_id: str
    sample: AlertInput | None = None
    alerts: int = 1  # AlertInputs merged into this notice
    failures: int = 1  # sum of their ``count``
    repeats: int = 0
    offenders: tuple[Offender, ...] = ()
    other_offenders: int = 0  # offenders tracked but not listed
    untracked_alerts: int = 0  # alerts from offenders beyond the tracking cap
    distinct_total: int = 0  # security: distinct usernames over all sources
    distinct_capped: bool = False
    first_seen: float = 0.0
    last_seen: float = 0.0
    recoveries: tuple[Recovery, ...] = ()
    other_recoveries: int = 0
