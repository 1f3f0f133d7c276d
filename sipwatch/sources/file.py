"""Log files as a source: one-shot reads for ``replay`` and ``tail -F`` following for ``run``.

VM / pm2 installs of jambonz write drachtio's dumps and the registrar's pino JSON to files,
so this is the primary source there.  Two modes share one line-assembly implementation
(:class:`~sipwatch.sources.textfile.LineDecoder`):

* **non-follow** (a file ``run`` does not follow; ``replay`` reads with
  :mod:`sipwatch.sources.textfile` directly): big reads, one decode per read, no per-line
  work at all.  Gzip-compressed rotated logs (``drachtio.log.1.gz``) are read transparently.
* **follow** (``run``): ``tail -F`` by polling ``os.stat``/``os.fstat`` (no inotify package,
  works on every filesystem including bind mounts and NFS), surviving rename rotation,
  copytruncate, delete + recreate and a file that appears late.

Each file has a ``format``: "plain" lines are passed on as they are (``Stream.TEXT``); "cri"
files (the kubelet's ``/var/log/pods`` logs, for a node-local DaemonSet) are decoded entry by
entry into ``Stream.STDOUT`` / ``Stream.STDERR`` text (:mod:`sipwatch.sources.cri`); "auto"
decides from the first line.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import stat
import time
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from sipwatch.lazylog import get_logger
from sipwatch.model import LogChunk, Position, Stream
from sipwatch.sources.cri import CriDecoder, looks_like_cri
from sipwatch.sources.textfile import (
    DEFAULT_MAX_LINE,
    DEFAULT_READ_SIZE,
    LineDecoder,
    TextFileReader,
)

if TYPE_CHECKING:
    from sipwatch.sources import LogSource, SourceContext
    from sipwatch.sources.positions import PositionStore

log = get_logger(__name__)

__all__ = ["FOLLOW_READ_SIZE", "FileSource"]

# Follow mode reads in smaller bites: each read happens on the event loop, and a live log
# rarely has more than a few KiB waiting per poll anyway.
FOLLOW_READ_SIZE = 64 << 10
# A followed path may be missing this long during a rotation before the source counts as down
# (logrotate's rename + create, or a writer that reopens on its next line).
ROTATION_GRACE = 30.0

# A checkpoint names its file by device and inode, and by a hash of the file's first bytes:
# a new file that gets a freed inode number has other first lines (drachtio stamps every one).
FINGERPRINT_BYTES = 1024
# Files looked at, next to a followed path, for the one it was rotated or copied to.
_MAX_SIBLINGS = 256

FileState = dict[str, str | int | float | bool]


def _fingerprint(fd: int, length: int) -> str:
    """Hash of the first ``length`` bytes of an open file ("" if it has fewer now)."""
    data = os.pread(fd, length, 0)
    if len(data) < length:
        return ""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _saved_file(state: FileState) -> tuple[int, int, str, int, int] | None:
    """(dev, ino, fingerprint, fingerprint length, offset) of a saved file position."""
    dev, ino, fp, fp_len, offset = (state.get(k) for k in ("dev", "ino", "fp", "fp_len", "offset"))
    if not (
        isinstance(dev, int)
        and isinstance(ino, int)
        and isinstance(fp, str)
        and isinstance(fp_len, int)
        and isinstance(offset, int)
        and 0 <= fp_len <= FINGERPRINT_BYTES
        and offset >= fp_len
    ):
        return None
    return dev, ino, fp, fp_len, offset


def _same_file(fd: int, saved: tuple[int, int, str, int, int], *, same_inode: bool) -> bool:
    """Whether the open file is the saved one: its fingerprint matches and it is long enough
    (``same_inode``: its device and inode match too)."""
    dev, ino, fp, fp_len, offset = saved
    st = os.fstat(fd)
    if same_inode and (st.st_dev, st.st_ino) != (dev, ino):
        return False
    return st.st_size >= offset and _fingerprint(fd, fp_len) == fp


def find_previous(path: Path, saved: tuple[int, int, str, int, int]) -> Path | None:
    """The file a checkpoint of ``path`` described, now under another name next to it.

    After rename rotation it has the saved inode (``drachtio.log.1``); after copytruncate it
    is a copy (``drachtio.log.1``, other inode) with the same first bytes, at least as long
    as the saved offset.  Compressed rotations do not match (their bytes differ): what was
    not read of them is lost, and said so by the caller.
    """
    dev, ino, _fp, fp_len, offset = saved
    try:
        names = sorted(n for n in os.listdir(path.parent) if n.startswith(path.name))
    except OSError:
        return None
    by_content: list[Path] = []
    for name in names[:_MAX_SIBLINGS]:
        if name == path.name:
            continue
        candidate = path.parent / name
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode) or st.st_size < offset:
            continue
        if (st.st_dev, st.st_ino) == (dev, ino):
            by_content.insert(0, candidate)  # renamed: the likeliest, checked first
        elif fp_len:  # an empty fingerprint matches anything: never trust it alone
            by_content.append(candidate)
    for candidate in by_content:
        try:
            with open(candidate, "rb", buffering=0) as f:
                if _same_file(f.fileno(), saved, same_inode=False):
                    return candidate
        except OSError:
            continue
    return None


FileFormat = Literal["auto", "plain", "cri"]


class _Framing:
    """Whole-line text of one file -> :class:`LogChunk`\\ s, as is or decoded from CRI entries.

    Lives as long as its :class:`FileSource` runs, across rotated files, because a CRI
    partial line continues in the next file.  The idle signal goes to every stream that got
    text: the framer flushes per (source, stream) channel.
    """

    __slots__ = ("_max_line", "_streams", "cri", "format", "name")

    def __init__(self, name: str, fmt: FileFormat, max_line: int) -> None:
        self.name = name
        self.format: FileFormat = fmt
        self._max_line = max_line
        self.cri = CriDecoder(max_line) if fmt == "cri" else None
        self._streams: dict[Stream, None] = {}  # streams that got text, in first-seen order

    def chunks(self, text: str) -> list[LogChunk]:
        if self.format == "auto" and text.strip():
            self.format = "cri" if looks_like_cri(text) else "plain"
            if self.format == "cri":
                self.cri = CriDecoder(self._max_line)
        if self.cri is None:
            self._streams.setdefault(Stream.TEXT)
            return [LogChunk(self.name, Stream.TEXT, text)]
        out = []
        for stream, decoded in self.cri.feed(text):
            self._streams.setdefault(stream)
            out.append(LogChunk(self.name, stream, decoded))
        return out

    def end(self) -> list[LogChunk]:
        """End of input: partial CRI lines that never got their end."""
        if self.cri is None:
            return []
        return [LogChunk(self.name, stream, text) for stream, text in self.cri.flush()]

    def idle(self) -> list[LogChunk]:
        return [LogChunk(self.name, stream, "") for stream in self._streams]


class FileSource:
    """One log file as a stream of :class:`LogChunk`.

    Plain files give ``Stream.TEXT`` chunks; CRI files (``format`` "cri", or "auto" on a
    file whose first line is a CRI entry) give ``Stream.STDOUT`` and ``Stream.STDERR``
    chunks, one framing channel per container stream.

    Non-follow mode reads the file (plain or gzip) once, from the start, and ends.
    Follow mode is ``tail -F``:

    * starts at the end of the file unless ``from_start``; a file missing at start is
      waited for and then read from its start (so is every later file);
    * **rename rotation** (the path now names another inode): the old descriptor keeps being
      read, and we switch only once the new file has bytes in it.  A single writer (drachtio,
      pm2) moves to the new file only after its last write to the old one, so the lines it
      writes between logrotate's ``create`` and its own reopen are not lost - the window
      GNU ``tail -F`` has.  The old file is drained right before the switch;
    * **truncation / copytruncate** (size < our position): restart from 0.  A truncation
      followed by more writes than we had read before the next poll is invisible to any
      size-based follower; keep ``poll_interval`` short if copytruncate is used;
    * **delete + recreate**: like rotation.  We keep the deleted file open, so its inode
      number cannot be reused while we read it; ``st_nlink == 0`` is checked as well for
      filesystems with unstable inode numbers;
    * after ``idle_flush`` seconds without new bytes, one ``LogChunk(..., "")`` (the idle
      signal in :mod:`sipwatch.model`) - once per idle period, only after data, and also
      when the bytes so far end in an incomplete line (which stays held back);
    * with a checkpoint store (``positions``), every chunk carries the file's position after
      it (device, inode, a fingerprint of its first KiB, offset) and the first open resumes
      from the saved one.  A file that was rotated, copied and truncated, or replaced while
      sipwatch was down is recognised by its inode and fingerprint: the rest of the old file
      is read first (found next to it, e.g. ``drachtio.log.1``), then the new one from its
      start.  An inode reused by a new file fails the fingerprint and is read from its start.

    A line left unterminated when a file is abandoned (rotation, truncation) is emitted with
    a ``"\\n"`` appended, so it cannot glue onto the next file's first line.

    Counters for self-metrics: ``rotations``, ``truncations``, ``bytes_read`` (decompressed
    for gzip), ``split_lines`` (over-long lines cut).  Follow-mode state for health checks:
    ``following`` is true while a file is open; ``last_error`` holds the last open error while
    the file cannot be opened (missing or unreadable), ``None`` once it is open.
    ``malformed_lines`` counts lines of a CRI file that are not CRI entries (dropped).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        follow: bool = False,
        from_start: bool = True,
        poll_interval: float = 0.25,
        idle_flush: float = 0.5,
        read_size: int = DEFAULT_READ_SIZE,
        name: str | None = None,
        max_line: int = DEFAULT_MAX_LINE,
        format: FileFormat = "auto",
        positions: PositionStore | None = None,
    ) -> None:
        if format not in ("auto", "plain", "cri"):
            raise ValueError(f"unknown file format {format!r}")
        if poll_interval <= 0 or idle_flush <= 0:
            raise ValueError("poll_interval and idle_flush must be positive")
        if read_size < 1:
            raise ValueError("read_size must be positive")
        self.path = Path(path)
        if follow and self.path.suffix == ".gz":
            raise ValueError(f"cannot follow a compressed file: {self.path}")
        self.follow = follow
        self.from_start = from_start
        self.poll_interval = poll_interval
        self.idle_flush = idle_flush
        self.read_size = read_size
        self.max_line = max_line
        self.name = name if name is not None else str(path)
        self.format: FileFormat = format
        self.malformed_lines = 0
        self.rotations = 0
        self.truncations = 0
        self.bytes_read = 0
        self.split_lines = 0
        self.last_error: str | None = None
        self.following = False
        self._missing_since: float | None = None
        # checkpoints: only a followed file resumes (a file read once is an import)
        self.positions = positions if follow else None
        self.position_key = f"file:{os.path.abspath(self.path)}"

    def __repr__(self) -> str:
        return f"FileSource({str(self.path)!r}, follow={self.follow})"

    @property
    def finite(self) -> bool:
        """A file read once ends by itself (the daemon then finishes the pipeline)."""
        return not self.follow

    def health(self, clock: Callable[[], float] = time.monotonic) -> tuple[bool, str]:
        """(up, reason) for ``/readyz``: a followed file is up while its path exists and is
        open.  A path gone longer than ``ROTATION_GRACE`` (renamed or deleted and not
        recreated) is down even though the old descriptor still reads: nothing will ever be
        written to that name again until someone recreates it."""
        if not self.follow:
            return True, ""
        if not self.following and self.last_error is not None:  # tried, and it is not there
            return False, f"waiting for the file ({self.last_error})"
        now = clock()
        if self.path.exists():
            self._missing_since = None
            return True, ""
        if self._missing_since is None:
            self._missing_since = now
        gone = now - self._missing_since
        if gone < ROTATION_GRACE:
            return True, ""
        return False, f"the path has been gone for {int(gone)} s (rotated away, not recreated)"

    async def chunks(self) -> AsyncGenerator[LogChunk, None]:
        """Yield whole-line chunks (and, in follow mode, idle signals) until EOF / cancelled."""
        if self.follow:
            # aclosing: an aclose() of ours must close the file now, not at garbage collection.
            async with contextlib.aclosing(self._follow()) as follow:
                async for chunk in follow:
                    yield chunk
            return
        reader = TextFileReader(self.path, read_size=self.read_size, max_line=self.max_line)
        framing = self._framing()
        try:
            for text in reader:
                self.bytes_read = reader.bytes_read
                for chunk in framing.chunks(text):
                    yield chunk
                # Let other tasks (web server, queue consumers) run between big chunks even
                # if the consumer never suspends; costs microseconds per MiB.
                await asyncio.sleep(0)
            for chunk in framing.end():
                yield chunk
        finally:
            self.bytes_read = reader.bytes_read
            self._count(framing, reader.decoder.split_lines)

    def _framing(self) -> _Framing:
        return _Framing(self.name, self.format, self.max_line)

    def _count(self, framing: _Framing, split_lines: int) -> None:
        """Publish the counters of a finished read (the file's and the CRI decoder's)."""
        cri = framing.cri
        self.split_lines = split_lines + (cri.split_lines if cri is not None else 0)
        self.malformed_lines = cri.malformed if cri is not None else 0

    async def _follow(self) -> AsyncGenerator[LogChunk, None]:
        follower = _Follower(self)
        framing = self._framing()
        key = self.position_key if self.positions is not None else None
        loop = asyncio.get_running_loop()
        last_data = loop.time()
        idle_sent = True  # nothing to flush before the first byte
        try:
            while True:
                texts, got_data = follower.poll()
                if got_data:
                    last_data = loop.time()
                    idle_sent = False
                for text, state, exact in texts:
                    chunks = framing.chunks(text)
                    if key is not None and chunks:
                        _place(key, chunks, state, exact, framing)
                    for chunk in chunks:
                        yield chunk
                if got_data or follower.busy:
                    # More may be waiting; give the loop a turn but do not sleep.
                    await asyncio.sleep(0)
                    continue
                now = loop.time()
                delay = self.poll_interval
                if not idle_sent:
                    until_idle = last_data + self.idle_flush - now
                    if until_idle <= 0:
                        idle_sent = True
                        chunks = framing.idle()
                        if key is not None and chunks:
                            _place(key, chunks, follower.state(), True, framing)
                        for chunk in chunks:
                            yield chunk
                    else:
                        delay = min(delay, until_idle)
                await asyncio.sleep(delay)
        finally:
            follower.close()
            self._count(framing, follower.decoder.split_lines)


