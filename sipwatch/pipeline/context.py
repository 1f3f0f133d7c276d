"""Context a single failed REGISTER does not carry, kept so root-cause rules can use it.

* which usernames each source IP failed with (the scanner signal);
* which AORs registered successfully before (a device that used to work);
* recent registrar / drachtio events, to pair a SIP 500 with the registrar's
  ``Error SyntaxError ... not valid JSON`` line (the registrar logs no Call-ID, so pairing
  is by time and realm).

Everything is bounded: per-IP username sets are capped, the IP table and the event window
are LRU/ring buffers.  A spray of 100,000 usernames costs at most ``max_users_per_ip``
strings per IP and ``max_ips`` IPs.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import OrderedDict
from dataclasses import dataclass, field

from sipwatch.model import AttemptOutcome, RegisterAttempt, RegisterTransaction, ServiceEvent

# event kinds that name their realm, and the attr that holds it
_REALM_EVENTS = frozenset({"ipv4_realm_rejected", "unknown_realm", "db_error"})
# events with no user/realm in them: paired with a failure by time only
_TIMED_EVENTS = frozenset(
    {
        "plaintext_password",
        "decrypt_error",
        "webhook_error",
        "webhook_no_status",
        "auth_error",
        "client_lookup_error",
        "register_error",
        "account_deactivated",
        "limits",
    }
)
# registrar-down signals: global, paired with 503s by time
_DOWN_EVENTS = frozenset({"no_connected_clients", "no_providers", "drachtio_connect_error"})


@dataclass(slots=True)
class _IpFailures:
    users: set[int] = field(default_factory=set)  # hashes: only the count is ever used
    failures: int = 0
    last_seen: float = 0.0


class FailureContext:
    """Bounded memory of what happened around failures; see the module docstring."""

    def __init__(
        self,
        *,
        window: float = 3.0,
        max_ips: int = 20_000,
        max_users_per_ip: int = 256,
        max_events: int = 20_000,
        max_registered: int = 100_000,
    ) -> None:
        self.window = window
        self.max_ips = max_ips
        self.max_users_per_ip = max_users_per_ip
        self._ips: OrderedDict[str, _IpFailures] = OrderedDict()
        self._events: list[tuple[float, str, str]] = []  # ts, kind, realm; sorted on demand
        self._events_sorted = True
        self._max_events = max_events
        self._registered: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._max_registered = max_registered
        self.flavour_hint: str | None = None  # "sidecar" when its startup lines were seen
        # per AOR: the Request-URI host and Authorization username of its latest failure
        self._request_info: OrderedDict[tuple[str, str, str], tuple[str, str]] = OrderedDict()

    # ------------------------------------------------------------------ input
    def observe_event(self, ev: ServiceEvent) -> None:
        if ev.kind == "startup" and ev.attrs.get("flavour_hint") == "sidecar":
            self.flavour_hint = "sidecar"
        if ev.kind in _REALM_EVENTS or ev.kind in _TIMED_EVENTS or ev.kind in _DOWN_EVENTS:
            events = self._events
            if events and ev.ts < events[-1][0]:
                self._events_sorted = False
            events.append((ev.ts, ev.kind, ev.attrs.get("realm", "")))
            if len(events) > self._max_events:
                self._sort_events()
                del events[: len(events) // 2]  # keep the newest half

    def observe_transaction(self, tx: RegisterTransaction) -> None:
        if tx.status < 400 and not tx.timed_out:
            return
        if tx.status in (401, 407):
            return
        ip = self._ips.get(tx.peer_ip)
        if ip is None:
            ip = self._ips[tx.peer_ip] = _IpFailures()
            if len(self._ips) > self.max_ips:
                self._ips.popitem(last=False)
        else:
            self._ips.move_to_end(tx.peer_ip)
        ip.failures += 1
        ip.last_seen = max(ip.last_seen, tx.finished)
        if len(ip.users) < self.max_users_per_ip:
            ip.users.add(hash(tx.to_user))
        key = (tx.peer_ip, tx.to_user, tx.to_host)
        self._request_info[key] = (tx.request_uri, tx.auth_username)
        self._request_info.move_to_end(key)
        if len(self._request_info) > self.max_ips * 4:
            self._request_info.popitem(last=False)

    def observe_attempt(self, att: RegisterAttempt) -> None:
        if att.outcome is AttemptOutcome.SUCCESS:
            key = (att.to_user, att.to_host)
            self._registered[key] = att.finished
            self._registered.move_to_end(key)
            if len(self._registered) > self._max_registered:
                self._registered.popitem(last=False)

    # ------------------------------------------------------------------ queries
    def distinct_users_from(self, ip: str) -> int:
        entry = self._ips.get(ip)
        return len(entry.users) if entry else 0

    def failures_from(self, ip: str) -> int:
        entry = self._ips.get(ip)
        return entry.failures if entry else 0

    def registered_before(self, user: str, domain: str, before: float) -> bool:
        ts = self._registered.get((user, domain))
        return ts is not None and ts <= before

    def request_info(self, ip: str, user: str, domain: str) -> tuple[str, str]:
        """(Request-URI, Authorization username) of that AOR's latest failure, if known."""
        return self._request_info.get((ip, user, domain), ("", ""))

    def events_near(
        self, first: float, last: float, realm: str, status: int | str
    ) -> frozenset[str]:
        """Event kinds that plausibly explain the failures seen at ``first`` and ``last``.

        Only the moments of the first and the latest failure are looked at (± ``window``):
        a group can span hours, and an unrelated event in between (another user's 500) must
        not be pinned on it."""
        kinds: set[str] = set()
        self._sort_events()
        windows = [(last - self.window, last + self.window)]
        if first < last - 2 * self.window:
            windows.append((first - self.window, first + self.window))
        events = self._events
        for lo, hi in windows:
            for i in range(bisect_left(events, (lo,)), len(events)):
                ts, kind, ev_realm = events[i]
                if ts > hi:
                    break
                if kind in _REALM_EVENTS:
                    if ev_realm and ev_realm == realm:
                        kinds.add(kind)
                elif kind in _DOWN_EVENTS:
                    if status in (503, "timeout"):
                        kinds.add(kind)
                elif kind == "account_deactivated" or (isinstance(status, int) and status != 403):
                    kinds.add(kind)
        return frozenset(kinds)

    def _sort_events(self) -> None:
        if not self._events_sorted:
            self._events.sort()
            self._events_sorted = True
