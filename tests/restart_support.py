"""A real ``sipwatch run`` process for the restart tests: start it, read its /metrics and its
positions file, kill it with SIGKILL, start it again on the same state directory.

Expected counts come from the log itself: the whole text run through a fresh pipeline, the
way ``replay`` would count it (without timing out what is still open at the end).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from sipwatch.model import LogChunk, RegisterTransaction, Stream
from sipwatch.pipeline.core import Pipeline, PipelineSettings
from sipwatch.sources.positions import STATE_FILE

ROOT = Path(__file__).resolve().parent.parent
MESSAGES = "sipwatch_sip_messages_total"
TRANSACTIONS = "sipwatch_register_transactions_total"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


class SipwatchRun:
    """One ``sipwatch run`` subprocess; ``async with`` starts it and makes sure it is gone."""

    def __init__(self, config: str, workdir: Path, env: Mapping[str, str], name: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.cfg = workdir / f"{name}.toml"
        self.cfg.write_text(
            config + f'\n[metrics]\nlisten = "127.0.0.1:{self.port}"\n[logging]\nformat = "json"\n'
        )
        self.out = workdir / f"{name}.log"
        self.env = dict(env)
        self.proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> SipwatchRun:
        with self.out.open("wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "sipwatch",
                "run",
                "--config",
                str(self.cfg),
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )
        async with asyncio.timeout(30):
            while True:
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    if (await self.get("/healthz"))[0] == 200:
                        return self
                if self.proc.returncode is not None:
                    raise AssertionError(f"sipwatch exited: {self.output()[-3000:]}")
                await asyncio.sleep(0.1)

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.output().splitlines() if line.startswith("{")]

    async def get(self, path: str) -> tuple[int, str]:
        async with (
            aiohttp.ClientSession() as s,
            s.get(self.base + path, timeout=aiohttp.ClientTimeout(total=5)) as r,
        ):
            return r.status, await r.text()

    async def metric(self, name: str) -> int:
        _, body = await self.get("/metrics")
        return int(
            sum(
                float(line.rsplit(" ", 1)[1])
                for line in body.splitlines()
                if line.startswith(name + "{")
            )
        )

    async def counts(self) -> Counts:
        return Counts(await self.metric(MESSAGES), await self.metric(TRANSACTIONS))

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


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without sipwatch's, systemd's state or container-engine variables."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SIPWATCH", "KUBE", "DOCKER")) and k != "STATE_DIRECTORY"
    }
    env.update(extra)
    return env
