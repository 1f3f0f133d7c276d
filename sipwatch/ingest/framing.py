"""Log framing and parsing: ``LogChunk`` text in, ``SipMessage``/``ServiceEvent`` out.

Framing works on whole chunks, not lines: record starts (a drachtio timestamp, the pre-2017
``%08x|date|`` stamp, or a pino ``{"`` line) are found with one regex scan in C, so the cost per
SIP message is a few string operations rather than a Python loop over its lines.  Prefixes that
deployments put in front of every line are handled per channel, decided once from the first
lines of the channel:

* ``docker logs -t`` / ``kubectl logs --timestamps`` RFC3339Nano and pm2 ``--time`` stamps are
  removed from the whole chunk with one ``re.sub``;
* ``docker compose logs`` (``service-1  | ``), pm2 (``0|app  | ``) and ``kubectl --prefix``
  (``[pod/x/c] ``) lines are demultiplexed by their service name, because compose interleaves
  lines of different containers and a drachtio record must only collect its own lines.

A record is only complete when the next one starts, so each channel holds back its last record
until more text, an idle signal (empty chunk) or ``flush()`` arrives.

Pastes from forums and chats come in two more shapes, normalised before framing: lines ending
in a literal two-character ``^M`` (a CR shown by ``cat -v`` or vim) become CRLF lines, and a
paste indented as a whole (one space, a tab, a 4-space code block: up to 8 blanks, decided per
channel with the prefix style) loses that indentation.

Everything a record yields is counted in ``ParseStats``; the kinds are a closed vocabulary
(``RECORD_KINDS``, ``PARSE_ERROR_KINDS``) so the metrics built from them stay bounded.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from types import ModuleType
from typing import NamedTuple

from sipwatch.ingest import sip, speedups
from sipwatch.ingest.registrar import PinoError, classify_drachtio_line, parse_pino_line
from sipwatch.ingest.sip import header_getter, headers_pattern
from sipwatch.model import LogChunk, ParsedEvent, ServiceEvent, ServiceOrigin, SipMessage, Stream

# A record starts at a drachtio timestamp, a legacy "%08x|2017-Jun-27 07:48:59.059161|" stamp,
# or a pino JSON object.
_RECORD_START = (
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} "
    r"|[0-9a-fA-F]{8}\|\d{4}-[A-Za-z]{3}-\d\d \d\d:\d\d:\d\d\.\d{1,9}\|"
    r'|\{"'
)
RECORD_START_RE = re.compile("^(?:" + _RECORD_START + ")", re.MULTILINE)
_RECORD_START_AT = re.compile(_RECORD_START)  # for match(line, pos): "^" would not anchor at pos
_NOT_START = "(?!" + _RECORD_START + ")"
# the rest of a record: every following line that does not start a new record
_REST = "(?:\n" + _NOT_START + "[^\n]*)*"

# One regex walks a whole chunk, one match per record, capturing everything a SIP dump
# needs: the drachtio stamp, the sofia header line, the start line and the header values.
# Framing and header extraction both run inside the regex engine; Python touches each
# record once.  Group numbers are fixed below (G_*).
RECORD_RE = re.compile(
    "^(?:"
    # drachtio stamp, or the pre-2017 "%08x|2017-Jun-27 07:48:59.059161| " one
    + r"(?:(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}) "
    + r"|[0-9a-fA-F]{8}\|(\d{4}-[A-Za-z]{3}-\d\d \d\d:\d\d:\d\d\.\d{1,9})\| ?)"
    + "(?:"
    # a SIP dump: "recv 612 bytes from udp/[203.0.113.5]:5060 at 12:00:00.123400:"
    + r"(recv|send) (\d+) bytes (?:from|to) ([A-Za-z]{2,5})/\[([^\]\n]{0,64})\]:(\d{1,5})[^\n]*"
    + "(?:\n"
    + _NOT_START
    + "([^\r\n]*)\r?"  # start line
    + headers_pattern(_NOT_START + r"(?!\r?\n|\r?\Z)")
    + ")?"
    + _REST
    # any other drachtio record (controller lines, sofia debug, truncation markers)
    + "|(?P<line>[^\n]*)"
    + _REST
    + ")"
    # a pino JSON line (and any non-JSON lines after it, e.g. a stack trace)
    + r'|(?P<pino>\{"[^\n]*)'
    + _REST
    + ")",
    re.MULTILINE,
)
G_TS, G_LEGACY_TS, G_WHAT, G_SIZE, G_PROTO, G_IP, G_PORT, G_START = range(8)
G_LINE = RECORD_RE.groupindex["line"] - 1
G_PINO = RECORD_RE.groupindex["pino"] - 1
_record_headers = header_getter(RECORD_RE)

# The hot path, in two implementations (``sipwatch.ingest.speedups``): the records of a text
# (``RECORD_RE.finditer`` or the compiled scanner's match-like records, same groups), the SIP
# message built from one, and the walk over a channel's text that turns records into events
# (``LogParser._frame_python`` or the compiled ``Framer``).  The pure-Python one is the
# reference; ``HOT_PATH`` (end of module) is what a LogParser uses unless told otherwise.
Scan = Callable[[str], Iterable["re.Match[str]"]]
Build = Callable[..., SipMessage | None]
Frame = Callable[["LogParser", "_Channel", str, list[ParsedEvent], bool], None]


class HotPath(NamedTuple):
    """One implementation of what a LogParser does per character and per record; the pure
    one and the compiled one must give the same results (``tests/test_differential.py``)."""

    scan: Scan
    build: Build
    frame: Frame
    lone_cr: Callable[[str], bool]  # the text has a CR not followed by LF
    count_lines: Callable[[str], int]  # its "\n" characters


def _has_lone_cr(text: str) -> bool:
    return "\r" in text and text.count("\r") != text.count("\r\n")


def _count_lines(text: str) -> int:
    return text.count("\n")


_MONTHS = {
    m: i
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}
# Whole-chunk prefixes: docker/kubectl RFC3339Nano ("...Z ") and pm2 --time ("...: ").
_TS_PREFIX = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?:? "
_TS_PREFIX_RE = re.compile(_TS_PREFIX)
_TS_PREFIX_STRIP_RE = re.compile("^" + _TS_PREFIX, re.MULTILINE)
_ANSI = r"(?:\x1b\[[0-9;]*m)*"
# Per-line prefixes that name a service: compose, pm2 ("0|sbc-sip-sidecar | "), kubectl --prefix.
_SERVICE_PREFIX_RE = re.compile(
    _ANSI
    + r"(?:\[(?:pod/)?(?P<k8s>[^\]\s]+)\] "
    + r"|(?:\d+\|)?(?P<svc>[A-Za-z0-9][\w.-]*) *"
    + _ANSI
    + r"\| ?)"
    + _ANSI
    + " ?(?:"
    + _TS_PREFIX
    + ")?"
)
_LONE_CR_RE = re.compile(r"\r(?!\n)")
_TRUNCATED = "*** message truncated"  # sofia's marker after a dump it cut
_CARET_M_RE = re.compile(r"\^M(?=\n|\Z)")  # a CR pasted as the two characters "^M"
_CARET_M_SNIFF = 1 << 16  # a channel's first chunk shows "^M" line ends within this
MAX_INDENT = 8  # blanks a whole paste may be indented by (a 4-space markdown block, a tab)
_INDENT_RE = re.compile(rf"[ \t]{{1,{MAX_INDENT}}}")
# indent -> the regex that strips up to that many blanks from every line
_INDENT_STRIP = {n: re.compile(rf"^[ \t]{{1,{n}}}", re.MULTILINE) for n in range(1, MAX_INDENT + 1)}

MAX_SERVICES = 32  # demultiplexed channels per source: a compose project has a dozen
MAX_PENDING = 1 << 20  # a record larger than this is cut: bounded memory under garbage input
_DETECT_LINES = 200  # lines looked at to decide a channel's prefix style

# The most bytes one SIP dump can announce (``recv N bytes``).  sofia-sip's tport_log_msg
# prints the size of the message it dumps: a UDP datagram carries at most 65,535 bytes, and on
# stream transports (tcp, tls, ws, wss, sctp) nta refuses incoming messages larger than
# NTATAG_MAXSIZE, 2 MiB by default (drachtio does not change it).  A larger count cannot be
# true: the dump is still parsed, the anomaly counted ("sip_length"), and the count is never
# used to decide which records are inside the dump.
MAX_UDP_DUMP = 65_535
MAX_STREAM_DUMP = 2 * 1024 * 1024
IMPOSSIBLE_SIZE = 10**18  # what a count of more than 18 digits is taken as (int() stays cheap)
# A dump logged at most this many bytes short of its count still ran to its end (a trailing
# space or a CR lost in copying).  A forged record inside a dump leaves at least 4 bytes after
# its start ('{"' plus the dump's " \n"), so the slack never lets one through.
DUMP_SLACK = 2

# What ParseStats counts.  Records: every framed record is exactly one of these.
RECORD_KINDS = (
    "sip",  # a recv/send SIP dump -> SipMessage
    "service",  # a drachtio line that bears on REGISTER -> ServiceEvent
    "pino",  # a registrar pino line -> ServiceEvent
    "truncation",  # "*** message truncated at N ***"
    "embedded",  # text inside a SIP dump that looks like a record: skipped, never parsed
    "api",  # drachtio <-> application traffic (Client::..., Sending response)
    "other",  # everything else (sofia debug, controller lines, text before the first record)
)
# Parse errors: a record that could not be used, or a framing anomaly.
PARSE_ERROR_KINDS = (
    "sip_header_only",  # a dump header with no SIP line after it
    "sip_start_line",  # a dump whose first line is neither a request nor a status line
    "sip_length",  # a dump announcing a size that cannot be true (see MAX_UDP_DUMP)
    PinoError.NOT_JSON.value,  # a {" line that is not a JSON object
    PinoError.BOUNDS.value,  # a pino line too long or deep, or with an impossible time/level
    "timestamp",  # a drachtio stamp that is not a date
    "internal",  # a record that raised inside the parser (a bug: the record is dropped)
)


class PrefixMode:
    UNKNOWN = 0
    NONE = 1
    TIMESTAMP = 2  # strip a leading RFC3339/pm2 timestamp from every line
    SERVICE = 3  # demultiplex "service | " lines


@dataclass(slots=True)
class ParseStats:
    """Counters the metrics sink and the replay report read; plain ints, cheap to bump."""

    lines: int = 0
    records: dict[str, int] = field(default_factory=dict)  # RECORD_KINDS
    errors: dict[str, int] = field(default_factory=dict)  # PARSE_ERROR_KINDS

    def record(self, kind: str, n: int = 1) -> None:
        self.records[kind] = self.records.get(kind, 0) + n

    def error(self, kind: str, n: int = 1) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + n


@dataclass(slots=True)
class _Channel:
    source: str
    stream: Stream
    mode: int = PrefixMode.UNKNOWN
    indent: int = 0  # blanks stripped from every line (a paste indented as a whole)
    caret_m: bool | None = None  # lines end in a literal "^M" (decided by the first chunk)
    detect_budget: int = _DETECT_LINES
    pending: str = ""
    children: int = 0  # demultiplexed service channels created under this one


class LogParser:
    """Turns chunks of log text into parsed events, keeping per-channel framing state.

    ``tz_offset`` is subtracted from drachtio timestamps (they are in the container's local
    time, normally UTC, so the offset is normally 0).  Counters are kept per source in
    ``stats_by_source`` (plain ints: the metrics sink reads them at scrape time).
    """

    def __init__(self, *, tz_offset: float = 0.0, implementation: str | None = None) -> None:
        self._tz = tz_offset
        # the hot path: this module's default, or the named one of IMPLEMENTATIONS (the
        # differential tests run both side by side)
        self._scan, self._build, self._frame_records, self._lone_cr, self._count_lines = (
            HOT_PATH if implementation is None else IMPLEMENTATIONS[implementation]
        )
        self._channels: dict[tuple[str, Stream], _Channel] = {}
        self._minute_cache: dict[str, float] = {}
        self.stats_by_source: dict[str, ParseStats] = {}

    def stats_for(self, source: str) -> ParseStats:
        st = self.stats_by_source.get(source)
        if st is None:
            st = self.stats_by_source[source] = ParseStats()
        return st

    @property
    def stats(self) -> ParseStats:
        """All sources added up."""
        total = ParseStats()
        for st in self.stats_by_source.values():
            total.lines += st.lines
            for k, v in st.records.items():
                total.record(k, v)
            for k, v in st.errors.items():
                total.errors[k] = total.errors.get(k, 0) + v
        return total

    # ------------------------------------------------------------------ public API
    def feed(self, chunk: LogChunk) -> list[ParsedEvent]:
        """Parse a chunk; an empty chunk is the idle signal and flushes held records.

        In this order: lines are counted (every "\\n", before any change); a "^M" that ends
        a line becomes "\\r" (in a channel whose first chunk has such a line within its first
        64 KiB: a paste, never a live stream); a CR not followed by LF becomes "\\n"; the prefix
        style and indentation are decided from its first non-blank lines (once); the
        indentation is stripped from every line; then the chunk is framed, after stripping
        timestamp prefixes or demultiplexing service prefixes into "<source>/<service>".
        """
        out: list[ParsedEvent] = []
        if not chunk.text:
            self._flush_source(chunk.source, chunk.stream, out)
            return out
        text = chunk.text
        self.stats_for(chunk.source).lines += self._count_lines(text)
        ch = self._channel(chunk.source, chunk.stream)
        if ch.caret_m is None:  # one look per channel: scanning every chunk costs 5%
            head = text[:_CARET_M_SNIFF]
            ch.caret_m = "^M\n" in head or head.endswith("^M")
        if ch.caret_m:
            text = _CARET_M_RE.sub("\r", text)
        if self._lone_cr(text):
            text = _LONE_CR_RE.sub("\n", text)
        if ch.mode == PrefixMode.UNKNOWN:
            self._detect(ch, text)
        if ch.indent:
            text = _INDENT_STRIP[ch.indent].sub("", text)
        if ch.mode == PrefixMode.SERVICE:
            self._feed_demux(ch, text, out)
        else:
            if ch.mode == PrefixMode.TIMESTAMP:
                text = _TS_PREFIX_STRIP_RE.sub("", text)
            self._frame(ch, text, out, final=False)
        return out

    def flush(self) -> list[ParsedEvent]:
        """End of input: emit every held record."""
        out: list[ParsedEvent] = []
        for ch in list(self._channels.values()):
            self._frame(ch, "", out, final=True)
        return out

    def held_back(self, source: str, stream: Stream) -> str | None:
        """The text the channel ``(source, stream)`` still holds back ("" when none).

        Why: a source's read position may only be saved as a restart point once nothing
        before it is held here (:mod:`sipwatch.sources.positions`).  The text returned is a
        suffix of the text fed to the channel, character for character (lone CRs become LFs,
        one character each).  ``None`` means something is held but it is *not* such a suffix:
        the channel strips line prefixes or demultiplexes ``service |`` lines into child
        channels, so where it starts in the fed text is unknown.
        """
        ch = self._channels.get((source, stream))
        if ch is None:
            return ""
        if ch.mode == PrefixMode.SERVICE:
            prefix = source + "/"
            for child in self._channels.values():
                if child.pending and child.stream == stream and child.source.startswith(prefix):
                    return None
            return ""
        if ch.mode == PrefixMode.TIMESTAMP and ch.pending:
            return None
        return ch.pending

    # ------------------------------------------------------------------ framing
    def _channel(self, source: str, stream: Stream) -> _Channel:
        key = (source, stream)
        ch = self._channels.get(key)
        if ch is None:
            ch = self._channels[key] = _Channel(source, stream)
        return ch

    def _flush_source(self, source: str, stream: Stream, out: list[ParsedEvent]) -> None:
        for ch in list(self._channels.values()):
            # demultiplexed children are named "<source>/<service>"
            if ch.stream == stream and (ch.source == source or ch.source.startswith(source + "/")):
                self._frame(ch, "", out, final=True)

    def _detect(self, ch: _Channel, text: str) -> None:
        """Decide the channel's prefix style (and indentation) from its first meaningful lines.

        A line indented by up to ``MAX_INDENT`` blanks whose rest shows a style decides both:
        the whole paste was indented, and every line loses up to that many leading blanks.
        """
        pos = 0
        n = len(text)
        while pos < n and ch.detect_budget > 0:
            end = text.find("\n", pos)
            if end < 0:
                end = n
            line = text[pos:end]
            pos = end + 1
            if not line.strip():
                continue
            ch.detect_budget -= 1
            indent = _INDENT_RE.match(line)
            mode = _prefix_mode(line[indent.end() :] if indent else line)
            if mode:
                ch.mode = mode
                ch.indent = indent.end() if indent else 0
                return
        if ch.detect_budget <= 0:
            ch.mode = PrefixMode.NONE

    def _feed_demux(self, ch: _Channel, text: str, out: list[ParsedEvent]) -> None:
        parts: dict[str, list[str]] = {}
        match = _SERVICE_PREFIX_RE.match
        # only "\n" ends a line: str.splitlines() would also split on \x0b, \x1c, \u2028...
        # which a device can put in a header to forge a "service | " prefix
        lines = text.split("\n")
        last = lines.pop()
        for line in (*(x + "\n" for x in lines), last) if last else (x + "\n" for x in lines):
            m = match(line)
            if m is not None:
                name = m.group("k8s") or m.group("svc") or ""
                rest = line[m.end() :]
            else:
                name = ""
                rest = line
            bucket = parts.get(name)
            if bucket is None:
                parts[name] = [rest]
            else:
                bucket.append(rest)
        for name, lines in parts.items():
            # lines without a prefix get their own child: the parent keeps demultiplexing
            key = f"{ch.source}/{name or '-'}"
            if (key, ch.stream) not in self._channels:
                if ch.children >= MAX_SERVICES:  # more "services" than a deployment has
                    key = f"{ch.source}/~other"
                else:
                    ch.children += 1
            child = self._channel(key, ch.stream)
            child.mode = PrefixMode.NONE
            self._frame(child, "".join(lines), out, final=False)

    def _frame(self, ch: _Channel, text: str, out: list[ParsedEvent], *, final: bool) -> None:
        """Frame ``pending + text`` with the hot path's walk (``_frame_python`` documents it)."""
        self._frame_records(self, ch, text, out, final)

    def _frame_python(self, ch: _Channel, text: str, out: list[ParsedEvent], final: bool) -> None:
        """Scan ``pending + text`` record by record; hold back the last record unless final.

        A SIP dump is as long as drachtio's header line says (``recv N bytes``, counted from
        the first SIP line), and a line inside it that looks like a record start (a pino ``{"``
        line, or a drachtio stamp in a body or a folded header) is the device's text, not a log
        record.  A dump whose logged text ends at most ``DUMP_SLACK`` bytes before the announced
        length ran to its end (a trailing space or a CR lost in copying); otherwise:

        * **Pino lines inside the announced length are never registrar lines** (counted
          "embedded"), whether or not the dump can be shown to end there: a device must not
          forge registrar events, nor reach the JSON parser, with its body.
        * **Stamped records inside are skipped only when the dump is proven**: the last line
          end in ``[end - 6, end + 2)`` (``end`` = where the announced length ends) is followed
          by a record start or the end of the input, and every skipped record follows a CRLF
          line, as only lines inside a dump do (drachtio ends every other line, and a dump's
          last one, without CR).  A record that follows a line without CR is real: the count
          was false (a truncated or doctored dump), "sip_length" is counted and the records are
          framed by their starts.  So are dumps whose length cannot be proven (cut off, CRLF
          lost in copying) and dumps announcing more bytes than drachtio can log
          (``MAX_UDP_DUMP``): an impossible count never hides a real record.

        A dump whose announced end lies past the text so far (and within ``MAX_PENDING``) is
        held, with everything after it, until more text or the end of the input.  What the
        scan finds after the held record ("embedded" records, "sip_length") is counted when
        that record is emitted, so text framed twice (held, then framed again with the next
        chunk) is counted once.  A SIP message is marked ``truncated`` when the record after
        it is sofia's ``*** message truncated at N ***``, in the same chunk or the next.
        """
        buf = ch.pending + text if ch.pending else text
        ch.pending = ""
        if not buf:
            return
        stats = self.stats_for(ch.source)
        source = ch.source
        held: re.Match[str] | None = None  # or the compiled scanner's Record
        held_size = 0  # its byte count, when it is a SIP dump
        region_end = 0  # records starting before this are inside a dump's announced length
        proven_end = 0  # ... and before this, inside a dump proven to end there
        embedded = 0  # records skipped since ``held``: counted when it is emitted
        impossible = False  # ``held`` announces a size drachtio cannot log: ditto
        # the hot loop reads locals, not module globals
        record = self._record
        g_start, g_size, g_line, g_pino = G_START + 1, G_SIZE + 1, G_LINE + 1, G_PINO + 1
        ran_to_end = 1 + DUMP_SLACK
        for m in self._scan(buf):
            start = m.start()
            if start < region_end:  # rare: text inside an announced SIP dump
                if start < proven_end:
                    if buf[start - 2] == "\r":
                        embedded += 1
                        continue
                    # a real record inside: the count was false (``held`` is emitted now)
                    stats.error("sip_length")
                    region_end = proven_end = 0
                elif m.start(g_pino) >= 0:
                    embedded += 1
                    continue
            if held is not None:
                msg = record(source, held, held_size, out, stats)
                if msg is not None:
                    line = m.group(g_line)  # None unless a plain drachtio line
                    if line is not None and _is_truncation(line):
                        msg.truncated = True
                if embedded or impossible:
                    _count_anomalies(stats, embedded, impossible)
                    embedded, impossible = 0, False
            elif buf[:start].strip():
                stats.record("other")  # lines before the first record: log cut mid-record
            held = m
            pos = m.end()
            body = m.start(g_start)
            if body < 0:
                continue
            digits = m.group(g_size)  # more than 18 digits: IMPOSSIBLE_SIZE, int() stays cheap
            size = held_size = int(digits) if len(digits) <= 18 else IMPOSSIBLE_SIZE
            end = body + size
            if end <= pos + ran_to_end:
                continue  # the dump ran to its announced end: nothing inside to suspect
            if size > (MAX_UDP_DUMP if m.group(G_PROTO + 1).lower() == "udp" else MAX_STREAM_DUMP):
                impossible = True
                continue
            if end + 2 >= len(buf) and not final and end - start < MAX_PENDING:
                ch.pending = buf[start:]  # the rest of this dump has not arrived yet
                return
            region_end = max(region_end, end)
            nl = buf.rfind("\n", end - 6, end + 2)  # the dump's last line end: " \n"
            if nl >= 0 and (nl + 1 >= len(buf) or _RECORD_START_AT.match(buf, nl + 1)):
                proven_end = nl + 1
                region_end = max(region_end, proven_end)
        if held is None:  # no record start at all: RECORD_RE matches wherever one is
            if buf.strip():
                stats.record("other")
            return
        if final or len(buf) - held.start() > MAX_PENDING:
            self._record(source, held, held_size, out, stats)
            _count_anomalies(stats, embedded, impossible)
        else:
            ch.pending = buf[held.start() :]

    def _record(
        self,
        source: str,
        m: re.Match[str],
        size: int,
        out: list[ParsedEvent],
        stats: ParseStats,
    ) -> SipMessage | None:
        """Turn one matched record into an event; returns the SIP message it made, if any.

        ``size`` is the dump's byte count as ``_frame`` read it (unused for other records).
        Total by construction (every parser below is bounded and returns on bad input); the
        ``try`` is the last line of defence, free until it catches: a bug costs one record,
        counted "internal", not the rest of the chunk.
        """
        try:
            g = m.groups("")
            what = g[G_WHAT]
            if what:
                start = g[G_START]
                stamp = g[G_TS]
                if stamp:
                    base = self._minute_cache.get(stamp[:16])  # inline fast path of _ts()
                    ts = base + float(stamp[17:26]) if base is not None else self._ts(stamp, stats)
                else:
                    ts = self._legacy_ts(g[G_LEGACY_TS], stats)
                if not start:
                    stats.error("sip_header_only")
                    return None
                msg = self._build(
                    ts,
                    source,
                    what,
                    size,
                    g[G_PROTO].lower(),
                    g[G_IP],
                    int(g[G_PORT]),
                    start,
                    _record_headers(g),
                )
                if msg is None:
                    stats.error("sip_start_line")
                    return None
                out.append(msg)
                records = stats.records
                records["sip"] = records.get("sip", 0) + 1
                return msg
            pino = g[G_PINO]
            if pino:
                self._pino(source, pino, out, stats)
                return None
            line = g[G_LINE]
            if _is_truncation(line):
                stats.record("truncation")  # the message before it was marked by _frame
                return None
            if line.startswith("Client::") or line.startswith("Sending response"):
                stats.record("api")  # drachtio <-> app traffic, not network SIP
                return None
            hit = classify_drachtio_line(line)
            if hit is None:
                stats.record("other")
                return None
            kind, attrs = hit
            ts = self._ts(g[G_TS], stats) if g[G_TS] else self._legacy_ts(g[G_LEGACY_TS], stats)
            out.append(
                ServiceEvent(
                    ts=ts,
                    source=source,
                    origin=ServiceOrigin.DRACHTIO,
                    kind=kind,
                    level=30,
                    message=line.rstrip()[:512],
                    attrs=attrs,
                )
            )
            stats.record("service")
            return None
        except Exception:
            stats.error("internal")
            return None

    def _pino(self, source: str, line: str, out: list[ParsedEvent], stats: ParseStats) -> None:
        ev = parse_pino_line(line, source)
        if isinstance(ev, PinoError):
            stats.error(ev.value)
            return
        out.append(ev)
        stats.record("pino")

    # ------------------------------------------------------------------ time
    def _ts(self, stamp: str, stats: ParseStats) -> float:
        """Epoch seconds of a drachtio stamp, caching the per-minute base (strptime is slow).

        A stamp that is no date drachtio can write (month 13, a year before 1970) counts a
        "timestamp" error and gives a time within the first minute of 1970: never negative.
        """
        key = stamp[:16]
        base = self._minute_cache.get(key)
        if base is None:
            try:
                year = int(stamp[0:4])
                if year < 1970:
                    raise ValueError(year)
                base = (
                    datetime(
                        year,
                        int(stamp[5:7]),
                        int(stamp[8:10]),
                        int(stamp[11:13]),
                        int(stamp[14:16]),
                        tzinfo=UTC,
                    ).timestamp()
                    - self._tz
                )
            except ValueError:
                stats.error("timestamp")
                base = 0.0
            if len(self._minute_cache) > 4096:
                self._minute_cache.clear()
            self._minute_cache[key] = base
        return base + float(stamp[17:26])

    def _legacy_ts(self, stamp: str, stats: ParseStats) -> float:
        """``2017-Jun-27 07:48:59.059161`` (pre-2017 drachtio) as epoch seconds; 0.0 and a
        "timestamp" error for one that is no date (as ``_ts``)."""
        try:
            year = int(stamp[0:4])
            if year < 1970:
                raise ValueError(year)
            base = datetime(
                year,
                _MONTHS.get(stamp[5:8].lower(), 0),  # an unknown month: no date
                int(stamp[9:11]),
                int(stamp[12:14]),
                int(stamp[15:17]),
                tzinfo=UTC,
            ).timestamp()
            return base + float(stamp[18:]) - self._tz
        except ValueError:
            stats.error("timestamp")
            return 0.0


