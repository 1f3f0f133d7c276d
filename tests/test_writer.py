"""The write layer (``sipwatch.remediation.writer``) against the real MariaDB: the session a
transaction runs in, the bounds on every call, and what its errors say.

test_remediation_actions.py shows a transaction rolled back on error and refused by the
server when read-only; these pin the rest: the session is not autocommit and waits for a row
lock only ``lock_wait_timeout`` seconds, a statement and a hung server are cut off at their
own bounds (not the socket's), and an error names where it happened, without the password.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from sipwatch.diagnosis.db import DbError, DbSettings, DbTimeout
from sipwatch.remediation.writer import DbWriter, connect
from tests.remediation_support import bounded


async def session_value(writer: DbWriter, variable: str) -> object:
    async with writer.transaction(readonly=True) as tx:
        row = await tx.fetch_one(f"SELECT @@SESSION.{variable} AS v")
    assert row is not None
    return row["v"]


@bounded(20)
async def test_the_session_waits_for_a_row_lock_only_lock_wait_timeout_seconds(
    fresh_db_settings: DbSettings,
) -> None:
    assert await session_value(DbWriter(fresh_db_settings), "innodb_lock_wait_timeout") == 5
    for asked, used in ((0, 1), (-3, 1), (2.9, 2), (7, 7)):
        writer = DbWriter(fresh_db_settings, lock_wait_timeout=asked)  # type: ignore[arg-type]
        assert await session_value(writer, "innodb_lock_wait_timeout") == used, asked


@bounded(20)
async def test_a_transaction_runs_on_a_connection_that_does_not_autocommit(
    fresh_db_settings: DbSettings,
) -> None:
    # a statement the code forgets to put in a transaction still waits for the commit
    assert await session_value(DbWriter(fresh_db_settings), "autocommit") == 0
    conn = await connect(fresh_db_settings, autocommit=True)
    try:
        async with conn.cursor() as cur:
            await cur.execute("SELECT @@SESSION.autocommit")
            assert (await cur.fetchone())[0] == 1
    finally:
        conn.close()


@bounded(20)
async def test_a_statement_is_cut_off_at_query_timeout_not_at_the_socket_timeout(
    fresh_db_settings: DbSettings,
) -> None:
    settings = replace(fresh_db_settings, read_timeout=20.0, query_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(DbTimeout) as info:
        async with DbWriter(settings).transaction() as tx:
            await tx.fetch_all("SELECT SLEEP(3) AS slept")
    assert time.monotonic() - started < 2.5
    assert str(info.value) == f"{settings.safe_url()}: no answer in time"


@pytest.fixture(params=["silent", "dribbling"])
async def stalling_server(request: pytest.FixtureRequest) -> AsyncIterator[int]:
    """A "MySQL server" that never finishes its greeting: "silent" accepts and says nothing
    (a hung server); "dribbling" announces a 64 KiB greeting and sends it a byte every 0.1 s,
    so each read gets data well within the socket's read_timeout."""
    tasks: list[asyncio.Task[None]] = []
    writers: list[asyncio.StreamWriter] = []

    async def dribble(w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            w.write(b"\xff\xff\x00\x00")  # packet header: 65535 bytes follow, seq 0
            while True:
                await asyncio.sleep(0.1)
                w.write(b"\x00")
                await w.drain()

    async def on_conn(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        writers.append(w)  # held open (and silent) until the test ends
        if request.param == "dribbling":
            tasks.append(asyncio.create_task(dribble(w)))

    srv = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    try:
        yield srv.sockets[0].getsockname()[1]
    finally:
        for task in tasks:
            task.cancel()
        for w in writers:
            w.close()
        srv.close()
        await srv.wait_closed()


@bounded(20)
async def test_a_server_that_never_finishes_its_greeting_is_given_up_on(
    stalling_server: int,
) -> None:
    # silent: the socket's read_timeout ends it.  Dribbling: read_timeout restarts with
    # every byte, and only the bound on the whole connect (connect_timeout + read_timeout)
    # ends it; connect_timeout alone covers only the TCP connect
    settings = DbSettings(
        port=stalling_server, database="nope", connect_timeout=0.5, read_timeout=0.5
    )
    started = time.monotonic()
    with pytest.raises(DbTimeout):
        async with DbWriter(settings).transaction():
            raise AssertionError("no transaction on a server that never finishes its greeting")
    assert time.monotonic() - started < 3.0


@bounded(20)
async def test_errors_name_the_database_and_never_the_password(
    fresh_db_settings: DbSettings,
) -> None:
    with pytest.raises(DbError) as info:
        async with DbWriter(fresh_db_settings).transaction() as tx:
            await tx.execute("SELECT * FROM no_such_table")
    where = fresh_db_settings.safe_url()
    assert str(info.value).startswith(f"{where}: ")
    assert "no_such_table" in str(info.value)

    wrong = replace(fresh_db_settings, password="hunter2-not-the-password")
    with pytest.raises(DbError) as info:
        async with DbWriter(wrong).transaction():
            raise AssertionError("root has no password here: the login must fail")
    assert str(info.value).startswith(f"{wrong.safe_url()}: ")
    assert wrong.safe_url().startswith("mysql://root:***@")
    assert "hunter2" not in str(info.value)


@bounded(20)
async def test_execute_answers_the_affected_row_count_and_fetch_one_the_first_row(
    fresh_db_settings: DbSettings,
) -> None:
    async with DbWriter(fresh_db_settings).transaction() as tx:
        await tx.execute("CREATE TEMPORARY TABLE t (id INT PRIMARY KEY, v VARCHAR(8))")
        assert await tx.execute("INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')") == 3
        assert await tx.execute("UPDATE t SET v = %s WHERE id >= %s", ["z", 2]) == 2
        assert await tx.fetch_one("SELECT id, v FROM t ORDER BY id DESC") == {"id": 3, "v": "z"}
        assert await tx.fetch_one("SELECT id FROM t WHERE id = %s", (9,)) is None
        assert await tx.fetch_all("SELECT id FROM t ORDER BY id") == [
            {"id": 1},
            {"id": 2},
            {"id": 3},
        ]
