"""``sipwatch run`` as an operator starts it, for the end-to-end tests: a real subprocess, its
HTTP endpoints on loopback, its JSON log kept in a file.  The one harness every daemon test
uses (file, Docker, Kubernetes, HEP, restart and alert tests), so that starting, waiting for
health, reading /metrics and stopping are written once.

* ``SipwatchProcess(config, workdir)``: any configuration; ``async with`` starts it, waits for
  /healthz and stops it (SIGTERM, or SIGKILL with ``kill_on_exit``).
* ``FileDaemon(directory, extra)``: the VM case, following ``drachtio.log`` (and
  ``registrar.log``); ``d.append(text)`` returns the moment it was written
  (``time.monotonic()``, the clock ``HttpReceiver`` stamps arrivals with), so time-to-know is
  measured end to end.
* ``docker_daemon(tmp, engine)``: the zero-config jambonz deployment against a fake Docker
  Engine; ``write_sip`` logs a scenario's drachtio records in a container.
* The synchronous helpers (``http_get``, ``popen_run``) serve tests that drive the process
  with ``subprocess`` and signals themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp

from sipwatch.ingest.speedups import NO_EXTENSIONS_ENV
from tests.fake_docker import FakeContainer, FakeDockerEngine
from tools.synth import Scenario

ROOT = Path(__file__).resolve().parent.parent


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A loopback port free for both TCP and UDP right now (a HEP listener takes both)."""
    while True:
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        other = socket.SOCK_STREAM if kind == socket.SOCK_DGRAM else socket.SOCK_DGRAM
        with socket.socket(socket.AF_INET, other) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without sipwatch's, systemd's state or container-engine variables,
    so that the developer's own settings never reach the process under test - except the
    choice of implementation (``SIPWATCH_NO_EXTENSIONS``): CI's pure-Python run of the suite
    must run its subprocesses on the pure-Python path too."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k == NO_EXTENSIONS_ENV
        or (not k.startswith(("SIPWATCH", "KUBE", "DOCKER")) and k != "STATE_DIRECTORY")
    }
    env.update(extra)
    return env


def write_config(path: Path, config: str, port: int, level: str = "info") -> Path:
    """``config`` plus the HTTP endpoints on 127.0.0.1:``port`` and the JSON log."""
    path.write_text(
        config + f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n'
        f'[logging]\nformat = "json"\nlevel = "{level}"\n'
    )
    return path


def popen_run(cfg: Path, **popen: Any) -> subprocess.Popen[str]:
    """``sipwatch run --config cfg`` for the tests that drive it with signals themselves
    (output piped and the environment cleaned unless ``popen`` says otherwise)."""
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    popen.setdefault("env", clean_env())
    return subprocess.Popen(
        [sys.executable, "-m", "sipwatch", "run", "--config", str(cfg)],
        cwd=ROOT,
        text=True,
        **popen,
    )


