"""Address questions of the HEP source: is this sender allowed, and which side is the SBC?

HEP gives a source and a destination address, not a direction; sipwatch's model needs
drachtio's point of view (``recv``: a peer sent it to the SBC, ``send``: the SBC sent it).
:class:`SbcDirection` answers from the SBC's own addresses when the operator lists them, and
otherwise learns them per capture agent: every packet an SBC captures has the SBC on one
side, so its address is the one that talks with many different peers, while a device or a
carrier talks with the SBC alone.  An address seen with ``HUB_PEERS`` distinct peers is taken
as the SBC's.  Until one is known, the address with more peers wins, and on a tie (the very
first exchange) the SBC is assumed to be the server: requests are received and responses
sent, which is right for the inbound REGISTERs sipwatch diagnoses and wrong only for the
SBC's own requests (OPTIONS pings, trunk registrations) in the first seconds of a feed.

Why not the HEP sender's address: drachtio sends HEP from whatever interface routes to the
collector (loopback, a Docker bridge, a pod network), which is rarely the SIP address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable

HUB_PEERS = 3  # distinct peers that make an address the SBC's
MAX_TRACKED = 1024  # addresses whose peers are counted, per capture agent
MAX_LEARNED = 16  # SBC addresses learned per capture agent (an SBC has a few interfaces)
_CACHE = 4096  # remembered membership answers per AddressSet

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def normalise_ip(ip: str) -> str:
    """An IPv4 sender seen through a dual-stack socket (``::ffff:10.0.0.5``) as IPv4."""
    if ip.startswith("::ffff:") and "." in ip:
        return ip[7:]
    return ip


class AddressSet:
    """Membership of textual IP addresses in a fixed list of networks.

    Parsing an address costs microseconds and a feed repeats the same few addresses, so
    answers are cached; the cache is bounded (cleared when full), so a flood of spoofed
    senders costs CPU, never memory.
    """

    __slots__ = ("_cache", "_networks")

    def __init__(self, networks: Iterable[str]) -> None:
        self._networks: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in networks
        )
        self._cache: dict[str, bool] = {}

    def __bool__(self) -> bool:
        return bool(self._networks)

    def __contains__(self, ip: object) -> bool:
        if not isinstance(ip, str):
            return False
        hit = self._cache.get(ip)
        if hit is None:
            hit = self._lookup(ip)
            if len(self._cache) >= _CACHE:
                self._cache.clear()
            self._cache[ip] = hit
        return hit

    def _lookup(self, ip: str) -> bool:
        try:
            address = ipaddress.ip_address(normalise_ip(ip.split("%", 1)[0]))
        except ValueError:
            return False
        return any(address in net for net in self._networks if net.version == address.version)


class SbcDirection:
    """Which packets of one capture agent the SBC sent (see the module docstring)."""

    __slots__ = ("_configured", "_learned", "_on_learned", "_peers")

    def __init__(
        self, configured: AddressSet, on_learned: Callable[[str], None] | None = None
    ) -> None:
        self._configured = configured
        self._learned: set[str] = set()
        self._peers: dict[str, set[str]] = {}
        self._on_learned = on_learned

    @property
    def learned(self) -> frozenset[str]:
        return frozenset(self._learned)

    def sent_by_sbc(self, src: str, dst: str, is_request: bool) -> bool:
        """True when the SBC sent this message (``send``), False when it received it."""
        configured = self._configured
        if configured:
            src_sbc = src in configured
            if src_sbc != (dst in configured):
                return src_sbc
        learned = self._learned
        src_sbc = src in learned
        if src_sbc != (dst in learned):
            return src_sbc
        if not src_sbc:  # neither side known yet: count peers, maybe learn
            self._observe(src, dst)
            if (src in learned) != (dst in learned):
                return src in learned
            src_peers = len(self._peers.get(src, ()))
            dst_peers = len(self._peers.get(dst, ()))
            if src_peers != dst_peers:
                return src_peers > dst_peers
        return not is_request  # a tie: the SBC is the server

    def _observe(self, src: str, dst: str) -> None:
        if src == dst:  # no information (and drachtio's garbled IPv6 addresses look so)
            return
        peers_of = self._peers
        for address, peer in ((src, dst), (dst, src)):
            peers = peers_of.get(address)
            if peers is None:
                if len(peers_of) >= MAX_TRACKED:
                    continue
                peers = peers_of[address] = set()
            if len(peers) >= HUB_PEERS:
                continue
            peers.add(peer)
            if len(peers) == HUB_PEERS and len(self._learned) < MAX_LEARNED:
                self._learned.add(address)
                if self._on_learned is not None:
                    self._on_learned(address)
