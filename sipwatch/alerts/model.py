"""The data that flows through alerting: what the diagnosis stage submits (``AlertInput``),
which problem it belongs to (``incident_key``), and what one message to one target says
(``Notice`` with ``IncidentView``s).

Every string in an ``AlertInput`` may hold attacker-controlled text (usernames, domains and
User-Agents arrive from the internet, and the diagnosis ``summary`` has them filled in).
Nothing here escapes anything: ``sipwatch.alerts.render`` does, once per target format, at
the last moment, so the escaping always matches where the text ends up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol, get_args

from sipwatch.config import SEVERITIES

KINDS: tuple[str, ...] = ("registration", "security", "system")
SEVERITY_RANK: Mapping[str, int] = {name: rank for rank, name in enumerate(SEVERITIES)}

#: How an incident ends (see ``AlertInput.ends_when``).
EndsWhen = Literal["device", "registrar", "quiet", "explicit"]
ENDINGS: Mapping[str, EndsWhen] = {name: name for name in get_args(EndsWhen)}
DEFAULT_ENDING: Mapping[str, EndsWhen] = {
    "registration": "device",
    "security": "quiet",
    "system": "explicit",
}


def normalise_severity(value: object) -> str:
    """The alert severity of a diagnosis severity: the same word (one scale, from the rules),
    so the daemon's log line and the alert say the same thing.

    An unknown severity is treated as "warning": dropping it (as "info" usually is) could
    hide a real problem, and paging for it (as "critical") would let a buggy rule page."""
    return value if isinstance(value, str) and value in SEVERITY_RANK else "warning"


class Tally(Protocol):
    """A failure group's live row in the failure table (``FailureRecord``): its running
    total and its latest failure, both still growing after the diagnosis was made."""

    @property
    def count(self) -> int: ...

    @property
    def last_seen(self) -> float: ...


@dataclass(frozen=True)
class AlertInput:
    """One diagnosed problem, as the diagnosis/detection stages hand it to ``AlertManager``.

    ``count`` is the running total of failures of the failure group this alert was made from
    (``side``, ``user``, ``domain``, ``source_ip``, ``status``: one row of the failure table),
    as that table counts it; the same group submitted again carries its new total, which
    replaces the old one (it is never added to it).  ``first_seen``/``last_seen`` are log
    times of that group (epoch seconds, 0 = unknown).  ``evidence`` maps a short label to
    what was observed ("redis user:alice@acme" -> "absent").  ``fix_steps``/``fix_command``
    come from the root-cause rules, possibly with the user and domain filled in, so they are
    untrusted too.

    ``tally`` is that failure table row itself, when there is one.  ``count`` is its total
    when the diagnosis was made, but the group goes on failing while the diagnosis runs and
    while the message waits to be sent, and those failures queue no new diagnosis (one is
    already in flight).  An open incident therefore reads its groups' totals from their
    tallies whenever a message is made and when it ends, so a message counts what the
    table counts at that moment, and a failure counted late still belongs to the incident
    it happened in, not to the next one.

    Which incident the alert belongs to depends on the kind (``incident_key``): a device
    (user, domain, side) for "registration", a source IP for "security", the cause (and
    ``subject``: "database", "source:drachtio") for "system".  ``ends_when`` says what ends
    it ("" = the kind's default, ``DEFAULT_ENDING``): "device" - a success of the same
    device; "registrar" - a success of any device after the last failure, or
    ``quiet_seconds`` without a failure; "quiet" - ``quiet_seconds`` without a new alert;
    "explicit" - ``AlertManager.end()``.
    """

    kind: str  # "registration" | "security" | "system"
    severity: str  # "info" | "warning" | "error" | "critical"
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
    side: str = "inbound"
    subject: str = ""  # system alerts: what is affected; part of the incident identity
    distinct_users: int = 0  # security: usernames tried from source_ip (as in the evidence)
    ends_when: str = ""  # "" = DEFAULT_ENDING[kind]
    tally: Tally | None = field(default=None, compare=False, repr=False)


IncidentKey = tuple[str, ...]
GroupKey = tuple[str, str, str, str, str]  # side, user, domain, source IP, status


def ending_of(alert: AlertInput) -> EndsWhen:
    ending = ENDINGS.get(alert.ends_when)
    if ending is not None:
        return ending
    return DEFAULT_ENDING.get(alert.kind, "explicit")


def device_of(user: str, domain: str, side: str = "inbound") -> tuple[str, str, str]:
    """A device's identity: what must succeed to end its registration incidents."""
    return (side, user, domain.lower())


def incident_key(alert: AlertInput) -> IncidentKey:
    """The one open problem ``alert`` belongs to (see ``AlertInput``)."""
    if alert.kind == "security":
        who = alert.source_ip or alert.user
        return ("security", alert.cause_id, who)
    if alert.kind == "registration":
        return ("registration", alert.cause_id, *device_of(alert.user, alert.domain, alert.side))
    return (alert.kind, alert.cause_id, alert.subject)


def group_key(alert: AlertInput) -> GroupKey:
    """The failure group whose running total ``alert.count`` is."""
    return (
        alert.side,
        alert.user,
        alert.domain.lower(),
        alert.source_ip,
        "" if alert.status is None else str(alert.status),
    )


def label_of(alert: AlertInput) -> str:
    """How a message names the incident: the source IP (security), the subject or nothing
    (system: the cause says it), the device's user@domain (registration)."""
    aor = f"{alert.user}@{alert.domain}" if alert.user and alert.domain else alert.user
    if alert.kind == "security":
        return alert.source_ip or aor or "unknown"
    if alert.kind == "system":
        return alert.subject
    return aor or alert.domain or alert.source_ip or "unknown"


# --- what a target is told --------------------------------------------------------------------

NoticeKind = Literal["alert", "group", "ended"]


@dataclass(frozen=True, slots=True)
class IncidentView:
    """One incident as a message shows it, taken when the message is made.

    ``failures`` is exact (sum of the latest totals of its failure groups) unless
    ``failures_capped``: then more groups failed than are tracked and it is a lower bound.
    ``devices`` is how many devices failed (system incidents); ``distinct_users`` how many
    usernames a source tried (security).  ``ended_at`` is set (log time, 0 = unknown) once
    the incident is over, ``ended`` then says how ("registered again", ...).
    """

    kind: str
    cause_id: str
    severity: str
    label: str
    sample: AlertInput
    failures: int
    failures_capped: bool = False
    devices: int = 0
    devices_capped: bool = False
    distinct_users: int = 0
    first_seen: float = 0.0
    last_seen: float = 0.0
    update: bool = False  # this target was told about it before: this is an update
    again: bool = False  # this target was told it had ended: it is failing again
    ended_at: float | None = None
    ended: str = ""


@dataclass(frozen=True)
class Notice:
    """One message to one target.

    * ``alert``: one incident (``incidents[0]``);
    * ``group``: several incidents of one cause (a flood); ``incidents`` are the top ones,
      ``more`` the number not listed, ``failures`` the total of all of them;
    * ``ended``: incidents that are over (devices register again, a scanner went quiet, a
      log source is back).

    ``raised_at`` is the wall time the message was made; a message delivered late (its
    target was unreachable) says so.
    """

    notice: NoticeKind
    severity: str
    kind: str
    cause_id: str
    incidents: tuple[IncidentView, ...]
    more: int = 0
    failures: int = 0
    failures_capped: bool = False
    raised_at: float = 0.0
    delayed: bool = False
