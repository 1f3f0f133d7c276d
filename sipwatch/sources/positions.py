"""Checkpoints: where each followed log stood, so a restart neither re-counts nor loses lines.

Like promtail's positions file or fluent-bit's DB, one small JSON file in a state directory
(``$STATE_DIRECTORY`` under systemd, a volume in a container) holds one entry per followed
log: a file's device, inode, fingerprint and offset, a container's last log entry (timestamp
and how many entries carried it), a pod container's likewise.  Sources read it when they
start and resume from it; :class:`PositionKeeper` keeps it up to date.

**When a position may be saved.**  A source knows where it *read* to, but a chunk it read may
still wait in the daemon's queue, and the framer (:class:`~sipwatch.ingest.framing.LogParser`)
holds back the last record of every channel until the next one starts or an idle signal
comes.  Saving the read position would lose that record on SIGKILL; saving too late counts
lines twice.  So every chunk carries the position *after* it (``LogChunk.position``), the
keeper is told about every chunk the pipeline processed, and on its tick (and when an idle
signal flushed a channel) it saves the newest position before which nothing is held back:

* nothing held for the entry's channels (always the case right after an idle signal, which
  every follow-mode source sends once its log was quiet for ``idle_flush_seconds``): the
  newest position;
* a plain-text file (``Position.exact``) whose held record is text the framer did not
  rewrite: the exact offset where that record starts (offset minus the bytes held back), so a
  busy log that is never quiet still gets exact checkpoints;
* otherwise (Docker, Kubernetes and CRI files, whose positions are entry timestamps): the
  position after the newest chunk that ends before the held record starts.  A restart then
  reads again the part of one chunk (one read of the stream) before the held record: those
  lines are **repeated**, never lost;
* a channel whose held text cannot be placed (the framer strips line prefixes or splits
  ``service |`` lines) and that is never quiet, or a stream whose lines never end on a chunk
  border: after :data:`STUCK_AFTER` seconds without a safe position the newest one is saved
  anyway.  What is repeated is then bounded by those seconds of log; what can be **lost** is
  the record each channel held at that moment (at most one per channel), and only if sipwatch
  is killed before the channel's next chunk or idle signal - within ``idle_flush_seconds``.

Positions are written every ``checkpoint_interval_seconds`` when they changed (temporary file,
fsync, rename, directory fsync: a crash leaves the old file or the new one, never half of
one) and once more at shutdown.  After SIGKILL a restart repeats what was processed after the
last write - at most one interval of log; SIGTERM repeats nothing.  The file is written from
a worker thread, so a slow disk never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import structlog

from sipwatch.model import LogChunk, Position, SourceItem, Stream

if TYPE_CHECKING:
    from sipwatch.config import Config
    from sipwatch.ingest.framing import LogParser

__all__ = [
    "STATE_DIRECTORY_ENV",
    "STATE_FILE",
    "STUCK_AFTER",
    "PositionKeeper",
    "PositionStore",
    "open_store",
    "state_directory",
]

log = structlog.get_logger(__name__)

#: What systemd's ``StateDirectory=`` sets (several directories are joined with ":").
STATE_DIRECTORY_ENV = "STATE_DIRECTORY"
STATE_FILE = "positions.json"
_LOCK_FILE = "positions.lock"
_FORMAT = 1
#: Entries kept at most; the least recently updated go first.  Every recreated container
#: and replaced pod leaves one behind, a file keeps its own as long as it is followed.
MAX_ENTRIES = 1024
_MAX_FILE_BYTES = 4 << 20  # a positions file larger than this is not ours
_MAX_KEY = 512
#: Seconds an entry may go without a safe position, while its source keeps reading, before
#: its newest position is saved anyway (see the module docstring).
STUCK_AFTER = 10.0
#: Chunks remembered per entry between two evaluations (one tick, or an idle signal).  Past
#: it the entry is evaluated at once; chunks still unsafe then are dropped oldest first,
#: which only makes the saved position older (safe), never newer.
_MAX_PENDING_CHUNKS = 1024
#: Channels whose character counts are kept when no entry needs them any more.  A counter
#: forgotten while the framer still holds text of its channel only makes that channel's
#: next position unsafe until its idle signal (never saved too early).
_MAX_CHANNELS = 4096
#: The daemon ticks once a second; a tick that comes a hair early must not skip a write.
_TICK_SLACK = 0.1

State = dict[str, str | int | float | bool]
Channel = tuple[str, Stream]


def state_directory(config: Config, environ: Mapping[str, str]) -> Path | None:
    """Where checkpoints live: ``sources.state_directory``, else systemd's
    ``$STATE_DIRECTORY`` (its first entry), else nowhere (checkpoints off)."""
    sources = config.sources
    if not sources.checkpoints:
        return None
    if sources.state_directory:
        return Path(sources.state_directory)
    first = environ.get(STATE_DIRECTORY_ENV, "").split(":", 1)[0]
    return Path(first) if first else None


def open_store(config: Config, environ: Mapping[str, str] | None = None) -> PositionStore | None:
    """The checkpoint store ``sipwatch run`` uses, or None; says which in one log line."""
    env = os.environ if environ is None else environ
    directory = state_directory(config, env)
    if directory is None:
        reason = (
            "sources.checkpoints = false"
            if not config.sources.checkpoints
            else "no state directory (set sources.state_directory or SIPWATCH_STATE_DIRECTORY; "
            "systemd's StateDirectory= sets it by itself)"
        )
        log.warning("checkpoints off: a restart reads the logs again as configured", reason=reason)
        return None
    try:
        store = PositionStore.open(directory)
    except OSError as exc:
        log.error(
            "checkpoints off: the state directory cannot be used",
            directory=str(directory),
            error=f"{type(exc).__name__}: {exc.strerror or exc}",
        )
        return None
    log.info("checkpoints on", file=str(store.path), entries=len(store))
    return store


class PositionStore:
    """The positions file: read once when opened, kept in memory, saved atomically.

    Tolerant: a missing file is an empty store; an unreadable or malformed one is set aside
    as ``positions.json.corrupt`` (logged) and the store starts empty, which makes every
    source start as configured.  Entries that are not of the expected shape are skipped.
    A lock file (``flock``) keeps a second sipwatch from using the same directory.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / STATE_FILE
        self._entries: dict[str, tuple[float, State]] = {}  # key -> (updated, state)
        self._lock: IO[bytes] | None = None
        self.dirty = False
        self.writes = 0
        self.write_errors = 0

    @classmethod
    def open(cls, directory: Path) -> PositionStore:
        """Create the directory if needed, lock it and load the file.  Raises OSError when
        the directory cannot be created or written, or another process holds the lock."""
        store = cls(directory)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        store._take_lock()
        try:
            store._load()
        except BaseException:
            store.close()
            raise
        return store

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> State | None:
        """The saved state of ``key`` (a copy), or None."""
        entry = self._entries.get(key)
        return dict(entry[1]) if entry is not None else None

    def has_kind(self, prefix: str) -> bool:
        """Whether any entry's key starts with ``prefix`` (e.g. "docker:"): a source uses it
        to tell "sipwatch followed these logs before" from a first start."""
        return any(key.startswith(prefix) for key in self._entries)

    def set(self, key: str, state: Mapping[str, str | int | float | bool]) -> None:
        """Record ``state`` as ``key``'s position (saved by the next :meth:`snapshot`)."""
        current = self._entries.get(key)
        if current is not None and current[1] == state:
            return
        self._entries[key] = (time.time(), dict(state))
        if current is None and len(self._entries) > MAX_ENTRIES:
            oldest = min(self._entries, key=lambda k: self._entries[k][0])
            del self._entries[oldest]
        self.dirty = True

    def snapshot(self) -> bytes:
        """The file's next content; clears ``dirty``."""
        self.dirty = False
        data = {
            "version": _FORMAT,
            "written_at": round(time.time(), 3),
            "positions": {
                key: {"updated": round(updated, 3), "state": state}
                for key, (updated, state) in self._entries.items()
            },
        }
        return json.dumps(data, indent=1, sort_keys=True).encode()

    def write(self, data: bytes) -> None:
        """Replace the file with ``data`` atomically and durably (blocking: call it from a
        worker thread).  Raises OSError."""
        tmp = self.path.with_name(STATE_FILE + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the descriptor releases the flock
            self._lock = None

    # ------------------------------------------------------------------ internals
    def _take_lock(self) -> None:
        import fcntl

        lock = open(self.directory / _LOCK_FILE, "ab")  # noqa: SIM115 - held until close()
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            lock.close()
            raise OSError(exc.errno, "another sipwatch uses this state directory") from None
        except BaseException:
            lock.close()
            raise
        self._lock = lock

    def _load(self) -> None:
        try:
            with open(self.path, "rb") as f:
                raw = f.read(_MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            return
        problem = None
        data: Any = None
        if len(raw) > _MAX_FILE_BYTES:
            problem = "larger than a positions file can be"
        else:
            try:
                data = json.loads(raw)
            except ValueError as exc:  # also invalid UTF-8
                problem = f"not JSON ({exc})"
        if problem is None and not (
            isinstance(data, dict)
            and data.get("version") == _FORMAT
            and isinstance(data.get("positions"), dict)
        ):
            problem = "not a sipwatch positions file of this version"
        if problem is not None:
            aside = self.path.with_name(STATE_FILE + ".corrupt")
            with contextlib.suppress(OSError):
                os.replace(self.path, aside)
            log.warning(
                "positions file unusable, starting without checkpoints",
                file=str(self.path),
                problem=problem[:200],
                set_aside=str(aside),
            )
            return
        skipped = 0
        for key, entry in data["positions"].items():
            state = entry.get("state") if isinstance(entry, dict) else None
            updated = entry.get("updated", 0) if isinstance(entry, dict) else 0
            if (
                len(key) > _MAX_KEY
                or not isinstance(state, dict)
                or not isinstance(updated, int | float)
                or not all(isinstance(v, str | int | float) for v in state.values())
            ):
                skipped += 1
                continue
            self._entries[key] = (float(updated), state)
        if len(self._entries) > MAX_ENTRIES:
            newest = sorted(self._entries, key=lambda k: self._entries[k][0])[-MAX_ENTRIES:]
            self._entries = {k: self._entries[k] for k in newest}
        if skipped:
            log.warning("positions file: malformed entries skipped", skipped=skipped)


@dataclass(slots=True)
class _Chunk:
    """One processed chunk of an entry: its position and where its text lies in its channel
    (``start``/``end``: characters fed to that channel before / after it)."""

    position: Position
    channel: Channel
    start: int
    end: int
    ends: dict[Channel, int]  # where the entry's text ended on each of its channels, then


@dataclass(slots=True)
class _Entry:
    """What the keeper knows about one checkpoint entry between two saved positions."""

    key: str
    chunks: deque[_Chunk] = field(default_factory=deque)
    ends: dict[Channel, int] = field(default_factory=dict)
    since: float = 0.0  # when a position of the entry was last saved (or it began)
    added: float = 0.0  # when its last chunk came


class PositionKeeper:
    """Saves each source's position once everything before it went through the pipeline.

    The daemon calls :meth:`processed` after ``Pipeline.feed`` for every item, :meth:`tick`
    once a second and :meth:`close` at shutdown.  With no store (checkpoints off) every call
    returns at once.  See the module docstring for what is saved when.
    """

    def __init__(
        self,
        store: PositionStore | None,
        parser: LogParser,
        *,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self._parser = parser
        self._interval = interval
        self._clock = clock
        self._fed: dict[Channel, int] = {}  # characters fed per framing channel
        self._entries: dict[str, _Entry] = {}  # keys with chunks not yet saved
        self._by_channel: dict[Channel, dict[str, _Entry]] = {}
        self._last_write = clock()
        self._writing: asyncio.Future[None] | None = None
        self._failing = False
        self.forced = 0  # positions saved by the STUCK_AFTER rule
        self._forced_keys: set[str] = set()

    @classmethod
    def from_config(cls, config: Config, parser: LogParser) -> PositionKeeper:
        """The keeper of ``sipwatch run``: opens the configured store (or runs without)."""
        return cls(open_store(config), parser, interval=config.sources.checkpoint_interval_seconds)

    # ------------------------------------------------------------------ daemon hooks
    def processed(self, item: SourceItem) -> None:
        """``item`` went through the pipeline: account for it.

        Cheap on purpose (a few dict operations per chunk): what became safe is worked out
        on :meth:`tick`, when an idle signal flushed a channel, and when an entry has
        collected many chunks - not for every chunk of a busy stream.
        """
        if self.store is None or type(item) is not LogChunk:
            return
        channel = (item.source, item.stream)
        start = self._fed.get(channel, 0)
        end = start + len(item.text)
        pos = item.position
        if end == start:  # an idle signal: the framer let go of this channel's record
            if pos is not None:
                self._add(pos, channel, start, end)
            for entry in list(self._by_channel.get(channel, {}).values()):
                self._settle(entry)
            return
        self._fed[channel] = end
        if pos is not None:
            self._add(pos, channel, start, end)

    def tick(self) -> None:
        """Save what became safe, force stuck entries (:data:`STUCK_AFTER`), and start a
        write when one is due."""
        store = self.store
        if store is None:
            return
        now = self._clock()
        for entry in list(self._entries.values()):
            self._settle(entry)
            # stuck: nothing saved for a while although the log kept coming (a log that
            # went quiet gets its idle signal instead, which needs no force)
            if entry.chunks and now - entry.since >= STUCK_AFTER and entry.added > entry.since:
                newest = next(
                    (c.position for c in reversed(entry.chunks) if c.position.state is not None),
                    None,
                )
                if newest is not None:
                    self.forced += 1
                    if entry.key not in self._forced_keys:  # once per log, not every 10 s
                        if len(self._forced_keys) >= MAX_ENTRIES:
                            self._forced_keys.clear()
                        self._forced_keys.add(entry.key)
                        log.info(
                            "checkpoint saved past a held-back record (the log is never quiet "
                            "and its records cannot be placed)",
                            key=entry.key,
                            after_seconds=STUCK_AFTER,
                        )
                    self._save(entry, newest, len(entry.chunks))
        if len(self._fed) > _MAX_CHANNELS:
            # pods come and go under new names: forget counters no entry depends on
            self._fed = {c: n for c, n in self._fed.items() if c in self._by_channel}
        if (
            store.dirty
            and (self._writing is None or self._writing.done())
            and now - self._last_write + _TICK_SLACK >= self._interval
        ):
            self._last_write = now
            loop = asyncio.get_running_loop()  # the daemon's: tick() runs on its event loop
            self._writing = loop.create_task(self._write(store.snapshot()))

    async def close(self) -> None:
        """Shutdown: wait for a write under way, save the final positions, release the lock."""
        store = self.store
        if store is None:
            return
        if self._writing is not None:
            with contextlib.suppress(Exception):
                await self._writing
        for entry in list(self._entries.values()):
            self._settle(entry)
        if store.dirty:
            await self._write(store.snapshot())
        store.close()

    # ------------------------------------------------------------------ internals
    def _add(self, pos: Position, channel: Channel, start: int, end: int) -> None:
        now = self._clock()
        entry = self._entries.get(pos.key)
        if entry is None:
            entry = self._entries[pos.key] = _Entry(pos.key, since=now)
        elif not entry.chunks:
            entry.since = now
        entry.added = now
        entry.ends[channel] = end
        chunks = entry.chunks
        chunks.append(_Chunk(pos, channel, start, end, dict(entry.ends)))
        self._by_channel.setdefault(channel, {})[pos.key] = entry
        if len(chunks) > _MAX_PENDING_CHUNKS:
            self._settle(entry)
            if len(chunks) > _MAX_PENDING_CHUNKS:
                chunks.popleft()

    async def _write(self, data: bytes) -> None:
        store = self.store
        assert store is not None
        try:
            await asyncio.to_thread(store.write, data)
        except OSError as exc:
            store.dirty = True  # try again next time
            store.write_errors += 1
            if not self._failing:
                log.error(
                    "cannot save checkpoints",
                    file=str(store.path),
                    error=f"{type(exc).__name__}: {exc.strerror or exc}",
                )
            self._failing = True
            return
        store.writes += 1
        if self._failing:
            log.info("checkpoints saved again", file=str(store.path))
        self._failing = False

    def _settle(self, entry: _Entry) -> None:
        """Save the newest position of ``entry`` before which nothing is held back."""
        starts: dict[Channel, int | None] = {}
        held: dict[Channel, str] = {}
        for channel in entry.ends:
            text = self._parser.held_back(*channel)
            if text is None:
                starts[channel] = None
            else:
                held[channel] = text
                starts[channel] = self._fed.get(channel, 0) - len(text)
        chunks = entry.chunks
        best = -1
        for i in range(len(chunks) - 1, -1, -1):
            c = chunks[i]
            if c.position.state is None:
                continue
            if all((s := starts[ch]) is not None and end <= s for ch, end in c.ends.items()):
                best = i
                break
        exact = self._exact(entry, starts, held)
        if exact is not None:
            self._save(entry, exact, best + 1)
        elif best >= 0:
            self._save(entry, chunks[best].position, best + 1)

    def _exact(
        self, entry: _Entry, starts: dict[Channel, int | None], held: dict[Channel, str]
    ) -> Position | None:
        """For a plain file (one channel, ``exact`` positions): the position where the held
        record starts, if the text from there on is that file's bytes unchanged."""
        if len(entry.ends) != 1 or not entry.chunks:
            return None
        (channel,) = entry.ends
        text = held.get(channel)
        start = starts[channel]
        last = entry.chunks[-1]
        if (
            not text
            or start is None
            or "\ufffd" in text  # an invalid byte was replaced: its length is unknown
            or not last.position.exact
            or last.position.state is None
            or last.end != self._fed.get(channel)
        ):
            return None
        identity = _identity(last.position)
        following: _Chunk | None = None
        for c in reversed(entry.chunks):
            if (
                not c.position.exact
                or _identity(c.position) != identity
                or (following is not None and c.end != following.start)
            ):
                return None
            if c.start <= start:  # the held record starts in this chunk
                state = dict(last.position.state)
                offset = state.get("offset")
                if not isinstance(offset, int):
                    return None
                state["offset"] = offset - len(text.encode("utf-8"))
                return Position(entry.key, state, exact=True)
            following = c
        return None

    def _save(self, entry: _Entry, position: Position, done: int) -> None:
        """Save ``position`` for ``entry``; forget its first ``done`` chunks."""
        assert self.store is not None and position.state is not None
        self.store.set(entry.key, position.state)
        chunks = entry.chunks
        for _ in range(min(done, len(chunks))):
            chunks.popleft()
        entry.since = self._clock()
        if not chunks:
            del self._entries[entry.key]
            for channel in entry.ends:
                watching = self._by_channel.get(channel)
                if watching is not None:
                    watching.pop(entry.key, None)
                    if not watching:
                        del self._by_channel[channel]


def _identity(position: Position) -> tuple[tuple[str, Any], ...]:
    """What names the byte stream of an ``exact`` position: its state without the offset."""
    assert position.state is not None
    return tuple(sorted((k, v) for k, v in position.state.items() if k != "offset"))
