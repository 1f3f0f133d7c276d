"""Standard input as a log source: ``sipwatch replay -`` and ``journalctl -f | sipwatch run``.

The event loop must never block on stdin, and how to avoid that depends on what stdin is:

* a **regular file** (``< drachtio.log``): reads never block for long, so it is read inline
  in big pieces, like ``FileSource`` in replay mode;
* a **pipe or socket**: ``loop.connect_read_pipe`` on a duplicate of the descriptor, with
  flow control (reading pauses while ``high_water`` bytes wait for the consumer, so a fast
  producer cannot grow our memory);
* anything else - a **terminal** or another character device: a daemon reader thread doing
  blocking reads.  A tty is never switched to non-blocking mode because that mode is shared
  with the shell, which would then see EAGAIN after we exit; and the loop accepts some
  devices it cannot poll (``/dev/null``: epoll says EPERM only later, from a callback, and
  the transport then hangs forever), so devices are not offered to it at all.

Whatever the path, chunks are whole lines (shared :class:`~sipwatch.sources.textfile.LineDecoder`)
and an idle signal (``LogChunk(name, Stream.TEXT, "")``) follows each quiet period.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import stat
import sys
import threading
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterator
from typing import TYPE_CHECKING, BinaryIO

from sipwatch.model import LogChunk, Stream
from sipwatch.sources.textfile import DEFAULT_MAX_LINE, DEFAULT_READ_SIZE, LineDecoder

if TYPE_CHECKING:
    from sipwatch.sources import LogSource, SourceContext

__all__ = ["DEFAULT_HIGH_WATER", "StdinSource", "iter_stdin_text"]

# Bytes allowed to wait between the producer side (pipe transport / reader thread) and the
# consumer before reading pauses.
DEFAULT_HIGH_WATER = 4 << 20
_THREAD_READ_SIZE = 64 << 10


def iter_stdin_text(stream: BinaryIO | None = None) -> Iterator[str]:
    """Whole-line text of stdin, read synchronously to EOF (``sipwatch replay -``).

    Binary reads decoded leniently by the shared ``LineDecoder`` (CRLF kept, lines bounded),
    so replay and the daemon see the same text for the same bytes.
    """
    buf = stream if stream is not None else sys.stdin.buffer
    decoder = LineDecoder()
    read = getattr(buf, "read1", buf.read)
    while data := read(DEFAULT_READ_SIZE):
        text = decoder.feed(data)
        if text:
            yield text
    rest = decoder.flush()
    if rest:
        yield rest


class StdinSource:
    """``sys.stdin`` (or ``stream``) as a stream of whole-line :class:`LogChunk`\\ s.

    Ends at EOF after emitting the unterminated last line, if any.  After ``idle_flush``
    seconds without new bytes it yields one idle signal (``text == ""``), once per quiet
    period and only after some data; an incomplete line still held back does not suppress
    it (the idle means "no bytes", as in ``FileSource``).  In thread mode a reader blocked on
    a terminal cannot be interrupted: after the consumer stops, that thread takes one more
    read from the terminal before it notices and exits.  ``stream`` exists so
    embedders can pass another binary file object; only its descriptor is used (bytes that
    Python already buffered in the object are not seen).  Counters: ``bytes_read``,
    ``split_lines``; ``mode`` tells which reading strategy was picked ("file", "pipe",
    "thread"), for diagnostics.
    """

    def __init__(
        self,
        *,
        idle_flush: float = 0.5,
        name: str = "-",
        stream: BinaryIO | None = None,
        read_size: int = DEFAULT_READ_SIZE,
        max_line: int = DEFAULT_MAX_LINE,
        high_water: int = DEFAULT_HIGH_WATER,
    ) -> None:
        if idle_flush <= 0:
            raise ValueError("idle_flush must be positive")
        if read_size < 1 or high_water < 1:
            raise ValueError("read_size and high_water must be positive")
        self.idle_flush = idle_flush
        self.name = name
        self.read_size = read_size
        self.max_line = max_line
        self.high_water = high_water
        self._stream = stream
        self.bytes_read = 0
        self.split_lines = 0
        self.mode = ""

    finite = True  # it ends at EOF

    def __repr__(self) -> str:
        return f"StdinSource(name={self.name!r})"

    def _fileno(self) -> int:
        stream = self._stream
        if stream is None:
            if sys.stdin is None:
                raise OSError("stdin is not available (closed or detached)")
            stream = sys.stdin.buffer
        return stream.fileno()

    async def chunks(self) -> AsyncGenerator[LogChunk, None]:
        """Yield whole-line chunks and idle signals until EOF."""
        fd = self._fileno()
        decoder = LineDecoder(self.max_line)
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                self.mode = "file"
                reader = self._read_regular(fd, decoder)
            else:
                reader = self._read_stream(fd, decoder)
            # aclosing: an aclose() of ours must release the pipe now, not at GC time.
            async with contextlib.aclosing(reader):
                async for chunk in reader:
                    yield chunk
        finally:
            self.split_lines = decoder.split_lines

    async def _read_regular(self, fd: int, decoder: LineDecoder) -> AsyncGenerator[LogChunk, None]:
        name = self.name
        while data := os.read(fd, self.read_size):
            self.bytes_read += len(data)
            text = decoder.feed(data)
            if text:
                yield LogChunk(name, Stream.TEXT, text)
                await asyncio.sleep(0)
        rest = decoder.flush()
        if rest:
            yield LogChunk(name, Stream.TEXT, rest)

    async def _read_stream(self, fd: int, decoder: LineDecoder) -> AsyncGenerator[LogChunk, None]:
        loop = asyncio.get_running_loop()
        inbox = _Inbox(self.high_water)
        transport: asyncio.ReadTransport | None = None
        was_blocking = os.get_blocking(fd)
        mode = os.fstat(fd).st_mode
        if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
            transport = await _connect_pipe(loop, fd, inbox)
        if transport is not None:
            self.mode = "pipe"
        else:
            self.mode = "thread"
            threading.Thread(
                target=_reader_thread,
                args=(fd, loop, inbox),
                name=f"sipwatch-stdin-{self.name}",
                daemon=True,
            ).start()
        name = self.name
        idle_sent = True  # nothing to flush before the first byte
        try:
            while True:
                if inbox.size:
                    data = inbox.take(self.read_size)
                    self.bytes_read += len(data)
                    idle_sent = False
                    text = decoder.feed(data)
                    if text:
                        yield LogChunk(name, Stream.TEXT, text)
                    continue
                if inbox.done:
                    rest = decoder.flush()
                    if rest:
                        yield LogChunk(name, Stream.TEXT, rest)
                    if inbox.error is not None:
                        raise inbox.error
                    return
                if idle_sent:
                    await inbox.ready.wait()
                    continue
                try:
                    async with asyncio.timeout(self.idle_flush):
                        await inbox.ready.wait()
                except TimeoutError:
                    idle_sent = True
                    yield LogChunk(name, Stream.TEXT, "")
        finally:
            inbox.close()
            if transport is not None:
                transport.close()
                # connect_read_pipe made the shared open file description non-blocking;
                # give the parent (shell, pipeline) back the mode it had.
                with contextlib.suppress(OSError):
                    os.set_blocking(fd, was_blocking)


class _Inbox:
    """Bytes handed from a producer (pipe transport or reader thread) to the consumer.

    Lives on the event loop thread only (the reader thread reaches it through
    ``run_coroutine_threadsafe`` / ``call_soon_threadsafe``).  Bounded by ``high_water``:
    the pipe transport is paused, the thread waits on ``space``.
    """

    def __init__(self, high_water: int) -> None:
        self.high_water = high_water
        self.parts: deque[bytes] = deque()
        self.size = 0
        self.done = False
        self.closed = False  # the consumer is gone
        self.error: BaseException | None = None
        self.ready = asyncio.Event()  # data or EOF waiting
        self.space = asyncio.Event()  # below high water
        self.space.set()
        self.pause: Callable[[], None] | None = None
        self.resume: Callable[[], None] | None = None
        self.paused = False

    def put(self, data: bytes) -> None:
        if self.closed or not data:
            return
        self.parts.append(data)
        self.size += len(data)
        self.ready.set()
        if self.size >= self.high_water:
            self.space.clear()
            if self.pause is not None and not self.paused:
                self.paused = True
                self.pause()

    async def put_when_space(self, data: bytes) -> bool:
        """For the reader thread: wait for room, then put; False once the consumer left."""
        while not self.closed and self.size >= self.high_water:
            await self.space.wait()
        self.put(data)
        return not self.closed

    def finish(self, error: BaseException | None) -> None:
        if not self.done:
            self.done = True
            self.error = error
            self.ready.set()

    def take(self, limit: int) -> bytes:
        """Remove and return at least one part, more while under ``limit`` bytes."""
        parts = self.parts
        first = parts.popleft()
        if parts and len(first) < limit:
            pieces = [first]
            total = len(first)
            while parts and total + len(parts[0]) <= limit:
                piece = parts.popleft()
                pieces.append(piece)
                total += len(piece)
            first = b"".join(pieces)
        self.size -= len(first)
        if not parts and not self.done:
            self.ready.clear()
        if self.size < self.high_water:
            self.space.set()
            if self.paused and self.resume is not None:
                self.paused = False
                self.resume()
        return first

    def close(self) -> None:
        self.closed = True
        self.parts.clear()
        self.size = 0
        self.space.set()  # release a reader thread waiting for room


class _PipeProtocol(asyncio.Protocol):
    def __init__(self, inbox: _Inbox) -> None:
        self.inbox = inbox

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.ReadTransport)
        self.inbox.pause = transport.pause_reading
        self.inbox.resume = transport.resume_reading

    def data_received(self, data: bytes) -> None:
        self.inbox.put(data)

    def eof_received(self) -> None:
        self.inbox.finish(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.inbox.finish(exc)


async def _connect_pipe(
    loop: asyncio.AbstractEventLoop, fd: int, inbox: _Inbox
) -> asyncio.ReadTransport | None:
    """Attach ``fd`` to the loop, or return None if the loop cannot poll it.

    A duplicate descriptor is handed over because the transport closes what it is given, and
    closing the real fd 0 would let a later ``open()`` silently become "stdin".
    """
    dup = os.dup(fd)
    pipe = os.fdopen(dup, "rb", buffering=0)
    try:
        transport, _ = await loop.connect_read_pipe(lambda: _PipeProtocol(inbox), pipe)
    except (OSError, ValueError, NotImplementedError):
        # e.g. /dev/null (epoll: EPERM), or a loop without pipe support.
        pipe.close()
        inbox.pause = inbox.resume = None
        return None
    return transport


def _reader_thread(fd: int, loop: asyncio.AbstractEventLoop, inbox: _Inbox) -> None:
    """Blocking reads of ``fd``, handed to the loop with back-pressure, until EOF."""
    error: BaseException | None = None
    try:
        while True:
            try:
                data = os.read(fd, _THREAD_READ_SIZE)
            except BlockingIOError:  # someone left the descriptor non-blocking
                select.select([fd], [], [])
                continue
            if not data:
                break
            fut = asyncio.run_coroutine_threadsafe(inbox.put_when_space(data), loop)
            if not fut.result():
                return
    except RuntimeError:  # the loop is closed: nobody to report to
        return
    except OSError as exc:
        error = exc
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(inbox.finish, error)


def build(ctx: SourceContext) -> list[tuple[str, LogSource]]:
    """``sources.stdin = true``: standard input (``journalctl -f | sipwatch run``)."""
    return [("-", StdinSource(idle_flush=ctx.config.sources.idle_flush_seconds))]
