"""The framer's own rules, one by one: channels, prefix detection, held records, counters,
the announced length of a dump, and chunk boundaries that must never change a result."""

from __future__ import annotations

import time

import pytest

from sipwatch.ingest import framing, speedups
from sipwatch.ingest.framing import DUMP_SLACK, MAX_PENDING, MAX_SERVICES, LogParser
from sipwatch.model import LogChunk, ServiceEvent, ServiceOrigin, SipMessage, Stream
from tests.ingest_support import feed_text, parse
from tools.synth import Device, sip_dump, stamp

T0 = 1772366400.0
PINO = '{"level":30,"time":1772366400000,"msg":"successfully added 1@acme.example.com"}\n'


def register(i: int = 1, t: float = T0, *, transport: str = "udp") -> tuple[str, str]:
    dev = Device(str(1000 + i), "acme.example.com", "203.0.113.9", transport=transport)
    return sip_dump(t, "recv", transport, dev.ip, 5060, dev.register()), dev.call_id


def with_count(dump: str, count: int | str) -> str:
    head, rest = dump.split(" bytes ", 1)
    return head.rsplit(" ", 1)[0] + f" {count} bytes " + rest


def logged_size(dump: str) -> int:
    """Bytes from the first SIP line to the end of the dump (drachtio's count when exact)."""
    return len(dump) - dump.index("\n") - 1


def summary(
    text: str, chunks: int = 1
) -> tuple[list[str], list[str], dict[str, int], dict[str, int]]:
    msgs, svc, p = parse(text, chunks=chunks)
    return [m.call_id for m in msgs], [e.kind for e in svc], p.stats.records, p.stats.errors


# ---------------------------------------------------------------- counters
def test_text_without_any_record_is_other() -> None:
    assert summary("garbage\nmore garbage\n") == ([], [], {"other": 1}, {})
    assert summary("\n \n") == ([], [], {}, {})


def test_a_single_character_before_the_first_record_is_other() -> None:
    dump, cid = register()
    assert summary("x\n" + dump) == ([cid], [], {"other": 1, "sip": 1}, {})


def test_a_dump_header_without_sip_lines_and_a_bad_start_line() -> None:
    dump, cid = register()
    header_only = f"{stamp(T0)} recv 100 bytes from udp/[203.0.113.9]:5060 at 12:00:00.000000:\n"
    bad_start = dump.replace("REGISTER sip:acme.example.com SIP/2.0", "HELLO there", 1)
    assert summary(header_only + bad_start + dump) == (
        [cid],
        [],
        {"sip": 1},
        {"sip_header_only": 1, "sip_start_line": 1},
    )


@pytest.mark.parametrize("implementation", sorted(framing.IMPLEMENTATIONS))
def test_a_record_that_raises_is_counted_internal_and_the_rest_survives(
    monkeypatch: pytest.MonkeyPatch, implementation: str
) -> None:
    calls = 0
    real = framing.IMPLEMENTATIONS[implementation].build

    def flaky(*args: object) -> SipMessage | None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("a parser bug")
        return real(*args)

    if implementation == speedups.COMPILED:
        hot_path = framing.compiled_implementation(speedups.compiled, build=flaky)
    else:
        hot_path = framing.IMPLEMENTATIONS[implementation]._replace(build=flaky)
    monkeypatch.setattr(framing, "HOT_PATH", hot_path)
    text = "".join(register(i, T0 + i)[0] for i in range(3))
    ids, _, records, errors = summary(text)
    assert len(ids) == 2 and records == {"sip": 2} and errors == {"internal": 1}


