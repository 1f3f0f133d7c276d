"""A small asyncmy wrapper: bounded, read-only by default, with an error taxonomy.

Diagnosis runs next to a log pipeline that must never stall, so every call is bounded twice:
``read_timeout`` on the socket (asyncmy closes the connection when it fires) and an outer
``asyncio.timeout`` that also covers waiting for a pool slot and the connect handshake
(``connect_timeout`` only covers TCP connect).  A connection that saw an error or a
cancellation is closed instead of returned to the pool, because asyncmy leaves it poisoned.

Callers decide by exception type, never by message text:

* :class:`DbUnavailable` - cannot connect, access denied, unknown database, connection lost;
* :class:`DbTimeout` - no answer in time;
* :class:`DbSchemaError` - a table or column the query needs does not exist;
* :class:`DbReadOnlyError` - a write was attempted through a read-only handle.

After an unavailable/timeout error the handle fails fast for ``retry_after`` seconds, so a
flood of failing REGISTERs does not queue one timeout each behind a dead server.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from sipwatch.diagnosis.error_kinds import DiagnosisErrorKind

_READ_STATEMENT = re.compile(r"^\s*(select|show)\b", re.IGNORECASE)

# MySQL/MariaDB error numbers.
_ER_NO_SUCH_TABLE = 1146
_ER_BAD_FIELD = 1054
_ER_READ_ONLY_TRANSACTION = 1792
# MariaDB max_statement_time, MySQL max_execution_time, and a row lock held by another
# transaction past innodb_lock_wait_timeout: the server answered, slowly - not an outage
_ER_STATEMENT_TIMEOUT = (1969, 3024, 1205)
_CR_SERVER_GONE = 2006
_CR_SERVER_LOST = 2013
_CR_LOST_EXTENDED = 2055


class DbError(Exception):
    """Base class; ``kind`` is the stable label used for metrics and output."""

    kind = "db_error"


class DbUnavailable(DbError):
    kind = DiagnosisErrorKind.DB_UNAVAILABLE


class DbTimeout(DbError):
    kind = DiagnosisErrorKind.TIMEOUT


class DbSchemaError(DbError):
    kind = DiagnosisErrorKind.MISSING_TABLE


class DbReadOnlyError(DbError):
    kind = "read_only"


@dataclass(frozen=True)
class DbSettings:
    """Where the jambonz database is and how long to wait for it.

    ``password`` is excluded from ``repr`` and :meth:`safe_url` so settings can be logged.
    """

    host: str = "127.0.0.1"
    port: int = 3306
    user: str = "root"
    password: str = field(default="", repr=False)
    database: str = "jambones"
    connect_timeout: float = 3.0
    read_timeout: float = 5.0
    query_timeout: float = 6.0
    pool_size: int = 4
    readonly: bool = True
    retry_after: float = 5.0

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> DbSettings:
        """Parse ``mysql://user:password@host:port/database?read_timeout=5``.

        Errors never echo the URL, because it may contain the password.
        """
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError as exc:
            raise ValueError(
                "invalid database URL (expected mysql://user:pass@host:port/db)"
            ) from exc
        if parts.scheme not in ("mysql", "mariadb", "mysql+asyncmy"):
            raise ValueError("database URL must start with mysql://")
        if not parts.hostname:
            raise ValueError("database URL has no host")
        database = unquote(parts.path.lstrip("/")) or "jambones"
        values: dict[str, Any] = {
            "host": parts.hostname,
            "port": port or 3306,
            "user": unquote(parts.username) if parts.username else "root",
            "password": unquote(parts.password) if parts.password else "",
            "database": database,
        }
        query = parse_qs(parts.query)
        for key in ("connect_timeout", "read_timeout", "query_timeout", "retry_after"):
            if key in query:
                try:
                    values[key] = float(query[key][-1])
                except ValueError as exc:
                    raise ValueError(f"database URL option {key} must be a number") from exc
        if "pool_size" in query:
            try:
                values["pool_size"] = max(1, int(query["pool_size"][-1]))
            except ValueError as exc:
                raise ValueError("database URL option pool_size must be an integer") from exc
        values.update(overrides)
        return cls(**values)

    def safe_url(self) -> str:
        """The URL with the password masked, for messages."""
        secret = ":***" if self.password else ""
        return f"mysql://{self.user}{secret}@{self.host}:{self.port}/{self.database}"

    def connect_kwargs(self, *, autocommit: bool) -> dict[str, Any]:
        """asyncmy connection arguments (one place for pools and single connections)."""
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "db": self.database,
            "charset": "utf8mb4",
            "autocommit": autocommit,
            "connect_timeout": self.connect_timeout,
            "read_timeout": self.read_timeout,
        }

    def with_timeouts(self, seconds: float) -> DbSettings:
        return replace(
            self,
            connect_timeout=min(self.connect_timeout, seconds),
            read_timeout=seconds,
            query_timeout=seconds + 1.0,
        )


def _errno(exc: BaseException) -> int | None:
    args: tuple[Any, ...] = exc.args
    if args and isinstance(args[0], int):
        return args[0]
    return None


def _message(exc: BaseException) -> str:
    args: tuple[Any, ...] = exc.args
    if len(args) >= 2 and isinstance(args[1], str):
        return args[1]
    return str(exc) or type(exc).__name__


def _is_retryable(exc: BaseException) -> bool:
    """A connection that died under us (server restart, KILL, idle cut) - safe to retry reads."""
    from asyncmy.errors import InterfaceError  # see _get_pool: imported on first use

    if isinstance(exc, InterfaceError):
        return True
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, asyncio.IncompleteReadError)):
        return True
    code = _errno(exc)
    if code in (_CR_SERVER_GONE, _CR_LOST_EXTENDED):
        return True
    return code == _CR_SERVER_LOST and "timeout" not in _message(exc).lower()


def classify_error(exc: BaseException, where: str) -> DbError:
    """Map a driver or socket exception to the taxonomy; ``where`` is a password-free URL."""
    if isinstance(exc, DbError):
        return exc
    if isinstance(exc, TimeoutError):
        return DbTimeout(f"{where}: no answer in time")
    code = _errno(exc)
    msg = _message(exc)
    if code in (_ER_NO_SUCH_TABLE, _ER_BAD_FIELD):
        return DbSchemaError(f"{where}: {msg}")
    if code in _ER_STATEMENT_TIMEOUT or (code == _CR_SERVER_LOST and "timeout" in msg.lower()):
        return DbTimeout(f"{where}: {msg}")
    if code == _ER_READ_ONLY_TRANSACTION:
        return DbReadOnlyError(f"{where}: {msg}")
    from asyncmy.errors import MySQLError

    if isinstance(exc, (MySQLError, OSError, asyncio.IncompleteReadError)):
        return DbUnavailable(f"{where}: {msg}")
    return DbError(f"{where}: {type(exc).__name__}: {msg}")


class Database:
    """A lazily created asyncmy pool with bounded, classified calls."""

    def __init__(self, settings: DbSettings) -> None:
        self.settings = settings
        self._pool: Any = None
        self._pool_lock = asyncio.Lock()
        self._down_until = 0.0
        self._down_error: DbError | None = None

    @property
    def where(self) -> str:
        return self.settings.safe_url()

    async def _get_pool(self) -> Any:
        if self._pool is not None:
            return self._pool
        # asyncmy is imported with the first pool, not with this module: a replay without a
        # database (most of them) would otherwise pay 50 ms of start-up for it
        import asyncmy

        async with self._pool_lock:
            if self._pool is None:
                s = self.settings
                init = "SET SESSION TRANSACTION READ ONLY" if s.readonly else None
                self._pool = await asyncmy.create_pool(
                    minsize=0,
                    maxsize=s.pool_size,
                    pool_recycle=300,
                    init_command=init,
                    **s.connect_kwargs(autocommit=True),
                )
            return self._pool

    async def _run(self, sql: str, params: Sequence[object], fetch: bool) -> Any:
        pool = await self._get_pool()
        conn = await pool.acquire()
        clean = False
        try:
            from asyncmy.cursors import DictCursor

            cur = conn.cursor(DictCursor)
            affected = await cur.execute(sql, tuple(params))
            result: Any = list(await cur.fetchall()) if fetch else affected
            await cur.close()
            clean = True
            return result
        finally:
            if not clean:
                # Errors and cancellations leave asyncmy connections unusable: drop it.
                conn.close()
            pool.release(conn)

    async def _call(self, sql: str, params: Sequence[object], fetch: bool) -> Any:
        now = time.monotonic()
        if self._down_error is not None and now < self._down_until:
            err = self._down_error
            raise type(err)(
                f"{err} (failed recently; next attempt in {self._down_until - now:.1f}s)"
            )
        try:
            async with asyncio.timeout(self.settings.query_timeout):
                try:
                    result = await self._run(sql, params, fetch)
                except Exception as exc:
                    if not _is_retryable(exc):
                        raise
                    # One retry on a fresh connection; reads are idempotent.
                    result = await self._run(sql, params, fetch)
        except Exception as exc:
            err = classify_error(exc, self.where)
            if isinstance(err, (DbUnavailable, DbTimeout)):
                self._down_error = err
                self._down_until = time.monotonic() + self.settings.retry_after
            raise err from None
        self._down_error = None
        return result

    async def fetch_all(self, sql: str, params: Sequence[object] = ()) -> list[dict[str, Any]]:
        """Run a SELECT/SHOW with bound parameters and return dict rows."""
        if not _READ_STATEMENT.match(sql):
            raise DbReadOnlyError("fetch_all only runs SELECT or SHOW statements")
        rows: list[dict[str, Any]] = await self._call(sql, params, fetch=True)
        return rows

    async def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        """Run a write; refused on a read-only handle (the server refuses it too)."""
        if self.settings.readonly:
            raise DbReadOnlyError(f"{self.where}: this database handle is read-only")
        affected: int = await self._call(sql, params, fetch=False)
        return affected

    async def ping(self) -> None:
        """Prove the database answers; raises a :class:`DbError` otherwise."""
        await self.fetch_all("SELECT 1 AS ok")

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
            try:
                async with asyncio.timeout(2.0):
                    await pool.wait_closed()
            except Exception:
                pool.terminate()
