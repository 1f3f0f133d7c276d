"""The asyncmy wrapper against the real MariaDB: read-only, bounded, classified errors."""

from __future__ import annotations

import asyncio
import time

import pytest

from sipwatch.diagnosis.db import (
    Database,
    DbReadOnlyError,
    DbSchemaError,
    DbSettings,
    DbTimeout,
    DbUnavailable,
    classify_error,
)
from tests.jambonz_db import admin_connect, closed_port


def test_url_parsing_and_masking() -> None:
    s = DbSettings.from_url("mysql://jambones:p%40ss@db.example:3307/jambones?read_timeout=2")
    assert (s.host, s.port, s.user, s.password, s.database) == (
        "db.example",
        3307,
        "jambones",
        "p@ss",
        "jambones",
    )
    assert s.read_timeout == 2.0
    assert "p@ss" not in repr(s)
    assert s.safe_url() == "mysql://jambones:***@db.example:3307/jambones"


@pytest.mark.parametrize(
    "url", ["postgres://u:topsecret@h/db", "mysql://u:topsecret@/db", "mysql://u:topsecret@h:x/db"]
)
def test_bad_url_errors_never_echo_the_password(url: str) -> None:
    with pytest.raises(ValueError) as info:
        DbSettings.from_url(url)
    assert "topsecret" not in str(info.value)


async def test_select_returns_dict_rows(database: Database) -> None:
    rows = await database.fetch_all("SELECT version FROM schema_version")
    assert rows == [{"version": "0.9.6"}]


async def test_parameters_are_bound_not_interpolated(database: Database) -> None:
    evil = "x' OR '1'='1"
    rows = await database.fetch_all("SELECT %s AS v, %s = 'x' AS eq", (evil, evil))
    assert rows == [{"v": evil, "eq": 0}]


async def test_writes_are_refused_client_and_server_side(database: Database) -> None:
    with pytest.raises(DbReadOnlyError):
        await database.fetch_all("DELETE FROM schema_version")
    with pytest.raises(DbReadOnlyError):
        await database.execute("DELETE FROM schema_version")
    # Bypass the keyword check: the session itself is READ ONLY on the server.
    with pytest.raises(DbReadOnlyError) as info:
        await database._call("INSERT INTO schema_version (version) VALUES ('x')", (), False)
    assert "READ ONLY" in str(info.value)
    rows = await database.fetch_all("SELECT COUNT(*) AS n FROM schema_version")
    assert rows == [{"n": 1}]


async def test_read_write_handle_can_write(db_settings: DbSettings) -> None:
    from dataclasses import replace

    db = Database(replace(db_settings, readonly=False))
    try:
        n = await db.execute("UPDATE schema_version SET version = version WHERE 1 = 0")
        assert n == 0
    finally:
        await db.close()


async def test_missing_table_is_a_schema_error(database: Database) -> None:
    with pytest.raises(DbSchemaError) as info:
        await database.fetch_all("SELECT * FROM no_such_table_here")
    assert info.value.kind == "missing_table"
    # A schema error does not trip the fail-fast window: the next query runs.
    assert await database.fetch_all("SELECT 1 AS one") == [{"one": 1}]


async def test_refused_connection_is_unavailable_and_fails_fast() -> None:
    db = Database(
        DbSettings(port=closed_port(), password="hunter2-db", retry_after=30.0, database="x")
    )
    try:
        with pytest.raises(DbUnavailable) as info:
            await db.fetch_all("SELECT 1")
        assert "hunter2-db" not in str(info.value)
        assert info.value.kind == "db_unavailable"
        start = time.monotonic()
        with pytest.raises(DbUnavailable) as again:
            await db.fetch_all("SELECT 1")
        assert time.monotonic() - start < 0.05
        assert "next attempt" in str(again.value)
    finally:
        await db.close()


