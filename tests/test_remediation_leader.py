"""The GET_LOCK leader lock against the real MariaDB: exclusive, released on exit, on a
killed connection and on a killed process, and re-campaigned by the followers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from sipwatch.diagnosis.db import DbSettings
from sipwatch.remediation.leader import LeaderLock
from tests.jambonz_db import admin_connect
from tests.remediation_support import bounded
from tests.waiting import until

ROOT = Path(__file__).resolve().parents[1]


def lock_name() -> str:
    return f"sipwatch-test-{secrets.token_hex(8)}"


async def holder_of(name: str) -> int | None:
    conn = await admin_connect()
    try:
        async with conn.cursor() as cur:
            await cur.execute("SELECT IS_USED_LOCK(%s)", (name,))
            row = await cur.fetchone()
            return None if row[0] is None else int(row[0])
    finally:
        conn.close()


async def kill_connection(connection_id: int) -> None:
    conn = await admin_connect()
    try:
        async with conn.cursor() as cur:
            await cur.execute(f"KILL CONNECTION {int(connection_id)}")
    finally:
        conn.close()


@bounded(20)
async def test_exclusive_and_released_on_exit(db_settings: DbSettings) -> None:
    name = lock_name()
    a = LeaderLock(db_settings, name)
    b = LeaderLock(db_settings, name)
    try:
        assert await a.try_acquire()
        assert a.is_leader and await a.confirm()
        assert await holder_of(name) == a.connection_id
        assert not await b.try_acquire()
        assert not b.is_leader and not await b.confirm()
        assert await a.try_acquire()  # re-entrant for the holder
        await a.release()
        assert not a.is_leader
        assert await holder_of(name) is None
        assert await b.try_acquire()
        assert await holder_of(name) == b.connection_id
    finally:
        await a.release()
        await b.release()
    assert await holder_of(name) is None


@contextlib.asynccontextmanager
async def leader_and_follower(
    settings: DbSettings,
) -> AsyncIterator[tuple[str, LeaderLock, LeaderLock, list[bool]]]:
    """Two locks of one name; the first has acquired it (its changes are recorded)."""
    name = lock_name()
    changes: list[bool] = []
    a = LeaderLock(settings, name, on_change=changes.append)
    b = LeaderLock(settings, name)
    try:
        assert await a.try_acquire()
        assert a.connection_id is not None
        yield name, a, b, changes
    finally:
        await a.release()
        await b.release()


@bounded(20)
async def test_lost_connection_loses_leadership_at_once(db_settings: DbSettings) -> None:
    async with leader_and_follower(db_settings) as (_, a, b, changes):
        assert a.connection_id is not None
        await kill_connection(a.connection_id)
        # The server dropped the connection and with it the lock: the next check says so.
        assert not await a.confirm()
        assert not a.is_leader and changes == [True, False]
        assert await b.try_acquire()
        assert not await a.try_acquire()  # a reconnects as a follower


@bounded(30)
async def test_campaign_fails_over_when_the_leader_dies(db_settings: DbSettings) -> None:
    name = lock_name()
    a = LeaderLock(db_settings, name, check_interval=0.1, retry_interval=0.1)
    b = LeaderLock(db_settings, name, check_interval=0.1, retry_interval=0.1)
    both: list[bool] = []

    def sample() -> bool:
        both.append(a.is_leader and b.is_leader)
        return a.is_leader or b.is_leader

    async with a, b:
        await until(sample, 5, interval=0.05)
        leader, follower = (a, b) if a.is_leader else (b, a)
        for _ in range(10):  # a stable leader keeps its lock
            await asyncio.sleep(0.05)
            sample()
        assert leader.is_leader and not follower.is_leader
        killed = leader.connection_id
        assert killed is not None
        await kill_connection(killed)
        # The server frees the lock with the connection and one instance takes it on a live
        # connection: the follower on its next retry, or the old leader, which campaigns
        # again at once when it finds its connection gone (under load it can win the race;
        # the killed-process test below has only the follower left)
        async with asyncio.timeout(5):
            while True:
                holder = await holder_of(name)
                owners = [x for x in (a, b) if x.is_leader and x.connection_id == holder]
                if holder not in (None, killed) and len(owners) == 1:
                    break
                sample()
                await asyncio.sleep(0.05)
        assert [a.is_leader, b.is_leader].count(True) == 1
    assert not any(both), "two leaders at the same time"
    assert await holder_of(name) is None  # stopping released it


_HOLDER = """
import asyncio, sys
from sipwatch.diagnosis.db import DbSettings
from sipwatch.remediation.leader import LeaderLock

