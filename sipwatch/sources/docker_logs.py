"""Read one container's log stream from the Docker Engine API.

Why not ``aiodocker.DockerContainer.log()``: it drops the stream type (drachtio writes to
stderr, the registrar's pino JSON to stdout, and the framer needs them apart), yields one
string per *frame* rather than per line, silently drops invalid UTF-8, and never closes the
HTTP response, so every re-open after a container restart leaks a pooled connection.

This module has two parts:

* :class:`LogDecoder` - pure bytes-in / lines-out state machine.  It parses the 8-byte
  multiplexed frames (or the raw TTY stream), strips the RFC3339Nano timestamp that
  ``timestamps=1`` puts before every log *entry* (also the ones moby puts mid-line in front
  of each 16 KiB partial entry), reassembles lines per stream, and remembers where it got to
  so a re-opened stream can skip what was already delivered (the shared resume logic of
  :mod:`sipwatch.sources.timestamped`, also used by the Kubernetes source).
* :func:`iter_log_batches` - one HTTP request, closed in ``finally`` whatever happens.

The hot path does no per-line Python work for multiplexed streams: each frame costs one
header unpack and one timestamp match, and each batch is one ``join`` + one ``decode``.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncGenerator
from typing import Any

import aiodocker
import aiohttp
import structlog

from sipwatch.model import Stream
from sipwatch.sources.timestamped import (
    MAX_LINE_BYTES,
    PARTIAL_ENTRY_SIZE,
    TS_MATCH,
    EntryCursor,
    ResumePoint,
    TimestampedLines,
    ts_to_ns,
)

__all__ = [
    "MAX_LINE_BYTES",
    "PARTIAL_ENTRY_SIZE",
    "LogDecoder",
    "ResumePoint",
    "iter_log_batches",
    "log_params",
    "ns_to_since",
    "ts_to_ns",
]

log = structlog.get_logger(__name__)

_HEADER = struct.Struct(">BxxxL")
_HEADER_LEN = 8
_TS_MATCH = TS_MATCH

# Frame stream types (Engine API "Stream format").  0 (stdin) is written on stdout.
_STDIN, _STDOUT, _STDERR, _SYSTEMERR = 0, 1, 2, 3


def ns_to_since(ns: int) -> str:
    """Format epoch nanoseconds as the Engine's ``since`` value ("<sec>.<9 digits>").

    A string, not a float: a float would round away the nanoseconds and make ``since``
    land before or after the entry it should name.
    """
    sec, nsec = divmod(ns, 1_000_000_000)
    return f"{sec}.{nsec:09d}"


class LogDecoder:
    """Turns the body of ``GET /containers/{id}/logs?timestamps=1`` into whole lines.

    One decoder lives as long as its container is followed, across re-opened streams, so
    partial lines and the resume point survive a restart of the stream.  Call
    :meth:`begin_stream` before feeding each new response.
    """

    __slots__ = ("_carry", "_cursor", "_raw", "_skip_entry", "_tty_lines", "tty")

    def __init__(self, *, tty: bool) -> None:
        self.tty = tty
        self._raw = b""  # unparsed bytes: an incomplete frame header or payload
        self._carry: dict[int, bytes] = {_STDOUT: b"", _STDERR: b""}  # line not yet ended
        self._skip_entry = False
        # A TTY container's stream has no frames: entries are only delimited by newlines.
        self._tty_lines = TimestampedLines(Stream.STDOUT, undo_pty_cr=True) if tty else None
        self._cursor = self._tty_lines.cursor if self._tty_lines is not None else EntryCursor()

    @property
    def resume(self) -> ResumePoint:
        """The last entry delivered (where a re-opened stream must continue)."""
        return self._cursor.resume

    @property
    def settled(self) -> bool:
        """Whether every entry counted in :attr:`resume` was emitted whole: no line is half
        delivered.  Only then is :attr:`resume` a checkpoint (resuming after a half line
        would lose its start).  A TTY stream counts entries only when their line ends."""
        return self._tty_lines is not None or not (self._carry[_STDOUT] or self._carry[_STDERR])

    def restore(self, point: ResumePoint) -> None:
        """Continue after a checkpoint of an earlier run (see ``EntryCursor.restore``)."""
        self._cursor.restore(point)

    def begin_stream(self) -> None:
        """Prepare for a new response that was requested with ``since`` = the resume point.

        Bytes of a frame cut off by a dropped connection are discarded: that entry was not
        counted, so the Engine sends it again whole.  In TTY mode the unfinished line is
        discarded for the same reason (TTY entries are only counted when their line ends).
        """
        self._raw = b""
        self._skip_entry = False
        if self._tty_lines is not None:
            self._tty_lines.begin_stream()
        else:
            self._cursor.begin_stream()

    def feed(self, data: bytes) -> list[tuple[Stream, str]]:
        """Consume response bytes; return the complete lines, one text per stream."""
        if self._tty_lines is not None:
            return self._tty_lines.feed(data)
        buf = self._raw + data if self._raw else data
        end_of_buf = len(buf)
        pos = 0
        pieces: dict[int, list[bytes]] = {_STDOUT: [], _STDERR: []}
        unpack = _HEADER.unpack_from
        admit = self._cursor.admit
        while end_of_buf - pos >= _HEADER_LEN:
            kind, size = unpack(buf, pos)
            end = pos + _HEADER_LEN + size
            if end > end_of_buf:
                break
            payload = buf[pos + _HEADER_LEN : end]
            pos = end
            m = _TS_MATCH(payload)
            if m is not None:
                cut = m.end()
                self._skip_entry = not admit(payload[: cut - 1])
                payload = payload[cut:]
            # else: a frame continuing the previous entry (no timestamp of its own)
            if self._skip_entry or not payload:
                continue
            if kind in (_STDERR, _STDOUT):
                pieces[kind].append(payload)
            elif kind == _STDIN:
                pieces[_STDOUT].append(payload)
            else:  # _SYSTEMERR: the Engine's own error text ("Error grabbing logs: ...")
                log.warning(
                    "docker_log_stream_error",
                    message=payload[:300].decode("utf-8", "replace"),
                )
        self._raw = buf[pos:]
        out: list[tuple[Stream, str]] = []
        for kind, stream in ((_STDERR, Stream.STDERR), (_STDOUT, Stream.STDOUT)):
            got = pieces[kind]
            if got:
                text = self._lines(kind, got)
                if text:
                    out.append((stream, text))
        return out

    def _lines(self, kind: int, got: list[bytes]) -> str:
        """Append ``got`` to the stream's unfinished line; return all finished lines."""
        carry = self._carry[kind]
        data = carry + b"".join(got) if carry else b"".join(got)
        cut = data.rfind(b"\n") + 1
        rest = data[cut:]
        if len(rest) > MAX_LINE_BYTES:  # a line that never ends: emit it, bound memory
            self._carry[kind] = b""
            return (data + b"\n").decode("utf-8", "replace")
        self._carry[kind] = rest
        return data[:cut].decode("utf-8", "replace") if cut else ""

    def flush(self) -> list[tuple[Stream, str]]:
        """Emit unfinished lines (the container is gone, nothing will complete them)."""
        if self._tty_lines is not None:
            return self._tty_lines.flush()
        out: list[tuple[Stream, str]] = []
        for kind, stream in ((_STDERR, Stream.STDERR), (_STDOUT, Stream.STDOUT)):
            rest = self._carry[kind]
            if rest:
                self._carry[kind] = b""
                out.append((stream, rest.decode("utf-8", "replace") + "\n"))
        return out


