"""FileSource / LineDecoder / iter_text_chunks against real files in tmp_path.

Follow-mode tests run a real consumer task against files that the test rotates, truncates
and deletes underneath it, with the same system calls logrotate uses.  Every test is bounded
by ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sipwatch.model import LogChunk, Stream
from sipwatch.sources.file import FileSource
from sipwatch.sources.textfile import LineDecoder, TextFileReader, iter_text_chunks

POLL = 0.01
IDLE = 0.15
TEST_TIMEOUT = 20.0

# Pieces that stress the decoder: newlines, CRLF, multi-byte characters and their fragments,
# invalid bytes and overlong / surrogate encodings.
_PIECES = [
    b"\n",
    b"\r\n",
    b"a",
    b"REGISTER sip:x SIP/2.0",
    "€".encode(),
    "ä".encode(),
    "😀".encode(),
    b"\xe2",
    b"\x82",
    b"\xac",
    b"\xf0\x9f",
    b"\x98",
    b"\xff",
    b"\x80",
    b"\xc0\xaf",
    b"\xed\xa0\x80",
    b"",
]
log_bytes = st.one_of(
    st.binary(max_size=600),
    st.lists(st.sampled_from(_PIECES), max_size=200).map(b"".join),
)


def decoded(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    out, prev = [], 0
    for p in [*points, len(data)]:
        out.append(data[prev:p])
        prev = p
    return out


# --- LineDecoder ---------------------------------------------------------------------------


@given(data=log_bytes, cuts=st.lists(st.integers(0, 700), max_size=30))
def test_decoder_concatenation_equals_decoded_input(data: bytes, cuts: list[int]) -> None:
    dec = LineDecoder()
    texts = [dec.feed(piece) for piece in split_at(data, cuts)]
    tail = dec.flush()
    assert "".join(texts) + tail == decoded(data)
    for text in texts:  # whole lines only, until the flush at end of input
        assert text == "" or text.endswith("\n")
    assert "\n" not in tail
    assert dec.split_lines == 0


@given(data=log_bytes, cuts=st.lists(st.integers(0, 700), max_size=30), max_line=st.integers(1, 40))
def test_decoder_cuts_overlong_lines_and_bounds_memory(
    data: bytes, cuts: list[int], max_line: int
) -> None:
    dec = LineDecoder(max_line)
    pieces = split_at(data, cuts)
    out = []
    for piece in pieces:
        out.append(dec.feed(piece))
        assert dec.pending <= max_line  # never holds more than one max_line
    out.append(dec.flush())
    text = "".join(out)
    # Only "\n"s were added; everything else is exactly the decoded input.
    assert text.replace("\n", "") == decoded(data).replace("\n", "")
    assert text.count("\n") == decoded(data).count("\n") + dec.split_lines


def test_decoder_carries_a_character_split_by_an_overlong_cut() -> None:
    dec = LineDecoder(max_line=4)
    # 3 ASCII bytes + first 2 bytes of "€": the cut lands inside the character.
    first = dec.feed(b"abc\xe2\x82")
    second = dec.feed(b"\xacdef\n")
    assert first == "abc\n"
    assert second == "€def\n"
    assert dec.split_lines == 1


def test_decoder_invalid_bytes_become_replacement_characters() -> None:
    dec = LineDecoder()
    assert dec.feed(b"\xff\xfeok\n\xc3(") == "\ufffd\ufffdok\n"
    assert dec.flush() == "\ufffd("


def test_decoder_holds_partial_line_until_newline() -> None:
    dec = LineDecoder()
    assert dec.feed(b"2024-09-06 15:48:38.115571 recv 710 by") == ""
    assert dec.pending == 38
    assert dec.feed(b"tes\nnext") == "2024-09-06 15:48:38.115571 recv 710 bytes\n"
    assert dec.flush() == "next"
    assert dec.flush() == ""


# --- non-follow reading of real files ------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(data=log_bytes, read_size=st.integers(1, 64))
def test_file_chunks_equal_decoded_file_for_any_read_size(data: bytes, read_size: int) -> None:
    assume(not data.startswith(b"\x1f\x8b\x08"))  # that is a gzip file, tested below
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "drachtio.log"
        path.write_bytes(data)
        reader = TextFileReader(path, read_size=read_size)
        texts = list(reader)
    assert "".join(texts) == decoded(data)
    assert all(t for t in texts)  # never an empty (idle-looking) chunk
    assert all(t.endswith("\n") for t in texts[:-1])
    assert reader.bytes_read == len(data)


def test_utf8_character_split_across_reads_survives(tmp_path: Path) -> None:
    text = "User-Agent: Ünïcode phone ☎ 😀\n" * 50
    path = tmp_path / "a.log"
    path.write_text(text, encoding="utf-8")
    for read_size in (1, 2, 3, 5, 7):
        chunks = list(iter_text_chunks(path, read_size=read_size))
        assert "".join(chunks) == text
        assert "\ufffd" not in "".join(chunks)


def test_invalid_bytes_never_raise(tmp_path: Path) -> None:
    path = tmp_path / "bad.log"
    path.write_bytes(b"ok\n\xff\xfe\xfd\n\xc3\n\xe2\x82\nend")
    assert (
        "".join(iter_text_chunks(path, read_size=2))
        == "ok\n\ufffd\ufffd\ufffd\n\ufffd\n\ufffd\nend"
    )


def test_gzip_file_read_transparently(tmp_path: Path) -> None:
    lines = "".join(f"2024-09-06 15:48:{i % 60:02d}.000000 line {i} €\n" for i in range(5000))
    path = tmp_path / "drachtio.log.1.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(lines)
    reader = TextFileReader(path, read_size=4096)
    got = list(reader)
    assert "".join(got) == lines
    assert reader.bytes_read == len(lines.encode())
    assert len(got) > 1


def test_gzip_detected_by_magic_and_multi_member(tmp_path: Path) -> None:
    # logrotate's "delaycompress" + a manual gzip can leave a file without .gz suffix;
    # concatenated gzip members are valid gzip.
    path = tmp_path / "drachtio.log.2"
    path.write_bytes(gzip.compress(b"first\npart") + gzip.compress(b"ial\nlast"))
    assert "".join(iter_text_chunks(path)) == "first\npartial\nlast"


def test_truncated_gzip_yields_what_it_can_then_raises(tmp_path: Path) -> None:
    body = b"".join(b"line %d\n" % i for i in range(20000))
    path = tmp_path / "cut.log.gz"
    path.write_bytes(gzip.compress(body)[:-200])
    got: list[str] = []
    with pytest.raises(gzip.BadGzipFile):
        got.extend(iter_text_chunks(path, read_size=1024))
    text = "".join(got)
    assert len(text) > 1000
    assert body.decode().startswith(text)


async def test_file_source_non_follow_yields_logchunks(tmp_path: Path) -> None:
    data = "".join(f"line {i}\n" for i in range(3000)) + "last without newline"
    path = tmp_path / "x.log"
    path.write_text(data)
    async with asyncio.timeout(TEST_TIMEOUT):
        src = FileSource(path, read_size=1000)
        chunks = [c async for c in src.chunks()]
    assert all(isinstance(c, LogChunk) for c in chunks)
    assert {c.source for c in chunks} == {str(path)}
    assert {c.stream for c in chunks} == {Stream.TEXT}
    assert "".join(c.text for c in chunks) == data
    assert all(c.text for c in chunks)
    assert src.bytes_read == len(data)
    named = [c.source async for c in FileSource(path, name="drachtio").chunks()]
    assert set(named) == {"drachtio"}


async def test_file_source_non_follow_reads_gzip(tmp_path: Path) -> None:
    path = tmp_path / "r.log.gz"
    path.write_bytes(gzip.compress(b"a\nb\n"))
    async with asyncio.timeout(TEST_TIMEOUT):
        texts = [c.text async for c in FileSource(path).chunks()]
    assert "".join(texts) == "a\nb\n"


async def test_file_source_missing_file_non_follow_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        async for _ in FileSource(tmp_path / "nope.log").chunks():
            pass


def test_follow_refuses_gzip(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="compressed"):
        FileSource(tmp_path / "a.log.gz", follow=True)


# --- follow mode ---------------------------------------------------------------------------


class Collector:
    """Runs ``source.chunks()`` in a task and lets the test wait for conditions on it."""

    def __init__(self, source: FileSource) -> None:
        self.source = source
        self.chunks: list[LogChunk] = []
        self.times: list[float] = []
        self._changed = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        async for chunk in self.source.chunks():
            self.chunks.append(chunk)
            self.times.append(loop.time())
            self._changed.set()

    @property
    def text(self) -> str:
        return "".join(c.text for c in self.chunks)

    @property
    def lines(self) -> list[str]:
        return self.text.splitlines()

    @property
    def idles(self) -> int:
        return sum(1 for c in self.chunks if c.text == "")

    async def wait_for(self, cond: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not cond():
                if self.task.done():
                    self.task.result()  # surface a crash in the source
                    raise AssertionError("source ended early")
                self._changed.clear()
                try:
                    async with asyncio.timeout(POLL * 5):
                        await self._changed.wait()
                except TimeoutError:
                    pass  # re-check conditions that depend on counters, not chunks

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


def follow(path: Path, **kw: object) -> FileSource:
    opts: dict[str, object] = {"follow": True, "poll_interval": POLL, "idle_flush": IDLE}
    opts.update(kw)
    return FileSource(path, **opts)  # type: ignore[arg-type]


def append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(text)


def numbered(start: int, stop: int, tag: str = "l") -> str:
    return "".join(f"{tag}{i}\n" for i in range(start, stop))


async def test_follow_from_end_sees_only_new_lines(tmp_path: Path) -> None:
    path = tmp_path / "drachtio.log"
    path.write_text("old 1\nold 2\n")
    async with asyncio.timeout(TEST_TIMEOUT):
        col = Collector(follow(path, from_start=False))
        await col.wait_for(lambda: col.source.following)
        append(path, "new 1\n")
        await col.wait_for(lambda: "new 1" in col.lines)
        await col.close()
    assert col.lines == ["new 1"]
    assert col.source.bytes_read == len("new 1\n")


async def test_follow_from_start_and_partial_writes(tmp_path: Path) -> None:
    path = tmp_path / "drachtio.log"
    path.write_text("a\nb\n")
    async with asyncio.timeout(TEST_TIMEOUT):
        col = Collector(follow(path, idle_flush=5.0))
        await col.wait_for(lambda: col.lines == ["a", "b"])
        append(path, "2024-09-06 15:48:38.115571 recv 7")
        await asyncio.sleep(POLL * 10)  # the source has read the half line by now
        assert col.text == "a\nb\n"  # ... but holds it back
        append(path, "10 bytes\n")
        await col.wait_for(lambda: len(col.lines) == 3)
        await col.close()
    assert col.lines[2] == "2024-09-06 15:48:38.115571 recv 710 bytes"
    assert all(c.text.endswith("\n") for c in col.chunks)


async def test_rename_rotation_keeps_lines_written_after_rename(tmp_path: Path) -> None:
    """logrotate ``create``: rename, create the new file, the writer reopens only later.

    Lines the writer puts into the old (renamed) file after the new one exists must not be
    lost, even though the source has long noticed the new inode.
    """
    path = tmp_path / "drachtio.log"
    async with asyncio.timeout(TEST_TIMEOUT):
        writer = path.open("a", encoding="utf-8", buffering=1)
        writer.write(numbered(0, 5))
        col = Collector(follow(path))
        await col.wait_for(lambda: len(col.lines) == 5)
        os.rename(path, tmp_path / "drachtio.log.1")
        writer.write(numbered(5, 8))  # old file, after rename, before create
        path.touch()  # logrotate's "create"
        await asyncio.sleep(POLL * 15)  # the source sees the new, still empty, file
        writer.write(numbered(8, 12))  # old file, after create, before the writer's reopen
        writer.close()
        writer = path.open("a", encoding="utf-8", buffering=1)  # HUP -> reopen
        writer.write(numbered(12, 15))
        writer.close()
        await col.wait_for(lambda: len(col.lines) >= 15)
        await asyncio.sleep(POLL * 10)
        await col.close()
    assert col.lines == [f"l{i}" for i in range(15)]
    assert col.source.rotations == 1
    assert col.source.truncations == 0


async def test_rotation_terminates_unfinished_last_line(tmp_path: Path) -> None:
    path = tmp_path / "drachtio.log"
    path.write_text("first\nunterminated")
    async with asyncio.timeout(TEST_TIMEOUT):
        col = Collector(follow(path))
        await col.wait_for(lambda: col.text == "first\n")
        os.rename(path, tmp_path / "drachtio.log.1")
        path.write_text("second\n")
        await col.wait_for(lambda: col.source.rotations == 1 and "second" in col.lines)
        await col.close()
    assert col.lines == ["first", "unterminated", "second"]


async def test_copytruncate_restarts_from_zero(tmp_path: Path) -> None:
    path = tmp_path / "registrar.log"
    path.write_text(numbered(0, 10))
    async with asyncio.timeout(TEST_TIMEOUT):
        col = Collector(follow(path))
        await col.wait_for(lambda: len(col.lines) == 10)
        shutil.copyfile(path, tmp_path / "registrar.log.1")  # logrotate copytruncate
        with path.open("r+") as f:
            f.truncate(0)
        await col.wait_for(lambda: col.source.truncations == 1)
        append(path, numbered(10, 13))
        await col.wait_for(lambda: len(col.lines) == 13)
        await col.close()
    assert col.lines == [f"l{i}" for i in range(13)]
    assert col.source.rotations == 0


async def test_truncation_with_new_data_already_written(tmp_path: Path) -> None:
    """Truncated and partly refilled between two polls: still detected (size < position)."""
    path = tmp_path / "registrar.log"
    path.write_text(numbered(0, 100))
    async with asyncio.timeout(TEST_TIMEOUT):
        col = Collector(follow(path, poll_interval=0.3))
        await col.wait_for(lambda: len(col.lines) == 100)
        with path.open("r+") as f:
            f.truncate(0)
            f.write("after truncate\n")
        await col.wait_for(lambda: len(col.lines) == 101)
        await col.close()
    assert col.lines[-1] == "after truncate"
    assert col.source.truncations == 1


async def test_delete_and_recreate(tmp_path: Path) -> None:
    path = tmp_path / "drachtio.log"
    path.write_text("before\n")
    async with asyncio.timeout(TEST_TIMEOUT):
        col = Collector(follow(path))
        await col.wait_for(lambda: col.lines == ["before"])
        path.unlink()
        await asyncio.sleep(POLL * 10)  # the source notices the file is gone
        assert col.source.following  # still holding the deleted file open
        path.write_text("after\n")
        await col.wait_for(lambda: col.lines == ["before", "after"])
        await col.close()
    assert col.source.rotations == 1


async def test_file_appearing_late_is_read_from_its_start(tmp_path: Path) -> None:
    path = tmp_path / "late.log"
    async with asyncio.timeout(TEST_TIMEOUT):
        col = Collector(follow(path, from_start=False))
        await col.wait_for(lambda: col.source.last_error is not None)
        assert "FileNotFoundError" in (col.source.last_error or "")
        assert not col.source.following
        path.write_text("one\ntwo\n")
        await col.wait_for(lambda: col.lines == ["one", "two"])
        assert col.source.last_error is None
        assert col.source.following
        await col.close()


async def test_idle_signal_once_per_idle_period(tmp_path: Path) -> None:
    path = tmp_path / "drachtio.log"
    path.touch()
    async with asyncio.timeout(TEST_TIMEOUT):
        col = Collector(follow(path))
        await asyncio.sleep(IDLE * 3)
        assert col.chunks == []  # no data yet, nothing to flush: no idle signal
        loop = asyncio.get_running_loop()
        written = loop.time()
        append(path, "record 1\n")
        await col.wait_for(lambda: col.idles == 1)
        idle_at = col.times[-1]
        await asyncio.sleep(IDLE * 5)
        assert col.idles == 1  # not repeated while nothing happens
        append(path, "record 2\n")
        await col.wait_for(lambda: col.idles == 2)
        await col.close()
    assert [c.text for c in col.chunks] == ["record 1\n", "", "record 2\n", ""]
    assert idle_at - written >= IDLE * 0.9
    assert all(c.source == str(path) and c.stream is Stream.TEXT for c in col.chunks)


async def test_exact_line_counts_across_several_rotations(tmp_path: Path) -> None:
    """Five rename rotations with a writer that keeps writing while rotation happens."""
    path = tmp_path / "drachtio.log"
    per_file = 400
    rounds = 5
    col = Collector(follow(path, read_size=512))
    async with asyncio.timeout(TEST_TIMEOUT):
        n = 0
        writer = path.open("a", encoding="utf-8")
        for r in range(rounds + 1):
            for _ in range(per_file):
                writer.write(f"round {r} line {n} ☎\n")
                n += 1
                if n % 37 == 0:
                    writer.flush()
                    await asyncio.sleep(0)  # let the source read mid-stream
            writer.flush()
            if r == rounds:
                break
            # Rotate: rename chain, keep writing to the old file, then create + reopen.
            for k in range(r, 0, -1):
                os.rename(tmp_path / f"drachtio.log.{k}", tmp_path / f"drachtio.log.{k + 1}")
            os.rename(path, tmp_path / "drachtio.log.1")
            for _ in range(25):
                writer.write(f"round {r} line {n} ☎\n")
                n += 1
            writer.flush()
            path.touch()
            writer.write(f"round {r} line {n} ☎\n")
            n += 1
            writer.close()
            writer = path.open("a", encoding="utf-8")
            writer.write(f"round {r + 1} line {n} ☎\n")
            n += 1
            writer.flush()
            # Rotating again before the source switched would hide a whole file from any
            # tail -F; wait for the switch, then go on writing at full speed.
            await col.wait_for(lambda r=r: col.source.rotations == r + 1)  # type: ignore[misc]
        writer.close()
        await col.wait_for(lambda: len(col.lines) >= n)
        await asyncio.sleep(POLL * 10)
        await col.close()
    lines = col.lines
    assert len(lines) == n
    assert [int(line.split()[3]) for line in lines] == list(range(n))
    assert col.source.rotations == rounds
    assert col.source.truncations == 0
    total = sum(p.stat().st_size for p in tmp_path.iterdir())
    assert col.source.bytes_read == total


async def test_cancel_closes_the_file(tmp_path: Path) -> None:
    path = tmp_path / "drachtio.log"
    path.write_text("x\n")

    def open_fds_on_path() -> int:
        count = 0
        for fd in os.listdir("/proc/self/fd"):
            try:
                if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                    count += 1
            except OSError:
                pass
        return count

    async with asyncio.timeout(TEST_TIMEOUT):
        col = Collector(follow(path))
        await col.wait_for(lambda: col.lines == ["x"])
        assert open_fds_on_path() == 1
        await col.close()
    assert open_fds_on_path() == 0
    assert not col.source.following


async def test_follow_does_not_starve_the_loop_on_a_big_backlog(tmp_path: Path) -> None:
    """Catching up a large file from the start keeps other tasks running."""
    path = tmp_path / "big.log"
    path.write_bytes(b"2024-09-06 15:48:38.115571 some log line with text\n" * 200_000)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    async with asyncio.timeout(TEST_TIMEOUT):
        tick_task = asyncio.create_task(ticker())
        src = follow(path)
        got = 0
        async with contextlib.aclosing(src.chunks()) as chunks:
            async for chunk in chunks:
                got += chunk.text.count("\n")
                if got == 200_000:
                    break
        tick_task.cancel()
    assert not src.following  # aclose() closed the file right away
    assert got == 200_000
    # One follow read is at most 64 KiB: ~160 reads for 10 MB, each followed by a loop turn.
    assert ticks >= 100