def test_drachtio_service_event_fields() -> None:
    long_tail = "x" * 600
    text = (
        f"{stamp(T0)} DrachtioController::processMessageStatelessly: rejecting REGISTER with no realm   \n"
        f"{stamp(T0 + 1)} rejecting REGISTER with no realm {long_tail}\n" + PINO
    )
    _, svc, p = parse(text)
    first, second, pino = svc
    assert (first.ts, first.source, first.origin, first.level) == (
        T0,
        "t",
        ServiceOrigin.DRACHTIO,
        30,
    )
    assert first.message == (
        "DrachtioController::processMessageStatelessly: rejecting REGISTER with no realm"
    )
    assert len(second.message) == 512 and second.message.startswith("rejecting")
    assert (pino.source, pino.origin, pino.kind) == ("t", ServiceOrigin.REGISTRAR, "registered")
    assert p.stats.records == {"service": 2, "pino": 1}


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("Sending response: 1|OK", "api"),
        ("Client::write_handler - wrote 54 bytes: system:0", "api"),
        ("sending response lower case", "other"),
        ("   *** message truncated at 12 ***", "truncation"),
        ("*** message truncated at 12 ***", "truncation"),
        ("X*** message truncated at 12 ***", "other"),
        ("\t*** message truncated at 12 ***", "other"),
    ],
)
def test_line_kinds(line: str, kind: str) -> None:
    _, _, records, _ = summary(f"{stamp(T0)} {line}\n")
    assert records == {kind: 1}


def test_truncation_marker_first_and_last() -> None:
    dump, _ = register()
    marker = f"{stamp(T0 + 0.001)}    *** message truncated at 400 ***\n"
    msgs, _, p = parse(marker + dump + marker)  # the last record of the input is the marker
    assert [m.truncated for m in msgs] == [True]
    assert p.stats.records == {"truncation": 2, "sip": 1} and p.stats.errors == {}


# ---------------------------------------------------------------- time
def test_stamps_are_utc_plus_the_configured_offset_whatever_the_hosts_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dump, _ = register()
    legacy = "00001b65|2026-Mar-01 12:00:00.250000| rejecting REGISTER with no realm\n"
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        for offset in (0.0, 3600.0):
            p = LogParser(tz_offset=offset)
            events = feed_text(p, dump + legacy)
            assert [e.ts for e in events] == [T0 - offset, T0 + 0.25 - offset]
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_the_first_second_of_1970_is_a_date() -> None:
    text = (
        "1970-01-01 00:00:01.500000 rejecting REGISTER with no realm\n"
        "00000001|1970-Jan-01 00:00:02.250000| rejecting REGISTER with no realm\n"
    )
    _, svc, p = parse(text)
    assert [e.ts for e in svc] == [1.5, 2.25] and p.stats.errors == {}


def test_every_field_of_a_stamp_counts() -> None:
    text = (
        "2025-12-31 23:59:58.999999 rejecting REGISTER with no realm\n"
        "00000001|2025-Nov-30 22:48:17.5| rejecting REGISTER with no realm\n"
    )
    _, svc, _ = parse(text)
    assert [e.ts for e in svc] == [1767225598.999999, 1764542897.5]


def test_a_legacy_dump_with_no_date_counts_a_timestamp_error() -> None:
    dump, cid = register()
    legacy = "00001b65|2026-Xyz-01 12:00:00.000000| " + dump.split(" ", 2)[2]
    msgs, _, p = parse(legacy)
    assert [m.call_id for m in msgs] == [cid] and msgs[0].ts == 0.0
    assert p.stats.errors == {"timestamp": 1}


def test_byte_counts_of_18_digits_are_kept_longer_ones_capped() -> None:
    dump, _ = register(transport="tcp")
    msgs, _, _ = parse(with_count(dump, "9" * 18) + with_count(dump, "9" * 19))
    assert [m.size for m in msgs] == [int("9" * 18), 10**18]


# ---------------------------------------------------------------- the announced length
def test_a_dump_a_trailing_space_and_a_cr_short_still_ran_to_its_end() -> None:
    """Lost in copying: the pino line right after it is a registrar line."""
    dump, cid = register()
    exact = logged_size(dump)
    for short in range(DUMP_SLACK + 2):
        ids, kinds, records, _ = summary(with_count(dump, exact + short) + PINO)
        assert ids == [cid]
        if short <= DUMP_SLACK:
            assert kinds == ["registered"] and records == {"sip": 1, "pino": 1}
        else:  # inside the announced length: never a registrar line
            assert kinds == [] and records == {"sip": 1, "embedded": 1}


