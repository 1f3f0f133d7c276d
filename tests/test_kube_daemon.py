"""`sipwatch run` against a fake kube-apiserver (HTTPS, a real kubeconfig file): pods restart,
get replaced, streams are cut mid-line, the watch expires and the API goes away for a while;
the daemon must count every SIP message exactly once, per pod and per node."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from tests.daemon_runner import SipwatchProcess, take_sip
from tests.fake_kube import FakeKubeApiServer, FakePod
from tools.synth import Device, Scenario, pino

SBC = {"app": "jambonz-sbc-sip"}


@contextlib.asynccontextmanager
async def run_daemon(tmp: Path, kubeconfig: Path) -> AsyncIterator[SipwatchProcess]:
    config = f"""
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
"""
    async with SipwatchProcess(config, tmp) as d:
        yield d


def write_sip(kube: FakeKubeApiServer, pod: FakePod, sc: Scenario) -> int:
    """Log the scenario's drachtio records in the pod; return the SIP message count."""
    text, count = take_sip(sc)
    kube.log(pod, "drachtio", text)
    return count


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
    assert d.returncode == 0
    out = d.output()
    assert '"event": "log sources"' in out and '"mode": "configured"' in out
    assert "app=jambonz-sbc-sip container drachtio" in out
