"""The GET_LOCK leader lock against the real MariaDB: exclusive, released on exit, on a
killed connection and on a killed process, and re-campaigned by the followers."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

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


@bounded(20)
async def test_lost_connection_loses_leadership_at_once(db_settings: DbSettings) -> None:
    name = lock_name()
    changes: list[bool] = []
    a = LeaderLock(db_settings, name, on_change=changes.append)
    b = LeaderLock(db_settings, name)
    try:
        assert await a.try_acquire()
        assert a.connection_id is not None
        await kill_connection(a.connection_id)
        # The server dropped the connection and with it the lock: the next check says so.
        assert not await a.confirm()
        assert not a.is_leader and changes == [True, False]
        assert await b.try_acquire()
        assert not await a.try_acquire()  # a reconnects as a follower
    finally:
        await a.release()
        await b.release()


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
        assert leader.connection_id is not None
        await kill_connection(leader.connection_id)
        await until(lambda: follower.is_leader and sample(), 5, interval=0.05)
        assert await holder_of(name) == follower.connection_id
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
