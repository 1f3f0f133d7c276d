"""A write-capable, transactional layer over the jambonz MySQL database.

``sipwatch.diagnosis.db.Database`` is read-only by default and runs every statement on an
autocommit pool connection, so it cannot hold a row lock from a ``SELECT ... FOR UPDATE`` to
the ``UPDATE`` that depends on it.  Remediation needs exactly that: read the current state
under a lock, decide, write, commit - so two sipwatch instances (or sipwatch and an operator
at the jambonz portal) never both act on the state they read.

Why a fresh connection per transaction: remediation runs a handful of transactions an hour,
and asyncmy leaves a connection unusable after an error or a cancellation.  A connection of
our own, closed afterwards, can never hand a half-finished transaction to the next caller.

Every call is bounded twice, as in the diagnosis layer: ``read_timeout`` on the socket and an
outer ``asyncio.timeout``.  ``innodb_lock_wait_timeout`` is lowered for the session so a row
held by someone else makes us fail in seconds instead of hanging for 50.  Errors are mapped to
the diagnosis taxonomy (:class:`DbUnavailable`, :class:`DbTimeout`, :class:`DbSchemaError`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncmy
from asyncmy.cursors import DictCursor

from sipwatch.diagnosis.db import DbSettings, classify_error


async def connect(settings: DbSettings, *, autocommit: bool) -> Any:
    """Open one asyncmy connection, bounded as a whole (``connect_timeout`` alone only covers
    the TCP connect, not a server that accepts and then says nothing)."""
    s = settings
    try:
        async with asyncio.timeout(s.connect_timeout + s.read_timeout):
            return await asyncmy.connect(**s.connect_kwargs(autocommit=autocommit))
    except Exception as exc:
        raise classify_error(exc, s.safe_url()) from None


class Transaction:
    """One open transaction: bound-parameter reads and writes on one connection."""

    def __init__(self, conn: Any, settings: DbSettings) -> None:
        self._conn = conn
        self._settings = settings

    async def _run(self, sql: str, params: Sequence[object], fetch: bool) -> Any:
        try:
            async with asyncio.timeout(self._settings.query_timeout):
                cur = self._conn.cursor(DictCursor)
                affected = await cur.execute(sql, tuple(params))
                result: Any = list(await cur.fetchall()) if fetch else affected
                await cur.close()
                return result
        except Exception as exc:
            raise classify_error(exc, self._settings.safe_url()) from None

    async def fetch_all(self, sql: str, params: Sequence[object] = ()) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = await self._run(sql, params, fetch=True)
        return rows

    async def fetch_one(self, sql: str, params: Sequence[object] = ()) -> dict[str, Any] | None:
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None

    async def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        """Run a write; returns the affected row count."""
        affected: int = await self._run(sql, params, fetch=False)
        return affected


class DbWriter:
    """Opens transactions against the jambonz database.

    ``async with writer.transaction() as tx:`` commits when the block ends normally and rolls
    back on any exception (the exception propagates).  ``readonly=True`` transactions are for
    planning: the server itself refuses a write in them.
    """

    def __init__(self, settings: DbSettings, *, lock_wait_timeout: int = 5) -> None:
        self.settings = settings
        self._lock_wait_timeout = max(1, int(lock_wait_timeout))

    @property
    def where(self) -> str:
        return self.settings.safe_url()

    @contextlib.asynccontextmanager
    async def transaction(self, *, readonly: bool = False) -> AsyncIterator[Transaction]:
        conn = await connect(self.settings, autocommit=False)
        tx = Transaction(conn, self.settings)
        done = False
        try:
            await tx.execute(
                "SET SESSION innodb_lock_wait_timeout = %s", (self._lock_wait_timeout,)
            )
            await tx.execute(
                "START TRANSACTION READ ONLY" if readonly else "START TRANSACTION READ WRITE"
            )
            yield tx
            try:
                async with asyncio.timeout(self.settings.query_timeout):
                    await conn.commit()
            except Exception as exc:
                raise classify_error(exc, self.where) from None
            done = True
        finally:
            if not done:
                # Roll back what we can; a dead or poisoned connection rolls back by closing.
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(2.0):
                        await conn.rollback()
            conn.close()