def _place(
    key: str, chunks: list[LogChunk], state: FileState | None, exact: bool, framing: _Framing
) -> None:
    """Give the chunks made of one read their positions: the file's position after the read
    goes on the last one, unless a CRI partial line is still waiting for its end (resuming
    after it would lose its start).  Decoded CRI text is never byte-exact."""
    if framing.cri is not None and framing.cri.pending:
        state = None
    for chunk in chunks[:-1]:
        chunk.position = Position(key, None)
    chunks[-1].position = Position(key, state, exact=exact and framing.cri is None)


class _Follower:
    """The synchronous state machine behind follow mode: one ``poll()`` per loop turn.

    Kept apart from the async generator so every file-system decision is plain code that
    runs between two awaits, never across one.
    """

    def __init__(self, src: FileSource) -> None:
        self.src = src
        self.read_size = min(src.read_size, FOLLOW_READ_SIZE)
        self.f: io.FileIO | None = None
        self.pos = 0
        self.decoder = LineDecoder(src.max_line)
        self.first_open = True
        self.busy = False  # poll() wants to be called again right away
        # the open file's identity for checkpoints; the fingerprint grows with the first KiB
        self.ident = (0, 0)
        self.fp = ""
        self.fp_len = 0

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None
        self.src.following = False

    def state(self) -> FileState | None:
        """The checkpoint of what was emitted so far: file identity and the offset after the
        last whole line (None while no file is open)."""
        f = self.f
        if f is None:
            return None
        offset = self.pos - self.decoder.pending
        want = min(offset, FINGERPRINT_BYTES)
        if self.fp_len < want:
            try:
                self.fp = _fingerprint(f.fileno(), want)
            except OSError:
                self.fp = ""
            self.fp_len = want if self.fp else 0
        return {
            "dev": self.ident[0],
            "ino": self.ident[1],
            "fp": self.fp,
            "fp_len": self.fp_len,
            "offset": offset,
        }

    def poll(self) -> tuple[list[tuple[str, FileState | None, bool]], bool]:
        """Do one step; return (texts to emit, each with the file's position after it and
        whether the text is the file's bytes unchanged, and whether any bytes were read)."""
        self.busy = False
        out: list[tuple[str, FileState | None, bool]] = []
        if self.f is None:
            first = self.first_open
            self.first_open = False
            saved = self._saved() if first else None
            if saved is None or not self._resume(saved):
                self._open(at_end=first and not self.src.from_start)
            if self.f is None:
                return out, False
        if self._read_into(out, self.f):
            return out, True
        # At EOF of the current file: has the path moved on, or the file shrunk?
        f = self.f
        fst = os.fstat(f.fileno())
        try:
            st = os.stat(self.src.path)
        except OSError:  # missing (mid-rotation / deleted): keep the old descriptor
            st = None
        replaced = st is not None and (
            (st.st_dev, st.st_ino) != (fst.st_dev, fst.st_ino) or fst.st_nlink == 0
        )
        if replaced and st is not None and st.st_size > 0:
            # The writer has moved on.  Drain what it wrote to the old file since our EOF a
            # moment ago - one read per poll, so a large remainder never blocks the loop.
            if self._read_into(out, f):
                return out, True
            self._abandon(out)
            f.close()
            self.f = None
            self.src.following = False
            self.src.rotations += 1
            self._open(at_end=False)
            self.busy = True
            return out, False
        if fst.st_size < self.pos:
            self._abandon(out)
            f.seek(0)
            self.pos = 0
            self.fp, self.fp_len = "", 0  # new content under the same inode
            self.src.truncations += 1
            self.busy = True
        return out, False

    def _open(self, *, at_end: bool) -> None:
        try:
            f = open(self.src.path, "rb", buffering=0)  # noqa: SIM115 - closed in close()
        except OSError as exc:  # missing or unreadable: tail -F keeps retrying
            self.src.last_error = f"{type(exc).__name__}: {exc.strerror or exc}"
            return
        self._use(f, f.seek(0, os.SEEK_END) if at_end else 0)

    def _use(self, f: io.FileIO, offset: int, fp: str = "", fp_len: int = 0) -> None:
        self.src.last_error = None
        st = os.fstat(f.fileno())
        self.ident = (st.st_dev, st.st_ino)
        self.fp, self.fp_len = fp, fp_len
        self.pos = f.seek(offset) if offset else 0
        self.f = f
        self.src.following = True

    def _saved(self) -> tuple[int, int, str, int, int] | None:
        store = self.src.positions
        state = store.get(self.src.position_key) if store is not None else None
        saved = _saved_file(state) if state is not None else None
        if state is not None and saved is None:
            log.warning("file checkpoint unusable, reading from the start", path=str(self.src.path))
        return saved

    def _resume(self, saved: tuple[int, int, str, int, int]) -> bool:
        """Open where the previous run stopped; False when nothing could be opened (the path
        is missing and no rotated file matches: wait for it, read it from its start)."""
        path = self.src.path
        _dev, _ino, fp, fp_len, offset = saved
        try:
            f: io.FileIO | None = open(path, "rb", buffering=0)  # noqa: SIM115 - kept or closed
        except OSError as exc:
            self.src.last_error = f"{type(exc).__name__}: {exc.strerror or exc}"
            f = None
        if f is not None:
            try:
                same = _same_file(f.fileno(), saved, same_inode=True)
            except OSError:
                same = False
            if same:
                self._use(f, offset, fp, fp_len)
                log.info("file resumed at its checkpoint", path=str(path), offset=offset)
                return True
        previous = find_previous(path, saved)
        if previous is not None:
            try:
                old = open(previous, "rb", buffering=0)  # noqa: SIM115 - closed in close()
            except OSError:
                old = None
            if old is not None:
                if f is not None:
                    f.close()
                self._use(old, offset, fp, fp_len)
                log.info(
                    "file changed while sipwatch was down: reading the rest of the old one first",
                    path=str(path),
                    old=str(previous),
                    offset=offset,
                )
                return True
        if f is None:
            return False
        log.warning(
            "file replaced while sipwatch was down and the old one is not next to it: reading "
            "the new one from its start (what the old one got after the checkpoint is not read)",
            path=str(path),
        )
        self._use(f, 0)
        return True

    def _read_into(self, out: list[tuple[str, FileState | None, bool]], f: io.FileIO) -> bool:
        data = f.read(self.read_size)
        if not data:
            return False
        n = len(data)
        self.pos += n
        self.src.bytes_read += n
        split = self.decoder.split_lines
        text = self.decoder.feed(data)
        if text:
            # an over-long line cut in two got a "\n" that is not in the file: not exact
            exact = self.decoder.split_lines == split
            out.append((text, self.state() if self.src.positions is not None else None, exact))
        return True

    def _abandon(self, out: list[tuple[str, FileState | None, bool]]) -> None:
        """The current file will not be read further: emit its unterminated last line."""
        rest = self.decoder.flush()
        if rest:
            state = self.state() if self.src.positions is not None else None
            out.append((rest + "\n", state, False))


def build(ctx: SourceContext) -> list[tuple[str, LogSource]]:
    """``[[sources.files]]``: one followed (or read-once) file each."""
    idle = ctx.config.sources.idle_flush_seconds
    return [
        (
            fs.path,
            FileSource(
                fs.path,
                follow=fs.follow,
                idle_flush=idle,
                format=fs.format,
                positions=ctx.positions,
            ),
        )
        for fs in ctx.config.sources.files
    ]
