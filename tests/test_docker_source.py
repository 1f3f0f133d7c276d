"""The Docker source against a fake Engine speaking the real HTTP protocol on a unix socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct

import aiodocker
import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipwatch.model import LogChunk, Stream
from sipwatch.sources import docker_logs
from sipwatch.sources.docker import (
    ContainerNotFound,
    DockerControl,
    DockerLogSource,
    DockerUnavailable,
    RegistrarFlavour,
    registrar_flavour,
)
from sipwatch.sources.docker_logs import LogDecoder, iter_log_batches, ns_to_since, ts_to_ns
from tests.fake_docker import FakeDockerEngine, format_ts
from tests.source_support import Collector

# ---------------------------------------------------------------------------- helpers


def make_source(
    docker_engine: FakeDockerEngine, services: list[str], **kw: object
) -> DockerLogSource:
    kw.setdefault("idle_flush", 0.2)
    kw.setdefault("backoff_initial", 0.05)
    kw.setdefault("backoff_max", 0.3)
    kw.setdefault("project", "jambonz")
    return DockerLogSource(services, docker_url=docker_engine.url, **kw)  # type: ignore[arg-type]


def frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(payload)) + payload


def entry(stream: int, ns: int, text: bytes) -> bytes:
    return frame(stream, format_ts(ns).encode() + b" " + text)


T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z


# ----------------------------------------------------------------- decoder (no network)


def test_timestamp_parsing_keeps_nanoseconds() -> None:
    assert ts_to_ns(b"2026-01-01T00:00:00.000000001Z") == T0 + 1
    assert ts_to_ns(b"2026-01-01T01:00:00.5+01:00") == T0 + 500_000_000
    assert ns_to_since(T0 + 7) == "1767225600.000000007"
    assert format_ts(T0 + 123) == "2026-01-01T00:00:00.000000123Z"


def test_decoder_keeps_streams_and_strips_timestamps() -> None:
    d = LogDecoder(tty=False)
    data = entry(2, T0, b"drachtio one\n") + entry(1, T0 + 1, b'{"level":30}\n')
    data += entry(2, T0 + 2, b"drachtio two\r\n") + frame(3, b"Error grabbing logs: x")
    out = d.feed(data)
    assert out == [
        (Stream.STDERR, "drachtio one\ndrachtio two\r\n"),
        (Stream.STDOUT, '{"level":30}\n'),
    ]
    assert d.resume.ts == format_ts(T0 + 2).encode() and d.resume.count == 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=60))
def test_decoder_output_does_not_depend_on_read_boundaries(sizes: list[int]) -> None:
    data = b"".join(entry(2 if i % 3 else 1, T0 + i, f"línea {i} ü\n".encode()) for i in range(30))
    data += entry(2, T0 + 99, b"partial start ") + entry(2, T0 + 100, b"and end\n")
    whole = LogDecoder(tty=False).feed(data)
    d = LogDecoder(tty=False)
    got: dict[Stream, str] = {Stream.STDOUT: "", Stream.STDERR: ""}
    pos, i = 0, 0
    while pos < len(data):
        step = sizes[i % len(sizes)]
        for stream, text in d.feed(data[pos : pos + step]):
            got[stream] += text
        pos += step
        i += 1
    expected = dict.fromkeys((Stream.STDOUT, Stream.STDERR), "")
    for stream, text in whole:
        expected[stream] += text
    assert got == expected
    assert "partial start and end\n" in got[Stream.STDERR]


def test_decoder_resume_skips_entries_with_the_same_timestamp_exactly() -> None:
    d = LogDecoder(tty=False)
    first = b"".join(entry(2, T0 + 5, f"same {i}\n".encode()) for i in range(3))
    assert d.feed(entry(2, T0, b"early\n") + first) == [
        (Stream.STDERR, "early\nsame 0\nsame 1\nsame 2\n")
    ]
    assert d.resume.count == 3
    # Re-open with since = T0+5: the Engine replays the 3 entries stamped T0+5 and more.
    d.begin_stream()
    replay = first + entry(2, T0 + 5, b"same 3\n") + entry(1, T0 + 6, b"next\n")
    assert d.feed(replay) == [(Stream.STDERR, "same 3\n"), (Stream.STDOUT, "next\n")]
    assert (d.resume.ts, d.resume.count) == (format_ts(T0 + 6).encode(), 1)


def test_decoder_drops_frame_cut_by_a_dropped_connection() -> None:
    d = LogDecoder(tty=False)
    full = entry(2, T0, b"one\n") + entry(2, T0 + 1, b"two\n")
    assert d.feed(full[:-3]) == [(Stream.STDERR, "one\n")]  # "two" frame cut mid-payload
    d.begin_stream()  # reconnect, since = T0 (inclusive)
    assert d.feed(full) == [(Stream.STDERR, "two\n")]


def test_decoder_bounds_a_line_that_never_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(docker_logs, "MAX_LINE_BYTES", 100)
    d = LogDecoder(tty=False)
    out = d.feed(b"".join(entry(2, T0 + i, b"x" * 30) for i in range(5)))
    assert out == [(Stream.STDERR, "x" * 150 + "\n")]


def test_decoder_tty_stream() -> None:
    d = LogDecoder(tty=True)
    raw = format_ts(T0).encode() + b" one\r\n" + format_ts(T0 + 1).encode() + b" tw"
    assert d.feed(raw) == [(Stream.STDOUT, "one\n")]
    assert d.feed(b"o\r\n") == [(Stream.STDOUT, "two\n")]


def test_registrar_flavour_from_image() -> None:
    assert registrar_flavour("jambonz/sbc-registrar:0.9.2") is RegistrarFlavour.SBC_REGISTRAR
    assert registrar_flavour("reg:5000/jambonz/sbc-sip-sidecar") is RegistrarFlavour.SBC_SIP_SIDECAR
    assert (
        registrar_flavour("jambonz/sbc-sip-sidecar@sha256:abc") is RegistrarFlavour.SBC_SIP_SIDECAR
    )
    assert registrar_flavour("drachtio/drachtio-server:latest") is None


# ------------------------------------------------------------------------ the fake


async def test_fake_engine_speaks_the_real_error_and_version_format(
    docker_engine: FakeDockerEngine,
) -> None:
    async with asyncio.timeout(10):
        conn = aiohttp.UnixConnector(path=docker_engine.path)
        async with aiohttp.ClientSession(connector=conn) as s:
            async with s.get("http://localhost/version") as r:
                assert (await r.json())["ApiVersion"] == "1.45"
            async with s.get("http://localhost/v1.45/containers/nope/json") as r:
                assert r.status == 404
                assert r.headers["Content-Type"] == "application/json"
                assert json.loads(await r.read()) == {"message": "No such container: nope"}
        async with aiodocker.Docker(url=docker_engine.url) as docker:
            with pytest.raises(aiodocker.DockerError) as err:
                await docker.containers.get("nope")
            assert err.value.message == "No such container: nope"


async def test_fake_engine_logs_since_is_inclusive(docker_engine: FakeDockerEngine) -> None:
    async with asyncio.timeout(10):
        c = docker_engine.add_container("drachtio")
        for i in range(3):
            docker_engine.log(c, f"l{i}\n", ts_ns=T0 + i)
        async with aiodocker.Docker(url=docker_engine.url) as docker:
            container = await docker.containers.get(c.id)
            got = await container.log(stdout=True, stderr=True, since=ns_to_since(T0 + 1))
        assert got == ["l1\n", "l2\n"]


# ------------------------------------------------------------------------ the source


async def test_stream_types_are_preserved(docker_engine: FakeDockerEngine) -> None:
    async with asyncio.timeout(15):
        c = docker_engine.add_container("sbc")
        for i in range(20):
            docker_engine.log(c, f"drachtio {i}\n", stream=2)
            docker_engine.log(c, f'{{"msg":"pino {i}"}}\n', stream=1)
        async with Collector(make_source(docker_engine, ["sbc"])) as col:
            err = await col.wait_lines(20, stream=Stream.STDERR)
            out = await col.wait_lines(20, stream=Stream.STDOUT)
        assert err == [f"drachtio {i}" for i in range(20)]
        assert out == [f'{{"msg":"pino {i}"}}' for i in range(20)]
        assert {c.source for c in col.chunks} == {"sbc"}


async def test_backlog_is_batched_into_few_chunks(docker_engine: FakeDockerEngine) -> None:
    async with asyncio.timeout(15):
        c = docker_engine.add_container("drachtio")
        docker_engine.log(c, "".join(f"line {i}\n" for i in range(2000)))
        async with Collector(make_source(docker_engine, ["drachtio"])) as col:
            lines = await col.wait_lines(2000)
        assert lines == [f"line {i}" for i in range(2000)]
        assert len(col.data()) < 100


async def test_lines_split_across_frames_and_http_chunks(docker_engine: FakeDockerEngine) -> None:
    async with asyncio.timeout(15):
        docker_engine.write_chunk = 3  # frames straddle HTTP chunk borders too
        c = docker_engine.add_container("drachtio")
        docker_engine.log_split(c, "REGISTER sip:example.com SIP/2.0\r\n", [3, 10, 11])
        naive = "naïve ünïcode\n".encode()
        docker_engine.log_split(c, naive, [3, naive.index("ï".encode()) + 1])  # cut inside ï
        docker_engine.log(c, "after\n")
        async with Collector(make_source(docker_engine, ["drachtio"])) as col:
            lines = await col.wait_lines(3)
        assert lines == ["REGISTER sip:example.com SIP/2.0\r", "naïve ünïcode", "after"]


async def test_long_line_partials_are_joined_without_inner_timestamps(
    docker_engine: FakeDockerEngine,
) -> None:
    async with asyncio.timeout(15):
        c = docker_engine.add_container("drachtio")
        long_line = "x" + "é" * 25000 + "end"  # 50 KiB: 4 partial entries, a cut inside é
        entries = docker_engine.log(c, long_line + "\n" + "short\n")
        assert len(entries) == 5  # the fake stores it like moby
        async with Collector(make_source(docker_engine, ["drachtio"])) as col:
            lines = await col.wait_lines(2)
        assert lines == [long_line, "short"]


async def test_tty_container(docker_engine: FakeDockerEngine) -> None:
    async with asyncio.timeout(15):
        c = docker_engine.add_container("registrar", tty=True, image="jambonz/sbc-registrar:0.9")
        long_line = "y" * 40000
        docker_engine.log(c, "tty one\ntty two\n" + long_line + "\n")
        async with Collector(make_source(docker_engine, ["registrar"])) as col:
            lines = await col.wait_lines(3)
        assert lines == ["tty one", "tty two", long_line]
        assert {c.stream for c in col.data()} == {Stream.STDOUT}


@pytest.mark.parametrize("tty", [False, True])
async def test_restart_mid_stream_loses_and_repeats_nothing(
    docker_engine: FakeDockerEngine, tty: bool
) -> None:
    async with asyncio.timeout(20):
        c = docker_engine.add_container("drachtio", tty=tty)
        expected: list[str] = []

        def emit(text: str, ts: int | None = None) -> None:
            docker_engine.log(c, text + "\n", ts_ns=ts)
            expected.append(text)

        for i in range(50):
            emit(f"a{i}")
        boundary = docker_engine.next_ts()
        for i in range(5):
            emit(f"same-before-{i}", boundary)
        async with Collector(make_source(docker_engine, ["drachtio"])) as col:
            await col.wait_lines(55)
            docker_engine.restart(c)
            for i in range(5):  # same timestamp as the last lines before the restart
                emit(f"same-after-{i}", boundary)
            for i in range(50):
                emit(f"b{i}")
            await col.wait_lines(110)
            # restarts while lines keep coming
            for round_ in range(5):
                for i in range(20):
                    emit(f"r{round_}-{i}")
                    if i % 7 == 0:
                        await asyncio.sleep(0.005)
                docker_engine.restart(c)
            lines = await col.wait_lines(len(expected), settle=0.6)
        assert lines == expected


async def test_recreated_container_is_followed_from_its_start(
    docker_engine: FakeDockerEngine,
) -> None:
    async with asyncio.timeout(20):
        c1 = docker_engine.add_container("drachtio")
        docker_engine.log(c1, "old 1\nold 2\n")
        async with Collector(make_source(docker_engine, ["drachtio"])) as col:
            await col.wait_lines(2)
            c2 = docker_engine.recreate(c1)
            assert c2.id != c1.id
            docker_engine.log(c2, "new 1\nnew 2\n")  # before the source had a chance to look
            lines = await col.wait_lines(4)
            assert lines == ["old 1", "old 2", "new 1", "new 2"]
            # the old follower ended: one log stream left open
            await col.wait_for(lambda: docker_engine.open_log_streams == 1)
            docker_engine.log(c2, "new 3\n")
            assert (await col.wait_lines(5))[-1] == "new 3"


async def test_connection_drops_and_api_outage_lose_and_repeat_nothing(
    docker_engine: FakeDockerEngine,
) -> None:
    async with asyncio.timeout(30):
        drachtio = docker_engine.add_container("drachtio")
        registrar = docker_engine.add_container("registrar", image="jambonz/sbc-sip-sidecar:0.9")
        expected: dict[str, list[str]] = {"drachtio": [], "registrar": []}
        n = 0

        def burst(count: int) -> None:
            nonlocal n
            for _ in range(count):
                docker_engine.log(drachtio, f"d{n}\n", stream=2)
                docker_engine.log(registrar, f"r{n}\n", stream=1)
                expected["drachtio"].append(f"d{n}")
                expected["registrar"].append(f"r{n}")
                n += 1

        docker_engine.write_chunk = 64  # so a drop can cut frames in the middle
        burst(100)
        src = make_source(docker_engine, ["drachtio", "registrar"])
        async with Collector(src) as col:
            for _ in range(4):
                burst(200)
                await asyncio.sleep(0.01)
                await docker_engine.drop_connections()  # daemon crash, mid-stream
            await col.wait_lines(900, source="drachtio")
            await docker_engine.pause_api()
            burst(150)  # logged while the API is unreachable
            await asyncio.sleep(0.8)
            await docker_engine.resume_api()
            burst(50)
            got_d = await col.wait_lines(len(expected["drachtio"]), source="drachtio")
            got_r = await col.wait_lines(len(expected["registrar"]), source="registrar")
        assert got_d == expected["drachtio"]
        assert got_r == expected["registrar"]


async def test_source_starts_while_api_is_down(docker_engine: FakeDockerEngine) -> None:
    async with asyncio.timeout(15):
        c = docker_engine.add_container("drachtio")
        docker_engine.log(c, "before\n")
        await docker_engine.pause_api()
        calls: list[tuple[str, bool]] = []
        src = make_source(
            docker_engine, ["drachtio"], on_status=lambda s, up: calls.append((s, up))
        )
        async with Collector(src) as col:
            await asyncio.sleep(0.5)
            assert col.lines() == []
            assert calls == [("drachtio", False)]
            await docker_engine.resume_api()
            assert await col.wait_lines(1) == ["before"]
            assert calls == [("drachtio", False), ("drachtio", True)]


async def test_unusable_docker_host_is_a_clear_error() -> None:
    async with asyncio.timeout(5):
        with pytest.raises(DockerUnavailable):
            async for _ in DockerLogSource(["drachtio"], docker_url="bogus://x").chunks():
                pass
        with pytest.raises(DockerUnavailable):
            async with DockerControl("bogus://x"):
                pass


async def test_idle_flush_chunk_once_per_quiet_period(docker_engine: FakeDockerEngine) -> None:
    async with asyncio.timeout(15):
        loop = asyncio.get_running_loop()
        c = docker_engine.add_container("drachtio")
        async with Collector(make_source(docker_engine, ["drachtio"], idle_flush=0.3)) as col:
            docker_engine.log(c, "record line 1\nrecord line 2\n")
            await col.wait_for(lambda: bool(col.data()))
            t_data = loop.time()
            await col.wait_for(lambda: col.chunks[-1].text == "")
            quiet = loop.time() - t_data
            assert 0.2 <= quiet < 1.5
            await asyncio.sleep(1.0)  # no second flush without new data
            empties = [x for x in col.chunks if x.text == ""]
            assert empties == [LogChunk("drachtio", Stream.STDERR, "")]
            docker_engine.log(c, "next\n")
            await col.wait_for(lambda: [x.text for x in col.chunks][-2:] == ["next\n", ""])


async def test_no_idle_flush_while_data_is_still_queued(docker_engine: FakeDockerEngine) -> None:
    async with asyncio.timeout(20):
        c = docker_engine.add_container("drachtio")
        docker_engine.log(c, "".join(f"line {i:05d} {'x' * 100}\n" for i in range(3000)))
        src = make_source(docker_engine, ["drachtio"], idle_flush=0.02, queue_size=2)
        seen: list[LogChunk] = []
        async with contextlib.aclosing(src.chunks()) as chunks:
            async for chunk in chunks:
                seen.append(chunk)
                if chunk.text == "":
                    break
                await asyncio.sleep(0.05)  # a consumer slower than idle_flush
        assert len(seen) > 3  # the backlog really came in several chunks
        lines = "".join(x.text for x in seen).split("\n")[:-1]
        assert len(lines) == 3000  # the first idle flush came only after all of them


async def test_reopening_many_times_leaks_no_connection(docker_engine: FakeDockerEngine) -> None:
    async with asyncio.timeout(30):
        c = docker_engine.add_container("drachtio")
        async with Collector(make_source(docker_engine, ["drachtio"])) as col:
            for i in range(40):
                docker_engine.log(c, f"n{i}\n")
                await col.wait_lines(i + 1, settle=0)
                docker_engine.restart(c)
            lines = await col.wait_lines(40)
            assert lines == [f"n{i}" for i in range(40)]
            assert docker_engine.log_requests >= 40
            await col.wait_for(lambda: docker_engine.open_log_streams == 1)
            assert docker_engine.connection_count() <= 4  # events + logs (+ idle pooled)


async def test_log_reader_releases_connections_with_a_connector_limit(
    docker_engine: FakeDockerEngine,
) -> None:
    async with asyncio.timeout(15):
        c = docker_engine.add_container("drachtio")
        docker_engine.log(c, "hello\n")
        connector = aiohttp.UnixConnector(path=docker_engine.path, limit=2)
        try:
            async with aiodocker.Docker(url="unix://localhost", connector=connector) as docker:
                for _ in range(10):  # with a leak the third open would wait for a slot forever
                    decoder = LogDecoder(tty=False)
                    batches = iter_log_batches(docker, c.id, decoder)
                    async with contextlib.aclosing(batches):
                        async for batch in batches:
                            if batch:
                                assert batch == [(Stream.STDERR, "hello\n")]
                                break
                await asyncio.sleep(0.05)
                assert docker_engine.open_log_streams == 0
        finally:
            await connector.close()


async def test_on_status_reports_up_and_down(docker_engine: FakeDockerEngine) -> None:
    async with asyncio.timeout(15):
        calls: list[tuple[str, bool]] = []
        c = docker_engine.add_container("drachtio")
        src = make_source(
            docker_engine, ["drachtio", "registrar"], on_status=lambda s, up: calls.append((s, up))
        )
        async with Collector(src) as col:
            await col.wait_for(lambda: ("drachtio", True) in calls)
            assert ("registrar", False) in calls
            assert ("drachtio", False) not in calls  # no spurious down before the first up
            docker_engine.stop(c)
            await col.wait_for(lambda: calls[-1] == ("drachtio", False))
            docker_engine.start(c)
            await col.wait_for(lambda: calls[-1] == ("drachtio", True))
            reg = docker_engine.add_container("registrar")
            docker_engine.log(reg, "hi\n", stream=1)
            await col.wait_for(lambda: ("registrar", True) in calls)
            assert await col.wait_lines(1, source="registrar") == ["hi"]


async def test_only_matching_containers_are_followed(docker_engine: FakeDockerEngine) -> None:
    async with asyncio.timeout(15):
        good = docker_engine.add_container("drachtio")
        oneoff = docker_engine.add_container("drachtio", oneoff=True, name="jambonz-drachtio-run-1")
        other_project = docker_engine.add_container("drachtio", project="other")
        other_service = docker_engine.add_container("mysql")
        replica = docker_engine.add_container("drachtio", number=2)
        for c in (good, oneoff, other_project, other_service, replica):
            docker_engine.log(c, f"from {c.name}\n")
        async with Collector(make_source(docker_engine, ["drachtio"])) as col:
            await col.wait_lines(2)
            await asyncio.sleep(0.3)
        assert col.lines(source="drachtio") == ["from jambonz-drachtio-1"]
        assert col.lines(source="drachtio-2") == ["from jambonz-drachtio-2"]
        assert len(col.lines()) == 2


async def test_plain_container_by_name(docker_engine: FakeDockerEngine) -> None:
    async with asyncio.timeout(15):
        c = docker_engine.add_container("whatever", project="x", name="drachtio-plain")
        docker_engine.log(c, "plain\n")
        src = make_source(docker_engine, [], project=None, name="drachtio-plain")
        async with Collector(src) as col:
            assert await col.wait_lines(1, source="drachtio-plain") == ["plain"]


async def test_tail_and_since_apply_at_start(docker_engine: FakeDockerEngine) -> None:
    async with asyncio.timeout(15):
        c = docker_engine.add_container("drachtio")
        for i in range(5):
            docker_engine.log(c, f"old{i}\n", ts_ns=T0 + i * 1_000_000_000)
        async with Collector(make_source(docker_engine, ["drachtio"], tail="2")) as col:
            assert await col.wait_lines(2) == ["old3", "old4"]
        async with Collector(make_source(docker_engine, ["drachtio"], since=(T0 / 1e9) + 1)) as col:
            assert await col.wait_lines(4) == ["old1", "old2", "old3", "old4"]
        ups: list[bool] = []
        src = make_source(
            docker_engine, ["drachtio"], tail="0", on_status=lambda s, up: ups.append(up)
        )
        async with Collector(src) as col:
            await col.wait_for(lambda: ups == [True])  # the tail=0 stream is open
            docker_engine.restart(c)  # nothing seen yet: must still resume, not re-read old lines
            docker_engine.log(c, "new\n")
            assert await col.wait_lines(1) == ["new"]


# --------------------------------------------------------------------------- control


async def test_control_lists_inspects_and_restarts(docker_engine: FakeDockerEngine) -> None:
    async with asyncio.timeout(15):
        reg = docker_engine.add_container(
            "registrar",
            image="jambonz/sbc-sip-sidecar:0.9.3",
            env={"JWT_SECRET": "s3cr3t-jwt", "ENCRYPTION_SECRET": "s3cr3t-enc"},
        )
        docker_engine.add_container("registrar", oneoff=True, name="jambonz-registrar-run-1")
        async with DockerControl(docker_engine.url, project="jambonz", api_timeout=2) as dc:
            found = await dc.containers("registrar")
            assert [c.id for c in found] == [reg.id]
            info = await dc.service_container("registrar")
            assert info.registrar_flavour is RegistrarFlavour.SBC_SIP_SIDECAR
            assert info.env["JWT_SECRET"] == "s3cr3t-jwt"
            assert info.running and not info.tty and info.name == "jambonz-registrar-1"
            assert "s3cr3t" not in repr(info)
            before = len(docker_engine.events)
            assert await dc.restart_service("registrar", grace=1) == [reg.id]
            actions = [e["Action"] for e in docker_engine.events[before:]]
            assert actions == ["die", "stop", "start", "restart"]
            with pytest.raises(ContainerNotFound):
                await dc.inspect("0" * 64)
            with pytest.raises(ContainerNotFound):
                await dc.service_container("nope")


async def test_control_times_out_and_reports_unavailable(docker_engine: FakeDockerEngine) -> None:
    async with asyncio.timeout(15):
        c = docker_engine.add_container("registrar")
        loop = asyncio.get_running_loop()
        async with DockerControl(docker_engine.url, api_timeout=0.3) as dc:
            docker_engine.response_delay = 5.0
            t = loop.time()
            with pytest.raises(DockerUnavailable):
                await dc.inspect(c.id)
            assert loop.time() - t < 2.0
            docker_engine.response_delay = 0.0
            await docker_engine.pause_api()
            with pytest.raises(DockerUnavailable):
                await dc.inspect(c.id)
            await docker_engine.resume_api()
            assert (await dc.inspect(c.id)).id == c.id
