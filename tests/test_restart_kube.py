"""A real ``sipwatch run`` following jambonz pods through a fake kube-apiserver (HTTPS, a real
kubeconfig), killed with SIGKILL and started again on the same state directory while the pods
keep logging, their containers restart and new pods appear: the SIP message and REGISTER
transaction counts of both runs, read from /metrics, add up exactly to the pods' logs.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.daemon_runner import clean_env
from tests.fake_kube import FakeKubeApiServer, FakePod, rfc3339nano_fixed
from tests.restart_support import START, Counts, SipwatchRun, burst, log_counts, wait_saved
from tools.synth import Device, Scenario, pino

SBC = {"app": "jambonz-sbc-sip"}
REG = {"app": "sbc-register"}
STARTUP = pino(START, 30, "connected to drachtio listening on 10.0.0.5:9022, local hostports: x")


class Case:
    def __init__(self, tmp_path: Path, kubeconfig: Path, tail: str) -> None:
        self.dir = tmp_path
        self.state = tmp_path / "state"
        self.kubeconfig = kubeconfig
        self.tail = tail
        self.runs = 0

    def run(self, *, idle: float = 0.2) -> SipwatchRun:
        self.runs += 1
        cfg = f"""
[sources]
idle_flush_seconds = {idle}
state_directory = "{self.state}"
[sources.docker]
enabled = false
[sources.kubernetes]
enabled = true
kubeconfig = "{self.kubeconfig}"
tail = "{self.tail}"
"""
        return SipwatchRun(cfg, self.dir, clean_env(), f"run{self.runs}")

    @staticmethod
    def key(pod: FakePod, container: str) -> str:
        return f"kubernetes:{pod.uid}/{container}"

    async def wait_saved(self, pod: FakePod, container: str, ts_ns: int) -> None:
        def check(positions: dict[str, Any]) -> bool:
            state = positions.get(self.key(pod, container), {}).get("state", {})
            return bool(state.get("ts") == rfc3339nano_fixed(ts_ns) and state.get("count") == 1)

        await wait_saved(self.state, check)

    async def attached(self, pod: FakePod, container: str) -> None:
        def check(positions: dict[str, Any]) -> bool:
            return "since_ns" in positions.get(self.key(pod, container), {}).get("state", {})

        await wait_saved(self.state, check)


def log(kube: FakeKubeApiServer, pod: FakePod, text: str) -> int:
    """drachtio writes ``text``; the newest entry's timestamp."""
    return kube.log(pod, "drachtio", text)[-1].ts_ns


async def test_tail_all_resumes_through_a_container_restart_and_a_new_pod(
    kube: FakeKubeApiServer, kubeconfig: Path, tmp_path: Path
) -> None:
    case = Case(tmp_path, kubeconfig, "all")
    sbc1 = kube.add_pod("jambonz-sbc-sip-aaaaa", SBC, ["drachtio"], node="sbc-1")
    kube.add_pod("sbc-register-6f-x", REG, ["sbc-registrar"])
    history, b1, b2, b3, b4 = (burst(2, i, 1000 * (i + 1)) for i in range(5))
    log(kube, sbc1, history)
    async with case.run() as run:
        await run.wait_counts(log_counts(history))
        last = log(kube, sbc1, b1)
        before = await run.wait_counts(log_counts(history + b1))
        await case.wait_saved(sbc1, "drachtio", last)
        await run.kill()
    log(kube, sbc1, b2)  # while sipwatch is down, into the instance it was reading
    kube.restart_container(sbc1, "drachtio")  # a new instance: b2 is now in the previous log
    log(kube, sbc1, b3)
    sbc2 = kube.add_pod("jambonz-sbc-sip-bbbbb", SBC, ["drachtio"], node="sbc-2")
    log(kube, sbc2, b4)  # a pod created while sipwatch was down
    async with case.run() as run:
        after = await run.wait_counts(log_counts(b2 + b3 + b4))
        await asyncio.sleep(1.0)
        assert await run.counts() == after  # the history is not counted again
    assert before + after == log_counts(history + b1 + b2 + b3 + b4)


async def test_tail_0_keeps_what_was_logged_while_down(
    kube: FakeKubeApiServer, kubeconfig: Path, tmp_path: Path
) -> None:
    case = Case(tmp_path, kubeconfig, "0")
    sbc = kube.add_pod("jambonz-sbc-sip-aaaaa", SBC, ["drachtio"], node="sbc-1")
    reg = kube.add_pod("sbc-register-6f-x", REG, ["sbc-registrar"])
    history, b1, b2 = burst(3, 0, 1000), burst(2, 1, 2000), burst(4, 2, 3000)
    log(kube, sbc, history)  # before the first start: tail 0 skips it, by design
    async with case.run() as run:
        await case.attached(sbc, "drachtio")
        await case.attached(reg, "sbc-registrar")
        last = log(kube, sbc, b1)
        before = await run.wait_counts(log_counts(b1))
        await case.wait_saved(sbc, "drachtio", last)
        await case.attached(reg, "sbc-registrar")  # the registrar logged nothing yet
        await run.kill()
    log(kube, sbc, b2)
    kube.log(reg, "sbc-registrar", STARTUP, stream="stdout")
    async with case.run() as run:
        after = await run.wait_counts(log_counts(b2))
        async with asyncio.timeout(20):
            while await run.metric("sipwatch_service_events_total") < 1:
                await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        assert await run.counts() == after
    assert before + after == log_counts(b1 + b2)


async def test_sigkill_with_a_record_held_back(
    kube: FakeKubeApiServer, kubeconfig: Path, tmp_path: Path
) -> None:
    case = Case(tmp_path, kubeconfig, "all")
    sbc = kube.add_pod("jambonz-sbc-sip-aaaaa", SBC, ["drachtio"], node="sbc-1")
    b1, b2 = burst(3, 0, 1000), burst(2, 1, 2000)
    sc = Scenario(START + 0.5)
    dev = Device("9000", "acme.example.com", "203.0.113.99")
    sc.recv(dev, dev.register())
    held = "".join(sc.drachtio)
    async with case.run(idle=60) as run:
        whole = log_counts(b1)
        before_held = log(kube, sbc, b1)
        await run.wait_counts(Counts(whole.messages - 1, whole.transactions - 1))
        log(kube, sbc, held)
        before = await run.wait_counts(whole)
        await case.wait_saved(sbc, "drachtio", before_held)
        await run.kill()
    log(kube, sbc, b2)
    async with case.run() as run:
        after = await run.wait_counts(log_counts(held + b2))
    assert before + after == log_counts(b1 + held + b2)
