"""`sipwatch run` against a fake Docker Engine (real HTTP on a unix socket): the zero-config
jambonz deployment.  Containers restart, get recreated, connections drop and the API goes away
for a while; the daemon must count every SIP message exactly once."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.daemon_runner import docker_daemon, write_sip
from tests.fake_docker import FakeDockerEngine
from tools.synth import Device, Scenario, pino


async def test_exact_counts_across_restart_recreate_drop_and_api_outage(
    docker_engine: FakeDockerEngine, tmp_path: Path
) -> None:
    sbc = docker_engine.add_container("drachtio-sbc", image="drachtio/drachtio-server:0.9.2")
    reg = docker_engine.add_container("sbc-sip-sidecar", image="jambonz/sbc-sip-sidecar:0.9.6")
    sc = Scenario(1772366400.0)
    devices = [Device(str(1000 + i), "acme.example.com", f"203.0.113.{i + 1}") for i in range(5)]
    expected = 0
    async with docker_daemon(tmp_path, docker_engine) as d:
        for dev in devices:
            sc.register_ok(dev)
        expected += write_sip(docker_engine, sbc, sc)
        docker_engine.log(
            reg,
            pino(
                1772366400.5,
                30,
                "connected to drachtio listening on 10.0.0.5:9022, local hostports: udp/10.0.0.5:5060",
            ),
            stream=1,
        )
        await d.wait_metric(expected, "sipwatch_sip_messages_total")

        docker_engine.restart(sbc)  # follow stream ends; resumed with since + dedupe
        for dev in devices:
            sc.register_rejected(dev, 403, "Forbidden", "Invalid credentials", challenged=True)
        expected += write_sip(docker_engine, sbc, sc)
        await d.wait_metric(expected, "sipwatch_sip_messages_total")

        await docker_engine.drop_connections()  # daemon crash mid-stream
        for dev in devices[:2]:
            sc.register_ok(dev)
        expected += write_sip(docker_engine, sbc, sc)
        await d.wait_metric(expected, "sipwatch_sip_messages_total")

        await docker_engine.pause_api()  # Docker API gone for a while; drachtio keeps logging
        for dev in devices:
            sc.register_ok(dev)
        expected += write_sip(docker_engine, sbc, sc)
        await asyncio.sleep(1.0)
        await docker_engine.resume_api()
        await d.wait_metric(expected, "sipwatch_sip_messages_total")

        sbc = docker_engine.recreate(sbc)  # docker compose up with a new config: new container id
        for dev in devices[:3]:
            sc.register_rejected(
                dev, 403, "Forbidden", "Unknown or invalid realm", challenged=False
            )
        expected += write_sip(docker_engine, sbc, sc)
        await d.wait_metric(expected, "sipwatch_sip_messages_total")

        # REGISTER transactions counted once each by final status
        assert await d.metric("sipwatch_register_transactions_total", status="403") == 5 + 3
        assert await d.metric("sipwatch_register_transactions_total", status="200") == 5 + 2 + 5
        assert await d.metric("sipwatch_service_events_total", kind="startup") >= 1
        status, body = await d.get("/readyz")
        assert status == 200, body
        # hold steady: nothing is counted twice later
        await asyncio.sleep(1.0)
        assert await d.metric("sipwatch_sip_messages_total") == expected
    assert d.returncode == 0


async def test_registrar_flavour_is_detected_from_the_container_image(
    docker_engine: FakeDockerEngine, tmp_path: Path
) -> None:
    docker_engine.add_container("drachtio-sbc", image="drachtio/drachtio-server:0.8.26")
    docker_engine.add_container("registrar", image="jambonz/sbc-registrar:latest")  # legacy compose
    async with docker_daemon(tmp_path, docker_engine) as d:
        status, body = 0, ""
        async with asyncio.timeout(20):  # the Docker source attaches shortly after start-up
            while status != 200:
                status, body = await d.get("/readyz")
                await asyncio.sleep(0.1)
        assert status == 200, body
    detected = d.events("registrar detected")
    assert detected and detected[0]["flavour"] == "legacy" and detected[0]["service"] == "registrar"


async def test_readyz_and_source_up_follow_a_registrar_crash_and_a_drachtio_restart(
    docker_engine: FakeDockerEngine, tmp_path: Path
) -> None:
    """While a followed container is down, sipwatch is not ready and says which role; the
    registrar a deployment does not run (legacy ``registrar`` beside ``sbc-sip-sidecar``)
    is never reported down, or SipwatchSourceDown would page forever."""
    sbc = docker_engine.add_container("drachtio-sbc", image="drachtio/drachtio-server:0.9.2")
    reg = docker_engine.add_container("sbc-sip-sidecar", image="jambonz/sbc-sip-sidecar:0.9.6")

    async def readiness(expected: int) -> dict[str, bool]:
        status, body = 0, "{}"
        async with asyncio.timeout(20):
            while status != expected:
                status, body = await d.get("/readyz")
                await asyncio.sleep(0.1)
        sources: dict[str, bool] = json.loads(body)["sources"]
        return sources

    async def source_up() -> dict[str, float]:
        _, body = await d.get("/metrics")
        return {
            line.split('"')[1]: float(line.rsplit(" ", 1)[1])
            for line in body.splitlines()
            if line.startswith("sipwatch_source_up{")
        }

    async with docker_daemon(tmp_path, docker_engine) as d:
        assert await readiness(200) == {"docker:drachtio": True, "docker:registrar": True}
        assert await source_up() == {"drachtio": 1.0, "registrar": 1.0}

        docker_engine.stop(reg)  # the registrar crashes
        assert await readiness(503) == {"docker:drachtio": True, "docker:registrar": False}
        await d.wait_metric(0, "sipwatch_source_up", source="registrar")
        assert await source_up() == {"drachtio": 1.0, "registrar": 0.0}

        docker_engine.start(reg)  # its restart policy brings it back
        await readiness(200)
        await d.wait_metric(1, "sipwatch_source_up", source="registrar")

        docker_engine.stop(sbc)  # drachtio restarting: down while it is down
        assert await readiness(503) == {"docker:drachtio": False, "docker:registrar": True}
        await d.wait_metric(0, "sipwatch_source_up", source="drachtio")
        docker_engine.start(sbc)
        await readiness(200)
        await d.wait_metric(1, "sipwatch_source_up", source="drachtio")
        assert await source_up() == {"drachtio": 1.0, "registrar": 1.0}