def _count_anomalies(stats: ParseStats, embedded: int, impossible: bool) -> None:
    if embedded:
        stats.record("embedded", embedded)
    if impossible:
        stats.error("sip_length")


def _is_truncation(line: str) -> bool:
    """sofia's ``   *** message truncated at N ***`` (after the stamp, spaces only)."""
    return line.lstrip(" ").startswith(_TRUNCATED)


def _prefix_mode(line: str) -> int:
    """The prefix style a line shows (a ``PrefixMode``), or 0 when it shows none."""
    if RECORD_START_RE.match(line):
        return PrefixMode.NONE
    if _TS_PREFIX_RE.match(line):
        return PrefixMode.TIMESTAMP
    m = _SERVICE_PREFIX_RE.match(line)
    if m and _RECORD_START_AT.match(line, m.end()):
        return PrefixMode.SERVICE
    return 0


def compiled_implementation(module: ModuleType, *, build: Build | None = None) -> HotPath:
    """The hot path of the compiled ``module`` (``sipwatch.ingest._speedups``); ``build``
    replaces its message builder (a test injects one that fails)."""
    layout = module.Layout(RECORD_RE)
    limits = {
        "dump_slack": DUMP_SLACK,
        "max_udp_dump": MAX_UDP_DUMP,
        "max_stream_dump": MAX_STREAM_DUMP,
        "max_pending": MAX_PENDING,
        "impossible_size": IMPOSSIBLE_SIZE,
        "truncated": _TRUNCATED,
    }
    return HotPath(
        partial(module.finditer, layout),
        build or module.build_sip_message,
        module.Framer(layout, limits, _count_anomalies, build),
        module.has_lone_cr,
        module.count_lines,
    )


IMPLEMENTATIONS: dict[str, HotPath] = {
    speedups.PYTHON: HotPath(
        RECORD_RE.finditer,
        sip.build_sip_message,
        LogParser._frame_python,
        _has_lone_cr,
        _count_lines,
    )
}
if speedups.compiled is not None:
    IMPLEMENTATIONS[speedups.COMPILED] = compiled_implementation(speedups.compiled)
# What a LogParser uses unless told otherwise (a module global, so a test can patch it).
HOT_PATH = IMPLEMENTATIONS[speedups.IMPLEMENTATION]
