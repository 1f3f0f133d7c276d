"""Test fixtures: a throw-away jambonz database in the local MariaDB, Redis registrations in a
dedicated logical DB, and a real local HTTP server playing registration webhooks.

Other people's tests run against the same servers at the same time, so everything here is
named with a random suffix and cleaned up by name: the database this module created, the Redis
keys and set members it wrote (never FLUSHDB), nothing else.

New test modules get these fixtures from ``tests/conftest.py``; older ones import them.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncmy
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from sipwatch.diagnosis.crypto import encrypt
from sipwatch.diagnosis.db import Database, DbSettings
from sipwatch.diagnosis.jambonz import JambonzDb
from sipwatch.diagnosis.redis_store import ACTIVE_SET, RegistrationStore, registration_key
from tests.daemon_runner import free_port

MARIADB_HOST = "127.0.0.1"
MARIADB_PORT = 3306
MARIADB_USER = "root"
REDIS_URL_BASE = "redis://127.0.0.1:6379"
REDIS_TEST_DB = 13  # jambonz keys have no prefix: keep them out of db 0
SCHEMA_FILE = Path(__file__).with_name("jambonz_schema.sql")
TEST_SECRET = "test-encryption-secret-4f1c"


def schema_statements(text: str | None = None) -> list[str]:
    """The schema file as single statements (comments dropped)."""
    raw = SCHEMA_FILE.read_text(encoding="utf-8") if text is None else text
    lines = [ln for ln in raw.splitlines() if not ln.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def unique_name(prefix: str = "sipwatch_test") -> str:
    return f"{prefix}_{secrets.token_hex(6)}"


async def admin_connect(database: str | None = None) -> Any:
    return await asyncmy.connect(
        host=MARIADB_HOST,
        port=MARIADB_PORT,
        user=MARIADB_USER,
        password="",
        db=database,
        autocommit=True,
        charset="utf8mb4",
    )


async def create_database(name: str, statements: list[str] | None = None) -> None:
    assert re.fullmatch(r"sipwatch_test_[0-9a-f]+", name)
    conn = await admin_connect()
    try:
        async with conn.cursor() as cur:
            await cur.execute(
                f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci"
            )
            await cur.execute(f"USE `{name}`")
            for stmt in schema_statements() if statements is None else statements:
                await cur.execute(stmt)
    finally:
        conn.close()


async def drop_database(name: str) -> None:
    assert re.fullmatch(r"sipwatch_test_[0-9a-f]+", name)
    conn = await admin_connect()
    try:
        async with conn.cursor() as cur:
            await cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    finally:
        conn.close()


def db_url(
    name: str, user: str = MARIADB_USER, password: str = "", port: int = MARIADB_PORT
) -> str:
    auth = f"{user}:{password}" if password else user
    return f"mysql://{auth}@{MARIADB_HOST}:{port}/{name}"


def new_sid() -> str:
    return str(uuid.uuid4())


def unique_realm(prefix: str = "acme") -> str:
    return f"{prefix}{secrets.token_hex(4)}.sip.example.com"


class Seeder:
    """Writes jambonz rows the way the API would (encrypted passwords unless told otherwise)."""

    def __init__(self, conn: Any, secret: str = TEST_SECRET) -> None:
        self.conn = conn
        self.secret = secret

    async def _exec(self, sql: str, params: tuple[Any, ...]) -> None:
        async with self.conn.cursor() as cur:
            await cur.execute(sql, params)

    async def webhook(
        self,
        url: str,
        method: str = "POST",
        username: str | None = None,
        password: str | None = None,
    ) -> str:
        sid = new_sid()
        await self._exec(
            "INSERT INTO webhooks (webhook_sid, url, method, username, password)"
            " VALUES (%s, %s, %s, %s, %s)",
            (sid, url, method, username, password),
        )
        return sid

    async def service_provider(
        self, root_domain: str | None = None, registration_hook_sid: str | None = None
    ) -> str:
        sid = new_sid()
        await self._exec(
            "INSERT INTO service_providers"
            " (service_provider_sid, name, root_domain, registration_hook_sid)"
            " VALUES (%s, %s, %s, %s)",
            (sid, f"sp-{sid[:8]}", root_domain, registration_hook_sid),
        )
        return sid

    async def account(
        self,
        realm: str | None,
        *,
        active: bool = True,
        hook_sid: str | None = None,
        sp_sid: str | None = None,
        deactivated_reason: str | None = None,
        webhook_secret: str = "wh-secret-0123456789",
    ) -> str:
        if sp_sid is None:
            sp_sid = await self.service_provider()
        sid = new_sid()
        await self._exec(
            "INSERT INTO accounts (account_sid, name, sip_realm, service_provider_sid,"
            " registration_hook_sid, is_active, webhook_secret, deactivated_reason)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (
                sid,
                f"acct-{sid[:8]}",
                realm,
                sp_sid,
                hook_sid,
                active,
                webhook_secret,
                deactivated_reason,
            ),
        )
        return sid

    async def client(
        self,
        account_sid: str,
        username: str,
        *,
        password: str | None = "device-pw-1",
        stored: str | None = None,
        active: bool = True,
        sid: str | None = None,
    ) -> str:
        """``password`` is encrypted with the seeder's secret; ``stored`` is written as is."""
        sid = sid or new_sid()
        value = (
            stored
            if stored is not None
            else (encrypt(password, self.secret) if password is not None else None)
        )
        await self._exec(
            "INSERT INTO clients (client_sid, account_sid, username, password, is_active)"
            " VALUES (%s, %s, %s, %s, %s)",
            (sid, account_sid, username, value, active),
        )
        return sid


