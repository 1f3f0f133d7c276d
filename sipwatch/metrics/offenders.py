"""Per-user and per-IP failure series, for the worst offenders only.

"Which user, which IP keeps failing" is the operator's first question, and usernames and IPs
are attacker-controlled, so only the top-N of each get a series (``TopNTracker``: a
heavy-hitter table ranked by recent failures); everything else is summed in ``other``.

Attack traffic never competes with devices for the per-user series: the pipeline's scanner
classifier (``sipwatch.pipeline.scanners``) decides which source IPs are scanners, their
attempts are accounted per source IP only, and the per-user series of usernames a scanner
tried before it was recognised are withdrawn (``watch_scanners``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from sipwatch.metrics import names
from sipwatch.metrics.cardinality import EVICT_DEMOTED, EVICT_EXPIRED, OTHER, TopNTracker
from sipwatch.metrics.families import CounterVec, GaugeVec, VecCollector
from sipwatch.metrics.labels import DISTINCT_USERS_CAP, attempt_status, ip_label, user_label
from sipwatch.model import AttemptOutcome, RegisterAttempt, Side

if TYPE_CHECKING:
    from sipwatch.pipeline.scanners import ScannerClassifier, ScannerState

EVICT_SCANNER: Final = "scanner"  # a per-user series withdrawn: its name was a scanner's guess
EVICTION_REASONS: Final = (EVICT_DEMOTED, EVICT_EXPIRED, EVICT_SCANNER)
DIMENSIONS: Final = ("user", "ip")
SCANNER_EVIDENCE: Final = ("user_agent", "usernames")

Key = tuple[str, str]  # (side, user@domain) or (side, ip)


class OffenderCollector(VecCollector):
    """A prometheus-client collector for the per-user and per-IP series and their trackers."""

    def __init__(
        self,
        *,
        top_n: int,
        series_ttl: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.top_n = top_n
        self._scanners: ScannerClassifier | None = None
        self.user_failures = CounterVec(
            names.USER_FAILURES,
            f"Failed registration attempts per user@domain; only the top {top_n} users have "
            'their own series, the rest are summed in user="other".',
            ["side", "user", "status"],
        )
        self.user_failing = GaugeVec(
            names.USER_FAILING,
            "1 while the latest registration attempt of a tracked user failed, 0 after a success.",
            ["side", "user"],
        )
        self.ip_failures = CounterVec(
            names.IP_FAILURES,
            f"Failed registration attempts per peer IP; only the top {top_n} IPs have their own "
            'series, the rest are summed in ip="other".',
            ["side", "ip", "status"],
        )
        self.ip_distinct = GaugeVec(
            names.IP_DISTINCT_USERS,
            f"Distinct user@domain that failed from a tracked IP (capped at {DISTINCT_USERS_CAP}).",
            ["side", "ip"],
        )
        self.users: TopNTracker[Key] = TopNTracker(
            top_n=top_n, ttl=series_ttl, clock=clock, on_evict=self._evict_user
        )
        self.ips: TopNTracker[Key] = TopNTracker(
            top_n=top_n, ttl=series_ttl, clock=clock, on_evict=self._evict_ip
        )
        self._user_series: dict[Key, set[str]] = {}  # key -> statuses exposed
        self._ip_series: dict[Key, set[str]] = {}
        self._ip_users: dict[Key, set[int]] = {}  # exposed IP -> hashes of users (capped)

        self.folded = CounterVec(
            names.LABEL_TRACKER_FOLDED,
            'Observations folded into the "other" series.',
            ["dimension"],
        )
        self.evictions = CounterVec(
            names.LABEL_TRACKER_EVICTIONS,
            "Per-key series removed (demoted by a bigger offender, expired, or withdrawn "
            "because the name was a scanner's guess).",
            ["dimension", "reason"],
        )
        self.tracked = GaugeVec(
            names.LABEL_TRACKER_TRACKED,
            "Keys in the bounded top-N table (exposed and candidates).",
            ["dimension"],
        )
        self.exposed = GaugeVec(
            names.LABEL_TRACKER_EXPOSED, "Keys that have their own series.", ["dimension"]
        )
        self.limit = GaugeVec(
            names.LABEL_TRACKER_LIMIT, "Maximum keys with their own series.", ["dimension"]
        )
        self.scanner_sources = GaugeVec(
            names.SCANNER_SOURCES,
            "Source IPs currently classified as scanners (their attempts are counted per IP "
            "only), by the evidence: a scanner User-Agent, or many usernames rejected.",
            ["evidence"],
        )
        for dim, tracker in (("user", self.users), ("ip", self.ips)):
            self.tracked.set_function((dim,), _size_of(tracker))
            self.exposed.set_function((dim,), _exposed_of(tracker))
            self.limit.set((dim,), top_n)
            self.folded.touch((dim,))
            for reason in EVICTION_REASONS:
                self.evictions.touch((dim, reason))

    # ------------------------------------------------------------------ hooks
    def watch_scanners(self, scanners: ScannerClassifier) -> None:
        """Account attack traffic per source IP only, and drop the per-user series of
        usernames a source tried before it was recognised as a scanner."""
        self._scanners = scanners
        scanners.on_detect(self._retract_scanner)
        for evidence in SCANNER_EVIDENCE:
            self.scanner_sources.set_function((evidence,), _scanners_by(scanners, evidence))

    def observe_attempt(self, att: RegisterAttempt) -> None:
        side = att.side.value
        user_key = (side, user_label(att.to_user, att.to_host))
        if att.outcome is AttemptOutcome.SUCCESS:
            if self.users.is_exposed(user_key):
                self.user_failing.set(user_key, 0)
            return
        status = attempt_status(att)
        scanners = self._scanners
        if scanners is None or not scanners.is_scanner(att.peer_ip, att.user_agent):
            self._count_user_failure(user_key, status)
        self._count_ip_failure((side, ip_label(att.peer_ip)), user_key[1], status)

    def expire(self) -> None:
        """Drop per-user/per-IP series not seen for ``series_ttl`` seconds."""
        self.users.expire()
        self.ips.expire()

    # ------------------------------------------------------------------ collector
    def _families(self) -> tuple[CounterVec | GaugeVec, ...]:
        return (
            self.user_failures,
            self.user_failing,
            self.ip_failures,
            self.ip_distinct,
            self.scanner_sources,
            self.tracked,
            self.exposed,
            self.limit,
            self.folded,
            self.evictions,
        )

    # ------------------------------------------------------------------ internals
    def _retract_scanner(self, state: ScannerState, aors: list[tuple[str, str]]) -> None:
        for user, domain in aors:
            key = (Side.INBOUND.value, user_label(user, domain))
            if self.users.remove(key):
                self._evict_user(key, EVICT_SCANNER)

    def _count_user_failure(self, key: Key, status: str) -> None:
        side, user = key
        if self.users.observe(key):
            self.user_failures.inc((side, user, status))
            self._user_series.setdefault(key, set()).add(status)
            self.user_failing.set(key, 1)
        else:
            self.user_failures.inc((side, OTHER, status))
            self.folded.inc(("user",))

    def _count_ip_failure(self, key: Key, user: str, status: str) -> None:
        side, ip = key
        if self.ips.observe(key):
            self.ip_failures.inc((side, ip, status))
            self._ip_series.setdefault(key, set()).add(status)
            users = self._ip_users.setdefault(key, set())
            if len(users) < DISTINCT_USERS_CAP:
                users.add(hash(user))
            self.ip_distinct.set(key, len(users))
        else:
            self.ip_failures.inc((side, OTHER, status))
            self.folded.inc(("ip",))

    def _evict_user(self, key: Key, reason: str) -> None:
        side, user = key
        for status in self._user_series.pop(key, ()):
            self.user_failures.remove((side, user, status))
        self.user_failing.remove(key)
        self.evictions.inc(("user", reason))

    def _evict_ip(self, key: Key, reason: str) -> None:
        side, ip = key
        for status in self._ip_series.pop(key, ()):
            self.ip_failures.remove((side, ip, status))
        if self._ip_users.pop(key, None) is not None:
            self.ip_distinct.remove(key)
        self.evictions.inc(("ip", reason))


def _size_of(tracker: TopNTracker[Key]) -> Callable[[], float]:
    return lambda: float(len(tracker))


def _exposed_of(tracker: TopNTracker[Key]) -> Callable[[], float]:
    return lambda: float(tracker.exposed_count)


def _scanners_by(scanners: ScannerClassifier, evidence: str) -> Callable[[], float]:
    def count() -> float:
        return float(sum(s.reason.split(":", 1)[0] == evidence for s in scanners.scanners()))

    return count
