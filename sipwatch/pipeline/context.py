"""Context a single failed REGISTER does not carry, kept so root-cause rules can use it.

* which AORs registered successfully before (a device that used to work);
* per failing AOR, the Request-URI and Authorization username of its latest failure;
* recent registrar / drachtio events, to pair a SIP 500 with the registrar's
  ``Error SyntaxError ... not valid JSON`` line (the registrar logs no Call-ID, so pairing
  is by time and realm).

Which usernames each source IP failed with (the scanner signal) is the scanner classifier's
job (``sipwatch.pipeline.scanners``), not this module's.

Everything is bounded: the tables are LRUs and the event window a trimmed list.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import OrderedDict

from sipwatch.model import AttemptOutcome, RegisterAttempt, RegisterTransaction, ServiceEvent
from sipwatch.pipeline.failures import is_failure

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


class FailureContext:
    """Bounded memory of what happened around failures; see the module docstring."""

    def __init__(
        self,
        *,
        window: float = 3.0,
        max_request_info: int = 80_000,
        max_events: int = 20_000,
        max_registered: int = 100_000,
    ) -> None:
        self.window = window
        self._max_request_info = max_request_info
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
        if not is_failure(tx):
            return
        key = (tx.peer_ip, tx.to_user, tx.to_host)
        self._request_info[key] = (tx.request_uri, tx.auth_username)
        self._request_info.move_to_end(key)
        if len(self._request_info) > self._max_request_info:
            self._request_info.popitem(last=False)

    def observe_attempt(self, att: RegisterAttempt) -> None:
        if att.outcome is AttemptOutcome.SUCCESS:
            key = (att.to_user, att.to_host)
            self._registered[key] = att.finished
            self._registered.move_to_end(key)
            if len(self._registered) > self._max_registered:
                self._registered.popitem(last=False)

    # ------------------------------------------------------------------ queries
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
