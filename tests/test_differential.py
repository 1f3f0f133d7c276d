"""Differential tests: the compiled hot path against the pure-Python reference.

``sipwatch.ingest._speedups`` replaces the pure-Python hot path (``framing.HotPath``: the
``RECORD_RE`` scan, ``sip.build_sip_message``, ``LogParser._frame_python`` and the line and
lone-CR counts); the pure-Python one stays the definition.  The properties here
generate drachtio logs the way the world writes them and the way an attacker would (prefix
styles, CRLF / ``^M`` / lone-CR mixes, truncations, noise, hostile headers, NUL, invalid
UTF-8, huge lines, Unicode digits where ASCII ones belong) and require the same records, the
same parsed events and counters, and byte-identical replay JSON from both.

``DIFFERENTIAL_EXAMPLES`` (environment) sets how many logs the main properties try: 300 by
default (the suite's run), 2000 in a run of this module of its own in CI (``.ci/run``: the
bookkeeping of 2000 examples would raise the suite process's peak memory, which the tests
measuring their children's peak RSS inherit).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipwatch import __version__
from sipwatch.ingest import framing, sip, speedups, transactions
from sipwatch.ingest.framing import RECORD_RE, LogParser
from sipwatch.model import Direction, LogChunk, ParsedEvent, SipMessage, Stream
from sipwatch.replay.driver import replay_paths
from sipwatch.replay.report import render_json
from sipwatch.sources.cri import CriDecoder
from tests.ingest_support import sip as sip_message
from tools.synth import Device, challenge_header, sip_dump, stamp


@pytest.fixture(autouse=True, scope="module")
def _compiled_even_when_disabled() -> Iterator[None]:
    """``SIPWATCH_NO_EXTENSIONS=1`` picks what sipwatch runs; these tests compare both, so
    they load the extensions themselves then (and fail, never skip, when they are not built)."""
    if COMPILED in framing.IMPLEMENTATIONS and COMPILED in transactions.IMPLEMENTATIONS:
        yield
        return
    module = importlib.import_module("sipwatch.ingest._speedups")
    hot_path = framing.compiled_implementation(module)
    tracker = importlib.import_module("sipwatch.ingest._transactions").RegisterTracker
    with (
        mock.patch.dict(framing.IMPLEMENTATIONS, {COMPILED: hot_path}),
        mock.patch.dict(transactions.IMPLEMENTATIONS, {COMPILED: tracker}),
    ):
        yield


@contextmanager
def running(implementation: str) -> Iterator[None]:
    """Every compiled part of the pipeline (parser and tracker) of one implementation."""
    with (
        mock.patch.object(framing, "HOT_PATH", framing.IMPLEMENTATIONS[implementation]),
        mock.patch.object(transactions, "TRACKER", transactions.IMPLEMENTATIONS[implementation]),
    ):
        yield


EXAMPLES = int(os.environ.get("DIFFERENTIAL_EXAMPLES", "300"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
T0 = 1772366400.0
COMPILED, PYTHON = speedups.COMPILED, speedups.PYTHON


def test_the_extension_runs_unless_disabled() -> None:
    """A checkout built with ``pip install -e .`` (CI's) runs the compiled path: a silent
    fallback would leave every other test checking Python against itself."""
    assert (PYTHON if speedups.DISABLED else COMPILED) == speedups.IMPLEMENTATION


# ------------------------------------------------------------------ generated logs
# Numbers as a hostile peer spells them (Expires, CSeq, the status code): Unicode white space
# and digits around and inside ASCII ones, signs, underscores, too many digits.
NUMBER_LIKE = st.text(
    alphabet=st.sampled_from(" \t\u00a0\u2003\u2028\x1c0123456789\u0663\uff11\u00b2+-_REGISTERx"),
    max_size=16,
)
HOSTILE_VALUES = st.one_of(
    st.text(max_size=40).map(lambda s: s.replace("\n", " ")),
    NUMBER_LIKE,
    st.sampled_from(
        [
            "\x00",
            "sip:\x00@\x00",
            '"\u00dcn\u00efc\u00f8d\u00e9" <sip:\u00fc@ex\u00e4mple.com>;tag=1',
            "<sip:1001@[2001:db8::1]:5060>;expires=\u0663\u0666\u0660\u0660",
            "<SIPS:user:pw@Host.Example.COM;transport=tls>",
            "<tel:+1555>",
            "sip:[unclosed",
            'Digest username="1001",realm=\'x\', nonce="n"',
            'Digest USERNAME = "a" , ReAlM=r',
            'digest cnonce="c", username=u',
            "SIP/2.0/UDP 1.2.3.4;Branch = z9hG4bKx;rport",
            "SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK\u2028x",
            "SIP/2.0/UDP 1.2.3.4;BRANCH=abc,def",
            "\uff11\uff12\uff13 REGISTER",
            "  42   REGISTER  ",
            "\u017fip:1@x",
            "\u0130nvalid",
            "x" * 300,
        ]
    ),
)
HEADER_NAMES = st.sampled_from(
    [
        "Via",
        "v",
        "VIA",
        "Call-ID",
        "i",
        "call-id",
        "CSeq",
        "From",
        "f",
        "To",
        "t",
        "Contact",
        "m",
        "Expires",
        "User-Agent",
        "Authorization",
        "Proxy-Authorization",
        "X-Reason",
        "WWW-Authenticate",
        "Proxy-Authenticate",
        "Max-Forwards",
        "Tox",
        "Via-x",
        "Content-Length",
    ]
)
START_LINES = st.one_of(
    st.sampled_from(
        [
            "REGISTER sip:acme.example.com SIP/2.0",
            "register sip:acme.example.com SIP/2.0",
            "SIP/2.0 200 OK",
            "SIP/2.0 401 Unauthorized",
            "SIP/2.0 403 Forbidden",
            "SIP/2.0 2000 OK",
            "SIP/2.0 099 Low",
            "SIP/2.0 \u0662\u0660\u0660 OK",
            "OPTIONS sip:x SIP/2.0",
            "HELLO there",
            "",
        ]
    ),
    st.text(max_size=30).map(lambda s: s.replace("\n", " ")),
    NUMBER_LIKE.map(lambda s: "SIP/2.0 " + s),
)


@st.composite
def hostile_dump(draw: st.DrawFn, ts: float) -> str:
    """A SIP dump with arbitrary headers, spellings, separators and a true or false size."""
    headers = draw(
        st.lists(
            st.tuples(
                HEADER_NAMES, st.sampled_from([": ", ":", " : ", "\t:\t", " "]), HOSTILE_VALUES
            ),
            max_size=10,
        )
    )
    lines = [draw(START_LINES)] + [f"{n}{sep}{v}" for n, sep, v in headers]
    if draw(st.booleans()):
        lines.insert(draw(st.integers(1, len(lines))), " folded continuation")
    dump = sip_dump(ts, draw(st.sampled_from(["recv", "send"])), "udp", "203.0.113.9", 5060, lines)
    head, rest = dump.split("\n", 1)
    size_mode = draw(st.sampled_from(["true", "true", "short", "long", "huge", "unicode"]))
    if size_mode != "true":
        size = {"short": "12", "long": "9000", "huge": "9" * 25, "unicode": "\u0664\u0662"}[
            size_mode
        ]
        head = head.replace(head.split(" ")[3], size, 1)
    if draw(st.booleans()):
        head = head.replace("udp/", draw(st.sampled_from(["TCP/", "wss/", "x/", "sctpxx/"])), 1)
    return head + "\n" + rest


@st.composite
def record(draw: st.DrawFn) -> str:
    ts = T0 + draw(st.integers(0, 10**6)) / 1000
    kind = draw(
        st.sampled_from(
            ["register", "challenge", "hostile", "noise", "truncation", "pino", "legacy", "raw"]
        )
    )
    dev = Device(str(draw(st.integers(1000, 1010))), "acme.example.com", "203.0.113.9")
    if kind == "register":
        return sip_dump(ts, "recv", "udp", dev.ip, 5060, dev.register())
    if kind == "challenge":
        req = dev.register()
        resp = dev.response(req, 401, "Unauthorized", [challenge_header("acme.example.com")])
        return sip_dump(ts, "send", "udp", dev.ip, 5060, resp)
    if kind == "hostile":
        return draw(hostile_dump(ts))
    if kind == "truncation":
        return f"{stamp(ts)}    *** message truncated at 12 ***\n"
    if kind == "pino":
        return draw(
            st.sampled_from(
                [
                    '{"level":30,"time":1,"msg":"hello"}\n',
                    '{"level":50,"time":1772366400000,"msg":"registration failed","err":"x"}\n',
                    "{not json\n",
                    '{"\n',
                ]
            )
        )
    if kind == "legacy":
        return draw(
            st.sampled_from(
                [
                    "0a1b2c3d|2017-Jun-27 07:48:59.059161| recv 10 bytes from udp/[1.2.3.4]:5060 at x:\n"
                    "REGISTER sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKl\r\n\r\n \n",
                    "0A1B2C3D|2017-jun-27 07:48:59.1|  DrachtioController::run\n",
                    "0a1b2c3d|2017-Jux-27 07:48:59.0591612345|x\n",
                ]
            )
        )
    if kind == "raw":
        return draw(st.text(max_size=200)) + "\n"
    return (
        draw(
            st.one_of(
                st.text(max_size=80).map(lambda s: f"{stamp(ts)} {s.replace(chr(10), ' ')}"),
                st.sampled_from(
                    [
                        f"{stamp(ts)} Client::read_handler read: 1|sip|2|REGISTER sip:x SIP/2.0",
                        f"{stamp(ts)} Sending response",
                        f"{stamp(ts)} DrachtioController::processMessageStatelessly: rejecting REGISTER with no realm",
                        f"{stamp(ts)} recv 12 bytes from udp/[1.2.3.4]:5060 at 00:00:00.000000:",
                        "\u0662\u0660\u0662\u0666-\u0661\u0661-\u0662\u0667 \u0660\u0668:\u0660\u0660:\u0660\u0660.\u0660\u0660\u0661\u0660\u0660\u0660 recv 1 bytes from udp/[1.2.3.4]:\u0661\u0662:",
                        "\x00\x00",
                        "",
                        " ",
                    ]
                ),
            )
        )
        + "\n"
    )


PREFIXES = st.sampled_from(["plain", "docker-t", "compose", "kubectl", "pm2", "indent", "tab"])
LINE_ENDS = st.sampled_from(["as-is", "crlf", "caret-m", "lone-cr", "mixed"])


def _prefixed(line: str, style: str, i: int) -> str:
    if style == "docker-t":
        return f"2026-11-27T08:00:{i % 60:02d}.123456789Z {line}"
    if style == "compose":
        return f"{'drachtio-1' if i % 3 else 'registrar-1'}  | {line}"
    if style == "kubectl":
        return f"[pod/sbc-0/drachtio] {line}"
    if style == "pm2":
        return f"0|sbc-sip-sidecar  | {line}"
    if style == "indent":
        return "    " + line
    if style == "tab":
        return "\t" + line
    return line


@st.composite
def log_text(draw: st.DrawFn) -> str:
    records = draw(st.lists(record(), max_size=12))
    if draw(st.integers(0, 10)) == 0:  # now and then a long line (huge ones: test_huge_...)
        records.insert(0, f"{stamp(T0)} " + "y" * draw(st.integers(1_000, 20_000)) + "\n")
    text = "".join(records)
    style = draw(PREFIXES)
    if style != "plain":
        text = "".join(_prefixed(x, style, i) for i, x in enumerate(text.splitlines(True)))
    ends = draw(LINE_ENDS)
    if ends == "crlf":
        text = text.replace("\r\n", "\n").replace("\n", "\r\n")
    elif ends == "caret-m":
        text = text.replace("\r\n", "\n").replace("\n", "^M\n")
    elif ends == "lone-cr":
        text = text.replace("\r\n", "\r")
    elif ends == "mixed":
        lines = text.splitlines(True)
        text = "".join(
            x.replace("\r\n", "\n").replace("\n", draw(st.sampled_from(["\n", "\r\n", "^M\n"])))
            for x in lines
        )
    if draw(st.booleans()):  # cut mid-record: a log starts or ends anywhere
        a = draw(st.integers(0, len(text)))
        b = draw(st.integers(a, len(text)))
        text = text[a:b]
    if draw(st.booleans()):  # invalid UTF-8 as a source decodes it
        raw = text.encode("utf-8", "surrogatepass")
        pos = draw(st.integers(0, len(raw)))
        text = (raw[:pos] + b"\xff\xfe\xc3" + raw[pos:]).decode("utf-8", "replace")
    return text


def _events(text: str, implementation: str, cuts: list[int], stream: Stream) -> tuple[object, ...]:
    p = LogParser(implementation=implementation)
    out: list[ParsedEvent] = []
    pos = 0
    for cut in [*cuts, len(text)]:
        if cut > pos:
            out += p.feed(LogChunk("src", stream, text[pos:cut]))
            pos = cut
        if cut % 3 == 0:
            out += p.feed(LogChunk("src", stream, ""))  # an idle signal
    out += p.flush()
    stats = {k: (v.lines, dict(v.records), dict(v.errors)) for k, v in p.stats_by_source.items()}
    return out, stats


# ------------------------------------------------------------------ the properties
@SETTINGS
@given(
    log_text(),
    st.lists(st.integers(0, 2000), max_size=6).map(sorted),
    st.sampled_from([Stream.TEXT, Stream.STDOUT, Stream.STDERR]),
)
def test_both_implementations_parse_every_log_alike(
    text: str, cuts: list[int], stream: Stream
) -> None:
    """Same events (every field of every SipMessage / ServiceEvent), same counters."""
    assert _events(text, COMPILED, cuts, stream) == _events(text, PYTHON, cuts, stream)


@settings(max_examples=max(50, EXAMPLES // 10), deadline=None)
@given(log_text(), st.booleans())
def test_cri_decoded_logs_parse_alike(text: str, stderr: bool) -> None:
    """The Kubernetes CRI format: decoded by the file source's decoder, then framed."""
    tag = "stderr" if stderr else "stdout"
    cri = "".join(
        f"2026-11-27T08:00:00.{i:09d}Z {tag} {'P' if i % 4 == 3 else 'F'} {x.rstrip(chr(10))}\n"
        for i, x in enumerate(text.splitlines(True))
    )
    results = []
    for implementation in (COMPILED, PYTHON):
        p = LogParser(implementation=implementation)
        out: list[ParsedEvent] = []
        dec = CriDecoder(1 << 20)
        for s, decoded in [*dec.feed(cri), *dec.flush()]:
            out += p.feed(LogChunk("pod", s, decoded))
        out += p.flush()
        results.append((out, p.stats.lines, p.stats.records, p.stats.errors))
    assert results[0] == results[1]


@settings(max_examples=max(50, EXAMPLES // 5), deadline=None)
@given(st.lists(log_text(), min_size=1, max_size=2), st.data())
def test_replay_json_is_byte_identical(texts: list[str], data: st.DataObject) -> None:
    """``sipwatch replay --format json`` from files: the same bytes from both."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, text in enumerate(texts):
            path = Path(tmp) / f"log{i}.log"
            raw = text.encode("utf-8", "surrogateescape")
            if data.draw(st.booleans()):
                raw = raw.replace(b"\xef\xbf\xbd", b"\xc3\x28", 1)  # invalid UTF-8 on disk
            path.write_bytes(raw)
            paths.append(str(path))
        outputs = []
        for implementation in (COMPILED, PYTHON):
            with running(implementation):
                res = replay_paths(paths)
            outputs.append(render_json(res).replace(tmp, "<tmp>"))
    assert outputs[0] == outputs[1]


_HUGE = r"""
import sys
from sipwatch.ingest.framing import MAX_PENDING, LogParser
from sipwatch.model import LogChunk, Stream
from tools.synth import Device, sip_dump, stamp

dump = sip_dump(1772366400.0, "recv", "udp", "203.0.113.9", 5060, Device("1", "a.example", "203.0.113.9").register())
for size in (70_000, MAX_PENDING + 1_000):
    for filler in ("y", "\U0001f600"):
        for end in ("\n", "\r\n"):
            line = stamp(1772366400.0) + " " + filler * size
            texts = (line + end + dump, dump + line + end + dump, dump.replace("REGISTER", filler * size, 1))
            for text in texts:
                results = []
                for implementation in ("compiled", "python"):
                    p = LogParser(implementation=implementation)
                    events = []
                    for i in range(0, len(text), 65_536):  # a file source's read size
                        events += p.feed(LogChunk("s", Stream.TEXT, text[i : i + 65_536]))
                    events += p.flush()
                    results.append((events, p.stats.lines, p.stats.records, p.stats.errors))
                assert results[0] == results[1], (size, filler, end)
print("ok")
"""


def test_huge_lines_parse_alike() -> None:
    """Lines past ``MAX_PENDING`` (cut, counted), one-byte and four-byte text, in a child
    process: megabytes of UCS-4 copies would otherwise raise this test process's peak memory,
    which tests measuring their own children's peak RSS inherit through fork."""
    env = {**os.environ}
    if speedups.DISABLED:  # the child loads the extension as the fixture does
        env.pop(speedups.NO_EXTENSIONS_ENV)
    out = subprocess.run(
        [sys.executable, "-c", _HUGE],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


_GROUPS = range(RECORD_RE.groups + 1)


def _matches(found: object) -> list[tuple[object, ...]]:
    return [
        (tuple(m.span(g) for g in _GROUPS), m.groups(""), tuple(m.group(g) for g in _GROUPS))
        for m in found  # type: ignore[attr-defined]
    ]


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        log_text(),
        st.text(
            alphabet=st.sampled_from('0123456789-: .|{"\r\n\tabVvi\u0663xrecvsend[]/'), max_size=300
        ),
        st.binary(max_size=2000).map(lambda b: b.decode("utf-8", "replace")),
    )
)
def test_the_scanner_finds_the_regex_records(text: str) -> None:
    """Record by record: every group's span and value as ``RECORD_RE.finditer`` has them."""
    compiled_scan = framing.IMPLEMENTATIONS[COMPILED].scan
    assert _matches(compiled_scan(text)) == _matches(RECORD_RE.finditer(text))


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    START_LINES,
    st.lists(HOSTILE_VALUES, min_size=len(sip.HEADER_FIELDS), max_size=len(sip.HEADER_FIELDS)),
    st.sampled_from(["recv", "send"]),
    st.integers(0, 10**18),
)
def test_the_message_builder_builds_the_reference_message(
    start: str, headers: list[str], what: str, size: int
) -> None:
    build = framing.IMPLEMENTATIONS[COMPILED].build
    args = (T0, "s", what, size, "udp", "203.0.113.9", 5060, start + " SIP/2.0"[: len(start) % 9])
    assert build(*args, tuple(headers)) == sip.build_sip_message(*args, tuple(headers))


# ------------------------------------------------------------------ the tracker
# Message streams denser in the tracker's corner cases than any log: few Call-IDs, so
# branches, CSeqs and attempts collide; branches reused across Call-IDs or missing; answers
# without their request, retransmissions after the answer, clocks that jump past Timer F or
# go back, tiny bounds so eviction and the attempt trim run, and idle ticks in between.
TRACKER_MESSAGES = st.builds(
    sip_message,
    st.floats(min_value=0, max_value=80).map(lambda dt: T0 + round(dt, 1)),
    status=st.sampled_from([0, 0, 0, 0, 100, 200, 401, 401, 401, 407, 403, 500]),
    direction=st.sampled_from(list(Direction)),
    call_id=st.sampled_from(["a", "b", "c", ""]),
    cseq=st.integers(0, 3),
    branch=st.sampled_from(["", "z9hG4bK1", "z9hG4bK2", "z9hG4bK3"]),
    method=st.sampled_from(["REGISTER", "REGISTER", "OPTIONS"]),
    auth=st.sampled_from(["", "1001"]),
    to_user=st.sampled_from(["1001", "", "1002"]),
    expires=st.sampled_from([None, 0, 3600]),
    x_reason=st.sampled_from(["", "Invalid credentials"]),
)
TRACKER_STEPS = st.lists(
    st.one_of(TRACKER_MESSAGES, st.floats(0, 120).map(lambda dt: T0 + dt)), max_size=60
)


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    TRACKER_STEPS,
    st.sampled_from([32.0, 5.0]),
    st.sampled_from([100_000, 3, 1]),
    st.sampled_from([None, 4, 1]),
)
def test_both_trackers_emit_the_same_items_in_the_same_order(
    steps: list[SipMessage | float],
    timer_f: float,
    max_pending: int,
    max_attempts: int | None,
) -> None:
    """Every call's completions, the emitted objects as they end up (a retransmission still
    changes its transaction after it was emitted), the counters and the open state: equal."""
    runs = []
    for implementation in (COMPILED, PYTHON):
        tracker = transactions.new_tracker(
            implementation,
            timer_f=timer_f,
            max_pending=max_pending,
            max_pending_attempts=max_attempts,
        )
        calls, emitted = [], []
        for step in steps:
            done = tracker.advance(step) if isinstance(step, float) else tracker.on_message(step)
            calls.append([dataclasses.astuple(item) for item in done])
            emitted += done
            calls.append((tracker.inflight_transactions, tracker.inflight_attempts, tracker.now))
        done = tracker.flush()
        calls.append([dataclasses.astuple(item) for item in done])
        emitted += done
        runs.append((calls, emitted, tracker.stats, tracker.inflight_transactions))
    assert runs[0] == runs[1]


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.text(alphabet=st.sampled_from("\r\n a\u00fc\U0001f600\x00"), max_size=400))
def test_the_line_and_lone_cr_counts_are_the_references(text: str) -> None:
    compiled, python = framing.IMPLEMENTATIONS[COMPILED], framing.IMPLEMENTATIONS[PYTHON]
    assert compiled.count_lines(text) == python.count_lines(text) == text.count("\n")
    assert compiled.lone_cr(text) == python.lone_cr(text)


def test_the_version_and_build_info_name_the_implementation() -> None:
    from prometheus_client import CollectorRegistry

    from sipwatch.cli.main import build_parser
    from sipwatch.metrics import SipwatchMetrics

    parser = build_parser()
    version = next(a for a in parser._actions if "--version" in a.option_strings)
    assert f"({speedups.IMPLEMENTATION} parser)" in str(version.version)  # type: ignore[attr-defined]
    reg = CollectorRegistry()
    SipwatchMetrics(reg)
    labels = {"version": __version__, "implementation": speedups.IMPLEMENTATION}
    assert reg.get_sample_value("sipwatch_build_info", labels) == 1.0
