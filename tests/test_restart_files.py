"""A real ``sipwatch run`` following a drachtio log file, killed with SIGKILL at several
points (right after a burst, mid-burst with a record held back, under a writer that never
stops, during rotation), the log changed while it is down (more lines, rotation,
copytruncate, a new file on a reused inode), started again: the SIP message and REGISTER
transaction counts of both runs, read from /metrics, add up exactly to the log's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
from pathlib import Path

import pytest

from tests.cli_support import run_cli
from tests.daemon_runner import clean_env
from tests.restart_support import (
    Counts,
    SipwatchRun,
    burst,
    log_counts,
    read_positions,
    wait_saved,
)

_RECORD_START = re.compile(rb"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} ", re.MULTILINE)


def append(path: Path, text: str) -> None:
    with path.open("a") as f:
        f.write(text)


def config(log: Path, state: Path, *, idle: float = 0.2) -> str:
    return f"""
[sources]
idle_flush_seconds = {idle}
state_directory = "{state}"
[sources.docker]
enabled = false
[[sources.files]]
path = "{log}"
follow = true
"""


class Case:
    """The files of one test: the log, the state directory and the run counter."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        self.log = tmp_path / "drachtio.log"
        self.state = tmp_path / "state"
        self.runs = 0
        self.key = f"file:{self.log}"

    def run(self, *, idle: float = 0.2) -> SipwatchRun:
        self.runs += 1
        return SipwatchRun(
            config(self.log, self.state, idle=idle), self.dir, clean_env(), f"run{self.runs}"
        )

    def saved(self) -> dict[str, int]:
        data = read_positions(self.state)
        assert data is not None
        state: dict[str, int] = data["positions"][self.key]["state"]
        return state

    async def wait_saved(self, path: Path, offset: int) -> None:
        ino = path.stat().st_ino

        def check(positions: dict[str, dict[str, dict[str, int]]]) -> bool:
            state = positions.get(self.key, {}).get("state", {})
            return state.get("ino") == ino and state.get("offset") == offset

        await wait_saved(self.state, check)


async def test_sigkill_right_after_a_burst_then_lines_while_down(tmp_path: Path) -> None:
    case = Case(tmp_path)
    first = burst(5, 0, 1000)
    case.log.write_text(first)
    async with case.run() as run:
        before = await run.wait_counts(log_counts(first))
        await case.wait_saved(case.log, case.log.stat().st_size)
        assert await run.counts() == before
        await run.kill()
    second = burst(4, 100, 2000)  # logged while sipwatch is down
    append(case.log, second)
    async with case.run() as run:
        after = await run.wait_counts(log_counts(second))
        resumed = [e for e in run.events() if e["event"] == "file resumed at its checkpoint"]
        assert resumed and resumed[0]["offset"] == len(first.encode())
        await asyncio.sleep(0.5)
        assert await run.counts() == after
    assert before + after == log_counts(first + second)
    assert before + after == Counts(36, 18)


@pytest.mark.parametrize("stop", ["SIGKILL", "SIGTERM"])
async def test_stopped_mid_burst_with_a_record_held_back(tmp_path: Path, stop: str) -> None:
    """The log never goes quiet (idle flush 60 s): the framer holds the last record, so the
    saved offset must be where that record starts - not the read offset."""
    case = Case(tmp_path)
    first = burst(6, 0, 1000) + "2026-03-01 12:05:00.000000 Starting drachtio version v0.9.2\n"
    head = first.encode()
    held_at = [m.start() for m in _RECORD_START.finditer(head)][-1]
    case.log.write_text("")
    async with case.run(idle=60) as run:
        for part in (first[:3000], first[3000:7000], first[7000:]):  # several reads
            append(case.log, part)
            await asyncio.sleep(0.2)
        before = await run.wait_counts(log_counts(first))  # all: the held line is no SIP
        await case.wait_saved(case.log, held_at)
        assert await run.counts() == before
        if stop == "SIGKILL":
            await run.kill()
        else:
            assert run.proc is not None
            run.proc.send_signal(signal.SIGTERM)
            assert await run.proc.wait() == 0
    assert case.saved()["offset"] == held_at  # SIGTERM saves the same: nothing more is safe
    second = burst(3, 100, 2000)
    append(case.log, second)
    async with case.run() as run:
        after = await run.wait_counts(log_counts(head[held_at:].decode() + second))
    assert before + after == log_counts(first + second)


