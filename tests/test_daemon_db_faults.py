"""`sipwatch run` with the jambonz database going away and coming back.

MariaDB itself is shared by the whole test run, so the outage is made at the protocol
boundary: the daemon reaches MariaDB through a TCP relay that the test cuts and restores.
While the database is gone the daemon keeps counting and reports `unknown` causes with a
diagnosis-error metric; afterwards the same failures are confirmed against the database."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fake_docker import FakeDockerEngine
from tests.jambonz_db import (  # noqa: F401 - fixtures
    MARIADB_HOST,
    MARIADB_PORT,
    TEST_SECRET,
    Seeder,
    jambonz_database,
    seeder,
    unique_realm,
)
from tests.test_daemon_docker import engine, run_daemon, write_sip  # noqa: F401 - fixture
from tools.synth import Device, Scenario


class Relay:
    """A TCP relay to MariaDB that can be cut (all connections reset) and restored."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        for w in list(self.writers):
            w.transport.abort()
        self.writers.clear()

    async def _client(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection(MARIADB_HOST, MARIADB_PORT)
        except OSError:
            w.transport.abort()
            return
        self.writers.update((w, uw))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(r, uw), pipe(ur, w))
        self.writers.difference_update((w, uw))


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    rl = Relay()
    await rl.start()
    try:
        yield rl
    finally:
        await rl.stop()


async def test_database_outage_degrades_to_unknown_and_recovers(
    engine: FakeDockerEngine,  # noqa: F811
    seeder: Seeder,  # noqa: F811
    jambonz_database: str,  # noqa: F811
    relay: Relay,
    tmp_path: Path,
) -> None:
    realm = unique_realm()
    await seeder.account(realm)  # an account without the client the phone uses
    sbc = engine.add_container("drachtio-sbc", image="drachtio/drachtio-server:0.9.2")
    engine.add_container("sbc-sip-sidecar", image="jambonz/sbc-sip-sidecar:0.9.6")
    extra = f"""
[database]
url = "mysql://root@127.0.0.1:{relay.port}/{jambonz_database}"
connect_timeout = 1
read_timeout = 2
[jambonz]
encryption_secret = "{TEST_SECRET}"
registrar_flavour = "sidecar"
[diagnosis]
webhook_probes = false
cache_ttl_seconds = 0.5
"""
    sc = Scenario(1772366400.0)
    expected = 0
    async with run_daemon(tmp_path, engine, extra) as d:
        first = Device("7001", realm, "203.0.113.71")
        sc.register_rejected(first, 403, "Forbidden", "Invalid credentials", challenged=True)
        expected += write_sip(engine, sbc, sc)
        await d.wait_metric(1, "sipwatch_root_causes_total", timeout=30, cause="client_missing")

        await relay.stop()  # MariaDB unreachable
        second = Device("7002", realm, "203.0.113.72")
        for _ in range(3):
            sc.register_rejected(second, 403, "Forbidden", "Invalid credentials", challenged=True)
        expected += write_sip(engine, sbc, sc)
        await d.wait_metric(expected, "sipwatch_sip_messages_total")  # counting goes on
        async with asyncio.timeout(30):
            while await d.metric("sipwatch_diagnosis_errors_total") < 1:
                await asyncio.sleep(0.2)
        assert await d.metric("sipwatch_root_causes_total", cause="client_missing") == 1

        await relay.start()  # back, on the same port
        third = Device("7003", realm, "203.0.113.73")
        async with asyncio.timeout(40):
            # the phone keeps retrying, as phones do; one of its failures is diagnosed once
            # the database answers again (the engine backs off briefly after an outage)
            while await d.metric("sipwatch_root_causes_total", cause="client_missing") < 2:
                sc.register_rejected(
                    third, 403, "Forbidden", "Invalid credentials", challenged=True
                )
                expected += write_sip(engine, sbc, sc)
                await asyncio.sleep(2.0)
        await d.wait_metric(expected, "sipwatch_sip_messages_total")
        status, _ = await d.get("/healthz")
        assert status == 200
