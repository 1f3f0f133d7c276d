"""`sipwatch run` against a fake kube-apiserver (HTTPS, a real kubeconfig file): pods restart,
get replaced, streams are cut mid-line, the watch expires and the API goes away for a while;
the daemon must count every SIP message exactly once, per pod and per node."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from tests.fake_kube import FakeKubeApiServer, FakePod
from tools.synth import Device, Scenario, pino

ROOT = Path(__file__).resolve().parent.parent
SBC = {"app": "jambonz-sbc-sip"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    async def wait_metric(self, expected: float, name: str, timeout: float = 20.0) -> None:
        last = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while True:
                    with contextlib.suppress(aiohttp.ClientError):
                        last = await self.metric(name)
                        if last == expected:
                            return
                    await asyncio.sleep(0.1)
        raise AssertionError(f"{name} = {last}, expected {expected}")


@contextlib.asynccontextmanager
async def run_daemon(tmp: Path, kubeconfig: Path) -> AsyncIterator[Daemon]:
    port = free_port()
    cfg = tmp / "sipwatch.toml"
    cfg.write_text(
        f"""
[sources]
idle_flush_seconds = 0.2
# Docker off explicitly: until the daemon keeps resolve_sources()'s config, its readiness
# reads the unresolved one (docker.enabled defaults to true).
[sources.docker]
enabled = false
[sources.kubernetes]
enabled = true
kubeconfig = "{kubeconfig}"
tail = "all"
[metrics]
listen = "127.0.0.1:{port}"
[logging]
format = "json"
"""
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIPWATCH", "KUBE", "DOCKER"))}
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
        stderr=asyncio.subprocess.STDOUT,
    )
    d = Daemon(proc, port)
    try:
        async with asyncio.timeout(30):
            while True:
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    if (await d.get("/healthz"))[0] == 200:
                        break
                if proc.returncode is not None:
                    out = await proc.stdout.read() if proc.stdout else b""
                    raise AssertionError(f"daemon exited: {out.decode()[-3000:]}")
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


def write_sip(kube: FakeKubeApiServer, pod: FakePod, sc: Scenario) -> int:
    """Log the scenario's drachtio records in the pod; return the SIP message count."""
    text = "".join(sc.drachtio)
    sc.drachtio.clear()
    kube.log(pod, "drachtio", text)
    return text.count(" bytes from ") + text.count(" bytes to ")


async def test_exact_counts_through_restarts_replacement_cuts_and_outages(
    kube: FakeKubeApiServer, kubeconfig: Path, tmp_path: Path
) -> None:
    sbc1 = kube.add_pod("jambonz-sbc-sip-aaaaa", SBC, ["drachtio", "smpp"], node="sbc-1")
    sbc2 = kube.add_pod("jambonz-sbc-sip-bbbbb", SBC, ["drachtio", "smpp"], node="sbc-2")
    reg = kube.add_pod("sbc-register-6f-x", {"app": "sbc-register"}, ["sbc-registrar"])
    sc = Scenario(1772366400.0)
    devices = [Device(str(1000 + i), "acme.example.com", f"203.0.113.{i + 1}") for i in range(5)]
    expected = 0
    async with run_daemon(tmp_path, kubeconfig) as d:
        for dev in devices:
            sc.register_ok(dev)
        expected += write_sip(kube, sbc1, sc)
        for dev in devices[:2]:
            sc.register_ok(dev)
        expected += write_sip(kube, sbc2, sc)
        kube.log(
            reg,
            "sbc-registrar",
            pino(1772366400.5, 30, "connected to drachtio listening on 10.0.0.5:9022"),
            stream="stdout",
        )
        await d.wait_metric(expected, "sipwatch_sip_messages_total")
        status, body = await d.get("/readyz")
        assert status == 200, body

        kube.restart_container(sbc1, "drachtio")  # a new log; the old stream drained
        for dev in devices:
            sc.register_rejected(dev, 403, "Forbidden", "Invalid credentials", challenged=True)
        expected += write_sip(kube, sbc1, sc)
        await d.wait_metric(expected, "sipwatch_sip_messages_total")

        kube.cut_next_log_write()  # a stream dropped in the middle of a line
        for dev in devices[:3]:
            sc.register_ok(dev)
        expected += write_sip(kube, sbc2, sc)
        await d.wait_metric(expected, "sipwatch_sip_messages_total")

        await kube.pause_api()  # the control plane is away; drachtio keeps logging
        for dev in devices:
            sc.register_ok(dev)
        expected += write_sip(kube, sbc1, sc)
        kube.compact()  # and the watch's resourceVersion expires meanwhile
        await asyncio.sleep(1.0)
        await kube.resume_api()
        await d.wait_metric(expected, "sipwatch_sip_messages_total")

        sbc3 = kube.replace_pod(sbc2, "jambonz-sbc-sip-ccccc", node="sbc-3")  # node drained
        for dev in devices[:3]:
            sc.register_rejected(
                dev, 403, "Forbidden", "Unknown or invalid realm", challenged=False
            )
        expected += write_sip(kube, sbc3, sc)
        await d.wait_metric(expected, "sipwatch_sip_messages_total")

        assert await d.metric("sipwatch_register_transactions_total", status="403") == 5 + 3
        assert await d.metric("sipwatch_register_transactions_total", status="200") == 5 + 2 + 3 + 5
        assert await d.metric("sipwatch_service_events_total", kind="startup") >= 1
        await asyncio.sleep(1.0)  # hold steady: nothing is counted twice later
        assert await d.metric("sipwatch_sip_messages_total") == expected
    assert d.proc.returncode == 0
    out = (await d.proc.stdout.read()).decode() if d.proc.stdout else ""
    assert '"event": "log sources"' in out and '"mode": "configured"' in out
    assert "app=jambonz-sbc-sip container drachtio" in out
