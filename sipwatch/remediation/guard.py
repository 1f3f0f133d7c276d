"""Remediation policy: may this action touch this user now?

The daemon acts on what it reads in logs, and log content comes from the internet.  So
before any lookup or change, every candidate passes the same gate, cheapest check first:

1. the action's mode (``remediation.mode`` capped per action) is not "off";
2. the diagnosis is not an attack (the ``scanner`` cause): nothing is ever changed for a
   scanner's guesses, whatever the allow-lists say;
3. the kill-switch file does not exist;
4. every name the change involves is covered by the allow-lists (``allow_users`` /
   ``allow_realms``), unless an operator named that exact user on the command line;
5. the user's cool-down has passed;
6. the per-action and the global hourly budgets are not used up.

Budgets and cool-downs count what was *attempted* (applied or failed), so a change that keeps
failing cannot be retried in a loop.  Dry-run keeps its own ledger: its log shows what "on"
would do, including where "on" would stop.  Time comes from an injectable monotonic clock,
and every structure is bounded whatever the traffic.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from sipwatch.config import RemediationConfig

HOUR = 3600.0
MAX_COOLDOWN_KEYS = 10_000

# Refusal reasons: stable ids for logs, the audit trail and tests.
OK = "ok"
MODE_OFF = "mode_off"
ATTACK = "attack"
KILL_SWITCH = "kill_switch"
NOT_ALLOWED = "not_allowed"
COOLDOWN = "cooldown"
ACTION_RATE = "action_rate_limit"
GLOBAL_RATE = "global_rate_limit"


@dataclass(frozen=True)
class Verdict:
    """The gate's answer; ``mode`` is the effective mode the change would run in."""

    allowed: bool
    mode: str
    reason: str
    detail: str

    @classmethod
    def ok(cls, mode: str) -> Verdict:
        return cls(True, mode, OK, "allowed by policy")


class Guard:
    """The remediation policy of one sipwatch instance (see the module docstring)."""

    def __init__(
        self,
        config: RemediationConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_cooldown_keys: int = MAX_COOLDOWN_KEYS,
    ) -> None:
        self.config = config
        self._clock = clock
        self._max_keys = max_cooldown_keys
        # (mode, action) -> attempt times within the last hour; at most the budget long.
        self._per_action: dict[tuple[str, str], deque[float]] = {}
        self._global: dict[str, deque[float]] = {}
        # (mode, key) -> time of the last attempt, oldest first.
        self._cooldown: OrderedDict[tuple[str, str], float] = OrderedDict()

    # ------------------------------------------------------------------ checks

    def kill_switch_active(self) -> bool:
        try:
            return Path(self.config.kill_switch_file).exists()
        except OSError:
            return True  # cannot tell: fail closed

    def mode_for(self, action: str) -> str:
        return self.config.mode_for(action)

    def check(
        self,
        action: str,
        *,
        names: Iterable[tuple[str, str]],
        cooldown_key: str,
        attack: bool,
        explicit_users: Iterable[str] = (),
        mode: str | None = None,
    ) -> Verdict:
        """Whether ``action`` may run now.

        ``names`` are the (user, realm) pairs the change involves; each must be allow-listed
        unless its user is in ``explicit_users`` (names an operator typed on the command
        line).  ``mode`` overrides the configured mode (the fix command, where the operator
        decides).
        """
        effective = self.mode_for(action) if mode is None else mode
        if effective == "off":
            return Verdict(False, effective, MODE_OFF, f"remediation of {action} is off")
        if attack:
            return Verdict(
                False,
                effective,
                ATTACK,
                "the failure was classified as a scanner/attack; sipwatch never changes "
                "anything for it",
            )
        if self.kill_switch_active():
            return Verdict(
                False,
                effective,
                KILL_SWITCH,
                f"kill switch {self.config.kill_switch_file} exists",
            )
        explicit = set(explicit_users)
        for user, realm in names:
            if user in explicit:
                continue
            if not self.config.allows(user, realm):
                return Verdict(
                    False,
                    effective,
                    NOT_ALLOWED,
                    "the user is not covered by remediation.allow_users / allow_realms",
                )
        now = self._clock()
        self._expire(now)
        last = self._cooldown.get((effective, cooldown_key))
        cooldown = self.config.user_cooldown_seconds
        if last is not None and now - last < cooldown:
            return Verdict(
                False,
                effective,
                COOLDOWN,
                f"changed {now - last:.0f}s ago; cool-down is {cooldown:g}s",
            )
        per_action = self._per_action.get((effective, action), deque())
        if len(per_action) >= self.config.max_changes_per_action_per_hour:
            return Verdict(
                False,
                effective,
                ACTION_RATE,
                f"{action} ran {len(per_action)} times in the last hour "
                f"(max_changes_per_action_per_hour = "
                f"{self.config.max_changes_per_action_per_hour})",
            )
        overall = self._global.get(effective, deque())
        if len(overall) >= self.config.max_changes_per_hour:
            return Verdict(
                False,
                effective,
                GLOBAL_RATE,
                f"{len(overall)} changes in the last hour "
                f"(max_changes_per_hour = {self.config.max_changes_per_hour})",
            )
        return Verdict.ok(effective)

    # ------------------------------------------------------------------ bookkeeping

    def record(self, action: str, cooldown_key: str, mode: str) -> None:
        """Count an attempt (applied or failed, or a dry-run that found work to do)."""
        now = self._clock()
        self._per_action.setdefault((mode, action), deque()).append(now)
        self._global.setdefault(mode, deque()).append(now)
        key = (mode, cooldown_key)
        self._cooldown.pop(key, None)
        self._cooldown[key] = now
        while len(self._cooldown) > self._max_keys:
            self._cooldown.popitem(last=False)

    def _expire(self, now: float) -> None:
        for window in (*self._per_action.values(), *self._global.values()):
            while window and now - window[0] >= HOUR:
                window.popleft()
        cooldown = self.config.user_cooldown_seconds
        while self._cooldown:
            key, at = next(iter(self._cooldown.items()))
            if now - at < cooldown:
                break
            del self._cooldown[key]

    def usage(self, mode: str = "on") -> dict[str, int]:
        """Attempts in the last hour per action (for status output and tests)."""
        self._expire(self._clock())
        return {a: len(w) for (m, a), w in self._per_action.items() if m == mode and w}
