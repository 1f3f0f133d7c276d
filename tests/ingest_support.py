"""Helpers shared by the ingest tests: feed log text through the framer the way a source does.

A source hands the framer whole lines, cut at arbitrary line ends; the helpers here cut the
same way so a test can show that the chunking never changes the result.
"""

from __future__ import annotations

from pathlib import Path

from sipwatch.ingest.framing import LogParser
from sipwatch.ingest.transactions import RegisterTracker, new_tracker
from sipwatch.model import (
    Direction,
    LogChunk,
    ParsedEvent,
    RegisterAttempt,
    RegisterTransaction,
    ServiceEvent,
    SipMessage,
    Stream,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def line_chunks(text: str, chunks: int) -> list[str]:
    """``text`` cut into about ``chunks`` pieces, each ending at a line end."""
    size = max(1, len(text) // max(1, chunks))
    out: list[str] = []
    pos = 0
    while pos < len(text):
        end = text.find("\n", pos + size)
        end = len(text) if end < 0 else end + 1
        out.append(text[pos:end])
        pos = end
    return out


def feed_text(
    parser: LogParser,
    text: str,
    *,
    chunks: int = 1,
    source: str = "t",
    stream: Stream = Stream.TEXT,
) -> list[ParsedEvent]:
    """Feed ``text`` in line-aligned chunks, then end the input; every event, in order."""
    events: list[ParsedEvent] = []
    for piece in line_chunks(text, chunks):
        events += parser.feed(LogChunk(source, stream, piece))
    events += parser.flush()
    return events


def parse(
    text: str, *, chunks: int = 1, stream: Stream = Stream.TEXT
) -> tuple[list[SipMessage], list[ServiceEvent], LogParser]:
    """Frame ``text``: (SIP messages, service events, the parser with its counters)."""
    parser = LogParser()
    events = feed_text(parser, text, chunks=chunks, stream=stream)
    msgs = [e for e in events if isinstance(e, SipMessage)]
    svc = [e for e in events if isinstance(e, ServiceEvent)]
    return msgs, svc, parser


def track(
    messages: list[SipMessage], tracker: RegisterTracker | None = None
) -> tuple[list[RegisterTransaction], list[RegisterAttempt], RegisterTracker]:
    """Run messages through a tracker and end the input: (transactions, attempts, tracker)."""
    tracker = tracker or new_tracker()
    txs: list[RegisterTransaction] = []
    atts: list[RegisterAttempt] = []
    for msg in messages:
        for done in tracker.on_message(msg):
            (txs if isinstance(done, RegisterTransaction) else atts).append(done)  # type: ignore[arg-type]
    for done in tracker.flush():
        (txs if isinstance(done, RegisterTransaction) else atts).append(done)  # type: ignore[arg-type]
    return txs, atts, tracker


def sip(
    t: float,
    *,
    status: int = 0,
    direction: Direction = Direction.RECV,
    call_id: str = "c1",
    cseq: int = 1,
    branch: str = "z9hG4bK1",
    method: str = "REGISTER",
    auth: str = "",
    to_user: str = "1001",
    expires: int | None = 3600,
    reason: str = "",
    x_reason: str = "",
    challenge: str = "",
) -> SipMessage:
    """One SIP message as the parser makes it (requests: status 0)."""
    request = status == 0
    return SipMessage(
        t,
        "f",
        direction,
        "udp",
        "203.0.113.5",
        5060,
        500,
        request,
        method,
        status,
        reason,
        "sip:acme.example.com" if request else "",
        call_id,
        cseq,
        branch,
        "1001" if request else "",
        "acme.example.com" if request else "",
        to_user,
        "acme.example.com",
        "<sip:1001@203.0.113.5>",
        expires,
        "Yealink",
        auth,
        "acme.example.com" if auth else "",
        bool(auth),
        x_reason,
        challenge,
    )


def answer(req: SipMessage, t: float, status: int, **kw: object) -> SipMessage:
    """The response to ``req``, sent back the other way."""
    back = Direction.SEND if req.direction is Direction.RECV else Direction.RECV
    return sip(
        t,
        status=status,
        direction=back,
        call_id=req.call_id,
        cseq=req.cseq,
        branch=req.via_branch,
        **kw,  # type: ignore[arg-type]
    )
