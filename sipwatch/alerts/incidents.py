"""Open problems ("incidents"): what an alert is about, its exact counts, and when it ends.

Why a book of incidents rather than a stream of alerts:

* **Counts equal the log's.**  The diagnosis stage submits the same failure group many times
  (once per new failure) and each copy carries the group's running total.  Summing copies
  reported 1+2+...+15 = 120 for 15 failures.  An incident keeps the *latest* total per
  failure group and adds up groups, so a message says what the failure table says.  The
  latest total is read from the group's live row (``AlertInput.tally``) when a message is
  made and when the incident ends: failures counted after the diagnosis (a burst's last
  message, framed only when its stream went idle) are in the message, and in this
  incident rather than in the next one.
* **One problem, one incident.**  A scanner is one incident per source IP, whatever
  usernames it tries; a registrar outage is one incident, however many devices fail.
* **Every incident that can end, ends** - and only for the right reason: a device's problem
  by a success of that very device (user, domain, side; a 200 for ``alice@acme`` says
  nothing about ``alice@127.0.0.1``), a registrar outage by any device registering after
  it (or the failures stopping), a scanner by going quiet, a lost dependency when it is
  back (``AlertManager.end``).

Memory is bounded per kind (``LIMITS``), least recently updated first, so a scanner flood
of incidents cannot push device incidents out.  Times: ``first_seen``/``last_seen``/
``ended_at`` are log times (epoch seconds); ``updated_at`` is the manager's clock, used for
"quiet" endings.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from sipwatch.alerts.model import (
    SEVERITY_RANK,
    AlertInput,
    EndsWhen,
    GroupKey,
    IncidentKey,
    IncidentView,
    Tally,
    device_of,
    ending_of,
    group_key,
    incident_key,
    label_of,
)

#: Incidents remembered per kind (open and recently ended; least recently updated dropped).
LIMITS: dict[str, int] = {"registration": 10_000, "security": 2_000, "system": 256}
#: Failure groups counted exactly per incident; beyond, the total is a lower bound.
GROUPS_TRACKED = 4096

#: What an ending is called in a message, by how it ended.
ENDED_TEXT: dict[str, str] = {
    "device": "registered again",
    "registrar": "devices register again",
    "quiet": "no new failures",
    "explicit": "back to normal",
}

Update = Literal["new", "update", "reopened", "stale"]


@dataclass(slots=True, eq=False)
class Incident:
    key: IncidentKey
    kind: str
    cause_id: str
    ends_when: EndsWhen
    severity: str
    sample: AlertInput
    label: str
    first_seen: float
    last_seen: float
    updated_at: float
    groups: dict[GroupKey, int] = field(default_factory=dict)
    base: dict[GroupKey, int] = field(default_factory=dict)  # totals when it last ended
    tallies: dict[GroupKey, Tally] = field(default_factory=dict)  # live rows, by group
    untracked: bool = False
    ended_at: float | None = None
    ended: str = ""

    @property
    def open(self) -> bool:
        return self.ended_at is None

    def refresh(self) -> None:
        """While open, take each group's total and latest failure from its live row."""
        if not self.open:
            return  # an ended incident keeps the counts it ended with
        groups = self.groups
        for group, tally in self.tallies.items():
            groups[group] = tally.count
            if tally.last_seen > self.last_seen:
                self.last_seen = tally.last_seen

    def failures(self) -> int:
        total = 0
        for group, count in self.groups.items():
            before = self.base.get(group, 0)
            # below the base: the failure table forgot the group and counts afresh
            total += count - before if count >= before else count
        return total

    def devices(self) -> int:
        """Distinct devices among the failure groups (a group without a user is none)."""
        return len({(g[0], g[1], g[2]) for g in self.groups if g[1]})

    def view(self, *, update: bool, again: bool = False) -> IncidentView:
        self.refresh()
        return IncidentView(
            kind=self.kind,
            cause_id=self.cause_id,
            severity=self.severity,
            label=self.label,
            sample=self.sample,
            failures=self.failures(),
            failures_capped=self.untracked,
            devices=self.devices() if self.kind == "system" else 0,
            devices_capped=self.untracked,
            distinct_users=self.sample.distinct_users,
            first_seen=self.first_seen,
            last_seen=self.last_seen,
            update=update,
            again=again,
            ended_at=self.ended_at,
            ended=self.ended,
        )