async def main():
    lock = LeaderLock(DbSettings(database=sys.argv[2]), sys.argv[1])
    assert await lock.try_acquire()
    print("leader", lock.connection_id, flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


@bounded(40)
async def test_lock_is_released_when_the_process_is_killed(
    db_settings: DbSettings, jambonz_database: str
) -> None:
    name = lock_name()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _HOLDER,
        name,
        jambonz_database,
        stdout=subprocess.PIPE,
        env=env,
    )
    follower = LeaderLock(replace(db_settings), name)
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(15):
            line = ""
            while not line.startswith("leader "):  # skip structlog's own lines
                raw = await proc.stdout.readline()
                assert raw, "the holder process exited"
                line = raw.decode()
        assert not await follower.try_acquire()
        proc.send_signal(signal.SIGKILL)  # no clean-up code runs
        await proc.wait()
        # The server notices the closed socket and frees the lock.
        async with asyncio.timeout(10):
            while not await follower.try_acquire():
                await asyncio.sleep(0.1)
        assert follower.is_leader
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await follower.release()


# ------------------------------------------------------- what leadership changes say and do


async def idle_ms(connection_id: int) -> float | None:
    """How long the server has had no statement from the connection (None: it is closed)."""
    conn = await admin_connect()
    try:
        async with conn.cursor() as cur:
            await cur.execute(
                "SELECT TIME_MS FROM information_schema.PROCESSLIST WHERE ID = %s",
                (connection_id,),
            )
            row = await cur.fetchone()
            return None if row is None else float(row[0])
    finally:
        conn.close()