WITNESS_REALM = "secret-witness.example.invalid"


async def seed_secret_witness(name: str, secret: str = TEST_SECRET) -> None:
    """One client whose password is encrypted with ``secret``, as on any jambonz that has
    clients: sipwatch proves its secret against such rows before it encrypts anything."""
    conn = await admin_connect(name)
    try:
        seeder = Seeder(conn, secret)
        acct = await seeder.account(WITNESS_REALM)
        await seeder.client(acct, "witness", password="witness-password-1")
    finally:
        conn.close()


@pytest.fixture(scope="session")
def jambonz_database() -> Iterator[str]:
    """Name of a fresh database holding the jambonz schema and one secret witness (a client
    encrypted with TEST_SECRET); dropped at the end."""
    name = unique_name()
    asyncio.run(create_database(name))
    asyncio.run(seed_secret_witness(name))
    try:
        yield name
    finally:
        asyncio.run(drop_database(name))


def db_settings_for(name: str, *, readonly: bool = True) -> DbSettings:
    """Settings for the test MariaDB database ``name``, with short timeouts."""
    return DbSettings(
        host=MARIADB_HOST,
        port=MARIADB_PORT,
        user=MARIADB_USER,
        database=name,
        connect_timeout=2.0,
        read_timeout=3.0,
        query_timeout=4.0,
        pool_size=2,
        readonly=readonly,
    )


@contextlib.asynccontextmanager
async def seeder_for(name: str) -> AsyncIterator[Seeder]:
    """A :class:`Seeder` on its own admin connection to database ``name``."""
    conn = await admin_connect(name)
    try:
        yield Seeder(conn)
    finally:
        conn.close()


@pytest.fixture
def db_settings(jambonz_database: str) -> DbSettings:
    return db_settings_for(jambonz_database)


@pytest.fixture
async def seeder(jambonz_database: str) -> AsyncIterator[Seeder]:
    async with seeder_for(jambonz_database) as s:
        yield s


@pytest.fixture
async def database(db_settings: DbSettings) -> AsyncIterator[Database]:
    db = Database(db_settings)
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture
def jambonz_db(database: Database) -> JambonzDb:
    return JambonzDb(database)


