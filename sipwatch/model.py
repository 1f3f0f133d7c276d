"""The event types that flow through the sipwatch pipeline.

sources -> (LogChunk) -> framing/parsing -> (SipMessage | ServiceEvent)
        -> transactions -> (RegisterTransaction | RegisterAttempt) -> sinks

Every field that comes from a log line is attacker-controlled text (usernames, domains,
User-Agents arrive from the internet).  Sinks must escape it before rendering and must never
use it as an unbounded metric label or in SQL other than as a bound parameter.

All classes use ``slots=True``: one object per SIP message is the floor of the hot path and
slots keep it small and fast to build.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from sipwatch.sip_meaning import TIMEOUT


class Stream(StrEnum):
    """Where a chunk of log text came from inside its source."""

    STDOUT = "stdout"  # pino JSON of the registrar / sidecar under Docker
    STDERR = "stderr"  # drachtio-server console sink under Docker
    TEXT = "text"  # a file or stdin: any mix of drachtio and pino lines


@dataclass(frozen=True, slots=True)
class Position:
    """Where a source stands in its log right after a chunk: what a restart resumes from.

    ``key`` names one checkpoint entry (``file:<path>``, ``docker:<container id>``,
    ``kubernetes:<pod uid>/<container>``); ``state`` is what that source needs to resume
    (file identity and offset, the last entry's timestamp...), JSON types only, or None when
    the source cannot resume right there (a line is only partly delivered): the chunk still
    belongs to that entry.  The daemon persists a position only once everything before it
    went through the pipeline (:mod:`sipwatch.sources.positions`).

    ``exact``: ``state["offset"]`` is the byte offset right after this chunk's text, and the
    text is exactly those bytes of the file (UTF-8, nothing inserted or replaced), so a
    checkpoint may be placed *inside* the text - at the start of a record the framer still
    holds back - by subtracting the bytes that follow it.
    """

    key: str
    state: Mapping[str, str | int | float | bool] | None
    exact: bool = False


@dataclass(slots=True)
class LogChunk:
    """A block of complete log lines from one source stream.

    ``text`` holds whole lines ("\\n"-terminated, except possibly at end of input).  Sources
    do the line reassembly (Docker frames, partial reads), so the framer never sees half a
    line.  ``source`` names the source (file path, container name, "-") and, together with
    ``stream``, identifies one framing channel.

    An empty ``text`` is a signal, not data: the source went idle (no new bytes for a
    moment), so the framer should flush a record it is holding back.  Follow-mode sources
    send one after each idle period; drachtio writes whole records at once, so an idle
    stream means the last record is complete.

    ``position`` is where the source stands right after this chunk (None: not known here,
    e.g. a line is only partly delivered); it is what a restart resumes from.
    """

    source: str
    stream: Stream
    text: str
    node: str = ""  # the SBC node the text comes from (Kubernetes node, host); "" = unknown
    position: Position | None = None


class Direction(StrEnum):
    RECV = "recv"
    SEND = "send"


@dataclass(slots=True)
class SipMessage:
    """One network SIP message dumped by drachtio (a ``recv``/``send`` record).

    Only the fields sipwatch needs are extracted; absent headers are ``""`` (strings) or
    ``None`` / ``0`` (numbers) so consumers never branch on missing attributes.
    """

    ts: float  # log time, epoch seconds (drachtio prefix, UTC unless configured)
    source: str
    direction: Direction
    transport: str  # udp | tcp | tls | ws | wss | sctp
    peer_ip: str  # the real peer (post-NAT) from the header line, not the Via sent-by
    peer_port: int
    size: int  # byte count drachtio reported
    is_request: bool
    method: str  # request method, or the CSeq method for a response
    status: int  # 0 for requests
    reason: str  # response reason phrase
    request_uri: str
    call_id: str
    cseq: int
    via_branch: str  # branch of the top Via
    from_user: str
    from_host: str
    to_user: str
    to_host: str
    contact: str
    expires: int | None  # Expires header, else Contact ;expires=
    user_agent: str
    auth_username: str  # from Authorization / Proxy-Authorization
    auth_realm: str
    has_auth: bool
    x_reason: str
    www_authenticate: str
    truncated: bool = False  # drachtio printed "*** message truncated at N ***" after it

    @property
    def is_register(self) -> bool:
        return self.method == "REGISTER"


class ServiceOrigin(StrEnum):
    DRACHTIO = "drachtio"
    REGISTRAR = "registrar"


@dataclass(slots=True)
class ServiceEvent:
    """A non-SIP log record that matters for diagnosis.

    ``kind`` is a stable identifier (see ``sipwatch.ingest.registrar`` and ``sipwatch.drachtio``
    for the list), ``attrs`` holds the few extracted values (realm, aor, source_ip,
    account_sid, error text).  Secrets are never copied into ``attrs``.
    """

    ts: float
    source: str
    origin: ServiceOrigin
    kind: str
    level: int  # pino level (10..60); drachtio lines use 30
    message: str
    attrs: dict[str, str] = field(default_factory=dict)


class Side(StrEnum):
    """Who sent the REGISTER: a device to us (inbound) or jambonz to a carrier (outbound)."""

    INBOUND = "inbound"
    OUTBOUND = "outbound"


@dataclass(slots=True)
class RegisterTransaction:
    """One REGISTER client transaction (request, its retransmissions and final response).

    ``status`` is the final status code, or 0 while pending / when it timed out
    (``timed_out`` tells which).  ``outcome_key`` is what reports count by.
    """

    side: Side
    call_id: str
    cseq: int
    branch: str
    started: float
    source: str
    peer_ip: str
    peer_port: int
    transport: str
    to_user: str
    to_host: str
    from_user: str
    request_uri: str
    user_agent: str
    auth_username: str
    has_auth: bool
    expires: int | None
    requests: int = 0  # request copies seen (1 + retransmissions)
    responses: int = 0  # final-response copies seen
    status: int = 0
    reason: str = ""
    x_reason: str = ""
    www_authenticate: str = ""
    finished: float = 0.0
    timed_out: bool = False
    saw_request: bool = True  # False when the log began after the request (orphan response)

    @property
    def outcome_key(self) -> str:
        return outcome_key(self.status, self.timed_out)

    @property
    def latency(self) -> float | None:
        if self.timed_out or not self.saw_request or not self.finished:
            return None
        return max(0.0, self.finished - self.started)


def outcome_key(status: int, timed_out: bool) -> str:
    """What reports count a transaction by: its final status, or ``TIMEOUT``."""
    return TIMEOUT if timed_out else str(status)


def transaction_opened_by(side: Side, msg: SipMessage, saw_request: bool) -> RegisterTransaction:
    """The transaction a REGISTER opens: from its request, or from a response whose request
    is not in the log (it counts no request copy; the request-only fields stay empty because
    a response carries no Request-URI or credentials: ``build_sip_message``).  One definition
    for both trackers (``sipwatch.ingest.transactions`` and its compiled twin)."""
    # positional, in the field order of RegisterTransaction: keywords cost twice as much on a
    # path run for every transaction
    return RegisterTransaction(
        side,
        msg.call_id,
        msg.cseq,
        msg.via_branch,
        msg.ts,
        msg.source,
        msg.peer_ip,
        msg.peer_port,
        msg.transport,
        msg.to_user,
        msg.to_host,
        msg.from_user,
        msg.request_uri,
        msg.user_agent,
        msg.auth_username,
        msg.has_auth,
        msg.expires,
        1 if saw_request else 0,  # requests
        0,  # responses
        0,  # status
        "",  # reason
        "",  # x_reason
        "",  # www_authenticate
        0.0,  # finished
        False,  # timed_out
        saw_request,
    )


@dataclass(slots=True)
class TrackerStats:
    """The REGISTER tracker's counters (both implementations report these)."""

    transactions: int = 0
    retransmitted_requests: int = 0
    retransmitted_responses: int = 0
    orphan_responses: int = 0
    evicted: int = 0  # state dropped by the max_pending bound (counted as timeouts)
    evicted_attempts: int = 0


class AttemptOutcome(StrEnum):
    SUCCESS = "success"  # 2xx
    FAILURE = "failure"  # a final non-2xx that is not a plain challenge
    CHALLENGE_LOOP = "challenge_loop"  # 401/407 answered to a request that carried credentials
    ABANDONED = "abandoned"  # challenged, device never came back
    TIMEOUT = "timeout"  # no final response


@dataclass(slots=True)
class RegisterAttempt:
    """A registration attempt: REGISTER [-> 401 -> REGISTER+auth]* -> final outcome.

    Joined on (side, Call-ID).  ``challenged`` says a 401/407 came before the final answer,
    which is the key signal of section 4b of the jambonz notes: a 403 *without* a prior
    challenge is a realm/account problem, a 403 *after* one is a credentials problem.
    """

    side: Side
    call_id: str
    started: float
    source: str
    peer_ip: str
    peer_port: int
    transport: str
    to_user: str
    to_host: str
    from_user: str
    request_uri: str
    user_agent: str
    auth_username: str = ""
    transactions: int = 0
    challenged: bool = False
    challenges: int = 0  # 401/407 answers seen in this attempt
    auth_rejections: int = 0  # 401/407 answers to requests that carried credentials
    last_cseq: int = 0  # CSeq of the attempt's newest transaction
    outcome: AttemptOutcome = AttemptOutcome.TIMEOUT
    status: int = 0
    reason: str = ""
    x_reason: str = ""
    finished: float = 0.0
    expires: int | None = None

    @property
    def aor(self) -> str:
        return f"{self.to_user}@{self.to_host}"

    @property
    def latency(self) -> float:
        return max(0.0, self.finished - self.started)


# What the parser stage emits; transactions and sinks consume these.
ParsedEvent = SipMessage | ServiceEvent


@dataclass(slots=True)
class MessageBatch:
    """SIP messages a source captured already parsed (the HEP feed): they skip log framing.

    ``source`` names the capture stream (e.g. ``hep/101``) and ``node`` the SBC node it
    describes (the HEP capture agent id), so per-node metrics can split a cluster.
    """

    source: str
    messages: list[SipMessage]
    node: str = ""


# What a source yields into the pipeline.
SourceItem = LogChunk | MessageBatch
