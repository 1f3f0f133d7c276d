"""Shared pieces of the remediation tests: a time bound for every test, backends wired to the
real MariaDB/Redis of this machine, an independent jambonz decryptor and small DB helpers.

New test modules get these fixtures from ``tests/conftest.py``; older ones import them.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import pytest
import redis.asyncio as aioredis
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from sipwatch.config import RemediationConfig, Secret
from sipwatch.diagnosis.db import DbSettings
from sipwatch.diagnosis.redis_store import ACTIVE_SET
from sipwatch.remediation.actions import Backends
from sipwatch.remediation.writer import DbWriter
from tests.jambonz_db import REDIS_TEST_DB, REDIS_URL_BASE, TEST_SECRET, admin_connect

P = ParamSpec("P")
R = TypeVar("R")


def bounded(seconds: float) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Fail an async test that runs longer than ``seconds`` (no pytest-timeout here)."""

    def wrap(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(fn)
        async def run(*args: P.args, **kwargs: P.kwargs) -> R:
            async with asyncio.timeout(seconds):
                return await fn(*args, **kwargs)

        return run

    return wrap


def jambonz_decrypt(stored: str, secret: str) -> str:
    """The registrar's decrypt (digest-utils utils.js), written out independently of
    sipwatch.diagnosis.crypto: key = first 32 chars of base64(sha256(secret)), AES-256-CBC,
    PKCS#7, stored as JSON {"iv": hex, "content": hex}."""
    data = json.loads(stored)
    assert set(data) == {"iv", "content"}
    key = base64.b64encode(hashlib.sha256(secret.encode()).digest()).decode()[:32].encode()
    assert len(key) == 32
    dec = Cipher(algorithms.AES(key), modes.CBC(bytes.fromhex(data["iv"]))).decryptor()
    raw = dec.update(bytes.fromhex(data["content"])) + dec.finalize()
    unpad = padding.PKCS7(128).unpadder()
    return (unpad.update(raw) + unpad.finalize()).decode("utf-8")


def rem_config(**kw: Any) -> RemediationConfig:
    """A RemediationConfig for tests: on, permissive budgets, a kill switch that is absent."""
    options: dict[str, Any] = {
        "mode": "on",
        "allow_realms": ("*.sip.example.com",),
        "max_changes_per_hour": 100,
        "max_changes_per_action_per_hour": 100,
        "user_cooldown_seconds": 0.0,
        "kill_switch_file": f"/tmp/sipwatch-test-no-such-file-{secrets.token_hex(6)}",
        "audit_table": True,
        "leader_lock_name": f"sipwatch-test-{secrets.token_hex(8)}",
    }
    options.update(kw)
    return RemediationConfig(**options)


@pytest.fixture
def writer(db_settings: DbSettings) -> DbWriter:
    from dataclasses import replace

    return DbWriter(replace(db_settings, readonly=False))


@pytest.fixture
async def redis_client() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(f"{REDIS_URL_BASE}/{REDIS_TEST_DB}")
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def backends(writer: DbWriter, redis_client: aioredis.Redis) -> Backends:
    return Backends(db=writer, redis=redis_client, secret=Secret(TEST_SECRET))


async def rows(database: str, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """Read with an independent admin connection (not through the code under test)."""
    from asyncmy.cursors import DictCursor

    conn = await admin_connect(database)
    try:
        async with conn.cursor(DictCursor) as cur:
            await cur.execute(sql, params)
            return list(await cur.fetchall())
    finally:
        conn.close()


async def count_clients(database: str, account_sid: str) -> int:
    found = await rows(
        database, "SELECT COUNT(*) AS n FROM clients WHERE account_sid = %s", (account_sid,)
    )
    return int(found[0]["n"])


async def cleanup_registration(client: aioredis.Redis, aor: str) -> None:
    await client.delete(f"user:{aor}")
    await client.zrem(ACTIVE_SET, f"user:{aor}")


def short_socket(tmp_path: Path) -> Path:
    """A unix socket path short enough for AF_UNIX (tmp_path can be long)."""
    return Path("/tmp") / f"swr-{secrets.token_hex(4)}.sock"
