"""`sipwatch run` with the jambonz database going away and coming back.

MariaDB itself is shared by the whole test run, so the outage is made at the protocol
boundary: the daemon reaches MariaDB through a TCP relay that the test cuts and restores.
While the database is gone the daemon keeps counting and reports `unknown` causes with a
diagnosis-error metric; afterwards the same failures are confirmed against the database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.daemon_runner import docker_daemon, write_sip
from tests.fake_docker import FakeDockerEngine
from tests.jambonz_db import MARIADB_HOST, MARIADB_PORT, TEST_SECRET, Seeder, unique_realm
from tests.tcp_gate import TcpGate
from tools.synth import Device, Scenario


@pytest.fixture
async def relay() -> AsyncIterator[TcpGate]:
    """MariaDB behind a gate the test closes (connections reset) and opens again."""
    async with TcpGate(MARIADB_HOST, MARIADB_PORT) as gate:
        yield gate


async def test_database_outage_degrades_to_unknown_and_recovers(
    docker_engine: FakeDockerEngine,
    seeder: Seeder,
    jambonz_database: str,
    relay: TcpGate,
    tmp_path: Path,
) -> None:
    realm = unique_realm()
    await seeder.account(realm)  # an account without the client the phone uses
    sbc = docker_engine.add_container("drachtio-sbc", image="drachtio/drachtio-server:0.9.2")
    docker_engine.add_container("sbc-sip-sidecar", image="jambonz/sbc-sip-sidecar:0.9.6")
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
    async with docker_daemon(tmp_path, docker_engine, extra) as d:
        first = Device("7001", realm, "203.0.113.71")
        sc.register_rejected(first, 403, "Forbidden", "Invalid credentials", challenged=True)
        expected += write_sip(docker_engine, sbc, sc)
        await d.wait_metric(1, "sipwatch_root_causes_total", timeout=30, cause="client_missing")

        await relay.close()  # MariaDB unreachable
        second = Device("7002", realm, "203.0.113.72")
        for _ in range(3):
            sc.register_rejected(second, 403, "Forbidden", "Invalid credentials", challenged=True)
        expected += write_sip(docker_engine, sbc, sc)
        await d.wait_metric(expected, "sipwatch_sip_messages_total")  # counting goes on
        async with asyncio.timeout(30):
            while await d.metric("sipwatch_diagnosis_errors_total") < 1:
                await asyncio.sleep(0.2)
        assert await d.metric("sipwatch_root_causes_total", cause="client_missing") == 1

        await relay.open()  # back, on the same port
        third = Device("7003", realm, "203.0.113.73")
        async with asyncio.timeout(40):
            # the phone keeps retrying, as phones do; one of its failures is diagnosed once
            # the database answers again (the engine backs off briefly after an outage)
            while await d.metric("sipwatch_root_causes_total", cause="client_missing") < 2:
                sc.register_rejected(
                    third, 403, "Forbidden", "Invalid credentials", challenged=True
                )
                expected += write_sip(docker_engine, sbc, sc)
                await asyncio.sleep(2.0)
        await d.wait_metric(expected, "sipwatch_sip_messages_total")
        status, _ = await d.get("/healthz")
        assert status == 200
