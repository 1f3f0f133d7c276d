"""Helpers shared by the ingest tests: feed log text through the framer the way a source does.

A source hands the framer whole lines, cut at arbitrary line ends; the helpers here cut the
same way so a test can show that the chunking never changes the result.
"""

from __future__ import annotations

from pathlib import Path

from sipwatch.ingest.framing import LogParser
from sipwatch.ingest.transactions import RegisterTracker
from sipwatch.model import (
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
    tracker = tracker or RegisterTracker()
    txs: list[RegisterTransaction] = []
    atts: list[RegisterAttempt] = []
    for msg in messages:
        for done in tracker.on_message(msg):
            (txs if isinstance(done, RegisterTransaction) else atts).append(done)  # type: ignore[arg-type]
    for done in tracker.flush():
        (txs if isinstance(done, RegisterTransaction) else atts).append(done)  # type: ignore[arg-type]
    return txs, atts, tracker
