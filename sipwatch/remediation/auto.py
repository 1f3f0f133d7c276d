"""Automatic remediation in the daemon: off by default, dry-run or on per action.

The daemon calls :meth:`AutoRemediator.consider` after each diagnosis.  The order of work
is chosen so that hostile traffic costs nothing and changes nothing:

1. pick the most likely cause that names a remediation action (none: nothing to do);
2. the policy gate (:mod:`sipwatch.remediation.guard`) - mode, attack, kill switch,
   allow-lists, cool-down, hourly budgets - runs before any database or Redis access;
3. in "on" mode this instance must hold the cluster leader lock, confirmed on the server
   right before the change (:mod:`sipwatch.remediation.leader`);
4. the action plans from the live state; "nothing to do" and "blocked" end here;
5. dry-run records what would be done; on applies it in a transaction and verifies it.

Every outcome except "mode off" and "no remediation" is audited (JSON line, optional table)
and counted with ``metrics.observe_remediation(action, result)``, result one of applied,
dry_run, refused, failed.  An applied change is "verified" a second time when the daemon
later sees a 200 OK for the same user (:meth:`AutoRemediator.on_registered`).

Safety refusals need a person: the daemon never encrypts with a secret the database did not
prove (:mod:`sipwatch.diagnosis.secret_proof`; no ``--trust-secret`` here), never re-activates
an account deactivated with a reason, and never picks the account that gets a realm.  Those
plans come back REFUSED and are audited as such.

Passwords: ``create_client`` in "on" mode generates the password and writes it to a 0600
file in ``password_dir`` for the operator to put into the device; without a
``password_dir`` the action is refused (a client nobody knows the password of fixes
nothing).  The password never reaches a log line, the audit trail, an alert or a metric.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import redis.asyncio as aioredis
import structlog

from sipwatch.config import Config, RemediationConfig, Secret
from sipwatch.diagnosis.db import DbError, DbSettings
from sipwatch.diagnosis.engine import Cause, Diagnosis
from sipwatch.remediation import audit as au
from sipwatch.remediation.actions import (
    ACTIONS,
    BackendMissing,
    Backends,
    Change,
    PlanState,
    RemediationError,
    Target,
    generate_password,
    get_action,
)
from sipwatch.remediation.audit import AuditRecord, AuditTrail
from sipwatch.remediation.guard import Guard
from sipwatch.remediation.leader import LeaderLock
from sipwatch.remediation.registrar import RegistrarTarget
from sipwatch.remediation.writer import DbWriter

log = structlog.get_logger("sipwatch.remediation.auto")

Result = Literal["applied", "dry_run", "refused", "failed", "noop", "skipped"]
NOT_LEADER = "not_leader"
MAX_PENDING_VERIFICATIONS = 1000
VERIFY_WINDOW = 3600.0
_SAFE_FILE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-@~")


class RemediationMetrics(Protocol):
    def observe_remediation(self, action: str, result: str) -> None: ...


@dataclass(frozen=True)
class Decision:
    """What the remediator did with one diagnosis."""

    action: str | None
    result: Result
    reason: str  # a stable id: ok, mode_off, attack, not_allowed, ..., no_remediation
    detail: str = ""
    cause: str | None = None
    change: Change | None = None
    verified: bool = False


def remediable_cause(diagnosis: Diagnosis) -> Cause | None:
    """The most likely cause that names an action (causes come sorted, most likely first)."""
    for cause in diagnosis.causes:
        if cause.remediation:
            return cause
    return None


def _target_for(
    cause: Cause, user: str, domain: str, since: float, source_ip: str | None
) -> Target:
    username = cause.evidence.get("lookup_username")
    return Target(
        user=user,
        domain=domain,
        username=str(username) if isinstance(username, str) and username else None,
        since=since,
        source_ip=source_ip,
    )


def _names(action: str, t: Target) -> list[tuple[str, str]]:
    """Every (user, realm) the change involves; all must be allow-listed."""
    names = [(t.user, t.domain)]
    if action != "restart_registrar" and t.client_username != t.user:
        names.append((t.client_username, t.domain))
    return names


def _cooldown_key(action: str, t: Target) -> str:
    if action == "restart_registrar":
        return "registrar"  # one registrar for everyone: its cool-down is not per user
    return f"{t.user}@{t.domain.lower()}"


class AutoRemediator:
    """Decides and applies remediation for the daemon (see the module docstring).

    ``db`` is the jambonz database (the account needs write grants for "on"); ``redis`` a
    ``redis.asyncio`` client or URL for ``flush_cached_registration``; ``docker`` where the
    registrar container runs; ``secret`` the jambonz ENCRYPTION_SECRET.  Any may be None: the
    actions that need it are then refused as not configured.
    """

    def __init__(
        self,
        config: RemediationConfig,
        *,
        db: DbSettings | None,
        redis: aioredis.Redis | str | None = None,
        docker: RegistrarTarget | None = None,
        secret: Secret | str | None = None,
        metrics: RemediationMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        legacy_crypto: bool = False,
        password_dir: Path | None = None,
        instance: str | None = None,
        leader_check_interval: float = 5.0,
        leader_retry_interval: float = 10.0,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self._clock = clock
        self._wall = wall_clock
        self._password_dir = password_dir
        self.guard = Guard(config, clock=clock)
        writer_settings = None
        if db is not None:
            from dataclasses import replace

            writer_settings = replace(db, readonly=False)
        self._writer = DbWriter(writer_settings) if writer_settings is not None else None
        self._own_redis = isinstance(redis, str)
        client: aioredis.Redis | None
        if isinstance(redis, str):
            client = aioredis.from_url(redis, socket_timeout=5.0, socket_connect_timeout=5.0)
        else:
            client = redis
        self._secret = Secret(secret) if isinstance(secret, str) else secret
        self.backends = Backends(
            db=self._writer,
            redis=client,
            docker=docker,
            secret=self._secret,
            legacy_crypto=legacy_crypto,
        )
        self._db_password = db.password if db is not None else ""
        self.audit = AuditTrail(
            writer=self._writer,
            table=config.audit_table,
            instance=instance,
            secrets=self._known_secrets,
            clock=clock,
        )
        self.actor = f"sipwatch-auto@{self.audit.instance}"
        self.leader: LeaderLock | None = (
            LeaderLock(
                writer_settings,
                config.leader_lock_name,
                check_interval=leader_check_interval,
                retry_interval=leader_retry_interval,
            )
            if writer_settings is not None
            else None
        )
        self._lock = asyncio.Lock()
        self._pending: OrderedDict[str, tuple[str, float, str | None]] = OrderedDict()

    @classmethod
    def from_config(
        cls,
        config: Config,
        *,
        metrics: RemediationMetrics | None = None,
        password_dir: Path | None = None,
        legacy_crypto: bool = False,
    ) -> AutoRemediator:
        """Build one from the daemon's whole configuration (database, Redis, Docker source
        and jambonz secret come from their own sections)."""
        db = None
        if config.database.url is not None:
            db = DbSettings.from_url(
                config.database.url.reveal(),
                readonly=False,
                connect_timeout=config.database.connect_timeout,
                read_timeout=config.database.read_timeout,
                query_timeout=config.database.read_timeout + 1.0,
            )
        docker = config.sources.docker
        return cls(
            config.remediation,
            db=db,
            redis=config.redis.url.reveal() if config.redis.url is not None else None,
            docker=RegistrarTarget(
                url=docker.url, project=docker.project, services=docker.registrar_services
            ),
            secret=config.jambonz.encryption_secret,
            metrics=metrics,
            legacy_crypto=legacy_crypto,
            password_dir=password_dir,
        )

    def _known_secrets(self) -> list[str]:
        out = [self._db_password] if self._db_password else []
        if self._secret is not None:
            out.append(self._secret.reveal())
        return out

    # ------------------------------------------------------------------ lifecycle

    @property
    def enabled(self) -> bool:
        return self.config.mode != "off"

    async def start(self) -> None:
        """Begin the leader campaign (only when "on" is possible) and prepare the audit table."""
        if not self.enabled:
            return
        if self.config.audit_table:
            await self.audit.ensure_table()
        if self.leader is not None and self.config.mode == "on":
            self.leader.start()

    async def close(self) -> None:
        if self.leader is not None:
            await self.leader.stop()
        if self._own_redis and self.backends.redis is not None:
            with contextlib.suppress(Exception):
                await self.backends.redis.aclose()

    async def __aenter__(self) -> AutoRemediator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ decisions

    def _observe(self, action: str, result: str) -> None:
        if self.metrics is not None and result in ("applied", "dry_run", "refused", "failed"):
            self.metrics.observe_remediation(action, result)

    async def _finish(
        self,
        decision: Decision,
        t: Target,
    ) -> Decision:
        if decision.action is not None:
            self._observe(decision.action, decision.result)
            await self.audit.record(
                AuditRecord(
                    action=decision.action,
                    result=decision.result,
                    actor=self.actor,
                    reason=decision.reason,
                    user=t.user,
                    realm=t.domain,
                    cause=decision.cause,
                    source_ip=t.source_ip,
                    change=decision.change,
                    detail=decision.detail,
                )
            )
        return decision

    async def consider(
        self, diagnosis: Diagnosis, *, user: str, domain: str, source_ip: str | None
    ) -> Decision:
        """Decide (and maybe apply) the remediation of one diagnosed failure.  Never raises
        for database, Redis or Docker trouble: that becomes a "failed" decision."""
        cause = remediable_cause(diagnosis)
        if diagnosis.attack:
            action = cause.remediation if cause is not None else None
            t = Target(user=user, domain=domain, source_ip=source_ip)
            if action is None or self.guard.mode_for(action) == "off":
                return Decision(action, "skipped", "attack", "attack; nothing to consider")
            return await self._finish(
                Decision(
                    action,
                    "refused",
                    "attack",
                    f"classified as a scanner (source {source_ip or 'unknown'}); never remediated",
                    cause="scanner",
                ),
                t,
            )
        if cause is None or cause.remediation is None:
            return Decision(None, "skipped", "no_remediation", "no cause with a remediation")
        action = cause.remediation
        if action not in ACTIONS:  # a rule file naming an action this version lacks
            return Decision(action, "skipped", "unknown_action", "no such action", cause.id)
        t = _target_for(cause, user, domain, self._wall(), source_ip)
        async with self._lock:
            return await self._consider(action, cause, t)

    async def _consider(self, action: str, cause: Cause, t: Target) -> Decision:
        key = _cooldown_key(action, t)
        verdict = self.guard.check(action, names=_names(action, t), cooldown_key=key, attack=False)
        if verdict.reason == "mode_off":
            return Decision(action, "skipped", verdict.reason, verdict.detail, cause.id)
        if not verdict.allowed:
            return await self._finish(
                Decision(action, "refused", verdict.reason, verdict.detail, cause.id), t
            )
        mode = verdict.mode
        if mode == "on" and action == "create_client" and self._password_dir is None:
            return await self._finish(
                Decision(
                    action,
                    "refused",
                    "no_password_delivery",
                    "create_client needs a password_dir to hand the generated password to the "
                    "operator; use sipwatch fix instead",
                    cause.id,
                ),
                t,
            )
        if mode == "on" and not await self._is_leader():
            return await self._finish(
                Decision(
                    action,
                    "refused",
                    NOT_LEADER,
                    "another sipwatch instance holds the remediation lock",
                    cause.id,
                ),
                t,
            )
        impl = get_action(action)
        try:
            change = await impl.plan(self.backends, t)
        except BackendMissing as exc:
            return await self._finish(
                Decision(action, "refused", "not_configured", str(exc), cause.id), t
            )
        except (RemediationError, DbError) as exc:
            return await self._finish(
                Decision(action, "failed", "plan_failed", str(exc), cause.id), t
            )
        if change.state is PlanState.NOOP:
            return Decision(action, "noop", "nothing_to_do", change.summary, cause.id, change)
        if change.state in (PlanState.BLOCKED, PlanState.REFUSED):
            # REFUSED is a safety check (unproven secret, deactivated on purpose, no named
            # account): the daemon has no way to consent, so it stops here for good.
            reason = change.reason or "blocked"
            return await self._finish(
                Decision(action, "refused", reason, change.summary, cause.id, change), t
            )
        if mode == "dry-run":
            self.guard.record(action, key, mode)
            return await self._finish(
                Decision(action, "dry_run", "ok", "dry-run: nothing was changed", cause.id, change),
                t,
            )
        return await self._apply(action, cause, t, key, change)

    async def _is_leader(self) -> bool:
        if self.leader is None:
            return False
        if not self.leader.is_leader:
            await self.leader.try_acquire()
        return await self.leader.confirm()

    async def _apply(
        self, action: str, cause: Cause, t: Target, key: str, planned: Change
    ) -> Decision:
        impl = get_action(action)
        self.guard.record(action, key, "on")
        password: Secret | None = None
        password_file: Path | None = None
        if impl.needs_password:
            password = generate_password()
            try:
                password_file = self._write_password(t, password)
            except OSError as exc:
                return await self._finish(
                    Decision(
                        action,
                        "failed",
                        "password_file",
                        f"cannot write the password file: {exc.strerror}",
                        cause.id,
                        planned,
                    ),
                    t,
                )
        try:
            outcome = await impl.apply(self.backends, t, password=password)
        except (RemediationError, DbError) as exc:
            if password_file is not None:
                with contextlib.suppress(OSError):
                    password_file.unlink()
            return await self._finish(
                Decision(action, "failed", "apply_failed", str(exc), cause.id, planned), t
            )
        if not outcome.applied:
            if password_file is not None:
                with contextlib.suppress(OSError):
                    password_file.unlink()
            if outcome.change.state is PlanState.NOOP:
                return Decision(
                    action, "noop", "nothing_to_do", outcome.detail, cause.id, outcome.change
                )
            reason = outcome.change.reason or "blocked"
            return await self._finish(
                Decision(action, "refused", reason, outcome.detail, cause.id, outcome.change),
                t,
            )
        if not outcome.verified:
            return await self._finish(
                Decision(
                    action,
                    "failed",
                    "not_verified",
                    outcome.detail,
                    cause.id,
                    outcome.change,
                ),
                t,
            )
        detail = outcome.detail
        if password_file is not None:
            detail += f"; the new password is in {password_file}"
        self._expect_registration(t, action, cause.id)
        return await self._finish(
            Decision(action, "applied", "ok", detail, cause.id, outcome.change, verified=True), t
        )

    def _write_password(self, t: Target, password: Secret) -> Path:
        assert self._password_dir is not None
        name = "".join(ch if ch in _SAFE_FILE_CHARS else "_" for ch in t.client_username)
        realm = "".join(ch if ch in _SAFE_FILE_CHARS else "_" for ch in t.domain.lower())
        path = self._password_dir / f"{name}@{realm}.password"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(password.reveal() + "\n")
        return path

    # ------------------------------------------------------------------ later 200 OK

    def _expect_registration(self, t: Target, action: str, cause: str | None) -> None:
        aor = f"{t.user}@{t.domain.lower()}"
        self._pending.pop(aor, None)
        self._pending[aor] = (action, self._clock(), cause)
        while len(self._pending) > MAX_PENDING_VERIFICATIONS:
            self._pending.popitem(last=False)

    async def on_registered(self, user: str, domain: str) -> Decision | None:
        """The daemon saw a 200 OK for ``user@domain``: confirm a change applied for it.

        Changes this instance applied are remembered in memory; changes applied by
        ``sipwatch fix`` (or another instance) are found in the audit table, when it is on.
        Call it when a user that was failing registers again (rare, so the table lookup is
        cheap).  Returns the "verified" decision it audited, or None when nothing was pending.
        """
        aor = f"{user}@{domain.lower()}"
        pending = self._pending.pop(aor, None)
        action: str
        cause: str | None
        if pending is not None:
            action, at, cause = pending
            age = self._clock() - at
            if age > VERIFY_WINDOW:
                return None
        else:
            found = await self.audit.unverified_change(
                user, domain, since=self._wall() - VERIFY_WINDOW
            )
            if found is None:
                return None
            action, cause, applied_at = found
            age = max(0.0, self._wall() - applied_at)
        decision = Decision(
            action,
            "applied",
            "registered",
            f"the device registered successfully {age:.0f}s after the change",
            cause,
            verified=True,
        )
        await self.audit.record(
            AuditRecord(
                action=action,
                result=au.VERIFIED,
                actor=self.actor,
                reason="registered",
                user=user,
                realm=domain,
                cause=cause,
                detail=decision.detail,
            )
        )
        return decision

    def pending_verifications(self) -> list[str]:
        return list(self._pending)

    def status(self) -> dict[str, Any]:
        return {
            "mode": self.config.mode,
            "leader": bool(self.leader and self.leader.is_leader),
            "kill_switch": self.guard.kill_switch_active(),
            "changes_last_hour": self.guard.usage("on"),
            "pending_verifications": len(self._pending),
        }