@pytest.mark.parametrize("offset", range(-9, 9))
def test_how_far_off_a_count_may_be_and_still_prove_the_dump(offset: int) -> None:
    """A forged drachtio line in a body is skipped only when the count proves the dump: the
    last line end in [end - 6, end + 2) must be followed by a record start."""
    dev = Device("7", "acme.example.com", "203.0.113.7")
    forged = f"{stamp(T0)} No connected clients found to handle incoming register request"
    dump = sip_dump(T0, "recv", "udp", dev.ip, 5060, dev.register(), [forged, "tail"])
    after, cid = register(2, T0 + 1)
    exact = logged_size(dump)
    ids, kinds, records, errors = summary(with_count(dump, exact + offset) + after)
    assert ids == [dev.call_id, cid]
    # the dump ends "...tail \n": its last line end is at end - 1 - offset
    if -2 <= offset <= 5:  # 1 - 6 ... 1 + offset < 2 + ... : the window holds that line end
        assert kinds == [] and records == {"sip": 2, "embedded": 1} and errors == {}
    else:
        assert kinds == ["no_connected_clients"] and records == {"sip": 2, "service": 1}


def test_udp_and_stream_bounds_are_exact() -> None:
    for transport, count, error in [
        ("udp", framing.MAX_UDP_DUMP, {}),
        ("udp", framing.MAX_UDP_DUMP + 1, {"sip_length": 1}),
        ("tcp", framing.MAX_UDP_DUMP + 1, {}),
        ("tls", framing.MAX_STREAM_DUMP, {}),
        ("tls", framing.MAX_STREAM_DUMP + 1, {"sip_length": 1}),
    ]:
        dump, cid = register(transport=transport)
        upper = with_count(dump, count).replace(f"{transport}/[", f"{transport.upper()}/[", 1)
        ids, _, _, errors = summary(upper)
        assert ids == [cid] and errors == error, (transport, count)


def test_two_pino_lines_inside_an_unproven_dump_are_both_embedded() -> None:
    dump, cid = register()
    lf = dump.replace("\r\n", "\n").replace(" \n", PINO + PINO + " \n")
    lf = with_count(lf, logged_size(dump) + 200)
    assert summary(lf) == ([cid], [], {"sip": 1, "embedded": 2}, {})


@pytest.mark.parametrize(
    "junk", ["\t*** message truncated at 9 ***", "X*** message truncated at 9 ***"]
)
def test_only_sofias_marker_marks_a_message_truncated(junk: str) -> None:
    dump, _ = register()
    msgs, _, p = parse(dump + f"{stamp(T0)} {junk}\n" + register(2, T0 + 1)[0])
    assert [m.truncated for m in msgs] == [False, False] and p.stats.records == {
        "sip": 2,
        "other": 1,
    }


def test_a_dump_followed_by_junk_at_the_end_of_input_is_not_proven() -> None:
    dev = Device("8", "acme.example.com", "203.0.113.8")
    forged = f"{stamp(T0)} No connected clients found to handle incoming register request"
    dump = sip_dump(T0, "recv", "udp", dev.ip, 5060, dev.register(), [forged])
    _, kinds, records, _ = summary(dump + "x")  # no final newline
    assert kinds == ["no_connected_clients"] and records == {"sip": 1, "service": 1}


def test_forged_records_in_the_last_dump_of_the_input_are_skipped() -> None:
    """The end of the input proves a dump as a record start after it does."""
    dev = Device("8", "acme.example.com", "203.0.113.8")
    forged = f"{stamp(T0)} No connected clients found to handle incoming register request"
    dump = sip_dump(T0, "recv", "udp", dev.ip, 5060, dev.register(), [forged])
    for chunks in (1, 3):
        ids, kinds, records, _ = summary(dump, chunks)
        assert ids == [dev.call_id] and kinds == [] and records == {"sip": 1, "embedded": 1}


_LONG = sip_dump(
    T0,
    "recv",
    "udp",
    "203.0.113.8",
    5060,
    Device("8", "a.example", "203.0.113.8").register(),
    [f"{stamp(T0)} rejecting REGISTER with no realm", "x"],
)
HOSTILE_INPUTS = {
    "forged-in-body": sip_dump(
        T0,
        "recv",
        "udp",
        "203.0.113.8",
        5060,
        Device("8", "a.example", "203.0.113.8").register(),
        [f"{stamp(T0)} rejecting REGISTER with no realm", PINO.rstrip("\n"), "x"],
    ),
    "crlf-lost": sip_dump(
        T0, "recv", "udp", "203.0.113.9", 5060, Device("9", "a.example", "203.0.113.9").register()
    ).replace("\r\n", "\n")
    + PINO,
    "false-count": with_count(register(3)[0], 3000),
    # the dump's log runs 2 bytes past its count and a line that is no record follows:
    # unproven, even when a chunk ends right after the dump
    "long-then-continuation": with_count(_LONG, logged_size(_LONG)).replace(
        "x \n", "xyz \ncontinuation\n"
    ),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_INPUTS))
