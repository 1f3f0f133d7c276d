"""Bounded top-N label tracking for per-user and per-IP metric series.

Usernames and source IPs come from the internet: a scanner can try 100,000 usernames in a few
minutes.  Prometheus guidance is to never use such values as labels, yet "which user / which IP
keeps failing" is the first question an operator asks.  The compromise (query-exporter's
``MetricsLastSeen``, Promtail's idle expiry, heavy-hitter sketches) is:

* only the ``top_n`` worst offenders get their own series; every other observation is folded
  into a single ``other`` bucket, so the exposed series count never exceeds ``top_n`` (+1);
* who the offenders are is decided by a Space-Saving heavy-hitter table of fixed size
  (``capacity`` candidates), so memory is bounded whatever the number of distinct keys;
* counts age: every ``half_life`` seconds all of them are halved (TinyLFU's "reset", Einziger
  et al. 2017), so the ranking is by *recent* failures and an early arrival's head start
  fades - a one-shot key exposed first does not keep its slot against keys failing now;
* series whose key has not been seen for ``ttl`` seconds are dropped, so a fixed problem
  disappears from the exposition instead of lingering forever.

Space-Saving (Metwally, Agrawal, El Abbadi 2005): when the candidate table is full, a new key
replaces the candidate with the smallest count and inherits that count as its ``error``.  Any
key whose true frequency exceeds ``total / capacity`` is guaranteed to be in the table.

Exposure is by rank, not by arrival: while a slot is free a key is exposed at once (so a
single failure is visible), and afterwards a key takes the slot of the weakest exposed key
when its *guaranteed* count (``count - error``) beats that key's by a margin
(``_HYSTERESIS``, against flapping between two keys failing at the same rate).  So whenever
the keys ranked top-N by (aged) count are clearly ahead of the others - by more than the
margin - the exposed set is exactly those keys whatever the order the observations came in
(tests/test_cardinality.py checks random and adversarial orders of such streams).  A spray
of one-shot keys inherits Space-Saving errors, so its guaranteed counts stay at one: it can
take the slot only of an exposed key that did not fail at all in the last ``half_life``
(whose aged count is zero), at most once per slot and period, and it never displaces a key
failing now.

The tracker only decides; the caller owns the metric series and is told through callbacks
(``on_evict``) so it can remove them.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

OTHER = "other"
"""Label value that receives every observation of a key that is not exposed."""

K = TypeVar("K", bound=Hashable)

EVICT_DEMOTED = "demoted"
EVICT_EXPIRED = "expired"

# A candidate must beat the weakest exposed key by this fraction (and by at least one) before
# it takes its place, so two keys failing at the same rate do not swap on every observation.
_HYSTERESIS = 0.25


@dataclass(slots=True)
class _Entry:
    count: int
    error: int  # Space-Saving overestimate inherited from the key this entry replaced
    last_seen: float
    exposed: bool = False

    @property
    def guaranteed(self) -> int:
        return self.count - self.error


class TopNTracker(Generic[K]):
    """Decide which keys get their own metric series; fold the rest into ``other``.

    Memory: at most ``top_n + capacity + 1`` entries, each holding the caller's key (which the
    caller must keep bounded in size, e.g. truncated strings).
    """

    def __init__(
        self,
        *,
        top_n: int,
        capacity: int | None = None,
        ttl: float = 900.0,
        half_life: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_evict: Callable[[K, str], None] | None = None,
    ) -> None:
        if top_n < 0:
            raise ValueError("top_n must be >= 0")
        if ttl <= 0:
            raise ValueError("ttl must be > 0")
        self.top_n = top_n
        # Enough candidates that a real offender failing steadily beats background noise.
        self.capacity = max(1, capacity if capacity is not None else max(8 * top_n, 128))
        self.ttl = ttl
        # A third of the TTL: a key idle for a TTL has lost seven eighths of its weight.
        self.half_life = half_life if half_life is not None else ttl / 3.0
        if self.half_life <= 0:
            raise ValueError("half_life must be > 0")
        self._clock = clock
        self._on_evict = on_evict
        # All entries (exposed + candidates) in last-seen order: oldest first, for expiry.
        self._entries: OrderedDict[K, _Entry] = OrderedDict()
        self._exposed: set[K] = set()
        # Candidates grouped by count (each group in insertion order) to find the
        # Space-Saving victim without scanning every entry.
        self._buckets: dict[int, dict[K, None]] = {}
        # Cached weakest exposed entry; None means "recompute".
        self._floor: tuple[int, K] | None = None
        now = clock()
        self._expire_every = min(ttl / 8.0, self.half_life, 60.0)
        self._next_expire = now + self._expire_every
        self._aged_at = now
        self.folded = 0  # observations that went to ``other``
        self.evicted = {EVICT_DEMOTED: 0, EVICT_EXPIRED: 0}  # exposed keys that lost their series

    # ------------------------------------------------------------------ queries
    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    @property
    def exposed(self) -> frozenset[K]:
        return frozenset(self._exposed)

    @property
    def exposed_count(self) -> int:
        return len(self._exposed)

    def is_exposed(self, key: K) -> bool:
        return key in self._exposed

    def count(self, key: K) -> int | None:
        """Guaranteed (lower-bound) aged observation count of a tracked key, else None."""
        entry = self._entries.get(key)
        return None if entry is None else entry.guaranteed

    # ----------------------------------------------------------------- updates
    def observe(self, key: K, amount: int = 1) -> bool:
        """Record ``amount`` observations of ``key``.

        Returns True when the caller should use the key's own label value, False when it
        should fold the observation into ``other``.
        """
        now = self._clock()
        if now >= self._next_expire:
            self.expire()
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            entry.last_seen = now
            if entry.exposed:
                entry.count += amount
                if self._floor is not None and self._floor[1] == key:
                    self._floor = None  # the weakest one grew; recompute lazily
                return True
            self._bucket_remove(key, entry.count)
            entry.count += amount
            self._bucket_add(key, entry.count)
        else:
            entry = self._admit(key, amount, now)
        if self._try_promote(key, entry):
            return True
        self.folded += amount
        return False

    def remove(self, key: K) -> bool:
        """Forget ``key`` (it was attack traffic after all); True if it had its own series.
        The caller removes that series itself: ``on_evict`` is not called."""
        entry = self._entries.pop(key, None)
        if entry is None:
            return False
        if entry.exposed:
            self._exposed.discard(key)
            self._floor = None
            return True
        self._bucket_remove(key, entry.count)
        return False

    def expire(self) -> int:
        """Age the counts when a half-life has passed and drop entries not seen for ``ttl``
        seconds; returns how many exposed keys went."""
        now = self._clock()
        self._next_expire = now + self._expire_every
        self._age(now)
        cutoff = now - self.ttl
        removed = 0
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if entry.last_seen > cutoff:
                break
            del self._entries[key]
            if entry.exposed:
                self._exposed.discard(key)
                self._floor = None
                self.evicted[EVICT_EXPIRED] += 1
                removed += 1
                self._notify(key, EVICT_EXPIRED)
            else:
                self._bucket_remove(key, entry.count)
        return removed

    # ---------------------------------------------------------------- internals
    def _age(self, now: float) -> None:
        """Halve every count once per elapsed half-life; forget candidates that reach 0.

        Exposed keys keep their series at count 0: they stay until a key failing now takes
        the slot (any guaranteed count beats 0) or until they expire."""
        periods = int((now - self._aged_at) // self.half_life)
        if periods <= 0:
            return
        self._aged_at += periods * self.half_life
        shift = min(periods, 62)
        buckets: dict[int, dict[K, None]] = {}
        for key, entry in list(self._entries.items()):  # oldest first: victims in that order
            entry.count >>= shift
            entry.error >>= shift
            if entry.exposed:
                continue
            if entry.count == 0:
                del self._entries[key]
            else:
                buckets.setdefault(entry.count, {})[key] = None
        self._buckets = buckets
        self._floor = None

    def _admit(self, key: K, amount: int, now: float) -> _Entry:
        """Insert a new candidate, replacing the smallest one when the table is full."""
        error = 0
        if len(self._entries) - len(self._exposed) >= self.capacity and self._buckets:
            low = min(self._buckets)
            bucket = self._buckets[low]
            victim = next(iter(bucket))
            self._bucket_remove(victim, low)
            del self._entries[victim]
            error = low
        entry = _Entry(count=error + amount, error=error, last_seen=now)
        self._entries[key] = entry
        self._bucket_add(key, entry.count)
        return entry

    def _try_promote(self, key: K, entry: _Entry) -> bool:
        if self.top_n == 0:
            return False
        if len(self._exposed) < self.top_n:
            self._expose(key, entry)
            return True
        floor_count, floor_key = self._weakest()
        if entry.guaranteed <= max(floor_count, floor_count * (1.0 + _HYSTERESIS)):
            return False
        floor_entry = self._entries[floor_key]
        floor_entry.exposed = False
        self._exposed.discard(floor_key)
        if floor_entry.count > 0:  # back among the candidates
            self._bucket_add(floor_key, floor_entry.count)
        else:  # aged to nothing: forgotten, as candidates at 0 are
            del self._entries[floor_key]
        self._expose(key, entry)
        self.evicted[EVICT_DEMOTED] += 1
        self._notify(floor_key, EVICT_DEMOTED)
        return True

    def _expose(self, key: K, entry: _Entry) -> None:
        self._bucket_remove(key, entry.count)
        entry.exposed = True
        self._exposed.add(key)
        self._floor = None

    def _weakest(self) -> tuple[int, K]:
        """The exposed key with the smallest guaranteed count (ties: the least recently
        seen, so the choice never depends on set order)."""
        if self._floor is None:
            best: tuple[int, K] | None = None
            for k, e in self._entries.items():  # oldest first
                if e.exposed and (best is None or e.guaranteed < best[0]):
                    best = (e.guaranteed, k)
            assert best is not None  # only called with a full exposed set
            self._floor = best
        return self._floor

    def _bucket_add(self, key: K, count: int) -> None:
        self._buckets.setdefault(count, {})[key] = None

    def _bucket_remove(self, key: K, count: int) -> None:
        bucket = self._buckets.get(count)
        if bucket is None:
            return
        bucket.pop(key, None)
        if not bucket:
            del self._buckets[count]

    def _notify(self, key: K, reason: str) -> None:
        if self._on_evict is not None:
            self._on_evict(key, reason)
