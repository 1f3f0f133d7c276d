"""A real ``sipwatch run`` process for the restart tests: start it, read its /metrics and its
positions file, kill it with SIGKILL, start it again on the same state directory.

Expected counts come from the log itself: the whole text run through a fresh pipeline, the
way ``replay`` would count it (without timing out what is still open at the end).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from sipwatch.model import LogChunk, RegisterTransaction, Stream
from sipwatch.pipeline.core import Pipeline, PipelineSettings
from sipwatch.sources.positions import STATE_FILE
from tests.daemon_runner import SipwatchProcess, metric_total
from tools.synth import Device, Scenario

MESSAGES = "sipwatch_sip_messages_total"
TRANSACTIONS = "sipwatch_register_transactions_total"
START = 1772366400.0


def burst(n: int, at: float, first_user: int) -> str:
    """n registrations at ``at`` seconds after START: 4n SIP messages, 2n REGISTER
    transactions.  Bursts of several streams stay within seconds of each other, as real
    logs do (a REGISTER whose answer is read later than a log time Timer F ahead of it would
    time out, in any run)."""
    sc = Scenario(START + at)
    for i in range(n):
        sc.register_ok(Device(str(first_user + i), "acme.example.com", f"203.0.113.{i % 250 + 1}"))
    return "".join(sc.drachtio)


@dataclass(frozen=True)
class Counts:
    messages: int
    transactions: int

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.messages + other.messages, self.transactions + other.transactions)


def log_counts(*texts: str) -> Counts:
    """SIP messages and REGISTER transactions in drachtio log texts (each its own stream)."""
    done: list[RegisterTransaction] = []

    class Tx:
        def observe_transaction(self, tx: RegisterTransaction) -> None:
            done.append(tx)

    pipeline = Pipeline(PipelineSettings(), observers=(Tx(),))
    for i, text in enumerate(texts):
        pipeline.feed(LogChunk(f"log{i}", Stream.TEXT, text))
        pipeline.feed(LogChunk(f"log{i}", Stream.TEXT, ""))
    return Counts(pipeline.parser.stats.records.get("sip", 0), len(done))


def read_positions(state: Path) -> dict[str, Any] | None:
    """The positions file as the daemon last wrote it (None before the first write)."""
    try:
        data = json.loads((state / STATE_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class SipwatchRun(SipwatchProcess):
    """One ``sipwatch run`` subprocess; ``async with`` starts it and makes sure it is gone
    (SIGKILL: a restart test's run never gets to save anything on the way out)."""

    def __init__(self, config: str, workdir: Path, env: Mapping[str, str], name: str) -> None:
        super().__init__(config, workdir, env=env, name=name, kill_on_exit=True)

    async def counts(self) -> Counts:
        _, body = await self.get("/metrics")
        return Counts(int(metric_total(body, MESSAGES)), int(metric_total(body, TRANSACTIONS)))

    async def wait_counts(self, expected: Counts, timeout: float = 30.0) -> Counts:
        """Wait until /metrics shows ``expected`` (never more), then check it holds."""
        last = None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    with contextlib.suppress(aiohttp.ClientError):
                        last = await self.counts()
                        if last == expected:
                            break
                        assert last.messages <= expected.messages, (last, expected)
                    await asyncio.sleep(0.1)
        except TimeoutError:
            raise AssertionError(f"counts {last}, expected {expected}") from None
        return last

    async def kill(self) -> None:
        """SIGKILL: nothing is flushed or saved on the way out."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        assert self.proc.returncode == -signal.SIGKILL


async def wait_saved(
    state: Path, check: Callable[[dict[str, Any]], bool], *, timeout: float = 20.0
) -> dict[str, Any]:
    """Wait until the positions file's ``positions`` pass ``check``: the daemon saved the
    position the test expects for what it processed."""
    data = None
    try:
        async with asyncio.timeout(timeout):
            while True:
                data = read_positions(state)
                if data is not None and check(data["positions"]):
                    return data
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"positions not saved as expected: {data}") from None
