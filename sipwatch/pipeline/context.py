"""Context a single failed REGISTER does not carry, kept so root-cause rules can use it.

* which AORs registered successfully before (a device that used to work);
* per failing AOR, the Request-URI and Authorization username of its latest failure;
* recent registrar / drachtio events, to pair a SIP 500 with the registrar's
  ``Error SyntaxError ... not valid JSON`` line (the registrar logs no Call-ID, so pairing
  is by time and realm).

A registrar line is evidence only for the failure it can explain.  A line that names its
realm is paired with failures of that realm; a line that names nobody (the sidecar's debug
``checkAccountLimits: account is deactivated``, a decrypt error) is paired only with a
failure whose own response is the one that line produces - a deactivated account answers 403
"Account has been deactivated" before any challenge, a password that cannot be decrypted
gives a 500 after it.  Otherwise one such line, within seconds of seven unrelated failures,
would be pinned on all seven.

Which usernames each source IP failed with (the scanner signal) is the scanner classifier's
job (``sipwatch.pipeline.scanners``), not this module's.

Everything is bounded: the tables are LRUs and the event window a trimmed list.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Callable

from sipwatch.model import AttemptOutcome, RegisterAttempt, RegisterTransaction, ServiceEvent
from sipwatch.pipeline.interest import is_failure, only_failed, only_succeeded
from sipwatch.sip_meaning import TIMEOUT

Status = int | str  # a SIP status, or "timeout"


def _rejected_before_challenge(status: Status, x_reason: str, challenged: bool) -> bool:
    return status == 403 and not challenged


def _failed_after_challenge(status: Status, x_reason: str, challenged: bool) -> bool:
    # digest-utils' catch: "rejecting with 403" in the log, but drachtio-srf answers 500
    return status == 500 and challenged


def _account_deactivated(status: Status, x_reason: str, challenged: bool) -> bool:
    return _rejected_before_challenge(
        status, x_reason, challenged
    ) and x_reason.strip().lower().startswith("account has been deactivated")


# What answer each registrar event produces (sbc-sip-sidecar v0.9.6 and digest-utils): the event is
# evidence for a failure only when that failure got this answer.
_Fit = Callable[[Status, str, bool], bool]
# events that name their realm (attr "realm"): same realm, and the answer they produce
_REALM_EVENTS: dict[str, _Fit] = {
    "ipv4_realm_rejected": _rejected_before_challenge,
    "unknown_realm": _rejected_before_challenge,
    "db_error": lambda status, x_reason, challenged: status == 500,
}
# events that name nobody: the answer they produce is all that ties them to a failure
_TIMED_EVENTS: dict[str, _Fit] = {
    "plaintext_password": _failed_after_challenge,
    "decrypt_error": _failed_after_challenge,
    "webhook_no_status": _failed_after_challenge,
    "auth_error": _failed_after_challenge,
    "client_lookup_error": _failed_after_challenge,
    "register_error": _failed_after_challenge,
    "account_deactivated": _account_deactivated,
    "limits": lambda status, x_reason, challenged: status == 503,
    # checked against the event's own status_code below when it has one
    "webhook_error": lambda status, x_reason, challenged: (
        challenged and isinstance(status, int) and status >= 400 and status != 403
    ),
}
# registrar-down signals: global, paired with 503s and timeouts by time
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
        # ts, kind, realm, status the event names ("" if none); sorted on demand
        self._events: list[tuple[float, str, str, str]] = []
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
            events.append(
                (ev.ts, ev.kind, ev.attrs.get("realm", ""), ev.attrs.get("status_code", ""))
            )
            if len(events) > self._max_events:
                self._sort_events()
                del events[: len(events) // 2]  # keep the newest half

    @only_failed
    def observe_transaction(self, tx: RegisterTransaction) -> None:
        if not is_failure(tx):
            return
        key = (tx.peer_ip, tx.to_user, tx.to_host)
        self._request_info[key] = (tx.request_uri, tx.auth_username)
        self._request_info.move_to_end(key)
        if len(self._request_info) > self._max_request_info:
            self._request_info.popitem(last=False)

    @only_succeeded
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
        self,
        first: float,
        last: float,
        realm: str,
        status: Status,
        *,
        x_reason: str,
        challenged: bool,
    ) -> frozenset[str]:
        """Event kinds that explain the failures of one group (``realm``, final ``status``,
        its ``x_reason`` and whether it came after a challenge) seen at ``first``/``last``.

        Only the moments of the first and the latest failure are looked at (± ``window``):
        a group can span hours, and an unrelated event in between (another user's 500) must
        not be pinned on it.  Within the window, an event counts only if it fits this
        failure (see the module docstring)."""
        kinds: set[str] = set()
        self._sort_events()
        windows = [(last - self.window, last + self.window)]
        if first < last:  # overlapping windows are fine: ``kinds`` is a set
            windows.append((first - self.window, first + self.window))
        events = self._events
        for lo, hi in windows:
            for i in range(bisect_left(events, (lo,)), len(events)):
                ts, kind, ev_realm, ev_status = events[i]
                if ts > hi:
                    break
                if kind in _DOWN_EVENTS:
                    fits = status in (503, TIMEOUT)
                elif kind in _REALM_EVENTS:
                    fits = ev_realm == realm and _REALM_EVENTS[kind](status, x_reason, challenged)
                else:  # _TIMED_EVENTS: observe_event keeps no other kind
                    fits = _TIMED_EVENTS[kind](status, x_reason, challenged) and (
                        not ev_status or ev_status == str(status)
                    )
                if fits and ev_realm in ("", realm):
                    kinds.add(kind)
        return frozenset(kinds)

    def _sort_events(self) -> None:
        if not self._events_sorted:
            self._events.sort()
            self._events_sorted = True
