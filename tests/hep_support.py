"""Helpers for the HEP tests that use real sockets (loopback only)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
from collections.abc import AsyncIterator
from typing import Any

from sipwatch.config import Config, HepSourceConfig
from sipwatch.model import MessageBatch
from sipwatch.sources.hep.listener import HepSource
from tests.daemon_runner import free_port


def hep_config(**changes: Any) -> HepSourceConfig:
    changes.setdefault("listen", f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}")
    return dataclasses.replace(Config().sources.hep, **changes)


class Running:
    """A HepSource consumed by a background task, its batches collected."""

    def __init__(self, source: HepSource) -> None:
        self.source = source
        self.batches: list[MessageBatch] = []
        self.arrived = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def _consume(self) -> None:
        async for batch in self.source.chunks():
            self.batches.append(batch)
            self.arrived.set()

    @property
    def messages(self) -> int:
        return sum(len(b.messages) for b in self.batches)

    async def wait_messages(self, count: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while self.messages < count:
                self.arrived.clear()
                await self.arrived.wait()


@contextlib.asynccontextmanager
async def running(source: HepSource) -> AsyncIterator[Running]:
    run = Running(source)
    run.task = asyncio.create_task(run._consume())
    try:
        async with asyncio.timeout(10):
            done, _ = await asyncio.wait(
                [run.task, asyncio.create_task(source.listening.wait())],
                return_when=asyncio.FIRST_COMPLETED,
            )
        if run.task in done:
            run.task.result()  # raises what chunks() raised
        yield run
    finally:
        run.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run.task


def udp_sender(family: int = socket.AF_INET) -> socket.socket:
    return socket.socket(family, socket.SOCK_DGRAM)


async def receive_all(sock: socket.socket, count: int, timeout: float = 10.0) -> list[bytes]:
    """``count`` datagrams from a non-blocking socket."""
    loop = asyncio.get_running_loop()
    out: list[bytes] = []
    async with asyncio.timeout(timeout):
        while len(out) < count:
            out.append(await loop.sock_recv(sock, 65535))
    return out
