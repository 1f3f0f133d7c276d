"""Is what sipwatch depends on there?  The jambonz database, Redis and the log sources.

Losing one is silent otherwise: diagnosis quietly degrades to "unknown" lines, ``/readyz``
keeps saying ready and nobody is told.  ``DependencyHealth`` keeps one up/down state per
dependency and says each change **once**: one log line, one call to each listener (the
daemon's alert sink turns it into a system alert and, when it is back, an "ended" message),
and the state ``/readyz`` reads (``readiness()`` / ``details()``).

It learns from three places:

* **probes** (``add_probe``): a cheap real query per dependency, run every
  ``probe_interval`` seconds while it is up and every ``down_interval`` seconds while it is
  down - so a dependency that goes away while no REGISTER fails is still noticed, and one
  that comes back is noticed without waiting for the next failure;
* **diagnosis errors** (``suspect``): the diagnosis engine reports failed checks by kind
  (``db_unavailable``, ``missing_table``, ``timeout``, ``redis_unavailable``); a report
  triggers an immediate probe of that dependency, which confirms or clears it, so one slow
  query does not flap the state;
* **direct reports** (``report``): a log source that stops or comes back, with an optional
  grace period (a container restart should not page anyone).

A probe raises to say "down"; a ``ProbeFailed`` carries a reason fit to show (the probes
build it from password-free error text), any other exception is shown by its type only.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from sipwatch.diagnosis.error_kinds import DATABASE_ERRORS, DiagnosisErrorKind
from sipwatch.waits import honour_cancellation, wait_event

log = structlog.get_logger("sipwatch.daemon.dependencies")

#: Which dependency a diagnosis error kind (``observe_diagnosis_error``) is about.
DEPENDENCY_OF_ERROR: dict[str, str] = {
    **dict.fromkeys(DATABASE_ERRORS, "database"),
    DiagnosisErrorKind.REDIS_UNAVAILABLE: "redis",
}

PROBE_INTERVAL = 30.0
DOWN_INTERVAL = 5.0
PROBE_TIMEOUT = 5.0
REASON_MAX = 300


@dataclass(frozen=True, slots=True)
class Dependency:
    """What a dependency is for, and the system alert its loss raises."""

    cause_id: str
    severity: str
    impact: str
    fix: tuple[str, ...]


DATABASE = Dependency(
    cause_id="database_unreachable",
    severity="error",
    impact="sipwatch cannot read the jambonz database: failures are diagnosed from the logs "
    "only, and remediation is off.",
    fix=(
        "Check that MySQL/MariaDB is running and reachable from sipwatch ([database] url or "
        "SIPWATCH_DB_URL), and that the jambonz tables exist in that database.",
        "Check the database user's grants (SELECT on the jambonz tables).",
    ),
)
REDIS = Dependency(
    cause_id="redis_unreachable",
    severity="error",
    impact="sipwatch cannot read jambonz's registrations in Redis: cached-registration "
    "causes cannot be checked.",
    fix=(
        "Check that Redis is running and reachable from sipwatch ([redis] url or "
        "SIPWATCH_REDIS_URL).",
    ),
)
SOURCE = Dependency(
    cause_id="source_down",
    severity="critical",
    impact="sipwatch does not receive this log: registrations through it are not counted, "
    "diagnosed or alerted.",
    fix=(
        "Check that the container or file still exists and that sipwatch may read it "
        "(docker ps; ls -l; journalctl -u sipwatch).",
    ),
)


def dependency(name: str) -> Dependency:
    """The description of ``name`` ("database", "redis", "source:<name>")."""
    if name == "database":
        return DATABASE
    if name == "redis":
        return REDIS
    return SOURCE


class ProbeFailed(Exception):
    """A probe's "down", with a reason that is safe to log and to alert (no secrets)."""


@dataclass(frozen=True, slots=True)
class DependencyChange:
    """One change of state: ``up`` after being down, or down (``reason``) after being up
    or unknown.  ``since`` is the wall time it began; ``down_seconds`` how long it was
    down (when it is back)."""

    name: str
    up: bool
    reason: str
    since: float
    down_seconds: float = 0.0


@dataclass(slots=True)
class _State:
    up: bool | None = None  # None: not known yet
    reason: str = ""
    since: float = 0.0  # wall time of the last change
    grace_until: float | None = None  # clock time a reported "down" becomes one
    grace_reason: str = ""


Listener = Callable[[DependencyChange], None]
Probe = Callable[[], Awaitable[Any]]