class IncidentBook:
    """All incidents of one ``AlertManager``; see the module docstring."""

    def __init__(
        self,
        *,
        limits: dict[str, int] | None = None,
        on_forget: Callable[[Incident], None] | None = None,
    ) -> None:
        self._limits = dict(LIMITS if limits is None else limits)
        self._by_kind: dict[str, OrderedDict[IncidentKey, Incident]] = {}
        self._by_device: dict[tuple[str, str, str], set[IncidentKey]] = {}
        self._registrar: dict[IncidentKey, Incident] = {}  # open, ending with any device
        self._quiet: OrderedDict[IncidentKey, Incident] = OrderedDict()  # by updated_at
        self.on_forget = on_forget
        self.forgotten = 0

    def __len__(self) -> int:
        return sum(len(t) for t in self._by_kind.values())

    def __iter__(self) -> Iterator[Incident]:
        for table in self._by_kind.values():
            yield from table.values()

    def get(self, key: IncidentKey) -> Incident | None:
        table = self._by_kind.get(key[0])
        return None if table is None else table.get(key)

    # ------------------------------------------------------------------ updates
    def update(self, alert: AlertInput, now: float) -> tuple[Incident, Update]:
        """Fold ``alert`` into its incident (created or reopened as needed)."""
        key = incident_key(alert)
        table = self._by_kind.setdefault(key[0], OrderedDict())
        incident = table.get(key)
        if incident is None:
            incident = Incident(
                key=key,
                kind=alert.kind,
                cause_id=alert.cause_id,
                ends_when=ending_of(alert),
                severity=alert.severity,
                sample=alert,
                label=label_of(alert),
                first_seen=alert.first_seen,
                last_seen=alert.last_seen,
                updated_at=now,
            )
            table[key] = incident
            self._index(incident)
            self._count(incident, alert)
            self._trim(key[0])
            return incident, "new"
        table.move_to_end(key)
        state: Update = "update"
        if not incident.open:
            ended_at = incident.ended_at or 0.0
            if alert.last_seen and ended_at and alert.last_seen <= ended_at:
                return incident, "stale"  # a failure from before it ended, diagnosed late
            incident.base = dict(incident.groups)
            incident.ended_at, incident.ended = None, ""
            # the failures counted from here on happened after it ended
            incident.first_seen = max(alert.first_seen, ended_at)
            incident.last_seen = alert.last_seen
            incident.severity = alert.severity
            self._index(incident)
            state = "reopened"
        else:
            if SEVERITY_RANK[alert.severity] > SEVERITY_RANK[incident.severity]:
                incident.severity = alert.severity
            first = alert.first_seen
            if first and (not incident.first_seen or first < incident.first_seen):
                incident.first_seen = first
            if alert.last_seen > incident.last_seen:
                incident.last_seen = alert.last_seen
        incident.sample = alert
        incident.updated_at = now
        if incident.key in self._quiet:
            self._quiet.move_to_end(incident.key)
        self._count(incident, alert)
        return incident, state

    # ------------------------------------------------------------------ endings
    def device_registered(self, user: str, domain: str, side: str, at: float) -> list[Incident]:
        """A device registered at log time ``at``: end its own registration incidents, and
        any registrar outage whose last failure was before (or at) ``at``."""
        ended: list[Incident] = []
        for key in list(self._by_device.get(device_of(user, domain, side), ())):
            incident = self.get(key)
            if incident is None:
                continue
            incident.refresh()
            if _after(at, incident.last_seen):
                self._end(incident, at, "device")
                ended.append(incident)
        for incident in list(self._registrar.values()):
            incident.refresh()
            if _after(at, incident.last_seen):
                self._end(incident, at, "registrar")
                ended.append(incident)
        return ended

    def end(self, key: IncidentKey, at: float, how: str = "") -> Incident | None:
        """End one incident explicitly (a dependency is back); None if it is not open."""
        incident = self.get(key)
        if incident is None or not incident.open:
            return None
        self._end(incident, at, "explicit", how)
        return incident

    def end_quiet(self, now: float, quiet: float) -> list[Incident]:
        """End the incidents that end by going quiet and have been for ``quiet`` seconds."""
        ended: list[Incident] = []
        while self._quiet:
            incident = next(iter(self._quiet.values()))
            if now - incident.updated_at < quiet:
                break
            incident.refresh()
            self._end(incident, incident.last_seen, "quiet")
            ended.append(incident)
        return ended

    def next_quiet(self, quiet: float) -> float | None:
        """Clock time the next quiet ending is due, if any."""
        for incident in self._quiet.values():
            return incident.updated_at + quiet
        return None

    # ------------------------------------------------------------------ internals
    def _count(self, incident: Incident, alert: AlertInput) -> None:
        group = group_key(alert)
        if group in incident.groups or len(incident.groups) < GROUPS_TRACKED:
            incident.groups[group] = alert.count
            if alert.tally is not None:
                incident.tallies[group] = alert.tally
            else:
                incident.tallies.pop(group, None)
        else:
            incident.untracked = True

    def _index(self, incident: Incident) -> None:
        if incident.kind == "registration":
            side, user, domain = incident.key[2], incident.key[3], incident.key[4]
            self._by_device.setdefault((side, user, domain), set()).add(incident.key)
        if incident.ends_when == "registrar":
            self._registrar[incident.key] = incident
        if incident.ends_when in ("quiet", "registrar"):
            self._quiet[incident.key] = incident
            self._quiet.move_to_end(incident.key)

    def _unindex(self, incident: Incident) -> None:
        if incident.kind == "registration":
            device = (incident.key[2], incident.key[3], incident.key[4])
            keys = self._by_device.get(device)
            if keys is not None:
                keys.discard(incident.key)
                if not keys:
                    del self._by_device[device]
        self._registrar.pop(incident.key, None)
        self._quiet.pop(incident.key, None)

    def _end(self, incident: Incident, at: float, ending: str, how: str = "") -> None:
        incident.refresh()  # the totals it ends with: a reopening counts from these
        incident.ended_at = at or 0.0
        incident.ended = how or ENDED_TEXT.get(ending, "ended")
        self._unindex(incident)

    def _trim(self, kind: str) -> None:
        table = self._by_kind[kind]
        limit = self._limits.get(kind, 1000)
        while len(table) > limit:
            _key, oldest = table.popitem(last=False)
            self._unindex(oldest)
            self.forgotten += 1
            if self.on_forget is not None:
                self.on_forget(oldest)


def _after(at: float, last_failure: float) -> bool:
    """A success at ``at`` is later than the last failure (unknown times count as later)."""
    return not at or not last_failure or at >= last_failure
