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
  (:class:`ResumePoint`) so a re-opened stream can skip what was already delivered.
* :func:`iter_log_batches` - one HTTP request, closed in ``finally`` whatever happens.

The hot path does no per-line Python work for multiplexed streams: each frame costs one
header unpack and one timestamp match, and each batch is one ``join`` + one ``decode``.
"""

from __future__ import annotations

import datetime as dt
import re
import struct
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import aiodocker
import aiohttp
import structlog

from sipwatch.model import Stream

log = structlog.get_logger(__name__)

_HEADER = struct.Struct(">BxxxL")
_HEADER_LEN = 8

# What ``timestamps=1`` puts in front of every entry.  Docker writes RFC3339NanoFixed in UTC
# ("...05.000000001Z "); an offset form is accepted too (journald-backed readers).
_TS_RE = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:\d\d) ")
_TS_MATCH = _TS_RE.match

# moby's log copier cuts lines without a newline into partial entries of this many bytes
# (daemon/logger/copier.go bufSize).  Only needed to find inner timestamps in TTY streams,
# where no frame boundaries tell us where a partial entry ends.
PARTIAL_ENTRY_SIZE = 16 * 1024

# A line that never ends must not grow memory without bound; past this size the buffered
# bytes are emitted as a line of their own.
MAX_LINE_BYTES = 1024 * 1024

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_SECOND = dt.timedelta(seconds=1)

# Frame stream types (Engine API "Stream format").  0 (stdin) is written on stdout.
_STDIN, _STDOUT, _STDERR, _SYSTEMERR = 0, 1, 2, 3


def ts_to_ns(ts: bytes) -> int:
    """Parse a Docker log timestamp (without the trailing space) into epoch nanoseconds.

    ``datetime`` only keeps microseconds, so the fraction is parsed separately: the
    resume/dedupe logic compares timestamps exactly.
    """
    text = ts.decode("ascii")
    main, rest = text[:19], text[19:]
    frac = ""
    if rest.startswith("."):
        end = 1
        while end < len(rest) and rest[end].isdigit():
            end += 1
        frac, rest = rest[1:end], rest[end:]
    tz = "+00:00" if rest in ("Z", "") else rest
    when = dt.datetime.fromisoformat(main + tz)
    seconds = (when - _EPOCH) // _ONE_SECOND
    return seconds * 1_000_000_000 + int(frac.ljust(9, "0")[:9] or "0")


def ns_to_since(ns: int) -> str:
    """Format epoch nanoseconds as the Engine's ``since`` value ("<sec>.<9 digits>").

    A string, not a float: a float would round away the nanoseconds and make ``since``
    land before or after the entry it should name.
    """
    sec, nsec = divmod(ns, 1_000_000_000)
    return f"{sec}.{nsec:09d}"


@dataclass(slots=True)
class ResumePoint:
    """The last log entry delivered: its timestamp and how many entries carried it.

    The Engine's ``since`` is inclusive (an entry is skipped only if it is *before* since),
    and several entries can share one timestamp.  Re-opening with ``since=ts`` therefore
    replays exactly ``count`` entries we already have, in the same order, and they are
    skipped.
    """

    ts: bytes = b""
    count: int = 0

    @property
    def ns(self) -> int | None:
        return ts_to_ns(self.ts) if self.ts else None


class LogDecoder:
    """Turns the body of ``GET /containers/{id}/logs?timestamps=1`` into whole lines.

    One decoder lives as long as its container is followed, across re-opened streams, so
    partial lines and the resume point survive a restart of the stream.  Call
    :meth:`begin_stream` before feeding each new response.
    """

    __slots__ = ("_carry", "_raw", "_skip_entry", "_skip_left", "_skip_until", "resume", "tty")

    def __init__(self, *, tty: bool) -> None:
        self.tty = tty
        self.resume = ResumePoint()
        self._raw = b""  # unparsed bytes: an incomplete frame header or payload
        self._carry: dict[int, bytes] = {_STDOUT: b"", _STDERR: b""}  # line not yet ended
        self._skip_until: int | None = None
        self._skip_left = 0
        self._skip_entry = False

    def begin_stream(self) -> None:
        """Prepare for a new response that was requested with ``since`` = the resume point.

        Bytes of a frame cut off by a dropped connection are discarded: that entry was not
        counted, so the Engine sends it again whole.  In TTY mode the unfinished line is
        discarded for the same reason (TTY entries are only counted when their line ends).
        """
        self._raw = b""
        self._skip_entry = False
        if self.tty:
            self._carry[_STDOUT] = b""
        self._skip_until = self.resume.ns
        self._skip_left = self.resume.count

    def _admit(self, ts: bytes) -> bool:
        """Decide whether the entry stamped ``ts`` is new, and count it if so."""
        if self._skip_until is not None:
            ns = ts_to_ns(ts)
            if ns < self._skip_until:
                return False
            if ns == self._skip_until and self._skip_left > 0:
                self._skip_left -= 1
                return False
            self._skip_until = None
        resume = self.resume
        if ts == resume.ts:
            resume.count += 1
        else:
            resume.ts = ts
            resume.count = 1
        return True

    def feed(self, data: bytes) -> list[tuple[Stream, str]]:
        """Consume response bytes; return the complete lines, one text per stream."""
        if self.tty:
            return self._feed_tty(data)
        buf = self._raw + data if self._raw else data
        end_of_buf = len(buf)
        pos = 0
        pieces: dict[int, list[bytes]] = {_STDOUT: [], _STDERR: []}
        unpack = _HEADER.unpack_from
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
                self._skip_entry = not self._admit(payload[: cut - 1])
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

    def _feed_tty(self, data: bytes) -> list[tuple[Stream, str]]:
        """A TTY container's raw stream: entries are only delimited by newlines.

        Each line starts with its timestamp; a line longer than 16 KiB was stored as
        partial entries, whose timestamps follow every 16 KiB of content.  The pty turned
        each ``\\n`` into ``\\r\\n``; one ``\\r`` is removed again so lines look the same as
        from a non-TTY container.
        """
        buf = self._carry[_STDOUT] + data
        cut = buf.rfind(b"\n") + 1
        if len(buf) - cut > MAX_LINE_BYTES:  # a line that never ends: emit it, bound memory
            buf += b"\n"
            cut = len(buf)
        self._carry[_STDOUT] = buf[cut:]
        if cut == 0:
            return []
        kept: list[bytes] = []
        for line in buf[: cut - 1].split(b"\n"):
            piece = self._tty_line(line)
            if piece:
                kept.append(piece)
        if not kept:
            return []
        return [(Stream.STDOUT, b"".join(kept).decode("utf-8", "replace"))]

    def _tty_line(self, line: bytes) -> bytes:
        """Strip the entry timestamps from one TTY line; b"" if all its entries were seen."""
        parts: list[bytes] = []
        rest = line
        admitted = True
        while True:
            m = _TS_MATCH(rest)
            if m is not None:
                admitted = self._admit(rest[: m.end() - 1])
                rest = rest[m.end() :]
            if len(rest) > PARTIAL_ENTRY_SIZE and _TS_MATCH(rest, PARTIAL_ENTRY_SIZE):
                if admitted:
                    parts.append(rest[:PARTIAL_ENTRY_SIZE])
                rest = rest[PARTIAL_ENTRY_SIZE:]
                continue
            if admitted:
                parts.append(rest)
            break
        if not parts:
            return b""
        joined = b"".join(parts)
        if joined.endswith(b"\r"):
            joined = joined[:-1]
        return joined + b"\n"

    def flush(self) -> list[tuple[Stream, str]]:
        """Emit unfinished lines (the container is gone, nothing will complete them)."""
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
