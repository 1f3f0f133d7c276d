"""`sipwatch run` against a fake Docker Engine (real HTTP on a unix socket): the zero-config
jambonz deployment.  Containers restart, get recreated, connections drop and the API goes away
for a while; the daemon must count every SIP message exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.fake_docker import FakeContainer, FakeDockerEngine
from tools.synth import Device, Scenario, pino

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def engine() -> AsyncIterator[FakeDockerEngine]:
    path = Path(tempfile.mkdtemp(prefix="swd")) / "d.sock"
    async with FakeDockerEngine(path) as eng:
        yield eng


class Daemon:
    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.base = f"http://127.0.0.1:{port}"

    async def get(self, path: str) -> tuple[int, str]:
        async with (
            aiohttp.ClientSession() as s,
            s.get(self.base + path, timeout=aiohttp.ClientTimeout(total=5)) as r,
        ):
            return r.status, await r.text()

    async def metric(self, name: str, **labels: str) -> float:
        _, body = await self.get("/metrics")
        total = 0.0
        for line in body.splitlines():
            if not line.startswith(name + "{"):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    async def wait_metric(
        self, expected: float, name: str, timeout: float = 20.0, **labels: str
    ) -> None:
        last = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while True:
                    with contextlib.suppress(aiohttp.ClientError):
                        last = await self.metric(name, **labels)
                        if last == expected:
                            return
                    await asyncio.sleep(0.1)
        raise AssertionError(f"{name}{labels} = {last}, expected {expected}")


@contextlib.asynccontextmanager
async def run_daemon(tmp: Path, engine: FakeDockerEngine, extra: str = "") -> AsyncIterator[Daemon]:
    port = free_port()
    cfg = tmp / "sipwatch.toml"
    cfg.write_text(
        f"""
[sources]
idle_flush_seconds = 0.2
[sources.docker]
project = "jambonz"
tail = "all"
[metrics]
listen = "127.0.0.1:{port}"
[logging]
format = "json"
{extra}
"""
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIPWATCH")}
    env["DOCKER_HOST"] = engine.url  # zero-config path: the standard variable
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sipwatch",
        "run",
        "--config",
        str(cfg),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    d = Daemon(proc, port)
    try:
        async with asyncio.timeout(20):
            while True:
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    if (await d.get("/healthz"))[0] == 200:
                        break
                if proc.returncode is not None:
                    err = await proc.stderr.read() if proc.stderr else b""
                    raise AssertionError(f"daemon exited: {err.decode()[-2000:]}")
                await asyncio.sleep(0.1)
        yield d
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


def write_sip(engine: FakeDockerEngine, c: FakeContainer, sc: Scenario) -> int:
    """Log the scenario's drachtio records to the container's stderr; return message count."""
    text = "".join(sc.drachtio)
    sc.drachtio.clear()
    engine.log(c, text, stream=2)
    return text.count(" bytes from ") + text.count(" bytes to ")


async def test_exact_counts_across_restart_recreate_drop_and_api_outage(
    engine: FakeDockerEngine, tmp_path: Path
) -> None:
    sbc = engine.add_container("drachtio-sbc", image="drachtio/drachtio-server:0.9.2")
    reg = engine.add_container("sbc-sip-sidecar", image="jambonz/sbc-sip-sidecar:0.9.6")
    sc = Scenario(1772366400.0)
    devices = [Device(str(1000 + i), "acme.example.com", f"203.0.113.{i + 1}") for i in range(5)]
    expected = 0
    async with run_daemon(tmp_path, engine) as d:
        for dev in devices:
            sc.register_ok(dev)
        expected += write_sip(engine, sbc, sc)
        engine.log(
            reg,
            pino(
                1772366400.5,
                30,
                "connected to drachtio listening on 10.0.0.5:9022, local hostports: udp/10.0.0.5:5060",
            ),
            stream=1,
        )
        await d.wait_metric(expected, "sipwatch_sip_messages_total")

        engine.restart(sbc)  # follow stream ends; resumed with since + dedupe
        for dev in devices:
            sc.register_rejected(dev, 403, "Forbidden", "Invalid credentials", challenged=True)
        expected += write_sip(engine, sbc, sc)
        await d.wait_metric(expected, "sipwatch_sip_messages_total")

        await engine.drop_connections()  # daemon crash mid-stream
        for dev in devices[:2]:
            sc.register_ok(dev)
        expected += write_sip(engine, sbc, sc)
        await d.wait_metric(expected, "sipwatch_sip_messages_total")

        await engine.pause_api()  # Docker API gone for a while; drachtio keeps logging
        for dev in devices:
            sc.register_ok(dev)
        expected += write_sip(engine, sbc, sc)
        await asyncio.sleep(1.0)
        await engine.resume_api()
        await d.wait_metric(expected, "sipwatch_sip_messages_total")

        sbc = engine.recreate(sbc)  # docker compose up with a new config: new container id
        for dev in devices[:3]:
            sc.register_rejected(
                dev, 403, "Forbidden", "Unknown or invalid realm", challenged=False
            )
        expected += write_sip(engine, sbc, sc)
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
    assert d.proc.returncode == 0


async def test_registrar_flavour_is_detected_from_the_container_image(
    engine: FakeDockerEngine, tmp_path: Path
) -> None:
    engine.add_container("drachtio-sbc", image="drachtio/drachtio-server:0.8.26")
    engine.add_container("registrar", image="jambonz/sbc-registrar:latest")  # legacy compose
    async with run_daemon(tmp_path, engine) as d:
        status, body = 0, ""
        async with asyncio.timeout(20):  # the Docker source attaches shortly after start-up
            while status != 200:
                status, body = await d.get("/readyz")
                await asyncio.sleep(0.1)
        assert status == 200, body
    assert d.proc.stdout is not None
    out = (await d.proc.stdout.read()).decode()
    detected = [json.loads(line) for line in out.splitlines() if '"registrar detected"' in line]
    assert detected and detected[0]["flavour"] == "legacy" and detected[0]["service"] == "registrar"