# ------------------------------------------------------------------------------------ Redis


class RedisSeeder:
    """Writes registrations the way mw-registrar does, remembering what to delete."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.keys: set[str] = set()

    async def register(
        self,
        aor: str,
        *,
        proxy: str = "sip:198.51.100.7:5060",
        expires: int = 3600,
        legacy: bool = False,
    ) -> None:
        import json
        import time

        key = registration_key(aor)
        expiry_ms = int(time.time() * 1000) + expires * 1000
        value: dict[str, Any] = {
            "contact": f"<sip:{aor.split('@')[0]}@198.51.100.7:5060>",
            "sbcAddress": "203.0.113.10",
            "protocol": "udp",
            "proxy": proxy,
            "allow_direct_app_calling": 1,
        }
        if not legacy:
            value["expiryTime"] = expiry_ms
        await self.client.set(key, json.dumps(value), ex=expires)
        if not legacy:
            await self.client.zadd(ACTIVE_SET, {key: expiry_ms})
        self.keys.add(key)

    async def cleanup(self) -> None:
        for key in self.keys:
            await self.client.delete(key)
            await self.client.zrem(ACTIVE_SET, key)


@pytest.fixture
async def redis_seeder() -> AsyncIterator[RedisSeeder]:
    client = aioredis.from_url(f"{REDIS_URL_BASE}/{REDIS_TEST_DB}")
    seeder = RedisSeeder(client)
    try:
        yield seeder
    finally:
        await seeder.cleanup()
        await client.aclose()


@pytest.fixture
async def registration_store() -> AsyncIterator[RegistrationStore]:
    store = RegistrationStore.from_url(f"{REDIS_URL_BASE}/{REDIS_TEST_DB}", timeout=1.0)
    try:
        yield store
    finally:
        await store.close()


# ------------------------------------------------------------------------ webhook server


@dataclass
class WebhookServer:
    """A real HTTP server with one route per webhook behaviour; records what it received."""

    base: str
    requests: list[dict[str, Any]] = field(default_factory=list)

    def url(self, behaviour: str) -> str:
        return f"{self.base}/{behaviour}"


@pytest.fixture
async def webhook_server() -> AsyncIterator[WebhookServer]:
    server = WebhookServer(base="")
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        body = await request.text()
        server.requests.append(
            {
                "path": request.path,
                "method": request.method,
                "headers": dict(request.headers),
                "query": dict(request.query),
                "body": body,
            }
        )
        behaviour = request.match_info["behaviour"]
        if behaviour == "ok":
            return web.json_response({"status": "ok", "expires": 300})
        if behaviour == "fail":
            return web.json_response({"status": "fail", "msg": "bad credentials"})
        if behaviour == "empty":
            return web.json_response({})
        if behaviour == "numeric":
            return web.json_response({"status": 1})
        if behaviour == "html":
            return web.Response(
                text="<html><body>It works!</body></html>", content_type="text/html"
            )
        if behaviour == "notfound":
            return web.Response(status=404, text="not found")
        if behaviour == "hang":
            await release.wait()
            return web.Response(text="late")
        if behaviour == "auth":
            if request.headers.get("Authorization") != "Basic aG9va3VzZXI6aG9va3Bhc3M=":
                return web.Response(status=401, text="who are you")
            return web.json_response({"status": "fail"})
        return web.Response(status=500, text="unknown behaviour")

    app = web.Application()
    app.router.add_route("*", "/{behaviour}", handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.base = f"http://127.0.0.1:{port}"
    try:
        yield server
    finally:
        release.set()
        await runner.cleanup()


def closed_port() -> int:
    """A localhost TCP port nobody listens on (bound then released)."""
    return free_port()


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """A TCP server that accepts connections and never says a word (a hung MySQL)."""
    writers: list[asyncio.StreamWriter] = []

    async def on_conn(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        writers.append(w)

    srv = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        for w in writers:
            w.close()
        srv.close()
        await srv.wait_closed()
