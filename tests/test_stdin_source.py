"""StdinSource through real pipes, files, /dev/null and a pseudo-terminal.

Most tests run a child Python process whose stdin is the thing under test and which prints,
as JSON, what ``StdinSource.chunks()`` gave it.  Every test is bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import sys
from pathlib import Path
from typing import Any

import pytest

from sipwatch.model import LogChunk, Stream
from sipwatch.sources.stdin import StdinSource

REPO = Path(__file__).resolve().parent.parent
TEST_TIMEOUT = 30.0

CHILD = r"""
import asyncio, hashlib, json, os, sys
from sipwatch.sources.stdin import StdinSource

cfg = json.loads(sys.argv[1])

def peak_rss_kb():
    # VmHWM belongs to this process image; getrusage's ru_maxrss would include the RSS the
    # parent had when it forked us (Linux keeps it across execve).
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM")

async def main():
    src = StdinSource(idle_flush=cfg["idle"], high_water=cfg.get("high_water", 4 << 20))
    base = peak_rss_kb()
    texts, sources, digest, size, n = [], set(), hashlib.sha256(), 0, 0
    async for chunk in src.chunks():
        n += 1
        sources.add((chunk.source, chunk.stream.value))
        if cfg.get("digest"):
            digest.update(chunk.text.encode("utf-8", "surrogatepass"))
            size += len(chunk.text)
        else:
            texts.append(chunk.text)
        if n <= cfg.get("slow_chunks", 0):
            await asyncio.sleep(cfg["slow"])
    peak = peak_rss_kb()
    print(json.dumps({
        "texts": texts, "mode": src.mode, "bytes_read": src.bytes_read,
        "blocking": os.get_blocking(0), "sources": sorted(sources), "chunks": n,
        "sha256": digest.hexdigest(), "chars": size, "rss_growth_kb": peak - base,
    }))