class DependencyHealth:
    """Up/down state of sipwatch's dependencies; see the module docstring.  One per
    daemon (it outlives configuration reloads); ``run()`` is its task."""

    def __init__(
        self,
        *,
        probe_interval: float = PROBE_INTERVAL,
        down_interval: float = DOWN_INTERVAL,
        probe_timeout: float = PROBE_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.probe_interval = probe_interval
        self.down_interval = down_interval
        self.probe_timeout = probe_timeout
        self._clock = clock
        self._wall = wall
        self._states: dict[str, _State] = {}
        self._probes: dict[str, Probe] = {}
        self._next_probe: dict[str, float] = {}
        self._listeners: list[Listener] = []
        self._wake = asyncio.Event()

    # ------------------------------------------------------------------ wiring
    def add_probe(self, name: str, probe: Probe) -> Callable[[], None]:
        """Probe ``name`` with ``probe`` (replacing an earlier one, e.g. after a reload);
        the first probe runs at once.  Returns a function that removes it again."""
        self._probes[name] = probe
        self._next_probe[name] = self._clock()
        self._wake.set()

        def remove() -> None:
            if self._probes.get(name) is probe:
                del self._probes[name]
                self._next_probe.pop(name, None)

        return remove

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(change)`` on every change from now on; returns the unsubscribe."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return unsubscribe

    # ------------------------------------------------------------------ input
    def suspect(self, kind: str) -> None:
        """A diagnosis check failed with error ``kind``: probe that dependency now (or, if
        it has no probe, take the report as the answer)."""
        name = DEPENDENCY_OF_ERROR.get(kind)
        if name is None:
            return
        if name in self._probes:
            self._next_probe[name] = self._clock()
            self._wake.set()
        else:
            self.report(name, False, kind)

    def report(self, name: str, up: bool, reason: str = "", *, grace: float = 0.0) -> None:
        """``name`` is up or down (``reason``).  A "down" with ``grace`` counts only if it
        is not reported up again within that many seconds."""
        state = self._states.setdefault(name, _State())
        if up:
            state.grace_until = None
            self._set(name, True, "")
        elif grace > 0 and state.up is not False:
            if state.grace_until is None:
                state.grace_until = self._clock() + grace
                self._wake.set()
            state.grace_reason = reason
        else:
            state.grace_until = None
            self._set(name, False, reason)

    # ------------------------------------------------------------------ queries
    def readiness(self, *, sources: bool = True) -> dict[str, bool]:
        """Known dependencies and whether they are up, as ``/readyz`` lists its sources
        (``sources=False``: without the ``source:`` entries, which it lists already)."""
        return {
            n: bool(s.up)
            for n, s in sorted(self._states.items())
            if s.up is not None and (sources or not n.startswith("source:"))
        }

    def details(self) -> dict[str, dict[str, Any]]:
        """Per known dependency: up, since (ISO time, UTC) and the reason it is down."""
        from datetime import UTC, datetime

        out: dict[str, dict[str, Any]] = {}
        for name, s in sorted(self._states.items()):
            if s.up is None:
                continue
            entry: dict[str, Any] = {
                "up": s.up,
                "since": datetime.fromtimestamp(s.since, UTC).isoformat(timespec="seconds"),
            }
            if not s.up:
                entry["reason"] = s.reason
            out[name] = entry
        return out

    def is_up(self, name: str) -> bool | None:
        state = self._states.get(name)
        return None if state is None else state.up

    # ------------------------------------------------------------------ running
    async def run(self) -> None:
        """Probe on schedule and confirm graced reports, until cancelled."""
        while True:
            self._wake.clear()
            await self.check()
            wake_at = list(self._next_probe.values())
            wake_at += [s.grace_until for s in self._states.values() if s.grace_until is not None]
            delay = None if not wake_at else max(0.05, min(wake_at) - self._clock())
            await wait_event(self._wake, delay)

    async def check(self) -> None:
        """Run the probes that are due and confirm reports whose grace is over (once)."""
        now = self._clock()
        for name, state in list(self._states.items()):
            if state.grace_until is not None and now >= state.grace_until:
                state.grace_until = None
                self._set(name, False, state.grace_reason)
        for name in [n for n, at in self._next_probe.items() if at <= now]:
            probe = self._probes.get(name)
            if probe is not None:
                await self._probe(name, probe)

    async def _probe(self, name: str, probe: Probe) -> None:
        reason = ""
        try:
            async with asyncio.timeout(self.probe_timeout):
                await probe()
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            reason = f"no answer within {self.probe_timeout:g} s"
        except ProbeFailed as exc:
            reason = str(exc)[:REASON_MAX] or "probe failed"
        except Exception as exc:  # a secret could sit in the text: name the type only
            reason = type(exc).__name__
        honour_cancellation()  # the database and Redis clients swallow a cancel on close
        if self._probes.get(name) is not probe:
            return  # removed (reloaded) meanwhile: its answer is about a closed handle
        up = not reason
        self._set(name, up, reason)
        interval = self.probe_interval if up else self.down_interval
        self._next_probe[name] = self._clock() + interval

    def _set(self, name: str, up: bool, reason: str) -> None:
        state = self._states.setdefault(name, _State())
        if state.up is up:
            if not up:
                state.reason = reason or state.reason
            return
        previous, since = state.up, state.since
        now = self._wall()
        state.up, state.reason, state.since = up, ("" if up else reason), now
        if up and previous is None:
            log.info("dependency reachable", dependency=name)
            return
        if up:
            down = max(0.0, now - since)
            log.info("dependency is back", dependency=name, down_seconds=round(down, 1))
            change = DependencyChange(name, True, "", since, down)
        else:
            log.error("dependency unreachable", dependency=name, reason=reason)
            change = DependencyChange(name, False, reason, now)
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception as exc:  # a listener's bug must not stop the others
                log.error("dependency listener failed", error_type=type(exc).__name__)