async def closes(connection_id: int, seconds: float = 5.0) -> bool:
    """The server sees the connection end within ``seconds``."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while await idle_ms(connection_id) is not None:
                await asyncio.sleep(0.05)
            return True
    return False


def events(logs: list[dict[str, object]]) -> list[tuple[object, ...]]:
    return [(e["log_level"], e["event"], e["lock"], e.get("why")) for e in logs]


def test_a_lock_name_is_1_to_64_characters(db_settings: DbSettings) -> None:
    assert LeaderLock(db_settings, "n" * 64).name == "n" * 64
    for bad in ("", "n" * 65):
        with pytest.raises(ValueError, match=r"^lock name must be 1-64 characters$"):
            LeaderLock(db_settings, bad)
    fresh = LeaderLock(db_settings, "n")
    assert (fresh.check_interval, fresh.retry_interval) == (5.0, 10.0)
    assert fresh.is_leader is False and fresh.connection_id is None


@bounded(20)
async def test_each_change_of_leadership_is_logged_once_with_its_reason(
    db_settings: DbSettings,
) -> None:
    name = lock_name()
    a_changes: list[bool] = []
    b_changes: list[bool] = []
    a = LeaderLock(db_settings, name, on_change=a_changes.append)
    b = LeaderLock(db_settings, name, on_change=b_changes.append)
    try:
        with capture_logs() as logs:
            assert await a.try_acquire() is True
            assert await a.try_acquire() is True  # staying leader is no change
            assert await b.try_acquire() is False  # a follower from the start: no change
            a_id, b_id = a.connection_id, b.connection_id
            assert a_id is not None and b_id is not None
            # a follower's check answers no and keeps its connection for the next attempt
            assert await b.confirm() is False and b.connection_id == b_id
            await a.release()
    finally:
        await a.release()
        await b.release()
    assert events(logs) == [
        ("info", "remediation_leader", name, "acquired"),
        ("info", "remediation_follower", name, "released"),
    ]
    assert a_changes == [True, False] and all(type(c) is bool for c in a_changes)
    assert b_changes == []
    assert a.is_leader is False and a.connection_id is None and b.connection_id is None
    # released means the dedicated connections are closed, not just forgotten
    assert await closes(a_id) and await closes(b_id)


@bounded(20)
async def test_release_frees_the_lock_before_it_returns(db_settings: DbSettings) -> None:
    name = lock_name()
    a = LeaderLock(db_settings, name)
    other = await admin_connect()
    try:
        assert await a.try_acquire()
        # staying leader takes the lock only once: MariaDB counts GET_LOCKs of one
        # connection, and one RELEASE_LOCK would leave a second one held
        assert await a.try_acquire()
        await a.release()
        # no waiting for the server to notice the closed connection: RELEASE_LOCK ran
        async with other.cursor() as cur:
            await cur.execute("SELECT GET_LOCK(%s, 0)", (name,))
            assert (await cur.fetchone())[0] == 1
    finally:
        other.close()
        await a.release()


@bounded(20)
async def test_a_database_error_never_makes_a_leader(db_settings: DbSettings) -> None:
    from tests.jambonz_db import closed_port

    changes: list[bool] = []
    dead = replace(db_settings, port=closed_port(), connect_timeout=1.0, read_timeout=1.0)
    lock = LeaderLock(dead, lock_name(), on_change=changes.append)
    with capture_logs() as logs:
        assert await lock.try_acquire() is False
    assert lock.is_leader is False and lock.connection_id is None and changes == []
    [entry] = logs
    assert (entry["log_level"], entry["event"], entry["lock"]) == (
        "warning",
        "leader_lock_error",
        lock.name,
    )
    assert str(entry["error"]).startswith(f"{dead.safe_url()}: ")
    assert await lock.confirm() is False


@bounded(20)
async def test_a_connection_the_server_killed_is_reported_as_lost(db_settings: DbSettings) -> None:
    name = lock_name()
    a = LeaderLock(db_settings, name)
    try:
        assert await a.try_acquire() and a.connection_id is not None
        await kill_connection(a.connection_id)
        with capture_logs() as logs:
            assert await a.confirm() is False
    finally:
        await a.release()
    [lost, follower] = logs
    assert (lost["log_level"], lost["event"], lost["lock"]) == ("warning", "leader_lock_lost", name)
    assert str(lost["error"]).startswith(f"{db_settings.safe_url()}: ")
    assert events([follower]) == [("info", "remediation_follower", name, "connection lost")]
    assert a.is_leader is False and a.connection_id is None

    # shutting down right after the server dropped the leader: release() still ends cleanly
    b = LeaderLock(db_settings, lock_name())
    assert await b.try_acquire() and b.connection_id is not None
    await kill_connection(b.connection_id)
    await b.release()
    assert b.is_leader is False and b.connection_id is None


@bounded(20)
async def test_a_lock_no_longer_held_by_this_connection_is_leadership_lost(
    db_settings: DbSettings,
) -> None:
    # The connection lives but the server says the lock is free or someone else's (what a
    # proxy that moves sessions between server connections would show).  The lock is let
    # go on the leader's own connection, the one way to get there with one server.
    for taken in (False, True):
        async with leader_and_follower(db_settings) as (name, a, b, changes):
            a_id = a.connection_id
            assert a_id is not None
            assert await a._query("SELECT RELEASE_LOCK(%s)", (name,)) == 1
            if taken:
                assert await b.try_acquire()
            with capture_logs() as logs:
                assert await a.confirm() is False
            assert events(logs) == [
                ("info", "remediation_follower", name, "lock no longer held by this connection")
            ]
            assert a.is_leader is False and changes == [True, False]
            assert await closes(a_id)
            assert await holder_of(name) == (b.connection_id if taken else None)


@bounded(30)
async def test_a_leader_that_lost_its_lock_campaigns_again_at_once(
    db_settings: DbSettings,
) -> None:
    # checks every 0.3 s, would retry as a follower only after 30 s: a lost lock is tried
    # for again at once, not after either interval
    changes: list[tuple[bool, float]] = []
    a = LeaderLock(
        db_settings,
        lock_name(),
        check_interval=0.3,
        retry_interval=30.0,
        on_change=lambda leader: changes.append((leader, time.monotonic())),
    )
    async with a:
        await until(lambda: a.is_leader, 5)
        assert a.connection_id is not None
        await kill_connection(a.connection_id)
        await until(lambda: len(changes) >= 3, 5)
    assert [leader for leader, _ in changes] == [True, False, True, False]
    assert changes[2][1] - changes[1][1] < 0.25


@bounded(30)
async def test_a_follower_tries_again_every_retry_interval(db_settings: DbSettings) -> None:
    name = lock_name()
    holder = LeaderLock(db_settings, name)
    follower = LeaderLock(db_settings, name, check_interval=30.0, retry_interval=0.05)
    try:
        assert await holder.try_acquire()
        async with follower:
            await asyncio.sleep(0.2)
            assert not follower.is_leader
            await holder.release()
            await until(lambda: follower.is_leader, 2)
    finally:
        await holder.release()


@bounded(30)
async def test_a_stopped_campaign_stays_stopped(db_settings: DbSettings) -> None:
    name = lock_name()
    a = LeaderLock(db_settings, name, check_interval=0.05, retry_interval=0.05)
    async with a:
        await until(lambda: a.is_leader, 5)
        assert f"leader:{name}" in {t.get_name() for t in asyncio.all_tasks()}
    assert not a.is_leader
    await asyncio.sleep(0.3)  # several intervals: nothing campaigns any more
    assert not a.is_leader and await holder_of(name) is None
    assert f"leader:{name}" not in {t.get_name() for t in asyncio.all_tasks()}


@bounded(30)
async def test_a_leader_checks_its_lock_every_check_interval_not_continuously(
    db_settings: DbSettings,
) -> None:
    # the jambonz database is production: a leader asks IS_USED_LOCK once per interval
    a = LeaderLock(db_settings, lock_name(), check_interval=0.3, retry_interval=30.0)
    async with a:
        await until(lambda: a.is_leader, 5)
        assert a.connection_id is not None
        await asyncio.sleep(0.4)  # past the first check
        idle = []
        for _ in range(12):
            ms = await idle_ms(a.connection_id)
            assert ms is not None
            idle.append(ms)
            await asyncio.sleep(0.05)
        assert a.is_leader
    assert max(idle) >= 150, idle  # the connection rests between checks
    assert max(idle) < 1000, idle  # and is checked again within the interval
