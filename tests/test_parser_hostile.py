"""Hostile input to the framer and the registrar parser (issue 13, items 1-3).

Every case ends the same way: no exception leaves the parser, the hostile record is counted
(a parse error or an "embedded" record), and every real message after it is still there.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sipwatch.ingest.framing import (
    MAX_STREAM_DUMP,
    MAX_UDP_DUMP,
    PARSE_ERROR_KINDS,
    RECORD_KINDS,
    LogParser,
)
from sipwatch.ingest.registrar import MAX_PINO_LINE, PinoError, parse_pino_line
from sipwatch.ingest.transactions import new_tracker
from sipwatch.model import LogChunk, RegisterTransaction, SipMessage, Stream
from tests.daemon_runner import free_port, http_get, metric_total, popen_run, write_config
from tests.ingest_support import line_chunks, parse
from tools.synth import Device, Scenario, sip_dump, stamp

ROOT = Path(__file__).resolve().parent.parent
T0 = 1772366400.0
DEEP = 1000
DEEP_OBJECT = '{"a":' * DEEP + "1" + "}" * DEEP  # 6 kB, as in the issue
MS = 1772366400000


def hostile_invite(t: float, *, crlf: bool = True) -> str:
    """A 6 kB INVITE whose JSON body nests 1000 levels deep, as drachtio dumps it."""
    lines = [
        "INVITE sip:5001@acme.example.com SIP/2.0",
        "Via: SIP/2.0/UDP 203.0.113.66:5060;branch=z9hG4bKdeep",
        "From: <sip:x@203.0.113.66>;tag=1",
        "To: <sip:5001@acme.example.com>",
        "Call-ID: deep-json",
        "CSeq: 1 INVITE",
        "Content-Type: application/json",
        f"Content-Length: {len(DEEP_OBJECT)}",
    ]
    text = sip_dump(t, "recv", "udp", "203.0.113.66", 5060, lines, [DEEP_OBJECT])
    return text if crlf else text.replace("\r\n", "\n")  # CRLF lost in copying


def registers(n: int, t: float, *, body: bool = False) -> tuple[str, list[str]]:
    """``n`` REGISTER dumps after ``t`` (with a small body if asked); their Call-IDs."""
    text = ""
    ids = []
    for i in range(n):
        dev = Device(str(2000 + i), "acme.example.com", "203.0.113.9")
        req = dev.register()
        extra = ["v=0", "s=-"] if body else None
        if body:
            req = [*req[:-1], "Content-Type: application/sdp", "Content-Length: 10"]
        text += sip_dump(t + i * 0.01, "recv", "udp", dev.ip, 5060, req, extra)
        ids.append(dev.call_id)
    return text, ids


def assert_vocabulary(parser: LogParser) -> None:
    stats = parser.stats
    assert set(stats.records) <= set(RECORD_KINDS)
    assert set(stats.errors) <= set(PARSE_ERROR_KINDS)


# ---------------------------------------------------------------- 1. deeply nested JSON
@pytest.mark.parametrize("crlf", [True, False], ids=["crlf", "crlf-lost"])
@pytest.mark.parametrize("chunks", [1, 4])
def test_deep_json_in_a_sip_body_never_reaches_the_json_parser(crlf: bool, chunks: int) -> None:
    after, ids = registers(3, T0 + 1)
    text = hostile_invite(T0, crlf=crlf) + after
    msgs, svc, p = parse(text, chunks=chunks)
    assert [m.call_id for m in msgs] == ["deep-json", *ids]
    assert svc == []
    assert p.stats.records == {"sip": 4, "embedded": 1}
    assert p.stats.errors == {}


def test_deep_json_registrar_lines_are_counted_and_the_stream_goes_on() -> None:
    deep_msg = json.dumps({"level": 50, "time": MS, "msg": DEEP_OBJECT})  # JSON in "msg"
    after, ids = registers(2, T0 + 1)
    text = (
        DEEP_OBJECT
        + "\n"
        + '{"a":' * 40
        + "[" * 200
        + "\n"  # deep and not even valid
        + deep_msg
        + "\n"
        + '{"level":30,"time":1772366400000,"msg":"checkAccountLimits: rejecting register for unknown sip realm: x.example"}\n'
        + after
    )
    for chunks in (1, 3):
        msgs, svc, p = parse(text, chunks=chunks, stream=Stream.STDOUT)
        assert [m.call_id for m in msgs] == ids
        assert [e.kind for e in svc] == ["other", "unknown_realm"]  # the msg's JSON is not read
        assert svc[0].level == 50
        assert p.stats.errors == {"pino_bounds": 2}
        assert p.stats.records == {"pino": 2, "sip": 2}
        assert_vocabulary(p)


# ---------------------------------------------------------------- 2. huge numbers
@pytest.mark.parametrize(
    "fields",
    [
        '"time":' + "9" * 400,
        '"time":1e400',
        '"time":-1e400',
        '"time":NaN',
        '"time":-1',
        '"time":true',
        '"time":1772366400000,"level":' + "9" * 400,
        '"time":1772366400000,"level":1e400',
        '"time":1772366400000,"level":-5',
        '"time":1772366400000,"level":30.5',
    ],
)
def test_pino_numbers_no_pino_writes_reject_the_line(fields: str) -> None:
    line = "{" + fields + ',"msg":"successfully added 1001@acme.example.com"}'
    assert parse_pino_line(line, "r") is PinoError.BOUNDS
    after, ids = registers(2, T0 + 1)
    msgs, svc, p = parse(line + "\n" + after)
    assert [m.call_id for m in msgs] == ids and svc == []
    assert p.stats.errors == {"pino_bounds": 1}


def test_a_pino_line_inside_the_announced_length_of_a_crlf_lost_dump_is_embedded() -> None:
    """The rule is the announced length, even when it cannot be proven: in a log that lost
    its CRs a real registrar line right after a dump is the price (it is counted)."""
    dev = Device("1", "acme.example.com", "203.0.113.5")
    dump = sip_dump(T0, "recv", "udp", dev.ip, 5060, dev.register()).replace("\r\n", "\n")
    pino = '{"level":30,"time":1772366400000,"msg":"successfully added 1@acme.example.com"}\n'
    after, ids = registers(1, T0 + 1)
    msgs, svc, p = parse(dump + pino + after)
    assert [m.call_id for m in msgs] == [dev.call_id, *ids] and svc == []
    assert p.stats.records == {"sip": 2, "embedded": 1}
    # with its CRs the dump is proven to end before the line, which is then a registrar line
    crlf = sip_dump(T0, "recv", "udp", dev.ip, 5060, dev.register())
    msgs, svc, p = parse(crlf + pino + after)
    assert [e.kind for e in svc] == ["registered"]
    assert p.stats.records == {"sip": 2, "pino": 1}


def test_pino_numbers_at_the_edges_of_the_bounds_are_kept() -> None:
    ev = parse_pino_line('{"time":0,"level":0,"msg":"m"}', "r")
    assert not isinstance(ev, PinoError) and ev.ts == 0.0 and ev.level == 0
    ev = parse_pino_line('{"time":253402300800000,"level":100,"msg":"m"}', "r")
    assert not isinstance(ev, PinoError) and ev.ts == 253402300800.0 and ev.level == 100
    ev = parse_pino_line('{"time":1772366400123.5,"level":"info","msg":"m"}', "r")
    assert not isinstance(ev, PinoError) and ev.ts == 1772366400.1235 and ev.level == 30
    for over in ('{"time":253402300800001}', '{"level":101}'):
        assert parse_pino_line(over, "r") is PinoError.BOUNDS


def test_oversized_and_overflowing_pino_values_never_raise() -> None:
    # more digits than Python converts: JSON the decoder refuses, so "not JSON"
    assert parse_pino_line('{"time":' + "9" * 5000 + "}", "r") is PinoError.NOT_JSON
    # ISO times (old sbc-registrar): one before 1970 is no pino time; one that is no date
    # (naive times go through mktime, which refuses year 0) leaves the time unknown
    assert parse_pino_line('{"time":"0001-01-01T00:00:00+23:59"}', "r") is PinoError.BOUNDS
    ev = parse_pino_line('{"time":"0001-01-01T00:00:00","msg":"m"}', "r")
    assert not isinstance(ev, PinoError) and ev.ts == 0.0
    ev = parse_pino_line('{"time":"2026-03-01T12:00:00.000Z","msg":"m"}', "r")
    assert not isinstance(ev, PinoError) and ev.ts == T0
    long_line = '{"msg":"' + "x" * MAX_PINO_LINE + '"}'
    assert parse_pino_line(long_line, "r") is PinoError.BOUNDS
    # 32 levels are kept, 33 are not
    assert not isinstance(parse_pino_line('{"a":' * 31 + "{}" + "}" * 31, "r"), PinoError)
    assert parse_pino_line('{"a":' * 32 + "{}" + "}" * 32, "r") is PinoError.BOUNDS
    # brackets inside strings do not nest
    ev = parse_pino_line(json.dumps({"msg": "{[" * 500}), "r")
    assert not isinstance(ev, PinoError) and ev.message.startswith("{[{[")


# ---------------------------------------------------------------- 1+2 end to end
def hostile_log() -> tuple[str, int]:
    """729 SIP messages with hostile lines early in the stream; (text, pino_bounds lines)."""
    sc = Scenario(T0)
    n = 0
    i = 0
    while n < 728:
        sc.register_ok(Device(str(3000 + i), "acme.example.com", f"198.51.100.{i % 250 + 1}"))
        n += 4
        i += 1
    head = "".join(sc.drachtio[:6])
    tail = "".join(sc.drachtio[6:])
    hostile = (
        DEEP_OBJECT
        + "\n"
        + '{"level":30,"time":'
        + "9" * 400
        + ',"msg":"x"}\n'
        + '{"level":'
        + "9" * 400
        + ',"time":1772366400000,"msg":"x"}\n'
        + hostile_invite(T0 + 0.0005, crlf=False)  # message 729: its body is never parsed
    )
    return head + hostile + tail, 3


def test_replay_survives_hostile_lines_and_loses_no_message(tmp_path: Path) -> None:
    text, bounds = hostile_log()
    log = tmp_path / "hostile.log"
    log.write_text(text, newline="")
    out = subprocess.run(
        [sys.executable, "-m", "sipwatch", "replay", "--format", "json", "--no-diagnose", str(log)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    rep = json.loads(out.stdout)
    assert rep["sip_messages"] == 729
    assert rep["register_transactions_by_status"] == {"401": 182, "200": 182}
    assert rep["log"]["parse_errors"] == {"pino_bounds": bounds}
    assert rep["log"]["records"] == {"sip": 729, "embedded": 1}


@pytest.mark.parametrize("read_size", [4096, 65536, 1 << 20])
def test_pipeline_in_process_loses_no_message_after_the_hostile_lines(read_size: int) -> None:
    """Parser and tracker fed read by read, as the drivers do, then the idle signal."""
    text, bounds = hostile_log()
    parser = LogParser()
    tracker = new_tracker()
    messages = 0
    statuses: dict[int, int] = {}
    pieces = [*line_chunks(text, max(1, len(text) // read_size)), ""]  # "" = idle
    for piece in pieces:
        for ev in parser.feed(LogChunk("d", Stream.STDERR, piece)):
            if isinstance(ev, SipMessage):
                messages += 1
                for done in tracker.on_message(ev):
                    if isinstance(done, RegisterTransaction):
                        statuses[done.status] = statuses.get(done.status, 0) + 1
    assert messages == 729
    assert parser.stats.errors == {"pino_bounds": bounds}
    assert parser.stats.records == {"sip": 729, "embedded": 1}
    assert statuses == {401: 182, 200: 182}


def test_daemon_counts_every_message_after_the_hostile_lines(tmp_path: Path) -> None:
    text, bounds = hostile_log()
    log = tmp_path / "drachtio.log"
    log.write_text(text, newline="")
    port = free_port()
    config = f"""
