"""Cluster safety: only the sipwatch instance holding a MySQL named lock remediates.

Several sipwatch instances (one per SBC) share one jambonz database.  Their in-memory rate
limits only hold cluster-wide if one of them acts at a time, so they elect a leader with
``GET_LOCK(name, 0)`` on a connection dedicated to that purpose:

* MySQL/MariaDB release a named lock when its connection ends - a clean exit
  (``RELEASE_LOCK`` then close), a crash, a killed process, a network cut or a server
  restart all hand leadership over without any lease bookkeeping;
* the holder checks every ``check_interval`` that ``IS_USED_LOCK(name) = CONNECTION_ID()``
  still holds; any error counts as lost (the server may have dropped the connection and with
  it the lock), and leadership is given up at once;
* before each change, :meth:`LeaderLock.confirm` re-checks on the spot, so a change never
  runs on leadership that was lost since the last periodic check;
* followers retry ``GET_LOCK`` every ``retry_interval``.

Lock names are server-wide (not per database), at most 64 characters.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import structlog

from sipwatch.diagnosis.db import DbError, DbSettings, classify_error
from sipwatch.remediation.writer import connect

log = structlog.get_logger("sipwatch.remediation.leader")


class LeaderLock:
    """``GET_LOCK`` leadership on a dedicated connection (see the module docstring)."""

    def __init__(
        self,
        settings: DbSettings,
        name: str,
        *,
        check_interval: float = 5.0,
        retry_interval: float = 10.0,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        if not name or len(name) > 64:
            raise ValueError("lock name must be 1-64 characters")
        self.settings = settings
        self.name = name
        self.check_interval = check_interval
        self.retry_interval = retry_interval
        self._on_change = on_change
        self._conn: Any = None
        self._leader = False
        self._op = asyncio.Lock()  # one statement at a time on the connection
        self._task: asyncio.Task[None] | None = None
        self.connection_id: int | None = None

    @property
    def is_leader(self) -> bool:
        return self._leader

    def _set(self, leader: bool, why: str) -> None:
        if leader == self._leader:
            return
        self._leader = leader
        log.info(
            "remediation_leader" if leader else "remediation_follower",
            lock=self.name,
            why=why,
        )
        if self._on_change is not None:
            self._on_change(leader)

    async def _query(self, sql: str, params: tuple[object, ...]) -> Any:
        try:
            async with asyncio.timeout(self.settings.query_timeout):
                async with self._conn.cursor() as cur:
                    await cur.execute(sql, params)
                    row = await cur.fetchone()
        except Exception as exc:
            raise classify_error(exc, self.settings.safe_url()) from None
        return row[0] if row else None

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        self.connection_id = None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    async def try_acquire(self) -> bool:
        """One non-blocking attempt to become (or stay) leader."""
        async with self._op:
            if self._leader and self._conn is not None:
                return True
            try:
                if self._conn is None:
                    self._conn = await connect(self.settings, autocommit=True)
                    self.connection_id = int(await self._query("SELECT CONNECTION_ID()", ()))
                got = await self._query("SELECT GET_LOCK(%s, 0)", (self.name,))
            except DbError as exc:
                log.warning("leader_lock_error", lock=self.name, error=str(exc))
                self._drop_connection()
                self._set(False, "database error")
                return False
            if got == 1:
                self._set(True, "acquired")
                return True
            self._set(False, "held by another instance")
            return False

    async def confirm(self) -> bool:
        """Whether this instance still holds the lock, checked on the server now."""
        async with self._op:
            if not self._leader or self._conn is None:
                return False
            try:
                holder = await self._query("SELECT IS_USED_LOCK(%s)", (self.name,))
            except DbError as exc:
                log.warning("leader_lock_lost", lock=self.name, error=str(exc))
                self._drop_connection()
                self._set(False, "connection lost")
                return False
            if holder is None or int(holder) != self.connection_id:
                self._drop_connection()
                self._set(False, "lock no longer held by this connection")
                return False
            return True

    async def release(self) -> None:
        """Give up leadership and close the dedicated connection."""
        async with self._op:
            if self._conn is not None and self._leader:
                with contextlib.suppress(DbError):
                    await self._query("SELECT RELEASE_LOCK(%s)", (self.name,))
            self._drop_connection()
            self._set(False, "released")

    async def run(self) -> None:
        """Campaign forever: acquire when free, then keep confirming; never raises."""
        while True:
            if self._leader:
                await self.confirm()
                delay = self.check_interval if self._leader else 0.0
            else:
                got = await self.try_acquire()
                delay = self.check_interval if got else self.retry_interval
            await asyncio.sleep(delay)

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name=f"leader:{self.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.release()

    async def __aenter__(self) -> LeaderLock:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