def test_no_chunk_boundary_changes_the_result(name: str) -> None:
    """Cut the input at every line end: two chunks always give what one chunk gives."""
    text = HOSTILE_INPUTS[name] + "".join(register(i, T0 + i)[0] for i in range(4, 7))
    whole = summary(text)
    cuts = [i + 1 for i, c in enumerate(text) if c == "\n"]
    for cut in cuts:
        p = LogParser()
        events = p.feed(LogChunk("t", Stream.TEXT, text[:cut]))
        events += p.feed(LogChunk("t", Stream.TEXT, text[cut:]))
        events += p.flush()
        got = (
            [e.call_id for e in events if isinstance(e, SipMessage)],
            [e.kind for e in events if isinstance(e, ServiceEvent)],
            p.stats.records,
            p.stats.errors,
        )
        assert got == whole, cut


# ---------------------------------------------------------------- held records and MAX_PENDING
def test_the_last_record_is_held_until_more_text_or_the_idle_signal() -> None:
    dumps = [register(i, T0 + i) for i in range(3)]
    p = LogParser()
    got = p.feed(LogChunk("a", Stream.STDERR, "".join(d for d, _ in dumps)))
    assert [m.call_id for m in got if isinstance(m, SipMessage)] == [dumps[0][1], dumps[1][1]]
    assert p.feed(LogChunk("b", Stream.STDERR, "")) == []  # idle of another source: nothing
    assert p.feed(LogChunk("a", Stream.STDOUT, "")) == []  # idle of another stream: nothing
    (last,) = p.feed(LogChunk("a", Stream.STDERR, ""))
    assert isinstance(last, SipMessage) and last.call_id == dumps[2][1]
    assert p.feed(LogChunk("a", Stream.STDERR, "")) == []  # nothing left: nothing counted
    assert p.stats.records == {"sip": 3}
    more = p.feed(LogChunk("a", Stream.STDERR, dumps[0][0])) + p.flush()
    assert len(more) == 1 and p.stats.records == {"sip": 4} and p.stats.errors == {}


def test_the_idle_signal_flushes_demultiplexed_service_channels() -> None:
    dump, cid = register()
    text = "".join(f"drachtio-1  | {line}\n" for line in dump.split("\n")[:-1])
    p = LogParser()
    assert p.feed(LogChunk("c", Stream.TEXT, text)) == []
    (msg,) = p.feed(LogChunk("c", Stream.TEXT, ""))
    assert isinstance(msg, SipMessage) and msg.call_id == cid and msg.source == "c/drachtio-1"


def test_a_chunk_larger_than_max_pending_still_holds_its_last_record() -> None:
    dumps = []
    size = 0
    i = 0
    while size <= MAX_PENDING + 50_000:
        d, _ = register(i, T0 + i * 0.001)
        dumps.append(d)
        size += len(d)
        i += 1
    p = LogParser()
    got = p.feed(LogChunk("a", Stream.TEXT, "".join(dumps)))
    assert len(got) == len(dumps) - 1
    assert len(p.flush()) == 1


def test_a_record_larger_than_max_pending_is_cut_not_held() -> None:
    dump, cid = register()
    huge = dump + f"{stamp(T0)} DrachtioController::run " + "x" * (MAX_PENDING + 10) + "\n"
    p = LogParser()
    got = p.feed(LogChunk("a", Stream.TEXT, huge))
    assert [m.call_id for m in got if isinstance(m, SipMessage)] == [cid]
    assert p.stats.records == {"sip": 1, "other": 1}  # the long record went out too


# ---------------------------------------------------------------- prefix detection
def indent(text: str, blanks: str) -> str:
    return "".join(blanks + line + "\n" for line in text.split("\n")[:-1])


@pytest.mark.parametrize("blanks", [" ", "  ", "\t", "    ", " " * 8])
def test_indented_pastes_of_any_width_up_to_eight(blanks: str) -> None:
    dump, cid = register()
    ids, _, records, _ = summary("intro\n" + indent(dump, blanks))
    assert ids == [cid] and records == {"sip": 1, "other": 1}


