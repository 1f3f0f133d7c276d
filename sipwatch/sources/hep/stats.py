"""The HEP source's own counters, and the Prometheus collector that exports them.

The receive path increments plain ints in dicts (a few nanoseconds, no locks: everything
runs on the event loop); :class:`HepCollector` turns them into metric families when
Prometheus scrapes, the way prometheus_client's ProcessCollector reads /proc.  Every label
set is bounded: reasons come from fixed tuples, agents from the ``max_agents`` bound (plus
``other``), forward targets from the configuration.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sipwatch.sources.hep.decode import DECODE_ERRORS

#: Why a packet that arrived was not turned into SIP messages (besides decode errors).
DROP_REASONS: tuple[str, ...] = (
    "sender_not_allowed",  # the sender is outside sources.hep.allow_networks
    "auth_failed",  # an auth key is configured and the packet's is missing or different
    "not_sip",  # a HEP packet of another protocol (RTCP, logs): forwarded, not analysed
    "backlog_full",  # the analysis fell behind; the packet was still forwarded
    "too_many_connections",  # HEP over TCP: a connection refused at the bound
)
#: Decode failures: the HEP ones, then SIP payloads that are no SIP message, then bugs.
RECEIVE_ERRORS: tuple[str, ...] = (*DECODE_ERRORS, "unparsable_sip", "internal")
#: Why a packet was not forwarded to a target.
FORWARD_DROP_REASONS: tuple[str, ...] = (
    "buffer_full",  # the target's send queue is at its bound
    "unresolved",  # the target's host name does not resolve (yet)
    "send_error",  # the kernel refused (e.g. ICMP port unreachable from the target)
    "would_loop",  # the target is this HEP listener itself
)
#: Things worth knowing that are not errors.
NOTES: tuple[str, ...] = (
    "ipv6_addresses_garbled",  # drachtio's IPv6 capture bug: the peer was taken from the Via
    "sip_truncated",  # a payload cut short (drachtio cuts at 16,000 bytes)
    "agent_over_limit",  # a packet of an agent beyond max_agents, counted under "other"
    "clock_ahead",  # a capture time far in the future: the receive time was used instead
)


def _zeros(keys: Iterable[str]) -> dict[str, int]:
    return dict.fromkeys(keys, 0)


@dataclass
class HepStats:
    """Plain counters of one HEP source."""

    packets: dict[str, int] = field(default_factory=dict)  # accepted, by agent node
    bytes: dict[str, int] = field(default_factory=dict)
    messages: dict[str, int] = field(default_factory=dict)  # SIP messages passed on
    errors: dict[str, int] = field(default_factory=lambda: _zeros(RECEIVE_ERRORS))
    dropped: dict[str, int] = field(default_factory=lambda: _zeros(DROP_REASONS))
    notes: dict[str, int] = field(default_factory=lambda: _zeros(NOTES))
    forward_sent: dict[str, int] = field(default_factory=dict)  # by target
    forward_dropped: dict[tuple[str, str], int] = field(default_factory=dict)
    receive_buffer_bytes: int = 0  # what the kernel granted
    tcp_connections: int = 0
    kernel_drops: Callable[[], int | None] = lambda: None  # read at scrape time

    def add_forward_target(self, target: str) -> None:
        self.forward_sent.setdefault(target, 0)
        for reason in FORWARD_DROP_REASONS:
            self.forward_dropped.setdefault((target, reason), 0)


class HepCollector(Collector):
    """Exports a :class:`HepStats` as ``sipwatch_hep_*`` metric families."""

    def __init__(self, stats: HepStats) -> None:
        self.stats = stats

    def describe(self) -> Iterable[Metric]:
        return []  # nothing to check for clashes at registration; families are sipwatch_hep_*

    def collect(self) -> Iterator[Metric]:
        st = self.stats
        yield _counter(
            "sipwatch_hep_packets",
            "HEP packets accepted (allowed sender, valid HEP), by capture agent.",
            ["agent"],
            st.packets.items(),
        )
        yield _counter(
            "sipwatch_hep_bytes",
            "Bytes of accepted HEP packets, by capture agent.",
            ["agent"],
            st.bytes.items(),
        )
        yield _counter(
            "sipwatch_hep_sip_messages",
            "SIP messages the HEP source passed to the analysis, by capture agent.",
            ["agent"],
            st.messages.items(),
        )
        yield _counter(
            "sipwatch_hep_decode_errors",
            "Packets rejected as invalid HEP (or payloads that are no SIP message), by reason.",
            ["reason"],
            st.errors.items(),
        )
        yield _counter(
            "sipwatch_hep_dropped",
            "Packets not analysed for another reason than a decode error, by reason.",
            ["reason"],
            st.dropped.items(),
        )
        yield _counter(
            "sipwatch_hep_notes",
            "Noteworthy packets that were still analysed, by kind.",
            ["kind"],
            st.notes.items(),
        )
        yield _counter(
            "sipwatch_hep_forward_sent",
            "Packets forwarded unchanged, by target.",
            ["target"],
            st.forward_sent.items(),
        )
        dropped = CounterMetricFamily(
            "sipwatch_hep_forward_dropped",
            "Packets not forwarded to a target, by target and reason.",
            labels=["target", "reason"],
        )
        for (target, reason), value in st.forward_dropped.items():
            dropped.add_metric([target, reason], value)
        yield dropped
        yield GaugeMetricFamily(
            "sipwatch_hep_agents",
            "Capture agents (SBC nodes) seen since start, 'other' included.",
            value=len(st.packets),
        )
        yield GaugeMetricFamily(
            "sipwatch_hep_receive_buffer_bytes",
            "Receive buffer the kernel granted to the HEP socket (SO_RCVBUF).",
            value=st.receive_buffer_bytes,
        )
        yield GaugeMetricFamily(
            "sipwatch_hep_tcp_connections",
            "Open HEP-over-TCP connections.",
            value=st.tcp_connections,
        )
        drops = st.kernel_drops()
        if drops is not None:
            yield CounterMetricFamily(
                "sipwatch_hep_kernel_drops",
                "Datagrams the kernel dropped on the HEP socket because sipwatch did not read "
                "them in time (the drops column of /proc/net/udp).",
                value=drops,
            )


def _counter(
    name: str, doc: str, labels: list[str], items: Iterable[tuple[str, int]]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, value in items:
        family.add_metric([key], value)
    return family
