"""Log streams whose entries carry a timestamp: resume a dropped stream without loss or repeats.

Both container APIs sipwatch follows work the same way: with ``timestamps`` every log
*entry* is prefixed with an RFC3339Nano time, a re-opened stream can start from a time
(Docker ``since``, Kubernetes ``sinceTime``), and that start is **inclusive** (an entry is
skipped only if it is *before* it).  Several entries can share one timestamp, and the
Kubernetes API even rounds ``sinceTime`` down to whole seconds.  So resuming at the last
time seen replays some entries we already have; :class:`EntryCursor` remembers the last
entry delivered (its timestamp and how many entries carried it) and skips exactly those.

:class:`TimestampedLines` decodes the simplest of these streams: entries delimited only by
newlines, as the Kubernetes ``pods/log`` endpoint and a Docker TTY container deliver them.
A line longer than the runtime's buffer was stored as several *partial* entries of exactly
``PARTIAL_ENTRY_SIZE`` bytes (moby's log copier and containerd's CRI logger both cut at
16 KiB), and each of them got its own timestamp, which then stands in the middle of the line.
Only timestamps at those exact offsets are removed: a timestamp-looking text anywhere else
is the program's output (log content is attacker-controlled) and must not move the cursor.

The one assumption: within one followed log, timestamps do not go backwards (a single
writer; the runtime stamps entries as it writes them).

The same resume point is what a checkpoint saves (:meth:`ResumePoint.to_state`), so a
restarted sipwatch continues a container's or pod's log where the previous run stopped.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass

from sipwatch.model import Stream

# The entry prefix.  Docker and the kubelet write RFC3339Nano fixed width in UTC
# ("...05.000000001Z "); shorter fractions and offsets are accepted too.
TS_RE = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:\d\d) ")
TS_MATCH = TS_RE.match

# Runtimes cut lines without a newline into partial entries of this many bytes (moby
# daemon/logger/copier.go bufSize; containerd's default max_container_log_line_size).
PARTIAL_ENTRY_SIZE = 16 * 1024

# A line that never ends must not grow memory without bound; past this size the buffered
# bytes are emitted as a line of their own.
MAX_LINE_BYTES = 1024 * 1024

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_SECOND = dt.timedelta(seconds=1)


def ts_to_ns(ts: bytes) -> int:
    """Parse an entry timestamp (without the trailing space) into epoch nanoseconds.

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


@dataclass(slots=True)
class ResumePoint:
    """The last log entry delivered: its timestamp and how many entries carried it."""

    ts: bytes = b""
    count: int = 0

    @property
    def ns(self) -> int | None:
        return ts_to_ns(self.ts) if self.ts else None

    def to_state(self) -> dict[str, str | int]:
        """The checkpoint form (JSON types)."""
        return {"ts": self.ts.decode("ascii"), "count": self.count}

    @classmethod
    def from_state(cls, state: Mapping[str, object]) -> ResumePoint | None:
        """A saved checkpoint back, or None when it is not one (damaged file)."""
        ts, count = state.get("ts"), state.get("count")
        if not (isinstance(ts, str) and isinstance(count, int) and count > 0 and ts.isascii()):
            return None
        raw = ts.encode("ascii")
        m = TS_MATCH(raw + b" ")
        if m is None or m.end() != len(raw) + 1:
            return None
        return cls(raw, count)


class EntryCursor:
    """Decides, entry by entry, what is new; survives re-opened streams.

    Call :meth:`begin_stream` before each response that was requested from (at or before)
    ``resume``: entries before the resume time are skipped, then ``resume.count`` entries
    stamped exactly the resume time, and everything after that is new.
    """

    __slots__ = ("_skip_left", "_skip_until", "resume")

    def __init__(self) -> None:
        self.resume = ResumePoint()
        self._skip_until: int | None = None
        self._skip_left = 0

    def begin_stream(self) -> None:
        self._skip_until = self.resume.ns
        self._skip_left = self.resume.count

    def restore(self, point: ResumePoint) -> None:
        """Continue after ``point`` (a checkpoint of an earlier run): the next stream must be
        requested from its time, and :meth:`begin_stream` skips what it delivered."""
        self.resume = ResumePoint(point.ts, point.count)

    def admit(self, ts: bytes) -> bool:
        """Whether the entry stamped ``ts`` is new; a new one becomes the resume point."""
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


class TimestampedLines:
    """Newline-delimited timestamped entries in, whole new lines out (one stream).

    ``undo_pty_cr``: a TTY's pty turned each ``\\n`` into ``\\r\\n``; one ``\\r`` is removed
    again so lines look the same as without a TTY.  Not for streams without a pty: SIP lines
    in drachtio's dumps end in ``\\r\\n`` of their own.

    Entries are only counted when their line ends, so :meth:`begin_stream` discards an
    unfinished line: a re-opened stream sends it again, whole.
    """

    __slots__ = ("_carry", "cursor", "stream", "undo_pty_cr")

    def __init__(self, stream: Stream, *, undo_pty_cr: bool = False) -> None:
        self.stream = stream
        self.undo_pty_cr = undo_pty_cr
        self.cursor = EntryCursor()
        self._carry = b""

    @property
    def resume(self) -> ResumePoint:
        return self.cursor.resume

    def begin_stream(self) -> None:
        self._carry = b""
        self.cursor.begin_stream()

    def feed(self, data: bytes) -> list[tuple[Stream, str]]:
        """Consume response bytes; return the completed new lines (at most one text)."""
        buf = self._carry + data if self._carry else data
        cut = buf.rfind(b"\n") + 1
        if len(buf) - cut > MAX_LINE_BYTES:  # a line that never ends: emit it, bound memory
            buf += b"\n"
            cut = len(buf)
        self._carry = buf[cut:]
        if cut == 0:
            return []
        kept: list[bytes] = []
        for line in buf[: cut - 1].split(b"\n"):
            piece = self._line(line)
            if piece:
                kept.append(piece)
        if not kept:
            return []
        return [(self.stream, b"".join(kept).decode("utf-8", "replace"))]

    def _line(self, line: bytes) -> bytes:
        """Strip the entry timestamps from one line; b"" if all its entries were seen."""
        parts: list[bytes] = []
        rest = line
        admitted = True
        admit = self.cursor.admit
        while True:
            m = TS_MATCH(rest)
            if m is not None:
                admitted = admit(rest[: m.end() - 1])
                rest = rest[m.end() :]
            if len(rest) > PARTIAL_ENTRY_SIZE and TS_MATCH(rest, PARTIAL_ENTRY_SIZE):
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
        if self.undo_pty_cr and joined.endswith(b"\r"):
            joined = joined[:-1]
        return joined + b"\n"

    def flush(self) -> list[tuple[Stream, str]]:
        """Emit an unfinished line (the log is gone, nothing will complete it)."""
        rest, self._carry = self._carry, b""
        if not rest:
            return []
        piece = self._line(rest)
        return [(self.stream, piece.decode("utf-8", "replace"))] if piece else []
