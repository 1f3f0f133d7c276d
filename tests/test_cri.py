"""CRI container log files (/var/log/pods/<ns>_<pod>_<uid>/<container>/N.log) as a file format.

The fixtures are written the way containerd writes them (tests.fake_kube.cri_entries: one
RFC3339Nano timestamp per entry, lines over 16 KiB cut into partial ``P`` entries), with
drachtio's stderr and the registrar's stdout interleaved in one file.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import itertools
from pathlib import Path

import pytest

from sipwatch.ingest.framing import LogParser
from sipwatch.model import Direction, LogChunk, SipMessage, Stream
from sipwatch.sources.cri import CriDecoder, looks_like_cri
from sipwatch.sources.file import FileSource
from tests.fake_kube import CriEntry, cri_entries
from tests.ingest_support import FIXTURES
from tools.synth import Device, Scenario, pino

T0 = 1_767_225_600_000_000_000


def clock(start: int = T0) -> itertools.count[int]:
    return itertools.count(start, 1_000)


def interleave(*groups: list[CriEntry]) -> list[CriEntry]:
    """Entries of several streams mixed one by one (file order), each stream keeping its
    own order: a partial stdout entry is followed by stderr entries before its end."""
    out: list[CriEntry] = []
    for batch in itertools.zip_longest(*groups):
        out.extend(e for e in batch if e is not None)
    return out


def pod_log_dir(tmp_path: Path) -> Path:
    d = tmp_path / "var/log/pods/jambonz_jambonz-sbc-sip-4xk2p_6c1e0f7a-1b1c-4a52/drachtio"
    d.mkdir(parents=True)
    return d


def test_partial_lines_are_joined_per_stream_and_never_across_streams() -> None:
    ticks = clock()
    long_pino = pino(1772366400.0, 30, "x" * 40_000)  # > 16 KiB: two P entries and an F
    out_entries = cri_entries(long_pino + '{"msg":"short"}\n', "stdout", ticks)
    err_entries = cri_entries("drachtio one\r\ndrachtio two\r\n", "stderr", ticks)
    assert [e.partial for e in out_entries] == [True, True, False, False]
    mixed = interleave(out_entries, err_entries)
    assert [e.stream for e in mixed[:3]] == ["stdout", "stderr", "stdout"]
    text = b"".join(e.cri_line() for e in mixed).decode()
    got: dict[Stream, str] = {}
    decoder = CriDecoder()
    for stream, part in decoder.feed(text):
        got[stream] = got.get(stream, "") + part
    assert got == {
        Stream.STDOUT: long_pino + '{"msg":"short"}\n',
        Stream.STDERR: "drachtio one\r\ndrachtio two\r\n",
    }
    assert decoder.malformed == 0 and not decoder.pending


def test_decoder_keeps_a_partial_line_across_feeds_and_flushes_it_at_the_end() -> None:
    d = CriDecoder()
    assert d.feed("2026-01-01T00:00:00.1Z stdout P first half \n") == []
    assert d.pending
    assert d.feed("2026-01-01T00:00:00.2Z stderr F other stream\n") == [
        (Stream.STDERR, "other stream\n")
    ]
    assert d.feed("2026-01-01T00:00:00.3Z stdout F and the rest\n") == [
        (Stream.STDOUT, "first half and the rest\n")
    ]
    assert d.feed("2026-01-01T00:00:00Z stdout P never ended\n") == []
    assert d.flush() == [(Stream.STDOUT, "never ended\n")]
    assert d.flush() == []


def test_empty_lines_tags_offsets_and_garbage() -> None:
    d = CriDecoder()
    text = (
        "2026-01-01T00:00:00.000000001Z stdout F\n"  # an empty line: no space after the tag
        "2026-01-01T01:00:00+01:00 stdout F:x with a future tag\n"
        "not a cri line\n"
        "2026-01-01T00:00:00Z stdin F wrong stream\n"
        "2026-01-01T00:00:00Z stderr F crlf file\r\n"
    )
    assert d.feed(text) == [
        (Stream.STDERR, "crlf file\r\n"),
        (Stream.STDOUT, "\nwith a future tag\n"),
    ]
    assert d.malformed == 2


def test_a_partial_line_that_never_ends_is_bounded() -> None:
    d = CriDecoder(max_line=100)
    out = d.feed("".join(f"2026-01-01T00:00:0{i}Z stdout P {'y' * 30}\n" for i in range(5)))
    assert out == [(Stream.STDOUT, "y" * 120 + "\n")]
    assert d.split_lines == 1
    assert d.flush() == [(Stream.STDOUT, "y" * 30 + "\n")]


def test_auto_detection() -> None:
    assert looks_like_cri("\n2026-01-01T00:00:00.5Z stderr F x\n")
    assert not looks_like_cri("2026-01-01 00:00:00.000000 recv 100 bytes from udp/[1.2.3.4]:5060\n")
    assert not looks_like_cri('{"level":30,"msg":"x"}\n')
    assert not looks_like_cri("\n\n")


def _scenario_text() -> tuple[str, str, int]:
    sc = Scenario(1772366400.0)
    devices = [Device(str(1000 + i), "acme.example.com", f"203.0.113.{i + 1}") for i in range(6)]
    for dev in devices:
        sc.register_ok(dev)
    for dev in devices[:3]:
        sc.register_rejected(dev, 403, "Forbidden", "Invalid credentials", challenged=True)
    drachtio = "".join(sc.drachtio)
    registrar = "".join(
        pino(1772366400.0 + i, 30, f"registered {1000 + i}", source="sidecar") for i in range(6)
    )
    messages = drachtio.count(" bytes from ") + drachtio.count(" bytes to ")
    return drachtio, registrar, messages


def _parse(chunks: list[LogChunk]) -> list[SipMessage]:
    parser = LogParser()
    events = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    events.extend(parser.flush())
    return [e for e in events if isinstance(e, SipMessage)]


@pytest.mark.parametrize("fmt", ["cri", "auto"])
async def test_file_source_reads_a_cri_file_with_exact_sip_counts(tmp_path: Path, fmt: str) -> None:
    drachtio, registrar, messages = _scenario_text()
    ticks = clock()
    entries = interleave(
        cri_entries(drachtio, "stderr", ticks, partial_size=40),  # many P entries
        cri_entries(registrar, "stdout", ticks, partial_size=64),
    )
    assert sum(e.partial for e in entries if e.stream == "stderr") > 100
    assert sum(e.partial for e in entries if e.stream == "stdout") >= 6
    path = pod_log_dir(tmp_path) / "0.log"
    path.write_bytes(b"".join(e.cri_line() for e in entries))
    src = FileSource(path, format=fmt, read_size=4096)  # type: ignore[arg-type]
    chunks = [c async for c in src.chunks()]
    assert {c.stream for c in chunks} == {Stream.STDOUT, Stream.STDERR}
    assert "".join(c.text for c in chunks if c.stream is Stream.STDERR) == drachtio
    assert "".join(c.text for c in chunks if c.stream is Stream.STDOUT) == registrar
    assert len(_parse(chunks)) == messages
    assert src.malformed_lines == 0
    # the same file compressed (kubelet rotates N.log to N.log.<time>.gz): replay reads it
    gz = path.with_name("0.log.20260101-000000.gz")
    gz.write_bytes(gzip.compress(path.read_bytes()))
    again = [c async for c in FileSource(gz, format=fmt).chunks()]  # type: ignore[arg-type]
    assert len(_parse(again)) == messages


async def test_plain_format_leaves_cri_lines_alone(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    path.write_text("2026-01-01T00:00:00Z stdout F hello\n")
    chunks = [c async for c in FileSource(path, format="plain").chunks()]
    assert chunks == [LogChunk(str(path), Stream.TEXT, "2026-01-01T00:00:00Z stdout F hello\n")]
    with pytest.raises(ValueError, match="unknown file format"):
        FileSource(path, format="json")  # type: ignore[arg-type]


async def test_following_a_cri_file_across_rotation_with_a_partial_line(tmp_path: Path) -> None:
    """The kubelet rotates 0.log by renaming it; a line cut into partial entries continues in
    the new file.  Both streams get their own idle signal."""
    drachtio, registrar, messages = _scenario_text()
    ticks = clock()
    entries = interleave(
        cri_entries(drachtio, "stderr", ticks, partial_size=40),
        cri_entries(registrar, "stdout", ticks, partial_size=64),
    )
    lines = [e.cri_line() for e in entries]
    # cut inside a run of partial stderr entries
    cut = next(i for i, e in enumerate(entries) if e.partial and i > len(entries) // 2) + 1
    path = pod_log_dir(tmp_path) / "0.log"
    path.write_bytes(b"")
    src = FileSource(path, follow=True, poll_interval=0.02, idle_flush=0.1)
    seen: list[LogChunk] = []

    async def collect() -> None:
        async with contextlib.aclosing(src.chunks()) as chunks:
            async for chunk in chunks:
                seen.append(chunk)

    task = asyncio.create_task(collect())
    try:
        async with asyncio.timeout(15):
            while not src.following:
                await asyncio.sleep(0.01)
            with path.open("ab") as f:
                f.write(b"".join(lines[:cut]))
            while not any(c.text == "" for c in seen):
                await asyncio.sleep(0.02)
            path.rename(path.with_name("0.log.20260101-000000"))
            path.write_bytes(b"".join(lines[cut:]))
            while len(_parse(list(seen))) < messages:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert "".join(c.text for c in seen if c.stream is Stream.STDERR) == drachtio
    assert "".join(c.text for c in seen if c.stream is Stream.STDOUT) == registrar
    assert len(_parse(seen)) == messages
    assert src.rotations == 1
    idle = {c.stream for c in seen if c.text == ""}
    assert idle == {Stream.STDOUT, Stream.STDERR}


@pytest.mark.parametrize("fmt", ["cri", "auto"])
async def test_a_literal_containerd_file_of_the_drachtio_container(fmt: str) -> None:
    """tests/fixtures/deploy/cri-drachtio-container.log, typed in containerd's format: SIP
    lines keep their CR inside the entry, one header is split into a ``P`` and an ``F``
    entry with a stderr entry between the halves."""
    path = FIXTURES / "deploy" / "cri-drachtio-container.log"
    src = FileSource(path, format=fmt)  # type: ignore[arg-type]
    chunks = [c async for c in src.chunks()]
    assert src.malformed_lines == 0
    stderr = "".join(c.text for c in chunks if c.stream is Stream.STDERR)
    assert stderr.endswith("written to stderr between the two halves of a partial stdout line\n")
    stdout = "".join(c.text for c in chunks if c.stream is Stream.STDOUT)
    assert 'username="1001",realm="sip.example.com",nonce="d2b6c1f9a8e74c3f0b1d"' in stdout
    msgs = _parse(chunks)
    assert [(m.direction, m.status, m.cseq) for m in msgs] == [
        (Direction.RECV, 0, 1),
        (Direction.SEND, 401, 1),
        (Direction.RECV, 0, 2),
        (Direction.SEND, 200, 2),
    ]
    assert msgs[2].auth_username == "1001"  # the header joined from its two entries
    assert msgs[2].auth_realm == "sip.example.com"
    assert all(m.call_id == "Mjk2ZTJhNTlkYzQ3NzE2OTFjZGE3YjA5Y2E2Nzg1ZDE" for m in msgs)
    assert all(not m.truncated for m in msgs)