def test_nine_blanks_are_no_indentation() -> None:
    dump, _ = register()
    assert summary(indent(dump, " " * 9))[0] == []


def test_detection_waits_for_a_decisive_line_across_chunks() -> None:
    dump, cid = register()
    p = LogParser()
    events = p.feed(LogChunk("a", Stream.TEXT, "\n"))  # a blank line decides nothing
    events += p.feed(LogChunk("a", Stream.TEXT, "no newline at the end"))
    events += p.feed(LogChunk("a", Stream.TEXT, "\n" + indent(dump, "  ")))
    events += p.flush()
    assert [m.call_id for m in events if isinstance(m, SipMessage)] == [cid]


@pytest.mark.parametrize(("junk", "found"), [(199, True), (200, False)])
@pytest.mark.parametrize("split", [False, True])
def test_detection_gives_up_after_200_lines(junk: int, found: bool, split: bool) -> None:
    """Blank lines do not count; the budget carries over from chunk to chunk."""
    dump, cid = register()
    lines = "".join(f"junk {i}\n\n" for i in range(junk))
    p = LogParser()
    pieces = [lines, indent(dump, " ")] if split else [lines + indent(dump, " ")]
    events = [e for piece in pieces for e in p.feed(LogChunk("a", Stream.TEXT, piece))]
    events += p.flush()
    assert ([m.call_id for m in events if isinstance(m, SipMessage)] == [cid]) is found


# ---------------------------------------------------------------- demultiplexing
def test_unprefixed_lines_in_a_compose_log_get_their_own_channel() -> None:
    dump, cid = register()
    other, other_id = register(2, T0 + 1)
    text = "".join(f"drachtio-1  | {line}\n" for line in dump.split("\n")[:-1]) + other
    msgs, _, _ = parse(text)
    assert sorted((m.call_id, m.source) for m in msgs) == sorted(
        [(cid, "t/drachtio-1"), (other_id, "t/-")]
    )


def test_a_compose_log_without_a_final_newline_keeps_its_last_line() -> None:
    dump, cid = register()
    text = "".join(f"drachtio-1  | {line}\n" for line in dump.split("\n")[:-1])
    text += "registrar-1 | " + PINO.rstrip("\n")
    msgs, svc, _ = parse(text)
    assert [m.call_id for m in msgs] == [cid] and [e.kind for e in svc] == ["registered"]
    assert svc[0].source == "t/registrar-1"


def test_services_past_the_cap_share_one_channel() -> None:
    lines = "".join(
        f"svc{i}-1  | {stamp(T0)} rejecting REGISTER with no realm\n"
        for i in range(MAX_SERVICES + 3)
    )
    _, svc, p = parse(lines)
    assert sorted(e.source for e in svc) == sorted(
        [f"t/svc{i}-1" for i in range(MAX_SERVICES)] + ["t/~other"] * 3
    )
    assert len(p.stats_by_source) == MAX_SERVICES + 2  # with the parent and ~other


@pytest.mark.parametrize("chunks", [1, 2, 3])
def test_a_truncation_marker_in_the_next_chunk_still_marks_its_message(chunks: int) -> None:
    """Streaming sources hand over the marker after the dump was already framed."""
    dump, cid = register()
    after, after_id = register(2, T0 + 1)
    marker = f"{stamp(T0 + 0.001)}    *** message truncated at 400 ***\n"
    pieces = {1: [dump + marker + after], 2: [dump, marker + after], 3: [dump, marker, after]}
    p = LogParser()
    events = []
    for piece in [*pieces[chunks], ""]:  # "" is the idle signal
        events += p.feed(LogChunk("d", Stream.STDERR, piece))
    msgs = [e for e in events if isinstance(e, SipMessage)]
    assert [(m.call_id, m.truncated) for m in msgs] == [(cid, True), (after_id, False)]
    assert p.stats.records == {"sip": 2, "truncation": 1}


def test_a_first_chunk_ending_in_caret_m_is_a_caret_m_paste() -> None:
    """The one "^M" may end the input: a one-line paste without a final newline."""
    _, svc, _ = parse(f"{stamp(T0)} rejecting REGISTER with no realm^M")
    assert [e.message for e in svc] == ["rejecting REGISTER with no realm"]
