"""The current failing users and IPs, for ``/api/failures`` and for humans.

Metrics answer "how many"; on-call needs "who, from where, since when, with what answer".
That detail cannot be a metric label (unbounded), so it lives here: one record per
(side, To user, To host, peer IP, final status), in a table of fixed size.

The table is filled by attacker-controlled traffic, so it must stay useful under a username
spray: when full, it makes room by discarding, in order, a resolved record, a record not
updated for ``stale_after`` seconds of log time, then the oldest record seen only once (a
scanner's one-shot guesses).  Only when none of those exist is the new record refused and
``dropped`` incremented.  Long text fields are truncated so a record's size is bounded too.

A scanner's failures (``sipwatch.pipeline.scanners``) are not per-user records at all: they
fold into one record per source IP (user ``SCANNER_USER``) that counts them and estimates how
many usernames were tried, so a spray of 100,000 usernames costs one record, and the usernames
it tried before it was recognised are moved into that record (``retract``).

Timestamps are log time (epoch seconds from the records), not wall time, so a replay of an
old log gives the same table as the live run did.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from sipwatch.model import AttemptOutcome, RegisterAttempt, RegisterTransaction
from sipwatch.pipeline.interest import is_failure, only_failed, only_succeeded
from sipwatch.pipeline.scanners import Aor, ScannerState
from sipwatch.sip_meaning import status_key

_USER_MAX = 128
_DOMAIN_MAX = 255
_IP_MAX = 45
_TEXT_MAX = 256

#: The ``user`` (and ``domain``) of the one record a scanner's failures fold into.
SCANNER_USER = "*"

FailureKey = tuple[str, str, str, str, int | str]
_Aor = tuple[str, str, str]


@dataclass(slots=True)
class FailureRecord:
    """One failing (side, user, domain, source IP, status) combination."""

    side: str
    user: str
    domain: str
    source_ip: str
    status: int | str  # SIP status, or "timeout"
    x_reason: str
    count: int
    first_seen: float
    last_seen: float
    challenged: bool  # the failing request carried credentials (answered after a 401/407)
    user_agent: str
    resolved_at: float | None = None
    scanner: bool = False  # the folded record of a scanner's source IP
    distinct_users: int = 0  # scanner records: usernames tried (estimated beyond 64)
    cause: dict[str, Any] | None = None  # the latest diagnosis' most likely cause (daemon)

    @property
    def key(self) -> FailureKey:
        return (self.side, self.user, self.domain, self.source_ip, self.status)

    @property
    def who(self) -> str:
        """How reports name the group: ``user@domain``, or the scanner and its spray."""
        if self.scanner:
            return f"scanner ({self.distinct_users} usernames)"
        return f"{self.user}@{self.domain}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def failure_key(tx: RegisterTransaction, *, scanner: bool = False) -> FailureKey:
    """The table key of a failing transaction (the one definition of the field limits)."""
    status = status_key(tx.status, tx.timed_out)
    ip = tx.peer_ip[:_IP_MAX]
    if scanner:
        return (tx.side.value, SCANNER_USER, SCANNER_USER, ip, status)
    return (tx.side.value, tx.to_user[:_USER_MAX], tx.to_host[:_DOMAIN_MAX], ip, status)


class FailureTracker:
    """Bounded table of REGISTER failures, grouped and counted."""

    def __init__(
        self,
        max_entries: int = 10_000,
        *,
        stale_after: float = 3600.0,
        scanner_of: Callable[[str], ScannerState | None] | None = None,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.max_entries = max_entries
        self.stale_after = stale_after
        # source IP -> its scanner state while its traffic is attack-shaped
        self._scanner_of = scanner_of
        # Least recently updated first.
        self._records: OrderedDict[FailureKey, FailureRecord] = OrderedDict()
        self._singletons: OrderedDict[FailureKey, None] = OrderedDict()  # count == 1, oldest first
        self._resolved: OrderedDict[FailureKey, None] = OrderedDict()
        self._by_aor: dict[_Aor, set[FailureKey]] = {}
        self._latest = 0.0  # newest log time seen, the clock for staleness
        self.dropped = 0  # records not stored because the table was full
        self.evicted = 0  # records discarded to make room for new ones

    def __len__(self) -> int:
        return len(self._records)

    @property
    def latest(self) -> float:
        """The newest log time the table has seen (its clock)."""
        return self._latest

    @only_failed
    def observe_transaction(self, tx: RegisterTransaction) -> None:
        """Count a completed REGISTER transaction if it ended in a failure."""
        if not is_failure(tx):
            return
        ts = tx.finished or tx.started
        self._latest = max(self._latest, ts)
        scanner = self._scanner_of(tx.peer_ip) if self._scanner_of else None
        key = failure_key(tx, scanner=scanner is not None)
        side, user, domain, _ip, status = key
        record = self._records.get(key)
        if record is not None:
            record.count += 1
            record.last_seen = max(record.last_seen, ts)
            record.first_seen = min(record.first_seen, ts)
            record.x_reason = tx.x_reason[:_TEXT_MAX]
            record.challenged = record.challenged or tx.has_auth
            if tx.user_agent:
                record.user_agent = tx.user_agent[:_TEXT_MAX]
            if record.resolved_at is not None:
                record.resolved_at = None  # failing again
                self._resolved.pop(key, None)
            self._singletons.pop(key, None)
            self._records.move_to_end(key)
            return
        if len(self._records) >= self.max_entries and not self._make_room():
            self.dropped += 1
            return
        record = self._records[key] = FailureRecord(
            side=side,
            user=user,
            domain=domain,
            source_ip=key[3],
            status=status,
            x_reason=tx.x_reason[:_TEXT_MAX],
            count=1,
            first_seen=ts,
            last_seen=ts,
            challenged=tx.has_auth,
            user_agent=tx.user_agent[:_TEXT_MAX],
            scanner=scanner is not None,
        )
        if scanner is None:
            self._singletons[key] = None
            # a scanner record is no AOR's: no registration resolves it
            self._by_aor.setdefault((side, user, domain), set()).add(key)
        else:
            # estimated when created and when read (``_refresh``), not on every folded
            # failure (a spray would cost more than the rest of the pipeline); once at
            # creation so a record nobody read before the classifier forgot its IP does
            # not claim 0 usernames
            self._refresh(record)

    def retract(self, state: ScannerState, aors: list[Aor]) -> None:
        """An IP was recognised as a scanner: fold its earlier per-user records into the
        IP's scanner record (the counts move, nothing is counted twice)."""
        for user, domain in aors:
            aor = ("inbound", user[:_USER_MAX], domain[:_DOMAIN_MAX])
            for key in [k for k in self._by_aor.get(aor, ()) if k[3] == state.ip[:_IP_MAX]]:
                old = self._records[key]
                self._discard(key, evicted=False)
                target_key: FailureKey = (key[0], SCANNER_USER, SCANNER_USER, key[3], key[4])
                target = self._records.get(target_key)
                if target is None:
                    target = FailureRecord(
                        side=key[0],
                        user=SCANNER_USER,
                        domain=SCANNER_USER,
                        source_ip=key[3],
                        status=key[4],
                        x_reason=old.x_reason,
                        count=0,
                        first_seen=old.first_seen,
                        last_seen=old.last_seen,
                        challenged=old.challenged,
                        user_agent=old.user_agent,
                        scanner=True,
                    )
                    self._records[target_key] = target
                target.count += old.count
                target.first_seen = min(target.first_seen, old.first_seen)
                target.last_seen = max(target.last_seen, old.last_seen)
                self._refresh(target)  # as at creation in observe_transaction

    @only_succeeded
    def observe_attempt(self, att: RegisterAttempt) -> None:
        """A successful attempt resolves every record of that (side, user, domain)."""
        if att.outcome is not AttemptOutcome.SUCCESS:
            return
        aor = (att.side.value, att.to_user[:_USER_MAX], att.to_host[:_DOMAIN_MAX])
        ts = att.finished or att.started
        self._latest = max(self._latest, ts)
        for key in self._by_aor.get(aor, ()):
            record = self._records[key]
            if record.resolved_at is None:
                record.resolved_at = ts
                self._resolved[key] = None

    def get(self, key: FailureKey) -> FailureRecord | None:
        """The record of one (side, user, domain, source IP, status) group, if stored."""
        record = self._records.get(key)
        if record is not None and record.scanner:
            self._refresh(record)
        return record

    def _refresh(self, record: FailureRecord) -> None:
        """A scanner record's estimate of the usernames its source tried, as of now."""
        state = self._scanner_of(record.source_ip) if self._scanner_of else None
        if state is not None and state.users is not None:
            record.distinct_users = max(record.distinct_users, state.users.count())

    def records(
        self, *, include_resolved: bool = True, resolved_since: float | None = None
    ) -> list[FailureRecord]:
        """Records, most frequent first (ties: most recent first); resolved ones only if
        ``include_resolved``, and then only those resolved at or after ``resolved_since``."""
        selected = [
            r
            for r in self._records.values()
            if r.resolved_at is None
            or (include_resolved and (resolved_since is None or r.resolved_at >= resolved_since))
        ]
        selected.sort(key=lambda r: (-r.count, -r.last_seen))
        for record in selected:
            if record.scanner:
                self._refresh(record)
        return selected

    def _make_room(self) -> bool:
        if self._resolved:
            key, _ = self._resolved.popitem(last=False)
            self._discard(key)
            return True
        oldest_key, oldest = next(iter(self._records.items()))
        if oldest.last_seen < self._latest - self.stale_after:
            self._discard(oldest_key)
            return True
        if self._singletons:
            key, _ = self._singletons.popitem(last=False)
            self._discard(key)
            return True
        return False

    def _discard(self, key: FailureKey, *, evicted: bool = True) -> None:
        self._records.pop(key)
        self._singletons.pop(key, None)
        self._resolved.pop(key, None)
        aor = (key[0], key[1], key[2])
        keys = self._by_aor.get(aor)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_aor[aor]
        self.evicted += evicted