asyncio.run(main())
"""


def decoded(data: bytes) -> str:
    return data.decode("utf-8", "replace")


async def spawn(cfg: dict[str, Any], stdin: Any) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        json.dumps(cfg),
        stdin=stdin,
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO,
    )


async def finish(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    assert proc.stdout is not None
    out = await proc.stdout.read()
    assert await proc.wait() == 0
    result: dict[str, Any] = json.loads(out)
    return result


async def feed_pipe(
    pieces: list[bytes], *, idle: float = 30.0, pause: float = 0.0, **cfg: Any
) -> dict[str, Any]:
    proc = await spawn({"idle": idle, **cfg}, asyncio.subprocess.PIPE)
    assert proc.stdin is not None
    for piece in pieces:
        proc.stdin.write(piece)
        await proc.stdin.drain()
        if pause:
            await asyncio.sleep(pause)
    proc.stdin.close()
    return await finish(proc)


def assert_whole_lines(texts: list[str]) -> None:
    assert all(texts), "an empty chunk is the idle signal, not data"
    assert all(t.endswith("\n") for t in texts[:-1])


async def test_pipe_whole_lines_and_utf8_split_across_writes() -> None:
    pieces = [
        b"one\ntw",
        b"o\n\xe2\x82",
        b"\xac euro\n",
        b"\xff\xfe bad\n\xf0\x9f",
        b"\x98\x80",
        b" tail",
    ]
    async with asyncio.timeout(TEST_TIMEOUT):
        res = await feed_pipe(pieces, pause=0.05)
    data = b"".join(pieces)
    assert res["mode"] == "pipe"
    assert "".join(res["texts"]) == decoded(data) == "one\ntwo\n€ euro\n\ufffd\ufffd bad\n😀 tail"
    assert_whole_lines(res["texts"])
    assert res["texts"][-1] == "😀 tail"  # the unterminated remainder comes at EOF
    assert res["bytes_read"] == len(data)
    assert res["sources"] == [["-", "text"]]
    assert res["blocking"] is True  # the shared pipe is handed back in blocking mode


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_pipe_random_bytes_random_writes(seed: int) -> None:
    rng = random.Random(seed)
    alphabet = [
        b"\n",
        b"\r\n",
        b"abc",
        "€".encode(),
        b"\xe2",
        b"\x82",
        b"\xff",
        "😀".encode(),
        b"x" * 50,
    ]
    data = b"".join(rng.choice(alphabet) for _ in range(40_000))
    pieces, pos = [], 0
    while pos < len(data):
        step = rng.choice([1, 2, 3, 7, 100, 4096, 70_000])
        pieces.append(data[pos : pos + step])
        pos += step
    async with asyncio.timeout(TEST_TIMEOUT):
        res = await feed_pipe(pieces)
    assert "".join(res["texts"]) == decoded(data)
    assert_whole_lines(res["texts"])
    assert res["bytes_read"] == len(data)


async def test_pipe_idle_signal_once_per_idle_period() -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        res = await feed_pipe([b"a\n", b"b\n"], idle=0.2, pause=1.0)
    # Each write is followed by 5 idle periods of silence: exactly one signal each.
    assert res["texts"] == ["a\n", "", "b\n", ""]


async def test_no_idle_signal_before_any_data() -> None:
    proc = await spawn({"idle": 0.1}, asyncio.subprocess.PIPE)
    assert proc.stdin is not None
    async with asyncio.timeout(TEST_TIMEOUT):
        await asyncio.sleep(0.6)
        proc.stdin.close()
        res = await finish(proc)
    assert res["texts"] == []
    assert res["chunks"] == 0


async def test_large_fast_input_with_slow_consumer_stays_bounded() -> None:
    """A producer far faster than the consumer must be paused, not buffered."""
    line = b"2024-09-06 15:48:38.115571 recv 710 bytes from udp/[10.10.3.7]:50933 at x:\n"
    data = line * (48_000_000 // len(line))
    cfg = {"digest": True, "high_water": 1 << 20, "slow_chunks": 40, "slow": 0.05}
    async with asyncio.timeout(60):
        res = await feed_pipe(
            [data[i : i + (1 << 20)] for i in range(0, len(data), 1 << 20)], **cfg
        )
    assert res["chars"] == len(data)
    assert res["sha256"] == hashlib.sha256(data).hexdigest()
    assert res["mode"] == "pipe"
    # Unbounded buffering would hold most of the 48 MB while the consumer sleeps.
    assert res["rss_growth_kb"] < 16_000, res["rss_growth_kb"]


async def test_regular_file_as_stdin(tmp_path: Path) -> None:
    path = tmp_path / "drachtio.log"
    data = "".join(f"line {i} ☎\n" for i in range(50_000)).encode() + b"no newline"
    path.write_bytes(data)
    async with asyncio.timeout(TEST_TIMEOUT):
        with path.open("rb") as f:
            proc = await spawn({"idle": 0.1}, f)
            res = await finish(proc)
    assert res["mode"] == "file"
    assert "".join(res["texts"]) == decoded(data)
    assert_whole_lines(res["texts"])
    assert res["bytes_read"] == len(data)


async def test_dev_null_uses_reader_thread_and_ends() -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        proc = await spawn({"idle": 0.1}, asyncio.subprocess.DEVNULL)
        res = await finish(proc)
    assert res["mode"] == "thread"
    assert res["texts"] == []


async def test_terminal_uses_reader_thread_with_idle_and_eof() -> None:
    master, slave = os.openpty()
    try:
        async with asyncio.timeout(TEST_TIMEOUT):
            proc = await spawn({"idle": 0.2}, slave)
            os.close(slave)
            slave = -1
            os.write(master, b"hello\n")
            await asyncio.sleep(1.0)
            os.write(master, "wörld\n".encode())
            await asyncio.sleep(0.05)
            os.write(master, b"\x04")  # ^D at the start of a line: EOF
            res = await finish(proc)
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert res["mode"] == "thread"
    assert res["texts"][:3] == ["hello\n", "", "wörld\n"]
    assert res["texts"][3:] in ([], [""])  # an idle may fall between the last line and ^D
    assert res["blocking"] is True  # the terminal was never made non-blocking


# --- in-process: the descriptor is left as it was found ------------------------------------


async def test_pipe_fd_stays_open_and_blocking_after_eof() -> None:
    r, w = os.pipe()
    try:
        with os.fdopen(r, "rb", buffering=0, closefd=False) as stream:
            src = StdinSource(stream=stream, idle_flush=5.0, name="journal")
            os.write(w, b"x\ny\n")
            os.close(w)
            w = -1
            async with asyncio.timeout(TEST_TIMEOUT):
                chunks = [c async for c in src.chunks()]
        assert chunks == [LogChunk("journal", Stream.TEXT, "x\ny\n")]
        assert src.mode == "pipe"
        os.fstat(r)  # still open: the transport closed only its duplicate
        assert os.get_blocking(r)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


async def test_cancel_while_waiting_releases_the_pipe() -> None:
    r, w = os.pipe()
    try:
        with os.fdopen(r, "rb", buffering=0, closefd=False) as stream:
            src = StdinSource(stream=stream, idle_flush=0.3)
            got: list[str] = []

            async def consume() -> None:
                async for chunk in src.chunks():
                    got.append(chunk.text)

            async with asyncio.timeout(TEST_TIMEOUT):
                task = asyncio.create_task(consume())
                os.write(w, b"partial")
                await asyncio.sleep(0.05)
                os.write(w, b" line\n")
                while len(got) < 2:
                    await asyncio.sleep(0.01)
                assert got == ["partial line\n", ""]
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        os.fstat(r)
        assert os.get_blocking(r)
        assert src.bytes_read == len(b"partial line\n")
    finally:
        os.close(r)
        os.close(w)
