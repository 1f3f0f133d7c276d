"""A real ``sipwatch run`` following containers of a fake Docker Engine (real HTTP on a unix
socket), killed with SIGKILL and started again on the same state directory, while the
containers keep logging, restart and get recreated: the SIP message and REGISTER transaction
counts of both runs, read from /metrics, add up exactly to what was logged after the first
start (``tail = "0"``) or to the whole history (``tail = "all"``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_runner import clean_env
from tests.fake_docker import FakeContainer, FakeDockerEngine, format_ts
from tests.restart_support import (
    START,
    Counts,
    SipwatchRun,
    burst,
    log_counts,
    read_positions,
    wait_saved,
)
from tools.synth import Device, Scenario, pino

SBC_IMAGE = "drachtio/drachtio-server:0.9.2"
REG_IMAGE = "jambonz/sbc-sip-sidecar:0.9.6"
STARTUP = pino(START, 30, "connected to drachtio listening on 10.0.0.5:9022, local hostports: x")


def config(state: Path, *, tail: str, idle: float = 0.2) -> str:
    return f"""
[sources]
idle_flush_seconds = {idle}
state_directory = "{state}"
[sources.docker]
project = "jambonz"
tail = "{tail}"
"""


class Case:
    def __init__(self, tmp_path: Path, engine: FakeDockerEngine, tail: str) -> None:
        self.dir = tmp_path
        self.state = tmp_path / "state"
        self.engine = engine
        self.tail = tail
        self.runs = 0

    def run(self, *, idle: float = 0.2) -> SipwatchRun:
        self.runs += 1
        env = clean_env(DOCKER_HOST=self.engine.url)
        return SipwatchRun(
            config(self.state, tail=self.tail, idle=idle), self.dir, env, f"run{self.runs}"
        )

    async def wait_saved(self, c: FakeContainer, ts_ns: int) -> None:
        """Until the container's saved position is the entry stamped ``ts_ns``."""

        def check(positions: dict[str, Any]) -> bool:
            state = positions.get(f"docker:{c.id}", {}).get("state", {})
            return bool(state.get("ts") == format_ts(ts_ns) and state.get("count") == 1)

        await wait_saved(self.state, check)

    async def attached(self, c: FakeContainer) -> None:
        """Until the container's "attached at" point is saved (tail "0": from then on,
        every line counts)."""

        def check(positions: dict[str, Any]) -> bool:
            return "since_ns" in positions.get(f"docker:{c.id}", {}).get("state", {})

        await wait_saved(self.state, check)


def log(engine: FakeDockerEngine, c: FakeContainer, text: str) -> int:
    """drachtio writes ``text`` (stderr); the newest entry's timestamp."""
    return engine.log(c, text, stream=2)[-1].ts_ns


async def test_tail_all_resumes_after_sigkill_instead_of_counting_history_again(
    docker_engine: FakeDockerEngine, tmp_path: Path
) -> None:
    case = Case(tmp_path, docker_engine, "all")
    sbc = docker_engine.add_container("drachtio-sbc", image=SBC_IMAGE)
    docker_engine.add_container("sbc-sip-sidecar", image=REG_IMAGE)
    history, b1, b2, b3 = (
        burst(3, 0, 1000),
        burst(4, 1, 2000),
        burst(2, 2, 3000),
        burst(2, 3, 4000),
    )
    log(docker_engine, sbc, history)
    async with case.run() as run:
        await run.wait_counts(log_counts(history))
        last = log(docker_engine, sbc, b1)
        before = await run.wait_counts(log_counts(history + b1))
        await case.wait_saved(sbc, last)
        await run.kill()
    log(docker_engine, sbc, b2)  # logged while sipwatch is down
    docker_engine.restart(sbc)  # ... and the container restarted meanwhile (same id)
    log(docker_engine, sbc, b3)
    async with case.run() as run:
        after = await run.wait_counts(log_counts(b2 + b3))
        await asyncio.sleep(1.0)
        assert await run.counts() == after  # history is not counted again
    assert before + after == log_counts(history + b1 + b2 + b3)


async def test_tail_0_keeps_what_was_logged_while_down(
    docker_engine: FakeDockerEngine, tmp_path: Path
) -> None:
    """Before checkpoints, ``tail = "0"`` skipped everything logged while sipwatch was down.
    The registrar logs nothing during the first run (only its "attached" point is saved),
    then logs while sipwatch is down; a container recreated meanwhile (new id) is read from
    its first line."""
    case = Case(tmp_path, docker_engine, "0")
    sbc = docker_engine.add_container("drachtio-sbc", image=SBC_IMAGE)
    reg = docker_engine.add_container("sbc-sip-sidecar", image=REG_IMAGE)
    history, b1, b2, b3 = (
        burst(3, 0, 1000),
        burst(4, 1, 2000),
        burst(2, 2, 3000),
        burst(2, 3, 4000),
    )
    log(docker_engine, sbc, history)  # before the first start: tail 0 skips it, by design
    async with case.run() as run:
        await case.attached(sbc)
        await case.attached(reg)
        last = log(docker_engine, sbc, b1)
        before = await run.wait_counts(log_counts(b1))
        await case.wait_saved(sbc, last)
        await case.attached(reg)  # still: the registrar logged nothing
        await run.kill()
    log(docker_engine, sbc, b2)
    docker_engine.log(reg, STARTUP, stream=1)  # the registrar's line while sipwatch is down
    docker_engine.restart(sbc)
    log(docker_engine, sbc, b3)
    sbc2 = docker_engine.add_container(  # a second drachtio, created while down
        "drachtio-sbc", image=SBC_IMAGE, number=2
    )
    b4 = burst(1, 4, 5000)
    log(docker_engine, sbc2, b4)
    async with case.run() as run:
        after = await run.wait_counts(log_counts(b2 + b3 + b4))
        assert await run.metric("sipwatch_service_events_total") >= 1
        await asyncio.sleep(1.0)
        assert await run.counts() == after
    assert before + after == log_counts(b1 + b2 + b3 + b4)


