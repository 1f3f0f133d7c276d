"""Which source IPs are spraying usernames: decided first, so attack traffic is accounted per
source IP and can never crowd real devices out of the per-user view.

A scanner (SIPVicious and friends) tries thousands of usernames from one address.  Counted per
username, it fills every bounded table with one-shot names: the top-N metric series, the
failure table, the diagnosis queue.  So every completed REGISTER failure passes through this
classifier before any observer sees it, and the observers fold a scanner's failures into one
per-IP record.

Only evidence of attack makes a scanner:

* a User-Agent of a known scanning tool (``sip_meaning.SCANNER_USER_AGENTS``) - at once;
* or at least ``min_users`` distinct usernames *rejected* (403/404, ``REJECTION_STATUSES``)
  from the IP within ``window`` seconds of log time.  Outages (5xx, timeouts) are never
  evidence: a hundred phones behind one office NAT all failing during a registrar outage are
  not an attack.  Usernames that have registered successfully (``registered(user, domain)``)
  do not count either: an account that works is not a guess.

When an IP crosses the threshold, the usernames that counted so far were already seen by the
observers as ordinary failures; listeners registered with ``on_detect`` get them back
(``retract``) so they can move them into the IP's record.  Classification ends after
``hold`` seconds without new rejections from the IP.

Memory is bounded whatever the traffic: at most ``max_ips`` IPs (least recently failing
dropped first), per IP at most ``min_users`` remembered usernames before classification and
a fixed-size distinct-count sketch after it.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from sipwatch.model import RegisterAttempt, RegisterTransaction, Side
from sipwatch.pipeline.interest import only_failed
from sipwatch.sip_meaning import REJECTION_STATUSES, is_failure_status, scanner_tool

Aor = tuple[str, str]  # (user, domain)


class DistinctCounter:
    """Approximate count of distinct strings in 256 bytes: a HyperLogLog (Flajolet et al.
    2007) with 256 registers, standard error about 6.5 %.

    Written here instead of taken from a library because the one maintained Python HLL
    (datasketch) pulls in NumPy and SciPy for what is twenty lines.  Exact while small:
    the first ``_EXACT`` hashes are kept in a set, so a handful of usernames is counted
    exactly (the linear-counting range of the estimator is least accurate there anyway).
    """

    _P = 8
    _M = 1 << _P
    _ALPHA = 0.7213 / (1 + 1.079 / _M)
    _EXACT = 64

    __slots__ = ("_exact", "_registers")

    def __init__(self) -> None:
        self._exact: set[int] | None = set()
        self._registers = bytearray(self._M)

    def add(self, value: str) -> None:
        digest = hashlib.blake2b(value.encode("utf-8", "replace"), digest_size=8).digest()
        h = int.from_bytes(digest)
        if self._exact is not None:
            self._exact.add(h)
            if len(self._exact) > self._EXACT:
                self._exact = None
        index = h >> (64 - self._P)
        rest = h & ((1 << (64 - self._P)) - 1)
        rank = (64 - self._P) - rest.bit_length() + 1
        if rank > self._registers[index]:
            self._registers[index] = rank

    def count(self) -> int:
        if self._exact is not None:
            return len(self._exact)
        m = self._M
        estimate = self._ALPHA * m * m / sum(2.0**-r for r in self._registers)
        zeros = self._registers.count(0)
        if estimate <= 2.5 * m and zeros:
            estimate = m * math.log(m / zeros)  # linear counting for small cardinalities
        return round(estimate)


@dataclass(slots=True)
class ScannerState:
    """What is known about one source IP that had REGISTERs rejected."""

    ip: str
    recent: dict[Aor, float] = field(default_factory=dict)  # rejected AOR -> last log time
    rejections: int = 0  # rejected attempts from this IP (while tracked)
    last_seen: float = 0.0
    scanner_since: float | None = None  # log time it was classified; None = not a scanner
    reason: str = ""  # "user_agent:<tool>" or "usernames"
    tool: str = ""  # the scanning tool its User-Agent names, if any
    users: DistinctCounter | None = None  # distinct usernames tried, once a scanner
    folded: int = 0  # failed transactions accounted to the IP instead of to a user


class ScannerClassifier:
    """Classifies the source IP of each failing inbound REGISTER; see the module docstring."""

    def __init__(
        self,
        *,
        min_users: int = 10,
        window: float = 60.0,
        hold: float | None = None,
        max_ips: int = 20_000,
        registered: Callable[[str, str], bool] | None = None,
    ) -> None:
        if min_users < 2:
            raise ValueError("min_users must be >= 2")
        self.min_users = min_users
        self.window = window
        self.hold = hold if hold is not None else max(window, 300.0)
        self.max_ips = max_ips
        self._registered = registered
        self._ips: OrderedDict[str, ScannerState] = OrderedDict()
        self._listeners: list[Callable[[ScannerState, list[Aor]], None]] = []
        self.detected = 0  # IPs classified since start

    # ------------------------------------------------------------------ wiring
    def on_detect(self, listener: Callable[[ScannerState, list[Aor]], None]) -> None:
        """Call ``listener(state, retracted)`` when an IP becomes a scanner; ``retracted``
        are the AORs it was already counted under as ordinary failures."""
        self._listeners.append(listener)

    # ------------------------------------------------------------------ input
    @only_failed  # and of those, the answered inbound ones
    def observe_transaction(self, tx: RegisterTransaction) -> None:
        """Look at a completed transaction; must run before the observers that ask
        ``is_scanner`` about it."""
        if tx.side is not Side.INBOUND or not tx.peer_ip:
            return
        if tx.timed_out or not is_failure_status(tx.status):
            return
        tool = scanner_tool(tx.user_agent)
        rejected = tx.status in REJECTION_STATUSES
        if tool is None and not rejected:
            state = self._ips.get(tx.peer_ip)
            if state is not None and state.scanner_since is not None:
                self._count_folded(state, tx)  # a scanner's 5xx is still the scanner's
            return  # otherwise an outage answer (5xx) is not evidence
        ts = tx.finished or tx.started
        state = self._state(tx.peer_ip, ts)
        state.rejections += rejected
        if state.scanner_since is not None:
            self._count_folded(state, tx)
            return
        if tool is not None:
            # earlier rejections from this IP reached the observers; this one has not
            state.tool = tool
            self._detect(state, ts, f"user_agent:{tool}", list(state.recent))
            self._count_folded(state, tx)
            return
        aor = (tx.to_user, tx.to_host)
        if self._registered is not None and self._registered(*aor):
            return  # an account that worked: its failure is not a guess
        recent = state.recent
        recent[aor] = ts
        if len(recent) >= self.min_users:
            cutoff = ts - self.window
            for key in [k for k, seen in recent.items() if seen < cutoff]:
                del recent[key]
        if len(recent) >= self.min_users:
            # fewer than min_users names stay in ``recent`` between calls, so only a new
            # name crosses the threshold: every other one reached the observers already,
            # this one has not
            retracted = [a for a in recent if a != aor]
            self._detect(state, ts, "usernames", retracted)
            self._count_folded(state, tx)

    def observe_attempt(self, att: RegisterAttempt) -> None:
        """Log time moves on: a scanner quiet for ``hold`` seconds is one no longer."""
        state = self._ips.get(att.peer_ip)
        quiet = state is not None and att.finished - state.last_seen > self.hold
        if quiet and state is not None and state.scanner_since is not None:
            self._forget(state)

    # ------------------------------------------------------------------ queries
    def is_scanner(self, ip: str, user_agent: str = "") -> bool:
        """True when failures from ``ip`` (with this User-Agent) are attack traffic."""
        state = self._ips.get(ip)
        if state is not None and state.scanner_since is not None:
            return True
        return bool(user_agent) and scanner_tool(user_agent) is not None

    def scanner_state(self, ip: str) -> ScannerState | None:
        """The IP's state while it is classified as a scanner, else None."""
        state = self._ips.get(ip)
        return state if state is not None and state.scanner_since is not None else None

    def distinct_users(self, ip: str) -> int:
        """Distinct usernames rejected from ``ip``: in the window, or since classification."""
        state = self._ips.get(ip)
        if state is None:
            return 0
        if state.users is not None:
            return max(state.users.count(), len(state.recent))
        return len(state.recent)

    def rejections(self, ip: str) -> int:
        state = self._ips.get(ip)
        return 0 if state is None else state.rejections

    def scanners(self) -> list[ScannerState]:
        return [s for s in self._ips.values() if s.scanner_since is not None]

    def __len__(self) -> int:
        return len(self._ips)

    # ------------------------------------------------------------------ internals
    def _state(self, ip: str, ts: float) -> ScannerState:
        state = self._ips.get(ip)
        if state is None:
            # room is made before the new IP is added: counted itself, the new IP would be
            # the one non-scanner to drop when every other IP is a scanner - its state then
            # orphaned, and the "oldest scanner" fallback never reached
            if len(self._ips) >= self.max_ips:
                self._evict()
            state = self._ips[ip] = ScannerState(ip)
        else:
            self._ips.move_to_end(ip)
            if state.scanner_since is not None and ts - state.last_seen > self.hold:
                self._forget(state)
        state.last_seen = max(state.last_seen, ts)
        return state

    def _evict(self) -> None:
        """Drop the least recently failing IP that is not a scanner (a scanner's state is
        what keeps its traffic folded); if all are scanners, the oldest one."""
        for ip, state in self._ips.items():
            if state.scanner_since is None:
                del self._ips[ip]
                return
        self._ips.popitem(last=False)

    def _detect(self, state: ScannerState, ts: float, reason: str, retracted: list[Aor]) -> None:
        state.scanner_since = ts
        state.reason = reason
        state.users = DistinctCounter()
        for user, _domain in retracted:
            state.users.add(user)
        self.detected += 1
        for listener in self._listeners:
            listener(state, retracted)
        state.recent.clear()

    @staticmethod
    def _count_folded(state: ScannerState, tx: RegisterTransaction) -> None:
        state.folded += 1
        state.last_seen = max(state.last_seen, tx.finished or tx.started)
        if state.users is not None:
            state.users.add(tx.to_user)

    @staticmethod
    def _forget(state: ScannerState) -> None:
        state.scanner_since = None
        state.reason = ""
        state.users = None
        state.recent.clear()
        state.rejections = 0