async def test_sigkill_mid_burst_inside_a_registration(tmp_path: Path) -> None:
    """Killed while the 200 OK of a registration is the held record: its REGISTER was
    counted by the first run, the answer by the second (as an orphan answer), once each."""
    case = Case(tmp_path)
    first = burst(5, 0, 1000)
    head = first.encode()
    held_at = [m.start() for m in _RECORD_START.finditer(head)][-1]
    case.log.write_text(first)
    async with case.run(idle=60) as run:
        whole = log_counts(first)
        before = await run.wait_counts(Counts(whole.messages - 1, whole.transactions - 1))
        await case.wait_saved(case.log, held_at)
        await run.kill()
    second = burst(2, 100, 2000)
    append(case.log, second)
    async with case.run() as run:
        after = await run.wait_counts(Counts(1 + 8, 1 + 4))
    assert before + after == log_counts(first + second) == Counts(28, 14)


async def test_sigkill_under_a_writer_that_never_stops(tmp_path: Path) -> None:
    """A busy log: a writer appends all the time and the kill lands wherever it lands.  The
    first run's final counts cannot be read after SIGKILL, so the proof is the checkpoint: it
    is on a record start, it covers at least what /metrics showed before the kill, and the
    second run counts exactly what comes after it."""
    case = Case(tmp_path)
    case.log.write_text("")
    parts = [burst(1, i * 2.0, 1000 + i) for i in range(400)]
    written: list[str] = []
    stop = asyncio.Event()

    async def writer() -> None:
        for part in parts:
            append(case.log, part)
            written.append(part)
            await asyncio.sleep(0.005)
            if stop.is_set():
                return

    async with case.run() as run:
        task = asyncio.create_task(writer())
        try:
            async with asyncio.timeout(30):
                while len(written) < 100:
                    await asyncio.sleep(0.05)
            seen = (await run.counts()).messages
            assert seen > 0

            def covers(positions: dict[str, dict[str, dict[str, int]]]) -> bool:
                offset = positions.get(case.key, {}).get("state", {}).get("offset", 0)
                text = case.log.read_bytes()[:offset].decode()
                return log_counts(text).messages >= seen

            await wait_saved(case.state, covers)
            assert not task.done()  # still writing: the kill is mid-burst
            await run.kill()
        finally:
            stop.set()
            await task
    data = case.log.read_bytes()
    offset = case.saved()["offset"]
    assert 0 < offset < len(data)
    assert _RECORD_START.match(data, offset), "a checkpoint must be on a record start"
    rest = data[offset:].decode()
    async with case.run() as run:
        await run.wait_counts(log_counts(rest))
        await asyncio.sleep(0.5)
        assert await run.counts() == log_counts(rest)


async def test_sigkill_while_reading_the_rotated_file(tmp_path: Path) -> None:
    """logrotate renamed the file, the writer still writes to the old one, sipwatch still
    reads it when it is killed; while it is down the writer finishes the old file and starts
    the new one."""
    case = Case(tmp_path)
    old = tmp_path / "drachtio.log.1"
    b1, b2, b3, b4 = (burst(3, 100 * i, 1000 * i) for i in range(1, 5))
    case.log.write_text(b1)
    async with case.run() as run:
        await run.wait_counts(log_counts(b1))
        case.log.rename(old)
        append(old, b2)
        before = await run.wait_counts(log_counts(b1 + b2))
        await case.wait_saved(old, old.stat().st_size)
        await run.kill()
    append(old, b3)
    case.log.write_text(b4)
    async with case.run() as run:
        after = await run.wait_counts(log_counts(b3 + b4))
        events = [e["event"] for e in run.events()]
        assert "file changed while sipwatch was down: reading the rest of the old one first" in (
            events
        )
    assert before + after == log_counts(b1 + b2 + b3 + b4)


