"""Checkpoints (sipwatch.sources.positions): the store on a real directory, the framer's
``held_back``, the keeper's choice of what may be saved, and how a followed file resumes from
a saved position after rotation, copytruncate or inode reuse while sipwatch was down.

The end-to-end proof (a real ``sipwatch run`` killed with SIGKILL) is in tests/test_restart_*.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from sipwatch.config import parse_config
from sipwatch.ingest.framing import LogParser
from sipwatch.model import LogChunk, Position, Stream
from sipwatch.pipeline.core import Pipeline, PipelineSettings
from sipwatch.sources.file import FileSource
from sipwatch.sources.positions import (
    MAX_ENTRIES,
    STATE_FILE,
    STUCK_AFTER,
    PositionKeeper,
    PositionStore,
    open_store,
    state_directory,
)
from sipwatch.sources.timestamped import ResumePoint
from tests.samples import FakeClock
from tools.synth import Device, Scenario

TEST_TIMEOUT = 20.0


def records(n: int, start: float = 1772366400.0, first_user: int = 1000) -> str:
    """drachtio text with ``4 * n`` SIP messages (n successful registrations)."""
    sc = Scenario(start)
    for i in range(n):
        sc.register_ok(Device(str(first_user + i), "acme.example.com", f"203.0.113.{i % 250 + 1}"))
    return "".join(sc.drachtio)


def sip_count(text: str) -> int:
    return text.count(" bytes from ") + text.count(" bytes to ")


# --------------------------------------------------------------------------- the store


def test_store_round_trip_is_atomic_and_private(tmp_path: Path) -> None:
    directory = tmp_path / "state" / "sub"
    store = PositionStore.open(directory)  # created, parents too
    assert len(store) == 0 and not store.dirty
    store.set("file:/var/log/drachtio.log", {"dev": 1, "ino": 2, "offset": 30, "fp": "ab"})
    store.set("docker:abc", {"ts": "2026-03-01T12:00:00.000000001Z", "count": 2})
    assert store.dirty
    store.write(store.snapshot())
    assert not store.dirty
    path = directory / STATE_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    assert not (directory / (STATE_FILE + ".tmp")).exists()
    data = json.loads(path.read_text())
    assert data["version"] == 1 and set(data["positions"]) == {
        "file:/var/log/drachtio.log",
        "docker:abc",
    }
    store.close()
    again = PositionStore.open(directory)
    assert again.get("docker:abc") == {"ts": "2026-03-01T12:00:00.000000001Z", "count": 2}
    assert again.has_kind("docker:") and not again.has_kind("kubernetes:")
    again.set("docker:abc", {"ts": "2026-03-01T12:00:00.000000001Z", "count": 2})
    assert not again.dirty  # the same state again is no change
    again.close()


def test_a_second_sipwatch_cannot_use_the_same_directory(tmp_path: Path) -> None:
    first = PositionStore.open(tmp_path)
    with pytest.raises(OSError, match="another sipwatch"):
        PositionStore.open(tmp_path)
    first.close()
    PositionStore.open(tmp_path).close()  # released with the first


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"\xff\xfe garbage",
        b'{"version": 99, "positions": {}}',
        b"[1, 2, 3]",
        b"",
    ],
)
def test_a_corrupt_file_is_set_aside_and_the_store_starts_empty(
    tmp_path: Path, content: bytes
) -> None:
    (tmp_path / STATE_FILE).write_bytes(content)
    store = PositionStore.open(tmp_path)
    assert len(store) == 0
    assert (tmp_path / (STATE_FILE + ".corrupt")).read_bytes() == content
    store.set("file:/x", {"offset": 1})
    store.write(store.snapshot())  # and the next write is a good file again
    store.close()
    assert PositionStore.open(tmp_path).get("file:/x") == {"offset": 1}


def test_malformed_entries_are_skipped_and_good_ones_kept(tmp_path: Path) -> None:
    good = {"updated": 5, "state": {"offset": 7}}
    (tmp_path / STATE_FILE).write_text(
        json.dumps(
            {
                "version": 1,
                "positions": {
                    "file:/good": good,
                    "file:/list": {"updated": 1, "state": [1, 2]},
                    "file:/nested": {"updated": 1, "state": {"a": {"b": 1}}},
                    "file:/none": "x",
                    "k" * 600: good,
                },
            }
        )
    )
    store = PositionStore.open(tmp_path)
    assert len(store) == 1 and store.get("file:/good") == {"offset": 7}


def test_the_store_is_bounded(tmp_path: Path) -> None:
    store = PositionStore.open(tmp_path)
    for i in range(MAX_ENTRIES + 50):
        store.set(f"docker:{i:064x}", {"ts": "2026-03-01T12:00:00Z", "count": 1})
    assert len(store) == MAX_ENTRIES
    assert store.get(f"docker:{0:064x}") is None  # the least recently updated went first
    assert store.get(f"docker:{MAX_ENTRIES + 49:064x}") is not None
    store.write(store.snapshot())
    assert len(json.loads((tmp_path / STATE_FILE).read_text())["positions"]) == MAX_ENTRIES


# --------------------------------------------------------------------------- configuration


def test_state_directory_comes_from_the_config_then_systemd(tmp_path: Path) -> None:
    plain = parse_config("", environ={})
    assert state_directory(plain, {}) is None
    assert state_directory(plain, {"STATE_DIRECTORY": "/var/lib/sipwatch:/var/lib/other"}) == (
        Path("/var/lib/sipwatch")
    )
    configured = parse_config('[sources]\nstate_directory = "/srv/sw"\n', environ={})
    assert state_directory(configured, {"STATE_DIRECTORY": "/var/lib/sipwatch"}) == Path("/srv/sw")
    env = parse_config("", environ={"SIPWATCH_STATE_DIRECTORY": str(tmp_path)})
    assert state_directory(env, {}) == tmp_path
    off = parse_config("[sources]\ncheckpoints = false\n", environ={})
    assert state_directory(off, {"STATE_DIRECTORY": "/var/lib/sipwatch"}) is None


def test_open_store_runs_without_checkpoints_when_the_directory_is_unusable(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    config = parse_config(f'[sources]\nstate_directory = "{blocker}/sub"\n', environ={})
    assert open_store(config, {}) is None
    assert open_store(parse_config("", environ={}), {}) is None
    store = open_store(parse_config("", environ={}), {"STATE_DIRECTORY": str(tmp_path)})
    assert store is not None and store.path == tmp_path / STATE_FILE
    store.close()


# --------------------------------------------------------------------------- held_back


def test_held_back_is_the_unfinished_record_or_none_when_rewritten() -> None:
    parser = LogParser()
    text = records(2)
    parser.feed(LogChunk("a", Stream.TEXT, text))
    held = parser.held_back("a", Stream.TEXT)
    assert held and text.endswith(held) and held.startswith("2026-")
    assert sip_count(held) == 1  # the last SIP dump waits for the next record
    parser.feed(LogChunk("a", Stream.TEXT, ""))  # idle signal
    assert parser.held_back("a", Stream.TEXT) == ""
    assert parser.held_back("unknown", Stream.TEXT) == ""
    # docker logs -t style prefixes are stripped: the held text is not what was fed
    stamped = "".join(f"2026-03-01T12:00:00.000000001Z {line}\n" for line in text.splitlines())
    parser.feed(LogChunk("b", Stream.STDERR, stamped))
    assert parser.held_back("b", Stream.STDERR) is None
    parser.feed(LogChunk("b", Stream.STDERR, ""))
    assert parser.held_back("b", Stream.STDERR) == ""
    # compose "service | " lines are split into child channels
    composed = "".join(f"drachtio-sbc-1  | {line}\n" for line in text.splitlines())
    parser.feed(LogChunk("c", Stream.TEXT, composed))
    assert parser.held_back("c", Stream.TEXT) is None
    parser.feed(LogChunk("c", Stream.TEXT, ""))
    assert parser.held_back("c", Stream.TEXT) == ""


# --------------------------------------------------------------------------- the keeper


def keeper(tmp_path: Path, clock: Callable[[], float] | None = None) -> PositionKeeper:
    parser = Pipeline(PipelineSettings()).parser
    return PositionKeeper(PositionStore.open(tmp_path), parser, clock=clock or FakeClock(1000.0))


def feed(k: PositionKeeper, chunk: LogChunk) -> None:
    k._parser.feed(chunk)
    k.processed(chunk)


def file_pos(offset: int, *, exact: bool = True) -> Position:
    return Position("file:/x", {"dev": 1, "ino": 2, "offset": offset}, exact=exact)


async def test_keeper_places_a_plain_file_checkpoint_where_the_held_record_starts(
    tmp_path: Path,
) -> None:
    k = keeper(tmp_path)
    text = records(3) + "2026-03-01 12:00:09.000000 unfinished é line\n"
    raw = text.encode()
    cut = len(text) // 2
    first, second = text[:cut], text[cut:]
    feed(k, LogChunk("/x", Stream.TEXT, first, position=file_pos(len(first.encode()))))
    feed(k, LogChunk("/x", Stream.TEXT, second, position=file_pos(len(raw))))
    assert k.store is not None
    assert k.store.get("file:/x") is None  # worked out on the tick, not per chunk
    k.tick()
    held = k._parser.held_back("/x", Stream.TEXT)
    assert held and held.startswith("2026-03-01 12:00:09")
    saved = k.store.get("file:/x")
    assert saved is not None and saved["offset"] == len(raw) - len(held.encode())
    assert raw[saved["offset"] :].startswith(b"2026-03-01 12:00:09")  # a record start
    feed(k, LogChunk("/x", Stream.TEXT, "", position=file_pos(len(raw))))  # idle
    assert k.store.get("file:/x") == {"dev": 1, "ino": 2, "offset": len(raw)}


async def test_keeper_without_byte_exact_positions_saves_before_the_chunk_of_the_held_record(
    tmp_path: Path,
) -> None:
    k = keeper(tmp_path)
    assert k.store is not None
    a, b = records(2), records(2, start=1772366500.0, first_user=2000)

    def pos(n: int) -> Position:
        return Position("docker:c1", {"ts": f"2026-03-01T12:00:0{n}Z", "count": 1})

    feed(k, LogChunk("sbc", Stream.STDERR, a, position=pos(1)))
    k.tick()
    assert k.store.get("docker:c1") is None  # its last record is still held
    feed(k, LogChunk("sbc", Stream.STDERR, b, position=pos(2)))
    k.tick()
    # the held record started in chunk b: saved is the position after chunk a
    assert k.store.get("docker:c1") == {"ts": "2026-03-01T12:00:01Z", "count": 1}
    # a chunk whose line is only half delivered is no restart point
    feed(k, LogChunk("sbc", Stream.STDOUT, '{"level":30}\n', position=Position("docker:c1", None)))
    feed(k, LogChunk("sbc", Stream.STDERR, "", position=None))  # idle signals (FanIn)
    assert k.store.get("docker:c1") == {"ts": "2026-03-01T12:00:02Z", "count": 1}
    feed(k, LogChunk("sbc", Stream.STDOUT, "", position=None))
    assert k.store.get("docker:c1") == {"ts": "2026-03-01T12:00:02Z", "count": 1}
    assert not k._entries or all(
        c.position.state is None for e in k._entries.values() for c in e.chunks
    )


def test_keeper_waits_for_a_held_record_on_the_other_stream(tmp_path: Path) -> None:
    k = keeper(tmp_path)
    assert k.store is not None
    pino = '{"level":30,"time":1772366400000,"msg":"one"}\n{"level":30,"msg":"two"}\n'
    feed(k, LogChunk("reg", Stream.STDOUT, pino, position=Position("docker:r", None)))
    feed(
        k,
        LogChunk(
            "reg", Stream.STDERR, records(1), position=Position("docker:r", {"ts": "t", "count": 1})
        ),
    )
    assert k.store.get("docker:r") is None  # stdout still holds "two", stderr its record
    feed(k, LogChunk("reg", Stream.STDERR, ""))
    assert k.store.get("docker:r") is None  # stdout: still held
    feed(k, LogChunk("reg", Stream.STDOUT, ""))
    assert k.store.get("docker:r") == {"ts": "t", "count": 1}


async def test_keeper_forces_a_stuck_entry_after_the_bound(tmp_path: Path) -> None:
    clock = FakeClock(1000.0)
    k = keeper(tmp_path, clock)
    assert k.store is not None
    stamped = "".join(
        f"2026-03-01T12:00:00.000000001Z {line}\n" for line in records(2).splitlines()
    )
    feed(k, LogChunk("/y", Stream.TEXT, stamped, position=Position("file:/y", {"offset": 1})))
    clock.now += STUCK_AFTER
    k.tick()
    # rewritten text: where the held record starts is unknown, and a log that went quiet
    # is left to its idle signal (forcing would lose the held record)
    assert k.store.get("file:/y") is None
    feed(k, LogChunk("/y", Stream.TEXT, stamped, position=Position("file:/y", {"offset": 2})))
    k.tick()  # it kept coming and nothing could be saved for STUCK_AFTER: forced
    assert k.store.get("file:/y") == {"offset": 2} and k.forced == 1


async def test_keeper_writes_on_tick_and_at_close(tmp_path: Path) -> None:
    clock = FakeClock(1000.0)
    k = keeper(tmp_path, clock)
    assert k.store is not None
    feed(k, LogChunk("/x", Stream.TEXT, "", position=file_pos(0)))
    feed(k, LogChunk("/x", Stream.TEXT, records(1), position=file_pos(10)))
    feed(k, LogChunk("/x", Stream.TEXT, "", position=file_pos(10)))
    k.tick()  # not yet due
    assert not (tmp_path / STATE_FILE).exists()
    clock.now += 1.0
    k.tick()
    assert k._writing is not None
    await k._writing
    saved = json.loads((tmp_path / STATE_FILE).read_text())["positions"]["file:/x"]
    assert saved["state"]["offset"] == 10
    feed(k, LogChunk("/x", Stream.TEXT, "", position=file_pos(12)))
    await k.close()
    saved = json.loads((tmp_path / STATE_FILE).read_text())["positions"]["file:/x"]
    assert saved["state"]["offset"] == 12
    PositionStore.open(tmp_path).close()  # the lock was released


async def test_a_write_error_is_retried(tmp_path: Path) -> None:
    clock = FakeClock(1000.0)
    k = keeper(tmp_path, clock)
    assert k.store is not None
    feed(k, LogChunk("/x", Stream.TEXT, "", position=file_pos(5)))
    (tmp_path / (STATE_FILE + ".tmp")).mkdir()  # the temporary file cannot be created
    clock.now += 1
    k.tick()
    assert k._writing is not None
    await k._writing
    assert k.store.write_errors == 1 and k.store.dirty
    (tmp_path / (STATE_FILE + ".tmp")).rmdir()
    clock.now += 1
    k.tick()
    await k._writing
    assert k.store.writes == 1 and not k.store.dirty


def test_resume_point_state_round_trip() -> None:
    point = ResumePoint(b"2026-03-01T12:00:00.123456789Z", 3)
    assert ResumePoint.from_state(point.to_state()) == point
    for bad in (
        {"ts": "yesterday", "count": 1},
        {"ts": "2026-03-01T12:00:00Z", "count": 0},
        {"ts": "2026-03-01T12:00:00Z extra", "count": 1},
        {"count": 1},
    ):
        assert ResumePoint.from_state(bad) is None


# --------------------------------------------------------------------------- file resume


class Run:
    """One 'sipwatch run' in miniature: a followed file through the real pipeline and keeper.
    ``stop()`` ends it like SIGKILL after the last write (nothing saved at shutdown)."""

    def __init__(self, path: Path, state: Path) -> None:
        self.store = PositionStore.open(state)
        self.pipeline = Pipeline(PipelineSettings())
        self.keeper = PositionKeeper(self.store, self.pipeline.parser)
        self.source = FileSource(
            path, follow=True, poll_interval=0.01, idle_flush=0.1, positions=self.store
        )
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for chunk in self.source.chunks():
            self.pipeline.feed(chunk)
            self.keeper.processed(chunk)

    @property
    def sip(self) -> int:
        return self.pipeline.parser.stats.records.get("sip", 0)

    async def wait_sip(self, n: int) -> None:
        while self.sip != n:
            assert self.sip < n, f"counted {self.sip}, expected {n}"
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # idle signal and nothing more
        assert self.sip == n

    async def stop(self) -> None:
        self.store.write(self.store.snapshot())
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        self.store.close()


def append(path: Path, text: str) -> None:
    with path.open("a") as f:
        f.write(text)


async def restart_case(
    tmp_path: Path, while_down: Callable[[Path, str], str]
) -> tuple[int, int, int]:
    """Run, stop, change the log while down, run again; (first, second, total) SIP counts."""
    log = tmp_path / "drachtio.log"
    state = tmp_path / "state"
    first_text = records(5)
    log.write_text(first_text)
    async with asyncio.timeout(TEST_TIMEOUT):
        run = Run(log, state)
        await run.wait_sip(sip_count(first_text))
        first = run.sip
        await run.stop()
        added = while_down(log, first_text)
        run = Run(log, state)
        await run.wait_sip(sip_count(added))
        second = run.sip
        await run.stop()
    return first, second, sip_count(first_text) + sip_count(added)


async def test_file_resumes_at_its_checkpoint(tmp_path: Path) -> None:
    def grow(log: Path, _old: str) -> str:
        more = records(3, start=1772366500.0, first_user=2000)
        append(log, more)
        return more

    first, second, total = await restart_case(tmp_path, grow)
    assert first + second == total and second == 12


async def test_file_rotated_while_down_is_finished_before_the_new_one(tmp_path: Path) -> None:
    def rotate(log: Path, _old: str) -> str:
        tail = records(2, start=1772366500.0, first_user=2000)
        append(log, tail)  # written to the old file before the rotation
        log.rename(log.with_name("drachtio.log.1"))
        new = records(3, start=1772366600.0, first_user=3000)
        log.write_text(new)
        return tail + new

    first, second, total = await restart_case(tmp_path, rotate)
    assert first + second == total


async def test_copytruncate_while_down_reads_the_rest_from_the_copy(tmp_path: Path) -> None:
    def copytruncate(log: Path, _old: str) -> str:
        tail = records(2, start=1772366500.0, first_user=2000)
        append(log, tail)
        shutil.copyfile(log, log.with_name("drachtio.log.1"))
        with log.open("r+") as f:
            f.truncate(0)
        new = records(1, start=1772366600.0, first_user=3000)
        append(log, new)
        return tail + new

    first, second, total = await restart_case(tmp_path, copytruncate)
    assert first + second == total


async def test_inode_reuse_fails_the_fingerprint_and_reads_the_new_file(tmp_path: Path) -> None:
    """A new file under the saved device and inode (what a freed inode number reused by the
    next file looks like): same inode, longer than the saved offset, other first bytes."""

    def reuse(log: Path, old: str) -> str:
        ino = log.stat().st_ino
        new = records(8, start=1772366700.0, first_user=4000)
        assert len(new) > len(old)
        with log.open("r+") as f:  # rewrite in place: the inode stays
            f.write(new)
        assert log.stat().st_ino == ino
        return new

    first, second, total = await restart_case(tmp_path, reuse)
    assert first + second == total and second == 32


async def test_file_deleted_and_recreated_while_down_is_read_from_its_start(
    tmp_path: Path,
) -> None:
    def recreate(log: Path, _old: str) -> str:
        os.unlink(log)
        new = records(2, start=1772366800.0, first_user=5000)
        log.write_text(new)
        return new

    first, second, total = await restart_case(tmp_path, recreate)
    assert first + second == total


async def test_gzipped_rotation_while_down_reads_the_new_file_from_its_start(
    tmp_path: Path,
) -> None:
    """The rest of a rotated file that was compressed meanwhile cannot be found: the new
    file is still read whole, nothing is counted twice."""

    def rotate_gz(log: Path, _old: str) -> str:
        import gzip

        rotated = log.with_name("drachtio.log.1.gz")
        with gzip.open(rotated, "wb") as gz:
            gz.write(log.read_bytes())
        os.unlink(log)
        new = records(2, start=1772366900.0, first_user=6000)
        log.write_text(new)
        return new

    first, second, total = await restart_case(tmp_path, rotate_gz)
    assert first + second == total


def test_keeper_memory_is_bounded_on_a_busy_stream(tmp_path: Path) -> None:
    """Thousands of chunks between two ticks (one record each, Docker-like positions): the
    keeper keeps at most its bound of them and has saved a position before the held one."""
    from sipwatch.sources.positions import _MAX_PENDING_CHUNKS

    k = keeper(tmp_path)
    assert k.store is not None
    text = records(800)
    starts = [m.start() for m in re.finditer(r"^2026-", text, re.MULTILINE)] + [len(text)]
    pieces = [text[a:b] for a, b in itertools.pairwise(starts)]
    assert len(pieces) > 2 * _MAX_PENDING_CHUNKS
    for n, piece in enumerate(pieces):
        ts = f"2026-03-01T12:00:00.{n:09d}Z"
        feed(
            k,
            LogChunk(
                "sbc", Stream.STDERR, piece, position=Position("docker:b", {"ts": ts, "count": 1})
            ),
        )
    entry = k._entries["docker:b"]
    assert len(entry.chunks) <= _MAX_PENDING_CHUNKS
    saved = k.store.get("docker:b")
    assert saved is not None
    assert saved["ts"] < f"2026-03-01T12:00:00.{len(pieces) - 1:09d}Z"  # not past the held one
    PositionKeeper(None, k._parser).processed(LogChunk("sbc", Stream.STDERR, "x\n"))  # off: no-op
