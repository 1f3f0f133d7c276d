"""The HEP receive path, without sockets: bytes from a sender in, SIP messages per node out.

    datagram -> allowed sender? -> decode -> auth key? -> forward -> agent -> SipMessage(s)

Everything here runs inside the socket's read callback, so it must never raise and never
grow without bound: every rejection is counted in :class:`HepStats`, a bug in a corner is
counted as ``internal`` instead of killing the feed, at most ``max_agents`` capture agents
get their own source name (further ids share ``hep/other``), and at most ``max_backlog``
messages wait for the pipeline (beyond, packets are still forwarded but not analysed, and
counted).  The socket code (``sipwatch.sources.hep``), the benchmark and the fuzzer all
drive this same class.
"""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from sipwatch.ingest.sip import parse_sip_message
from sipwatch.model import MessageBatch, SipMessage
from sipwatch.sources.hep.addresses import AddressSet, SbcDirection
from sipwatch.sources.hep.decode import PROTO_SIP, HepDecodeError, HepPacket, decode_hep
from sipwatch.sources.hep.stats import HepStats

log = structlog.get_logger("sipwatch.sources.hep")

SOURCE_PREFIX = "hep/"
OTHER_NODE = "other"
BATCH_LIMIT = 512  # messages per MessageBatch: a parse-queue item stays around 1 MiB at most
DEFAULT_BACKLOG = 20_000  # messages waiting for the pipeline
MAX_PARTS = 64  # SIP messages taken from one stream payload
# A capture time this far ahead of our clock is not believed: the pipeline's clock is the
# newest message time, and one packet from the year 2106 would time out every transaction.
MAX_CLOCK_AHEAD = 300.0
_SINGLE_MESSAGE = 8192  # a UDP payload below this is one whole message (no Content-Length scan)

_CONTENT_LENGTH = re.compile(rb"\n(?:content-length|l)[ \t]*:[ \t]*(\d{1,9})", re.IGNORECASE)
_TOP_VIA = re.compile(
    r"^(?:[Vv][Ii][Aa]|[Vv])[ \t]*:[ \t]*SIP/2\.0/[A-Za-z]+[ \t]+"
    r"(\[[^\]\r\n]*\]|[^:;,\s]+)(?::(\d{1,5}))?([^,\r\n]*)",
    re.MULTILINE,
)
_RECEIVED = re.compile(r";[ \t]*received=([^;,\s]+)", re.IGNORECASE)
_RPORT = re.compile(r";[ \t]*rport=(\d{1,5})", re.IGNORECASE)


@dataclass(slots=True)
class _Agent:
    """One capture agent (SBC node) and the messages it has waiting."""

    source: str
    node: str
    direction: SbcDirection
    messages: list[SipMessage] = field(default_factory=list)


def split_sip_stream(payload: bytes) -> list[tuple[bytes, bool]]:
    """The SIP messages in one payload as (bytes, truncated).

    A stream transport's capture is per socket read (drachtio-server's HEP capture), so a payload
    may hold several messages, or end in the middle of one (drachtio also cuts payloads at
    16,000 bytes).  Messages are delimited by the end of their headers plus Content-Length;
    keep-alive CRLFs between them are skipped.  A message whose headers or body run past the
    end is returned whole with ``truncated`` set.  At most ``MAX_PARTS`` messages.
    """
    out: list[tuple[bytes, bool]] = []
    n = len(payload)
    pos = 0
    while pos < n and len(out) < MAX_PARTS:
        while payload.startswith(b"\r\n", pos):
            pos += 2
        if pos >= n:
            break
        head_end = payload.find(b"\r\n\r\n", pos)
        if head_end < 0:
            out.append((payload[pos:], True))
            break
        m = _CONTENT_LENGTH.search(payload, pos, head_end + 2)
        end = head_end + 4 + (int(m.group(1)) if m else 0)
        if m is None and not out:
            end = n  # no Content-Length (allowed over UDP): the body is the rest
        if end > n:
            out.append((payload[pos:], True))
            break
        out.append((payload[pos:end], False))
        pos = end
    return out


def via_peer(text: str) -> tuple[str, int] | None:
    """The sender of the top Via (``received=``/``rport=`` when present): the device's
    address in a request it sent and in the SBC's response to it."""
    m = _TOP_VIA.search(text)
    if m is None:
        return None
    host, port_text, params = m.groups()
    received = _RECEIVED.search(params)
    rport = _RPORT.search(params)
    if received is not None:
        host = received.group(1)
    port = int(rport.group(1)) if rport is not None else int(port_text or 5060)
    return host.strip("[]")[:64], port