def log_params(*, follow: bool, since: str | None, tail: str) -> dict[str, Any]:
    """Query parameters for the logs endpoint: both streams, always timestamped."""
    params: dict[str, Any] = {
        "stdout": True,
        "stderr": True,
        "follow": follow,
        "timestamps": True,
        "tail": tail,
    }
    if since is not None:
        params["since"] = since
    return params


async def iter_log_batches(
    docker: aiodocker.Docker,
    container_id: str,
    decoder: LogDecoder,
    *,
    follow: bool = True,
    since: str | None = None,
    tail: str = "all",
    connect_timeout: float = 10.0,
) -> AsyncGenerator[list[tuple[Stream, str]], None]:
    """Open one logs request and yield decoded batches until the Engine ends it.

    The first item is an empty batch, yielded as soon as the Engine accepted the request,
    so the caller can report the stream as up before any log line arrives.
    A clean end (the container stopped) just ends the iteration.  A dropped connection
    raises ``aiohttp.ClientError`` (``ClientPayloadError`` for a cut chunked body); a
    refused connection raises ``aiodocker.DockerError`` (status 900), a missing container
    ``DockerError`` 404.  The response is closed in ``finally`` in every case, also when the
    caller stops iterating or is cancelled, so no pooled connection is ever leaked.
    Callers should wrap the generator in ``contextlib.aclosing``.
    """
    decoder.begin_stream()
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None, connect=connect_timeout)
    async with docker._query(
        f"containers/{container_id}/logs",
        params=log_params(follow=follow, since=since, tail=tail),
        timeout=timeout,
    ) as resp:
        try:
            yield []
            content = resp.content
            feed = decoder.feed
            while True:
                data = await content.readany()
                if not data:
                    return
                batch = feed(data)
                if batch:
                    yield batch
        finally:
            resp.close()
