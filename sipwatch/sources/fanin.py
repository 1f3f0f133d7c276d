"""Many log readers, one consumer: the plumbing the Docker and Kubernetes sources share.

Both follow one log stream per container (per pod) in its own task.  All tasks feed one
bounded queue, so a slow consumer slows the readers instead of growing memory, and the
consumer side yields an idle signal (an empty :class:`LogChunk`) per framing channel once
it has been quiet for ``idle_flush`` seconds *and* none of its data is still queued: a
backlog in the queue is not silence, and flushing there would cut a multi-line record that
continues in the next queued chunk.

:class:`Backoff` is the retry delay every reconnecting reader uses; :class:`FollowingSource`
is what both sources do around their followers (status reports, the fan-in's life, the
bounded memory of removed containers), so that each says only how it finds and reads one.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncGenerator, Callable, Hashable
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypedDict, TypeVar

from sipwatch.model import LogChunk, Stream

if TYPE_CHECKING:
    from sipwatch.sources import SourceContext
    from sipwatch.sources.positions import PositionStore

__all__ = ["Backoff", "FanIn", "FollowOptions", "FollowingSource", "follow_options"]

#: How many removed containers (pods) a source remembers, so that a replayed event does
#: not follow one again; the oldest are forgotten first.
MAX_GONE = 1024


class Backoff:
    """Capped exponential backoff with jitter, so many streams do not retry in lockstep."""

    __slots__ = ("_cap", "_initial", "_next")

    def __init__(self, initial: float, cap: float) -> None:
        self._initial = initial
        self._cap = max(cap, initial)
        self._next = initial

    def next(self) -> float:
        delay = self._next
        self._next = min(self._cap, delay * 2)
        return delay * random.uniform(0.8, 1.0)

    def reset(self) -> None:
        self._next = self._initial


class FanIn:
    """A bounded queue between reader tasks and the one ``chunks()`` consumer.

    Create it inside the running loop (it makes a future).  Readers call :meth:`put`;
    background tasks are registered with :meth:`watch` so that a bug in one surfaces through
    :meth:`chunks` instead of a silent hang.  :meth:`close` must be called when done.
    """

    def __init__(self, *, idle_flush: float, queue_size: int) -> None:
        self._idle_flush = idle_flush
        self._queue: asyncio.Queue[LogChunk] = asyncio.Queue(maxsize=queue_size)
        self._pending: dict[tuple[str, Stream], int] = {}  # chunks queued per channel
        self._node: dict[tuple[str, Stream], str] = {}  # channel -> node, for idle signals
        self._fatal: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def put(self, chunk: LogChunk) -> None:
        """Queue a chunk (waits while the queue is full) and count it for its channel."""
        await self._queue.put(chunk)
        # No await between the insertion inside put() and this line, so the consumer
        # cannot see the chunk before it is counted.
        key = (chunk.source, chunk.stream)
        self._pending[key] = self._pending.get(key, 0) + 1

    def put_nowait(self, chunk: LogChunk) -> bool:
        """Queue a chunk if there is room (a reader's last words while shutting down)."""
        if self._queue.full():
            return False
        self._queue.put_nowait(chunk)
        key = (chunk.source, chunk.stream)
        self._pending[key] = self._pending.get(key, 0) + 1
        return True

    def watch(self, task: asyncio.Task[Any]) -> None:
        """Make an exception that ends ``task`` the exception of :meth:`chunks`."""
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not self._fatal.done():
            self._fatal.set_exception(exc)

    def close(self) -> None:
        """Mark the fatal future retrieved (chunks() raised it, or is closing)."""
        if not self._fatal.done():
            self._fatal.cancel()
        elif not self._fatal.cancelled():
            self._fatal.exception()

    async def chunks(self) -> AsyncGenerator[LogChunk, None]:
        """Yield queued chunks and idle signals until cancelled or a watched task fails."""
        loop = asyncio.get_running_loop()
        idle: dict[tuple[str, Stream], float] = {}  # channel -> when its idle flush is due
        pending = self._pending
        nodes = self._node
        queue = self._queue
        fatal = self._fatal
        flush_after = self._idle_flush
        getter: asyncio.Future[LogChunk] | None = None
        try:
            while True:
                if fatal.done():
                    fatal.result()
                if idle and min(idle.values()) <= loop.time():
                    now = loop.time()
                    for key, due in list(idle.items()):
                        if due <= now and not pending.get(key):
                            # Forget the quiet channel: pods come and go under new names.
                            del idle[key]
                            pending.pop(key, None)
                            yield LogChunk(key[0], key[1], "", nodes.pop(key, ""))
                if getter is None and not queue.empty():
                    item = queue.get_nowait()
                else:
                    if getter is None:
                        getter = asyncio.ensure_future(queue.get())
                    dues = [due for key, due in idle.items() if not pending.get(key)]
                    timeout = max(0.0, min(dues) - loop.time()) if dues else None
                    done, _ = await asyncio.wait(
                        (getter, fatal), timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                    )
                    if getter not in done:
                        continue
                    item = getter.result()
                    getter = None
                key = (item.source, item.stream)
                pending[key] -= 1
                idle[key] = loop.time() + flush_after
                if item.node:
                    nodes[key] = item.node
                yield item
        finally:
            if getter is not None:
                getter.cancel()


class FollowOptions(TypedDict, total=False):
    """The keyword options every :class:`FollowingSource` takes (defaults there)."""

    idle_flush: float
    on_status: Callable[[str, bool], None] | None
    backoff_initial: float
    backoff_max: float
    api_timeout: float
    queue_size: int
    positions: PositionStore | None


def follow_options(ctx: SourceContext) -> FollowOptions:
    """What the configuration and the daemon give every :class:`FollowingSource`."""
    return FollowOptions(
        idle_flush=ctx.config.sources.idle_flush_seconds,
        on_status=ctx.on_status,
        positions=ctx.positions,
    )


class _Follower(Protocol):
    wake: asyncio.Event
    task: asyncio.Task[None] | None


K = TypeVar("K", bound=Hashable)
F = TypeVar("F", bound=_Follower)


class FollowingSource(Generic[K, F]):
    """A source that follows one log stream per container in its own task, all fanned in.

    Subclasses set ``_log`` (their module's logger), ``_kind`` (the log events' prefix) and
    ``_status_field`` (the name the status key is logged under), and implement
    :meth:`_open`, :meth:`_watchers` and :meth:`_close_client`.
    """

    reports_status = True
    _log: ClassVar[Any]
    _kind: ClassVar[str]
    _status_field: ClassVar[str]

    def __init__(
        self,
        *,
        idle_flush: float = 0.5,
        on_status: Callable[[str, bool], None] | None = None,
        backoff_initial: float = 0.2,
        backoff_max: float = 10.0,
        api_timeout: float = 10.0,
        queue_size: int = 64,
        positions: PositionStore | None = None,
    ) -> None:
        self._idle_flush = idle_flush
        self._on_status = on_status
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._api_timeout = api_timeout
        self._queue_size = queue_size
        self._positions = positions
        self._fanin: FanIn | None = None
        self._followers: dict[K, F] = {}
        self._gone: dict[K, None] = {}  # removed ones (bounded, insertion order)
        self._status: dict[str, bool] = {}

    async def chunks(self) -> AsyncGenerator[LogChunk, None]:
        """Yield log chunks until cancelled or closed.  One iteration at a time.

        Wrap it in ``contextlib.aclosing`` when leaving early, so the background tasks and
        connections are released at once.  Idle signals follow the rules of :class:`FanIn`.
        What the source cannot work with at all (no engine, no cluster configuration) is
        raised by :meth:`_open`, before anything runs.
        """
        await self._open()
        self._fanin = fanin = FanIn(idle_flush=self._idle_flush, queue_size=self._queue_size)
        self._followers, self._gone, self._status = {}, {}, {}
        watchers = self._watchers()
        for task in watchers:
            fanin.watch(task)
        try:
            async with contextlib.aclosing(fanin.chunks()) as items:
                async for item in items:
                    yield item
        finally:
            tasks = watchers + [f.task for f in self._followers.values() if f.task is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._followers.clear()
            fanin.close()
            await self._close_client()

    async def _open(self) -> None:
        """Make the API client (``chunks()`` starts with it)."""
        raise NotImplementedError

    def _watchers(self) -> list[asyncio.Task[None]]:
        """The tasks that find what to follow (they start the followers)."""
        raise NotImplementedError

    async def _close_client(self) -> None:
        raise NotImplementedError

    def _report(self, key: str, up: bool) -> None:
        """Tell ``on_status`` about a change of ``key``'s state (never twice the same)."""
        if self._status.get(key) is up:
            return
        self._status[key] = up
        self._log.info(f"{self._kind}_source_status", **{self._status_field: key, "up": up})
        if self._on_status is not None:
            try:
                self._on_status(key, up)
            except Exception:
                self._log.exception(f"{self._kind}_on_status_failed", **{self._status_field: key})

    def _mark_gone(self, key: K) -> None:
        self._gone[key] = None
        while len(self._gone) > MAX_GONE:
            del self._gone[next(iter(self._gone))]

    @staticmethod
    async def _sleep_or_wake(f: _Follower, delay: float) -> None:
        """Sleep ``delay`` seconds, or less if the follower is woken (its container changed)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await f.wake.wait()
