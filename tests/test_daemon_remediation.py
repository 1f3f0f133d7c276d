"""`sipwatch run` with remediation in dry-run: the daemon decides, audits and counts the change
it would make for a plaintext password, and changes nothing; a scanner is never acted on."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncmy

from tests.daemon_runner import docker_daemon, write_sip
from tests.fake_docker import FakeDockerEngine
from tests.jambonz_db import (
    MARIADB_HOST,
    MARIADB_PORT,
    TEST_SECRET,
    Seeder,
    unique_realm,
)
from tools.synth import Device, Scenario, pino


async def stored_password(database: str, client_sid: str) -> str:
    conn = await asyncmy.connect(host=MARIADB_HOST, port=MARIADB_PORT, user="root", db=database)
    try:
        async with conn.cursor() as cur:
            await cur.execute("SELECT password FROM clients WHERE client_sid = %s", (client_sid,))
            row = await cur.fetchone()
            return str(row[0])
    finally:
        conn.close()


async def test_dry_run_plaintext_password_changes_nothing_and_scanners_are_refused(
    docker_engine: FakeDockerEngine,
    seeder: Seeder,
    jambonz_database: str,
    tmp_path: Path,
) -> None:
    realm = unique_realm()
    account = await seeder.account(realm)
    client = await seeder.client(account, "6006", stored="plainpass")  # the wiki's INSERT
    sbc = docker_engine.add_container("drachtio-sbc", image="drachtio/drachtio-server:0.9.2")
    reg = docker_engine.add_container("sbc-sip-sidecar", image="jambonz/sbc-sip-sidecar:0.9.6")
    extra = f"""
[database]
url = "mysql://root@{MARIADB_HOST}:{MARIADB_PORT}/{jambonz_database}"
[jambonz]
encryption_secret = "{TEST_SECRET}"
registrar_flavour = "sidecar"
[diagnosis]
webhook_probes = false
[remediation]
mode = "dry-run"
allow_realms = ["{realm}"]
kill_switch_file = "{tmp_path / "remediation.disabled"}"
"""
    sc = Scenario(1772366400.0)
    async with docker_daemon(tmp_path, docker_engine, extra) as d:
        phone = Device("6006", realm, "203.0.113.60")
        r1 = phone.register()
        sc.recv(phone, r1)
        sc.send(phone, phone.response(r1, 401, "Unauthorized"))
        r2 = phone.register(auth=True)
        sc.recv(phone, r2)
        sc.send(phone, phone.response(r2, 500, "Internal Server Error"))
        docker_engine.log(
            reg,
            pino(
                sc.t,
                50,
                "Error SyntaxError: Unexpected token 'p', \"plainpass\" is not valid JSON, rejecting with 403",
            ),
            stream=1,
        )
        # and a scanner spraying usernames at the same realm
        for i in range(30):
            scan = Device(
                str(100 + i), realm, "185.243.5.17", 5070 + i, user_agent="friendly-scanner"
            )
            sc.register_rejected(scan, 403, "Forbidden", "Invalid credentials", challenged=True)
        write_sip(docker_engine, sbc, sc)

        await d.wait_metric(
            1,
            "sipwatch_remediations_total",
            timeout=30,
            action="reencrypt_password",
            result="dry_run",
        )
        await d.wait_metric(1, "sipwatch_root_causes_total", cause="client_password_plaintext")
        async with asyncio.timeout(30):
            while await d.metric("sipwatch_root_causes_total", cause="scanner") < 1:
                await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)
        assert await d.metric("sipwatch_remediations_total", result="applied") == 0
        assert await stored_password(jambonz_database, client) == "plainpass"
        _, body = await d.get("/metrics")
        assert "plainpass" not in body
