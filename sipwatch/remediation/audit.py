"""The remediation audit trail: one JSON log line per decision, and optionally a table.

Every change sipwatch attempts, applies, only simulates (dry-run) or refuses is recorded with
who decided it (actor), why (cause and reason), what it targets, the state before and after
and the statements - all with secrets masked.  The log line is always written; the
``sipwatch_audit`` table in the jambonz database is opt-in (``remediation.audit_table``) and
created on first use, so an operator can query the history next to the data it changed.

A table write that fails (no CREATE/INSERT grant, database down) is logged and never stops
remediation or the log line.  Refusals are deduplicated per (action, user, reason) for a
while, so a scanner flood produces a handful of rows, not one per REGISTER.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from sipwatch.diagnosis.db import DbError
from sipwatch.remediation.actions import Change
from sipwatch.remediation.writer import DbWriter

log = structlog.get_logger("sipwatch.remediation.audit")

TABLE = "sipwatch_audit"
MASK = "****"
_MIN_SECRET = 4

CREATE_TABLE_SQL = (
    "CREATE TABLE IF NOT EXISTS sipwatch_audit ("
    " id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,"
    " created_at DATETIME(6) NOT NULL,"
    " instance VARCHAR(255) NOT NULL,"
    " actor VARCHAR(255) NOT NULL,"
    " action VARCHAR(64) NOT NULL,"
    " result VARCHAR(16) NOT NULL,"
    " cause VARCHAR(64) NULL,"
    " sip_user VARCHAR(255) NULL,"
    " realm VARCHAR(255) NULL,"
    " source_ip VARCHAR(64) NULL,"
    " target VARCHAR(512) NULL,"
    " reason VARCHAR(64) NOT NULL,"
    " detail VARCHAR(1024) NULL,"
    " before_state TEXT NULL,"
    " after_state TEXT NULL,"
    " statements TEXT NULL,"
    " PRIMARY KEY (id),"
    " INDEX sipwatch_audit_created_idx (created_at),"
    " INDEX sipwatch_audit_user_idx (sip_user, realm)"
    ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COMMENT='sipwatch remediation audit trail'"
)

INSERT_SQL = (
    "INSERT INTO sipwatch_audit (created_at, instance, actor, action, result, cause, sip_user,"
    " realm, source_ip, target, reason, detail, before_state, after_state, statements)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)

UNVERIFIED_SQL = (
    "SELECT a.action, a.cause, a.created_at FROM sipwatch_audit a"
    " WHERE a.sip_user = %s AND a.realm = %s AND a.result = 'applied' AND a.created_at >= %s"
    " AND NOT EXISTS (SELECT 1 FROM sipwatch_audit v WHERE v.sip_user = a.sip_user"
    " AND v.realm = a.realm AND v.result = 'verified' AND v.created_at >= a.created_at)"
    " ORDER BY a.id DESC LIMIT 1"
)

# Results recorded in the trail; the metric uses the first four.
APPLIED = "applied"
DRY_RUN = "dry_run"
REFUSED = "refused"
FAILED = "failed"
NOOP = "noop"  # nothing to do (already fixed)
VERIFIED = "verified"  # a later 200 OK proved an applied change worked


def default_instance() -> str:
    """Which sipwatch wrote the record: host name and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


def scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret and len(secret) >= _MIN_SECRET:
            text = text.replace(secret, MASK)
    return text


def _clip(value: str | None, limit: int) -> str | None:
    if value is None:
        return None
    return value if len(value) <= limit else value[: limit - 3] + "..."


@dataclass(frozen=True)
class AuditRecord:
    action: str
    result: str
    actor: str
    reason: str
    user: str | None = None
    realm: str | None = None
    cause: str | None = None
    source_ip: str | None = None
    change: Change | None = None
    detail: str = ""
    at: float = field(default_factory=time.time)

    def fields(self) -> dict[str, Any]:
        change = self.change
        return {
            "action": self.action,
            "result": self.result,
            "actor": self.actor,
            "reason": self.reason,
            "cause": self.cause,
            "user": self.user,
            "realm": self.realm,
            "source_ip": self.source_ip,
            "target": change.target if change else None,
            "summary": change.summary if change else None,
            "statements": list(change.statements) if change else [],
            "before": dict(change.before) if change else {},
            "after": dict(change.after) if change else {},
            "detail": self.detail,
        }