async def test_recreated_while_down_is_read_from_its_first_line(
    docker_engine: FakeDockerEngine, tmp_path: Path
) -> None:
    case = Case(tmp_path, docker_engine, "0")
    sbc = docker_engine.add_container("drachtio-sbc", image=SBC_IMAGE)
    b1, b2 = burst(2, 0, 1000), burst(3, 1, 2000)
    async with case.run() as run:
        await case.attached(sbc)
        last = log(docker_engine, sbc, b1)
        before = await run.wait_counts(log_counts(b1))
        await case.wait_saved(sbc, last)
        await run.kill()
    new = docker_engine.recreate(sbc)  # docker compose up with a new image: new id
    log(docker_engine, new, b2)
    async with case.run() as run:
        after = await run.wait_counts(log_counts(b2))
    assert before + after == log_counts(b1 + b2)


async def test_sigkill_with_a_record_held_back(
    docker_engine: FakeDockerEngine, tmp_path: Path
) -> None:
    """A stream that never goes quiet (idle flush 60 s): the last record is held by the
    framer, so the saved point must be before it - the end of the previous read."""
    case = Case(tmp_path, docker_engine, "all")
    sbc = docker_engine.add_container("drachtio-sbc", image=SBC_IMAGE)
    b1, b2 = burst(4, 0, 1000), burst(3, 1, 2000)
    sc = Scenario(START + 0.5)
    dev = Device("9000", "acme.example.com", "203.0.113.99")
    sc.recv(dev, dev.register())
    held = "".join(sc.drachtio)  # one REGISTER, alone in its read
    async with case.run(idle=60) as run:
        whole = log_counts(b1)
        before_held = log(docker_engine, sbc, b1)
        await run.wait_counts(Counts(whole.messages - 1, whole.transactions - 1))
        log(docker_engine, sbc, held)
        before = await run.wait_counts(whole)  # b1's last record is out, the REGISTER held
        await case.wait_saved(sbc, before_held)
        await run.kill()
    log(docker_engine, sbc, b2)
    async with case.run() as run:
        after = await run.wait_counts(log_counts(held + b2))
    assert before + after == log_counts(b1 + held + b2)
    assert after.messages == 1 + log_counts(b2).messages


async def test_sigkill_under_a_container_that_never_stops_logging(
    docker_engine: FakeDockerEngine, tmp_path: Path
) -> None:
    """The kill lands wherever it lands; the proof is the checkpoint: it covers at least
    what /metrics showed before the kill, and the next run counts exactly what was logged
    after it."""
    case = Case(tmp_path, docker_engine, "all")
    sbc = docker_engine.add_container("drachtio-sbc", image=SBC_IMAGE)
    stop = asyncio.Event()
    written = 0

    async def writer() -> None:
        nonlocal written
        for i in range(2000):
            log(docker_engine, sbc, burst(1, i * 0.01, 1000 + i))
            written += 1
            await asyncio.sleep(0.005)
            if stop.is_set():
                return

    def split_at(state: dict[str, Any]) -> tuple[str, str]:
        """The container's log before and after a saved (ts, count): RFC3339Nano fixed
        width sorts like time; ``count`` entries stamped ``ts`` were delivered."""
        before, after, skip = [], [], state["count"]
        for e in sbc.entries:
            stamp = format_ts(e.ts_ns)
            if stamp < state["ts"] or (stamp == state["ts"] and skip):
                skip -= stamp == state["ts"]
                before.append(e.data.decode())
            else:
                after.append(e.data.decode())
        return "".join(before), "".join(after)

    async with case.run() as run:
        task = asyncio.create_task(writer())
        try:
            async with asyncio.timeout(30):
                while written < 100:
                    await asyncio.sleep(0.05)
            seen = (await run.counts()).messages
            assert seen > 0

            def covers(positions: dict[str, Any]) -> bool:
                state = positions.get(f"docker:{sbc.id}", {}).get("state", {})
                return "ts" in state and log_counts(split_at(state)[0]).messages >= seen

            await wait_saved(case.state, covers)
            assert not task.done()
            await run.kill()
        finally:
            stop.set()
            await task
    saved = read_positions(case.state)
    assert saved is not None
    rest = split_at(saved["positions"][f"docker:{sbc.id}"]["state"])[1]
    async with case.run() as run:
        await run.wait_counts(log_counts(rest))
        await asyncio.sleep(0.5)
        assert await run.counts() == log_counts(rest)


@pytest.mark.parametrize("tail", ["all", "0"])
async def test_sigterm_then_restart_counts_each_line_once(
    docker_engine: FakeDockerEngine, tmp_path: Path, tail: str
) -> None:
    case = Case(tmp_path, docker_engine, tail)
    sbc = docker_engine.add_container("drachtio-sbc", image=SBC_IMAGE)
    b1, b2 = burst(2, 0, 1000), burst(2, 1, 2000)
    async with case.run() as run:
        if tail == "0":
            await case.attached(sbc)
        log(docker_engine, sbc, b1)
        before = await run.wait_counts(log_counts(b1))
        assert run.proc is not None
        run.proc.terminate()
        assert await run.proc.wait() == 0
    log(docker_engine, sbc, b2)
    async with case.run() as run:
        after = await run.wait_counts(log_counts(b2))
    assert before + after == log_counts(b1 + b2)