def metric_total(body: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples in an exposition whose labels include ``labels``."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items())
    )


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """GET ``url`` synchronously; an HTTP error status is an answer, not an exception."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class SipwatchProcess:
    """One ``sipwatch run`` subprocess on ``config`` (the [metrics] listen address and the
    JSON [logging] section are added); its output goes to ``workdir/<name>.log``."""

    def __init__(
        self,
        config: str,
        workdir: Path,
        *,
        env: Mapping[str, str] | None = None,
        name: str = "sipwatch",
        level: str = "info",
        start_timeout: float = 30.0,
        kill_on_exit: bool = False,
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.cfg = write_config(workdir / f"{name}.toml", config, self.port, level)
        self.out = workdir / f"{name}.log"
        self.env = dict(clean_env() if env is None else env)
        self.start_timeout = start_timeout
        self.kill_on_exit = kill_on_exit
        self.proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> SipwatchProcess:
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
        try:
            async with asyncio.timeout(self.start_timeout):
                while True:
                    with contextlib.suppress(aiohttp.ClientError, OSError):
                        if (await self.get("/healthz"))[0] == 200:
                            return self
                    if self.proc.returncode is not None:
                        raise AssertionError(f"sipwatch exited: {self.output()[-3000:]}")
                    await asyncio.sleep(0.1)
        except BaseException:
            await self.__aexit__()
            raise

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        if self.kill_on_exit:
            self.proc.kill()
            await self.proc.wait()
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), 15)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.returncode

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        """The JSON log entries (those named ``event``, if given)."""
        entries = []
        for line in self.output().splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict) and event in (None, entry.get("event")):
                    entries.append(entry)
        return entries

    async def get(self, path: str) -> tuple[int, str]:
        async with (
            aiohttp.ClientSession() as s,
            s.get(self.base + path, timeout=aiohttp.ClientTimeout(total=10)) as r,
        ):
            return r.status, await r.text()

    async def metric(self, name: str, **labels: str) -> float:
        _, body = await self.get("/metrics")
        return metric_total(body, name, **labels)

    async def wait_metric(
        self,
        expected: float | Callable[[float], bool],
        name: str,
        timeout: float = 30.0,
        **labels: str,
    ) -> float:
        """Wait until the metric equals ``expected`` (or passes it, a predicate)."""
        done = expected if callable(expected) else (lambda v: v == expected)
        last = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while True:
                    with contextlib.suppress(aiohttp.ClientError):
                        last = await self.metric(name, **labels)
                        if done(last):
                            return last
                    await asyncio.sleep(0.1)
        raise AssertionError(f"{name}{labels} = {last}: expected {expected} in {timeout}s")

    async def failures(self) -> list[dict[str, Any]]:
        _, body = await self.get("/api/failures?limit=1000")
        result: list[dict[str, Any]] = json.loads(body)["failures"]
        return result


class FileDaemon(SipwatchProcess):
    """``sipwatch run`` following ``drachtio.log`` and ``registrar.log`` in ``directory``."""

    def __init__(
        self,
        directory: Path,
        extra: str = "",
        *,
        level: str = "info",
        start_timeout: float = 30.0,
    ) -> None:
        self.drachtio = directory / "drachtio.log"
        self.registrar = directory / "registrar.log"
        self.drachtio.touch()
        self.registrar.touch()
        config = f"""
[sources.docker]
enabled = false
[[sources.files]]
path = "{self.drachtio}"
follow = true
[[sources.files]]
path = "{self.registrar}"
follow = true
{extra}
"""
        super().__init__(config, directory, level=level, start_timeout=start_timeout)

    def append(self, text: str, *, registrar: bool = False) -> float:
        """Append ``text`` to the followed log; the time.monotonic() it was written."""
        with open(self.registrar if registrar else self.drachtio, "a") as f:
            f.write(text)
            f.flush()
            return time.monotonic()


@contextlib.asynccontextmanager
async def docker_daemon(
    tmp: Path, engine: FakeDockerEngine, extra: str = ""
) -> AsyncIterator[SipwatchProcess]:
    """``sipwatch run`` finding jambonz's containers through ``DOCKER_HOST`` (zero config)."""
    config = f"""
[sources]
idle_flush_seconds = 0.2
[sources.docker]
project = "jambonz"
tail = "all"
{extra}
"""
    async with SipwatchProcess(config, tmp, env=clean_env(DOCKER_HOST=engine.url)) as d:
        yield d


def take_sip(sc: Scenario) -> tuple[str, int]:
    """The scenario's drachtio records written so far (taken out of it) and how many SIP
    messages they hold."""
    text = "".join(sc.drachtio)
    sc.drachtio.clear()
    return text, text.count(" bytes from ") + text.count(" bytes to ")


def write_sip(engine: FakeDockerEngine, c: FakeContainer, sc: Scenario) -> int:
    """Log the scenario's drachtio records to the container's stderr; return message count."""
    text, count = take_sip(sc)
    engine.log(c, text, stream=2)
    return count
