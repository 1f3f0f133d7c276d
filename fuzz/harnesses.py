"""Fuzz targets for the ingest entry points: one function per target, ``bytes -> None``.

Pure Python, no atheris import: ``fuzz/run.py`` drives them under atheris (coverage-guided),
and ``tests/test_parser_fuzz.py`` replays every input ever found to break one.  A target
raises when the code under test raises, or when an invariant the rest of sipwatch relies on
is broken (bounded fields, bounded state, a closed counter vocabulary, no "internal" errors).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from unittest import mock

from sipwatch.ingest import framing, speedups
from sipwatch.ingest.framing import (
    MAX_PENDING,
    MAX_SERVICES,
    PARSE_ERROR_KINDS,
    RECORD_KINDS,
    RECORD_RE,
    LogParser,
)
from sipwatch.ingest.registrar import (
    MAX_MESSAGE,
    PinoError,
    classify_drachtio_line,
    classify_registrar_message,
    parse_pino_line,
)
from sipwatch.ingest.sip import MAX_FIELD, parse_sip_message, parse_uri_user_host
from sipwatch.ingest.transactions import RegisterTracker
from sipwatch.model import LogChunk, ServiceEvent, SipMessage, Stream

_STREAMS = (Stream.TEXT, Stream.STDERR, Stream.STDOUT)
_TEXT_FIELDS = (
    "reason",
    "request_uri",
    "call_id",
    "via_branch",
    "from_user",
    "from_host",
    "to_user",
    "to_host",
    "contact",
    "user_agent",
    "auth_username",
    "auth_realm",
    "x_reason",
    "www_authenticate",
)


def check_message(msg: SipMessage) -> None:
    """What every consumer of a SipMessage may rely on."""
    for name in _TEXT_FIELDS:
        value = getattr(msg, name)
        if not isinstance(value, str) or len(value) > MAX_FIELD:
            raise AssertionError(f"{name} unbounded: {len(value)}")
    if msg.cseq < 0 or msg.cseq >= 10**11:
        raise AssertionError(f"cseq {msg.cseq}")
    if msg.expires is not None and not 0 <= msg.expires < 10**11:
        raise AssertionError(f"expires {msg.expires}")
    if msg.is_request != (msg.status == 0) or not 0 <= msg.status <= 999:
        raise AssertionError(f"status {msg.status} for request={msg.is_request}")
    if msg.is_request and not msg.method:
        raise AssertionError("a request without a method")
    if not 0 <= msg.ts < 1e12:  # NaN fails too
        raise AssertionError(f"ts {msg.ts}")


def check_event(ev: ServiceEvent) -> None:
    if len(ev.message) > MAX_MESSAGE:
        raise AssertionError(f"message unbounded: {len(ev.message)}")
    for key, value in ev.attrs.items():
        if len(value) > MAX_FIELD:
            raise AssertionError(f"attr {key} unbounded: {len(value)}")
    if not 0 <= ev.ts < 1e12:  # NaN fails too
        raise AssertionError(f"ts {ev.ts}")


def framer(data: bytes) -> None:
    """Log text in chunks (size, stream, idle signals chosen by the first two bytes) through
    the framer and a small tracker."""
    if len(data) < 2:
        return
    flags, cut = data[0], data[1] + 1
    text = data[2:].decode("utf-8", "replace")
    stream = _STREAMS[flags % 3]
    idle = bool(flags & 4)
    parser = LogParser()
    tracker = RegisterTracker(max_pending=4, timer_f=1.0)
    events = []
    for i in range(0, len(text), cut):
        events += parser.feed(LogChunk("f", stream, text[i : i + cut]))
        if idle:
            events += parser.feed(LogChunk("f", stream, ""))
    events += parser.flush()
    for ev in events:
        if isinstance(ev, SipMessage):
            check_message(ev)
            tracker.on_message(ev)
            if tracker.inflight_transactions > 4 or tracker.inflight_attempts > 4:
                raise AssertionError("tracker state unbounded")
        else:
            check_event(ev)
    tracker.flush()
    if tracker.inflight_transactions or tracker.inflight_attempts:
        raise AssertionError("state left after flush")
    stats = parser.stats
    if not set(stats.records) <= set(RECORD_KINDS):
        raise AssertionError(f"record kinds {set(stats.records)}")
    if not set(stats.errors) <= set(PARSE_ERROR_KINDS):
        raise AssertionError(f"error kinds {set(stats.errors)}")
    if stats.errors.get("internal"):
        raise AssertionError("a record raised inside the parser")
    if len(parser.stats_by_source) > MAX_SERVICES + 3:
        raise AssertionError("channels unbounded")
    for ch in parser._channels.values():  # after flush nothing may be held
        if ch.pending:
            raise AssertionError(f"pending after flush: {len(ch.pending)} <= {MAX_PENDING}")


def sip(data: bytes) -> None:
    """A raw SIP message (as the HEP source hands it over) and the URI/parameter helpers."""
    text = data.decode("utf-8", "replace")
    msg = parse_sip_message(0.0, "f", "recv", len(data), "udp", "192.0.2.1", 5060, text)
    if msg is not None:
        check_message(msg)
    user, host = parse_uri_user_host(text)
    if len(user) > MAX_FIELD or len(host) > MAX_FIELD:
        raise AssertionError("uri parts unbounded")


def registrar(data: bytes) -> None:
    """One registrar line and one drachtio controller line."""
    text = data.decode("utf-8", "replace")
    ev = parse_pino_line(text, "f")
    if not isinstance(ev, PinoError):
        check_event(ev)
    kind, attrs = classify_registrar_message(text, {})
    if not kind or any(len(v) > MAX_FIELD for v in attrs.values()):
        raise AssertionError("classification unbounded")
    hit = classify_drachtio_line(text)
    if hit is not None and any(len(v) > MAX_FIELD for v in hit[1].values()):
        raise AssertionError("drachtio attrs unbounded")


def _compiled_hot_path() -> framing.HotPath:
    """The compiled hot path, also when ``SIPWATCH_NO_EXTENSIONS`` keeps sipwatch off it."""
    if speedups.COMPILED in framing.IMPLEMENTATIONS:
        return framing.IMPLEMENTATIONS[speedups.COMPILED]
    module = importlib.import_module("sipwatch.ingest._speedups")
    return framing.compiled_implementation(module)


def _records(found: object) -> list[tuple[object, ...]]:
    groups = range(RECORD_RE.groups + 1)
    return [(tuple(m.span(g) for g in groups), m.groups()) for m in found]  # type: ignore[attr-defined]


def compiled(data: bytes) -> None:
    """The compiled extension on attacker bytes (NUL, invalid UTF-8 decoded both ways a
    source does, lone CRs, huge lines): it must not crash or read past the text (bounds
    checks raise IndexError, a crash kills the fuzzer), and it must find exactly the records,
    build exactly the messages and frame exactly the events the pure-Python reference does
    (the text fed whole, and in pieces cut where the first byte says)."""
    hot_path = _compiled_hot_path()
    scan, build = hot_path.scan, hot_path.build
    for text in (data.decode("utf-8", "replace"), data.decode("utf-8", "surrogateescape")):
        found = list(scan(text))
        if _records(found) != _records(RECORD_RE.finditer(text)):
            raise AssertionError("the compiled scanner and RECORD_RE disagree")
        for m in found:
            g = m.groups("")
            if not g[framing.G_WHAT] or not g[framing.G_START]:
                continue
            args = (0.0, "f", g[framing.G_WHAT], 1, "udp", g[framing.G_IP], 1, g[framing.G_START])
            headers = framing._record_headers(g)
            reference = framing.IMPLEMENTATIONS[speedups.PYTHON].build
            if build(*args, headers) != reference(*args, headers):
                raise AssertionError("the compiled and the reference SipMessage differ")
        cut = (data[0] if data else 0) + 1
        framed = []
        for implementation in (hot_path, framing.IMPLEMENTATIONS[speedups.PYTHON]):
            with mock.patch.object(framing, "HOT_PATH", implementation):
                parser = LogParser()
            events = []
            for i in range(0, len(text), cut):
                events += parser.feed(LogChunk("f", Stream.TEXT, text[i : i + cut]))
            events += parser.flush()
            stats = parser.stats
            framed.append((events, stats.lines, stats.records, stats.errors))
        if framed[0] != framed[1]:
            raise AssertionError("the compiled and the reference framer differ")


TARGETS: dict[str, Callable[[bytes], None]] = {
    "framer": framer,
    "compiled": compiled,
    "sip": sip,
    "registrar": registrar,
}
