"""``sipwatch run`` as an operator starts it on a VM, for end-to-end alert tests: a real
subprocess following real log files, its HTTP endpoints on loopback, its JSON log kept.

Used as ``async with FileDaemon(tmp_path, extra_toml) as d``: ``d.append(text)`` writes to
the followed drachtio log and returns the moment it was written (``time.monotonic()``, the
clock ``HttpReceiver`` stamps arrivals with), so time-to-know is measured end to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FileDaemon:
    """A ``sipwatch run`` subprocess following ``drachtio.log`` (and ``registrar.log``);
    its JSON log lines are collected in ``log_lines``."""

    def __init__(
        self,
        directory: Path,
        extra: str = "",
        *,
        level: str = "info",
        start_timeout: float = 30.0,
    ) -> None:
        self.directory = directory
        self.drachtio = directory / "drachtio.log"
        self.registrar = directory / "registrar.log"
        self.extra = extra
        self.level = level
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.start_timeout = start_timeout
        self.proc: asyncio.subprocess.Process | None = None
        self.log_lines: list[dict[str, Any]] = []
        self._reader: asyncio.Task[None] | None = None

    def config_text(self) -> str:
        return f"""
[sources.docker]
enabled = false
[[sources.files]]
path = "{self.drachtio}"
follow = true
[[sources.files]]
path = "{self.registrar}"
follow = true
[metrics]
listen = "127.0.0.1:{self.port}"
[logging]
format = "json"
level = "{self.level}"
{self.extra}
"""

    def append(self, text: str, *, registrar: bool = False) -> float:
        """Append ``text`` to the followed log; the time.monotonic() it was written."""
        with open(self.registrar if registrar else self.drachtio, "a") as f:
            f.write(text)
            f.flush()
            return time.monotonic()

    async def get(self, path: str) -> tuple[int, str]:
        async with (
            aiohttp.ClientSession() as s,
            s.get(self.base + path, timeout=aiohttp.ClientTimeout(total=10)) as r,
        ):
            return r.status, await r.text()

    async def metric(self, name: str, **labels: str) -> float:
        _, body = await self.get("/metrics")
        total = 0.0
        for line in body.splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    async def wait_metric(
        self, predicate: Any, name: str, timeout: float = 30.0, **labels: str
    ) -> float:
        last = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while True:
                    with contextlib.suppress(aiohttp.ClientError):
                        last = await self.metric(name, **labels)
                        if predicate(last):
                            return last
                    await asyncio.sleep(0.1)
        raise AssertionError(f"{name}{labels} = {last}: condition not met in {timeout}s")

    async def failures(self) -> list[dict[str, Any]]:
        _, body = await self.get("/api/failures?limit=1000")
        result: list[dict[str, Any]] = json.loads(body)["failures"]
        return result

    def events(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.log_lines if e.get("event") == event]

    async def _read_log(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    self.log_lines.append(entry)

    async def __aenter__(self) -> FileDaemon:
        self.drachtio.touch()
        self.registrar.touch()
        cfg = self.directory / "sipwatch.toml"
        cfg.write_text(self.config_text())
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIPWATCH")}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sipwatch",
            "run",
            "--config",
            str(cfg),
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,  # the JSON log
            stderr=asyncio.subprocess.STDOUT,
            limit=1 << 24,
        )
        self._reader = asyncio.create_task(self._read_log())
        try:
            async with asyncio.timeout(self.start_timeout):
                while True:
                    with contextlib.suppress(aiohttp.ClientError, OSError):
                        if (await self.get("/healthz"))[0] == 200:
                            break
                    if self.proc.returncode is not None:
                        raise AssertionError(f"daemon exited: {self.log_lines[-5:]}")
                    await asyncio.sleep(0.1)
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._reader is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._reader, 5)