async def test_bad_credentials_and_unknown_database_are_unavailable(
    jambonz_database: str,
) -> None:
    for settings in (
        DbSettings(user="nobody_sipwatch", password="wrong-pass-xyz", database=jambonz_database),
        DbSettings(database="sipwatch_test_doesnotexist"),
    ):
        db = Database(settings)
        try:
            with pytest.raises(DbUnavailable) as info:
                await db.ping()
            assert "wrong-pass-xyz" not in str(info.value)
        finally:
            await db.close()


async def test_silent_server_times_out_quickly(silent_server: int) -> None:
    db = Database(
        DbSettings(port=silent_server, connect_timeout=0.5, read_timeout=0.5, query_timeout=1.0)
    )
    try:
        start = time.monotonic()
        with pytest.raises(DbTimeout):
            await db.fetch_all("SELECT 1")
        assert time.monotonic() - start < 2.0
    finally:
        await db.close()


async def test_slow_query_times_out_and_pool_recovers(db_settings: DbSettings) -> None:
    from dataclasses import replace

    db = Database(replace(db_settings, read_timeout=0.5, query_timeout=2.0, retry_after=0.0))
    try:
        start = time.monotonic()
        with pytest.raises(DbTimeout):
            await db.fetch_all("SELECT SLEEP(3) AS s")
        assert time.monotonic() - start < 1.5
        assert await db.fetch_all("SELECT 2 AS two") == [{"two": 2}]
    finally:
        await db.close()


async def test_outer_deadline_cancels_and_discards_the_connection(db_settings: DbSettings) -> None:
    from dataclasses import replace

    db = Database(replace(db_settings, read_timeout=10.0, query_timeout=0.5, retry_after=0.0))
    try:
        with pytest.raises(DbTimeout):
            await db.fetch_all("SELECT SLEEP(3) AS s")
        # The cancelled connection was thrown away; a fresh one answers.
        assert await db.fetch_all("SELECT 3 AS three") == [{"three": 3}]
    finally:
        await db.close()


async def test_reconnects_after_the_server_drops_the_connection(database: Database) -> None:
    first = await database.fetch_all("SELECT CONNECTION_ID() AS id")
    conn_id = first[0]["id"]
    admin = await admin_connect()
    try:
        async with admin.cursor() as cur:
            await cur.execute("KILL %s", (conn_id,))
    finally:
        admin.close()
    await asyncio.sleep(0.1)
    rows = await database.fetch_all("SELECT CONNECTION_ID() AS id")
    assert rows[0]["id"] != conn_id


async def test_concurrent_queries_share_a_bounded_pool(database: Database) -> None:
    results = await asyncio.gather(*(database.fetch_all("SELECT %s AS n", (i,)) for i in range(20)))
    assert [r[0]["n"] for r in results] == list(range(20))
    assert database._pool.size <= database.settings.pool_size


async def test_a_lock_wait_timeout_is_a_timeout_not_an_outage(jambonz_database: str) -> None:
    """MariaDB's error 1205 (a row locked by another transaction for longer than
    innodb_lock_wait_timeout) means the database answered slowly, not that it is gone."""
    holder = await admin_connect(jambonz_database)
    waiter = await admin_connect(jambonz_database)
    try:
        async with holder.cursor() as cur:
            await cur.execute("CREATE TABLE IF NOT EXISTS lock_probe (id INT PRIMARY KEY)")
            await cur.execute("INSERT IGNORE INTO lock_probe VALUES (1)")
            await cur.execute("BEGIN")
            await cur.execute("SELECT id FROM lock_probe WHERE id = 1 FOR UPDATE")
        async with waiter.cursor() as cur:
            await cur.execute("SET SESSION innodb_lock_wait_timeout = 1")
            with pytest.raises(Exception) as raised:
                await cur.execute("UPDATE lock_probe SET id = 1 WHERE id = 1")
        error = classify_error(raised.value, "mysql://127.0.0.1:3306/jambones")
        assert isinstance(error, DbTimeout), (raised.value, error)
        assert error.kind == "timeout"
    finally:
        async with holder.cursor() as cur:
            await cur.execute("ROLLBACK")
            await cur.execute("DROP TABLE IF EXISTS lock_probe")
        holder.close()
        waiter.close()