[sources]
idle_flush_seconds = 0.2
[sources.docker]
enabled = false
[[sources.files]]
path = "{log}"
follow = true
"""
    proc = popen_run(write_config(tmp_path / "sipwatch.toml", config, port))
    try:
        body = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                body = http_get(f"http://127.0.0.1:{port}/metrics")[1]
            except OSError:
                body = ""
            if metric_total(body, "sipwatch_sip_messages_total") >= 729:
                break
            time.sleep(0.2)
        assert metric_total(body, "sipwatch_sip_messages_total") == 729
        assert metric_total(body, "sipwatch_parse_errors_total", kind="pino_bounds") == bounds
        assert metric_total(body, "sipwatch_parse_errors_total", kind="internal") == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    assert proc.returncode == 0, err[-2000:]
    assert "parse stage error" not in err


def test_stamps_that_are_no_date_count_an_error_and_never_go_negative() -> None:
    """Found by the fuzzer: a year before 1970 gave a negative time."""
    dev = Device("1", "acme.example.com", "203.0.113.5")
    text = sip_dump(T0, "recv", "udp", dev.ip, 5060, dev.register()).replace("2026-", "1012-", 1)
    text += "2026-13-01 12:00:00.000000 rejecting REGISTER with no realm\n"
    text += "00000001|1012-Jun-27 07:48:59.059161| rejecting REGISTER with no realm\n"
    msgs, svc, p = parse(text)
    assert msgs[0].ts == 0.0 and msgs[0].call_id == dev.call_id
    assert [(e.kind, e.ts) for e in svc] == [("register_no_realm", 0.0)] * 2
    assert p.stats.errors == {"timestamp": 3}


# ---------------------------------------------------------------- 3. byte counts that lie
def with_count(dump: str, count: int | str) -> str:
    head, rest = dump.split(" bytes ", 1)
    return head.rsplit(" ", 1)[0] + f" {count} bytes " + rest


def test_a_count_larger_than_anything_drachtio_logs_is_counted_and_parsed() -> None:
    dev = Device("1", "acme.example.com", "203.0.113.5")
    after, ids = registers(5, T0 + 1)
    bogus = with_count(sip_dump(T0, "recv", "udp", dev.ip, 5060, dev.register()), 2147483648)
    for chunks in (1, 3):
        msgs, _, p = parse(bogus + after, chunks=chunks)
        assert [m.call_id for m in msgs] == [dev.call_id, *ids]
        assert msgs[0].size == 2147483648
        assert p.stats.errors == {"sip_length": 1}
        assert p.stats.records == {"sip": 6}


def test_a_count_of_absurd_length_is_counted_and_parsed() -> None:
    dev = Device("1", "acme.example.com", "203.0.113.5")
    after, ids = registers(2, T0 + 1)
    bogus = with_count(sip_dump(T0, "recv", "tcp", dev.ip, 5060, dev.register()), "9" * 5000)
    msgs, _, p = parse(bogus + after)
    assert [m.call_id for m in msgs] == [dev.call_id, *ids]
    assert p.stats.errors == {"sip_length": 1}


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("chunks", [1, 2, 5])
@pytest.mark.parametrize("body", [False, True], ids=["bodiless", "with-body"])
def test_a_false_count_that_lands_on_a_real_record_does_not_eat_it(
    transport: str, chunks: int, body: bool
) -> None:
    """The count points exactly at the third record after the dump (the worst case: the
    dump looks like it ends where announced); the two records in between are real."""
    dev = Device("1", "acme.example.com", "203.0.113.5")
    after, ids = registers(5, T0 + 1, body=body)
    dump = sip_dump(T0, "recv", transport, dev.ip, 5060, dev.register())
    body_start = dump.index("\n") + 1
    third = len(dump) + after.index(stamp(T0 + 1 + 0.02))  # where record 3 of `after` starts
    text = with_count(dump, third - body_start) + after
    assert third - body_start <= MAX_UDP_DUMP  # a count drachtio could print
    msgs, _, p = parse(text, chunks=chunks)
    assert [m.call_id for m in msgs] == [dev.call_id, *ids]
    assert p.stats.errors == {"sip_length": 1}
    assert "embedded" not in p.stats.records


def test_a_udp_count_beyond_a_datagram_never_hides_records() -> None:
    dev = Device("1", "acme.example.com", "203.0.113.5")
    after, ids = registers(200, T0 + 1)
    dump = sip_dump(T0, "recv", "udp", dev.ip, 5060, dev.register())
    body_start = dump.index("\n") + 1
    target = len(dump) + after.index(stamp(T0 + 1 + 1.5))  # record 150, ~100 kB on
    count = target - body_start
    assert MAX_UDP_DUMP < count < MAX_STREAM_DUMP
    for chunks in (1, 7):
        msgs, _, p = parse(with_count(dump, count) + after, chunks=chunks)
        assert len(msgs) == 201 and msgs[-1].call_id == ids[-1]
        assert p.stats.errors == {"sip_length": 1}


def test_truncated_dump_whose_count_lands_on_a_record_keeps_the_marker() -> None:
    """sofia prints the full size of a message it cut: the truncation marker and the records
    after it fall inside the announced length, but follow lines without CR."""
    dev = Device("1", "acme.example.com", "203.0.113.5")
    req = dev.register()
    dump = sip_dump(T0, "recv", "udp", dev.ip, 5060, req)
    cut = dump[: dump.index("Contact:") + 20] + " \n"  # cut mid-line, drachtio's trailing space
    marker = f"{stamp(T0 + 0.0001)}    *** message truncated at 400 ***\n"
    after, ids = registers(3, T0 + 1)
    body_start = cut.index("\n") + 1
    landing = len(cut) + len(marker) + after.index(stamp(T0 + 1 + 0.01))
    text = with_count(cut, landing - body_start) + marker + after
    msgs, _, p = parse(text)
    assert [m.call_id for m in msgs] == [dev.call_id, *ids]
    assert [m.truncated for m in msgs] == [True, False, False, False]
    assert p.stats.records == {"sip": 4, "truncation": 1}
    assert p.stats.errors == {"sip_length": 1}


def test_forged_records_inside_a_proven_dump_are_still_skipped() -> None:
    """The CRLF rule keeps the forgery defence: body lines end in CRLF in drachtio's output."""
    dev = Device("9", "acme.example.com", "203.0.113.99")
    req = dev.register()
    forged_sip = f"{stamp(T0)} send 300 bytes to udp/[203.0.113.5]:5060 at 12:00:00.000000:"
    forged_line = f"{stamp(T0)} No connected clients found to handle incoming register request"
    body = [forged_sip, "SIP/2.0 200 OK", "Call-ID: forged", forged_line, '{"level":30}']
    text = sip_dump(T0, "recv", "udp", dev.ip, 5060, req, body)
    text += sip_dump(T0 + 0.01, "send", "udp", dev.ip, 5060, dev.response(req, 403, "Forbidden"))
    for chunks in (1, 2, 4):
        msgs, svc, p = parse(text, chunks=chunks)
        assert [m.status for m in msgs] == [0, 403] and svc == []
        assert p.stats.records == {"sip": 2, "embedded": 3}
        assert p.stats.errors == {}