class HepIntake:
    """Turns received HEP packets into per-node SIP messages (see the module docstring)."""

    def __init__(
        self,
        *,
        stats: HepStats | None = None,
        allow: AddressSet | None = None,
        auth_key: bytes | None = None,
        sbc_addresses: AddressSet | None = None,
        max_agents: int = 32,
        max_backlog: int = DEFAULT_BACKLOG,
        forward: Callable[[bytes], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.stats = stats or HepStats()
        self.allow = allow  # None: every sender (tests, the benchmark)
        self.auth_key = auth_key
        self.sbc_addresses = sbc_addresses or AddressSet(())
        self.max_agents = max_agents
        self.max_backlog = max_backlog
        self.forward = forward
        self.clock = clock
        self.pending = 0  # messages waiting in the agents' lists
        self._agents: dict[int, _Agent] = {}
        self._other: _Agent | None = None

    # ------------------------------------------------------------------ receive
    def receive(self, data: bytes, sender: str) -> None:
        """Take one packet from ``sender`` (an IP address).  Never raises."""
        try:
            self._receive(data, sender)
        except Exception:  # a bug must cost one packet, not the feed
            self.stats.errors["internal"] += 1
            if self.stats.errors["internal"] <= 10:
                log.exception("HEP packet handling failed", sender=sender[:64])

    def _receive(self, data: bytes, sender: str) -> None:
        stats = self.stats
        if self.allow is not None and sender not in self.allow:
            stats.dropped["sender_not_allowed"] += 1
            return
        try:
            packet = decode_hep(data)
        except HepDecodeError as exc:
            stats.errors[exc.reason] += 1
            return
        key = self.auth_key
        if key is not None and (
            packet.auth_key is None or not hmac.compare_digest(packet.auth_key, key)
        ):
            stats.dropped["auth_failed"] += 1
            return
        if self.forward is not None:
            self.forward(data)
        agent = self._agent(packet.agent_id, sender)
        node = agent.node
        stats.packets[node] = stats.packets.get(node, 0) + 1
        stats.bytes[node] = stats.bytes.get(node, 0) + len(data)
        if packet.proto_type != PROTO_SIP:
            stats.dropped["not_sip"] += 1
            return
        if self.pending >= self.max_backlog:
            stats.dropped["backlog_full"] += 1
            return
        self._messages(packet, agent)

    def _messages(self, packet: HepPacket, agent: _Agent) -> None:
        stats = self.stats
        payload = packet.payload
        parts: tuple[tuple[bytes, bool], ...] | list[tuple[bytes, bool]]
        if packet.transport == "udp" and len(payload) < _SINGLE_MESSAGE:
            parts = ((payload, False),)
        else:
            parts = split_sip_stream(payload)
        ts = packet.ts
        if not ts or ts > self.clock() + MAX_CLOCK_AHEAD:
            if ts:
                stats.notes["clock_ahead"] += 1
            ts = self.clock()
        added = 0
        for raw, truncated in parts:
            text = raw.decode("utf-8", "replace")
            is_request = not text.startswith("SIP/2.0 ")
            if packet.garbled_addresses:
                stats.notes["ipv6_addresses_garbled"] += 1
                sent = not is_request  # no address to learn from: the SBC is the server
                peer = via_peer(text) or (packet.src_ip, packet.src_port)
            else:
                sent = agent.direction.sent_by_sbc(packet.src_ip, packet.dst_ip, is_request)
                peer = (
                    (packet.dst_ip, packet.dst_port) if sent else (packet.src_ip, packet.src_port)
                )
            msg = parse_sip_message(
                ts,
                agent.source,
                "send" if sent else "recv",
                len(raw),
                packet.transport,
                peer[0],
                peer[1],
                text,
            )
            if msg is None:
                stats.errors["unparsable_sip"] += 1
                continue
            if truncated:
                msg.truncated = True
                stats.notes["sip_truncated"] += 1
            agent.messages.append(msg)
            added += 1
        if added:
            self.pending += added
            stats.messages[agent.node] = stats.messages.get(agent.node, 0) + added

    def _agent(self, agent_id: int, sender: str) -> _Agent:
        agent = self._agents.get(agent_id)
        if agent is not None:
            return agent
        if len(self._agents) >= self.max_agents:
            self.stats.notes["agent_over_limit"] += 1
            if self._other is None:
                self._other = self._new_agent(OTHER_NODE)
                log.warning(
                    "more HEP capture agents than sources.hep.max_agents; "
                    "further ones are counted as 'other'",
                    max_agents=self.max_agents,
                    agent=agent_id,
                    sender=sender[:64],
                )
            return self._other
        agent = self._agents[agent_id] = self._new_agent(str(agent_id))
        log.info("HEP capture agent seen", agent=agent_id, sender=sender[:64])
        return agent

    def _new_agent(self, node: str) -> _Agent:
        def learned(address: str) -> None:
            log.info("HEP: learned an SBC address", agent=node, address=address)

        return _Agent(
            SOURCE_PREFIX + node, node, SbcDirection(self.sbc_addresses, on_learned=learned)
        )

    # ------------------------------------------------------------------ hand over
    def take_batches(self, limit: int = BATCH_LIMIT) -> list[MessageBatch]:
        """Everything waiting, as batches of at most ``limit`` messages per agent."""
        if not self.pending:
            return []
        out: list[MessageBatch] = []
        agents = list(self._agents.values())
        if self._other is not None:
            agents.append(self._other)
        for agent in agents:
            msgs = agent.messages
            if not msgs:
                continue
            agent.messages = []
            if len(msgs) <= limit:
                out.append(MessageBatch(agent.source, msgs, agent.node))
            else:
                for i in range(0, len(msgs), limit):
                    out.append(MessageBatch(agent.source, msgs[i : i + limit], agent.node))
        self.pending = 0
        return out