class AuditTrail:
    """Writes :class:`AuditRecord` s to the log and, if enabled, to ``sipwatch_audit``.

    ``secrets`` returns every secret currently known (the jambonz secret, the DB password, a
    password generated for this change); each is masked in every field before writing, as a
    last line of defence - by construction no record carries one.
    """

    def __init__(
        self,
        *,
        writer: DbWriter | None,
        table: bool,
        instance: str | None = None,
        secrets: Callable[[], Iterable[str]] = lambda: (),
        refusal_window: float = 600.0,
        max_refusals_per_window: int = 100,
        clock: Callable[[], float] = time.monotonic,
        max_refusal_keys: int = 4096,
    ) -> None:
        self._writer = writer if table else None
        self.instance = instance or default_instance()
        self._secrets = secrets
        self._table_ready = False
        self._refusal_window = refusal_window
        self._clock = clock
        self._max_refusal_keys = max_refusal_keys
        self._max_refusals = max_refusals_per_window
        self._refusals: OrderedDict[tuple[str, ...], float] = OrderedDict()
        self._recent_refusals: deque[float] = deque()
        self.suppressed = 0  # refusals not recorded (repeats, or over the budget)
        self._budget_logged: float | None = None

    @property
    def table_enabled(self) -> bool:
        return self._writer is not None

    def _clean(self, value: Any) -> Any:
        secrets = list(self._secrets())
        if isinstance(value, str):
            return scrub(value, secrets)
        if isinstance(value, Mapping):
            return {str(k): self._clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._clean(v) for v in value]
        return value

    def _skip_refusal(self, rec: AuditRecord) -> bool:
        """Refusals are recorded once per window and key, and at most a budget per window.

        A scanner trying 1,000 usernames from one address is one attack: its refusals share
        one key (the address).  Refusals of distinct users (not allow-listed) each get a
        record until the budget is spent, then are only counted in ``suppressed``.
        """
        if rec.result != REFUSED:
            return False
        if rec.reason == "attack":
            key: tuple[str, ...] = (rec.action, rec.reason, rec.source_ip or "")
        else:
            key = (rec.action, rec.reason, rec.user or "", rec.realm or "")
        now = self._clock()
        window = self._refusal_window
        while self._recent_refusals and now - self._recent_refusals[0] >= window:
            self._recent_refusals.popleft()
        last = self._refusals.get(key)
        if last is not None and now - last < window:
            self.suppressed += 1
            return True
        if len(self._recent_refusals) >= self._max_refusals:
            if self._budget_logged is None or now - self._budget_logged >= window:
                self._budget_logged = now
                log.warning(
                    "remediation_audit_refusals_suppressed",
                    budget=self._max_refusals,
                    window_seconds=window,
                )
            self.suppressed += 1
            return True
        self._recent_refusals.append(now)
        self._refusals.pop(key, None)
        self._refusals[key] = now
        while len(self._refusals) > self._max_refusal_keys:
            self._refusals.popitem(last=False)
        return False

    async def record(self, rec: AuditRecord) -> bool:
        """Write the record; False when it was a repeated refusal and was skipped."""
        if self._skip_refusal(rec):
            return False
        data = self._clean(rec.fields())
        log.info("remediation_audit", instance=self.instance, **data)
        if self._writer is not None:
            await self._insert(rec, data)
        return True

    async def ensure_table(self) -> bool:
        """Create ``sipwatch_audit`` if needed; False (and a log line) when it cannot."""
        if self._writer is None:
            return False
        if self._table_ready:
            return True
        try:
            async with self._writer.transaction() as tx:
                # Look first: CREATE ... IF NOT EXISTS on an existing table makes the server
                # send a warning that asyncmy logs every time.
                found = await tx.fetch_one(
                    "SELECT 1 AS found FROM information_schema.tables"
                    " WHERE table_schema = DATABASE() AND table_name = %s",
                    (TABLE,),
                )
                if found is None:
                    await tx.execute(CREATE_TABLE_SQL)
        except DbError as exc:
            log.warning("audit_table_unavailable", error=str(exc), kind=exc.kind)
            return False
        self._table_ready = True
        return True

    async def unverified_change(
        self, user: str, realm: str, *, since: float
    ) -> tuple[str, str | None, float] | None:
        """The newest change applied to ``user@realm`` since ``since`` (epoch seconds) that
        no later record marks verified: (action, cause, applied at), or None."""
        if self._writer is None or not await self.ensure_table():
            return None
        when = dt.datetime.fromtimestamp(since, dt.UTC).replace(tzinfo=None)
        try:
            async with self._writer.transaction(readonly=True) as tx:
                row = await tx.fetch_one(UNVERIFIED_SQL, (user, realm, when))
        except DbError as exc:
            log.warning("audit_table_read_failed", error=str(exc), kind=exc.kind)
            return None
        if row is None:
            return None
        applied = row["created_at"].replace(tzinfo=dt.UTC).timestamp()
        return str(row["action"]), row["cause"], applied

    async def _insert(self, rec: AuditRecord, data: Mapping[str, Any]) -> None:
        if self._writer is None or not await self.ensure_table():
            return
        when = dt.datetime.fromtimestamp(rec.at, dt.UTC).replace(tzinfo=None)

        def dump(value: Any) -> str | None:
            if not value:
                return None
            return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)

        params = (
            when,
            _clip(self.instance, 255),
            _clip(data["actor"], 255),
            _clip(data["action"], 64),
            _clip(data["result"], 16),
            _clip(data["cause"], 64),
            _clip(data["user"], 255),
            _clip(data["realm"], 255),
            _clip(data["source_ip"], 64),
            _clip(data["target"], 512),
            _clip(data["reason"], 64),
            _clip(data["detail"] or data["summary"], 1024),
            dump(data["before"]),
            dump(data["after"]),
            dump(data["statements"]),
        )
        try:
            async with self._writer.transaction() as tx:
                await tx.execute(INSERT_SQL, params)
        except DbError as exc:
            log.warning("audit_table_write_failed", error=str(exc), kind=exc.kind)
