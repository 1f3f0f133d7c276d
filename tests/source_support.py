"""Running a log source's ``chunks()`` in a task for the Docker and Kubernetes source tests:
every chunk recorded, conditions on them awaited (a crash of the source surfaces in the
test instead of a timeout)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Protocol

from sipwatch.model import LogChunk


class ChunkSource(Protocol):
    def chunks(self) -> AsyncIterator[LogChunk]: ...


class Collector:
    """Runs ``source.chunks()`` in a task and records every chunk."""

    def __init__(self, source: ChunkSource) -> None:
        self.source = source
        self.chunks: list[LogChunk] = []
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Collector:
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        async with contextlib.aclosing(self.source.chunks()) as chunks:
            async for chunk in chunks:
                self.chunks.append(chunk)
                self._changed.set()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._task is not None
        if self._task.done():
            self._task.result()  # surface a crash
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def data(self, **match: object) -> list[LogChunk]:
        return [
            c for c in self.chunks if c.text and all(getattr(c, k) == v for k, v in match.items())
        ]

    def lines(self, **match: object) -> list[str]:
        text = "".join(c.text for c in self.data(**match))
        assert text == "" or text.endswith("\n"), "chunks must hold whole lines"
        return text.split("\n")[:-1]  # not splitlines(): SIP lines keep their "\r"

    async def wait_for(self, pred: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not pred():
                assert self._task is not None
                if self._task.done():
                    self._task.result()
                    raise AssertionError("chunks() ended")
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05):
                        await self._changed.wait()

    async def wait_lines(self, n: int, settle: float = 0.4, **match: object) -> list[str]:
        """Wait for ``n`` lines, then a moment longer so duplicates would show up too."""
        await self.wait_for(lambda: len(self.lines(**match)) >= n)
        await asyncio.sleep(settle)
        return self.lines(**match)