async def test_sigkill_after_switching_to_the_new_file_then_rotated_again(
    tmp_path: Path,
) -> None:
    case = Case(tmp_path)
    b1, b2, b3, b4 = (burst(2, 100 * i, 1000 * i) for i in range(1, 5))
    case.log.write_text(b1)
    async with case.run() as run:
        await run.wait_counts(log_counts(b1))
        case.log.rename(tmp_path / "drachtio.log.1")
        case.log.write_text(b2)
        before = await run.wait_counts(log_counts(b1 + b2))
        await case.wait_saved(case.log, case.log.stat().st_size)
        await run.kill()
    append(case.log, b3)
    os.rename(tmp_path / "drachtio.log.1", tmp_path / "drachtio.log.2")
    case.log.rename(tmp_path / "drachtio.log.1")
    case.log.write_text(b4)
    async with case.run() as run:
        after = await run.wait_counts(log_counts(b3 + b4))
    assert before + after == log_counts(b1 + b2 + b3 + b4)


async def test_copytruncate_while_down(tmp_path: Path) -> None:
    case = Case(tmp_path)
    b1, b2, b3 = (burst(3, 100 * i, 1000 * i) for i in range(1, 4))
    case.log.write_text(b1)
    async with case.run() as run:
        before = await run.wait_counts(log_counts(b1))
        await case.wait_saved(case.log, case.log.stat().st_size)
        await run.kill()
    append(case.log, b2)  # not read yet
    shutil.copyfile(case.log, tmp_path / "drachtio.log.1")
    with case.log.open("r+") as f:
        f.truncate(0)
    append(case.log, b3)
    async with case.run() as run:
        after = await run.wait_counts(log_counts(b2 + b3))
    assert before + after == log_counts(b1 + b2 + b3)


@pytest.mark.parametrize("how", ["same-inode", "delete-and-create"])
async def test_a_new_file_on_a_reused_inode_is_read_from_its_start(
    tmp_path: Path, how: str
) -> None:
    """The old file was deleted while sipwatch was down and a new one created.  The new one
    may get the old inode number back; ``same-inode`` makes sure of it by rewriting the file
    in place (same device and inode, longer than the saved offset, other first bytes)."""
    case = Case(tmp_path)
    b1, new = burst(2, 0, 1000), burst(6, 500, 5000)
    case.log.write_text(b1)
    ino = case.log.stat().st_ino
    async with case.run() as run:
        before = await run.wait_counts(log_counts(b1))
        await case.wait_saved(case.log, case.log.stat().st_size)
        await run.kill()
    if how == "same-inode":
        with case.log.open("r+") as f:
            f.write(new)
        assert case.log.stat().st_ino == ino and case.log.stat().st_size > len(b1)
    else:
        case.log.unlink()
        case.log.write_text(new)
    async with case.run() as run:
        after = await run.wait_counts(log_counts(new))
        await asyncio.sleep(0.5)
        assert await run.counts() == after
    assert before + after == log_counts(b1) + log_counts(new)


async def test_without_a_state_directory_a_restart_reads_the_file_again(tmp_path: Path) -> None:
    """What the checkpoints fix, shown: with them off (the state directory unset), a
    restart counts the whole file again."""
    case = Case(tmp_path)
    b1 = burst(2, 0, 1000)
    case.log.write_text(b1)
    off = config(case.log, case.state).replace(f'state_directory = "{case.state}"', "")
    for name in ("a", "b"):
        async with SipwatchRun(off, tmp_path, clean_env(), name) as run:
            await run.wait_counts(log_counts(b1))
            events = [e["event"] for e in run.events()]
            assert "checkpoints off: a restart reads the logs again as configured" in events
            with contextlib.suppress(ProcessLookupError):
                await run.kill()


def test_replay_never_uses_checkpoints(tmp_path: Path) -> None:
    """``sipwatch replay`` analyses the files it is given, whole, every time - even with a
    state directory configured and systemd's variable set."""
    state = tmp_path / "state"
    env = clean_env(STATE_DIRECTORY=str(state), SIPWATCH_STATE_DIRECTORY=str(state))
    args = [
        "replay",
        "--format",
        "json",
        "examples/drachtio-sbc.log",
        "examples/sbc-sip-sidecar.log",
    ]
    outputs = [run_cli(*args, env=env) for _ in range(2)]
    assert all(p.returncode == 0 for p in outputs), outputs[0].stderr[-2000:]
    assert outputs[0].stdout == outputs[1].stdout and '"sip_messages"' in outputs[0].stdout
    assert not state.exists()
