"""``[sources.hep]``: drachtio's HEP capture feed as a source (UDP, and optionally TCP).

drachtio-server sends every SIP message it receives or sends to a capture server as one HEP
packet (``--homer host:port --homer-id N``).  This source is that capture server: it
receives the packets, hands them to :class:`~sipwatch.sources.hep.intake.HepIntake`
(allow-list, decoding, auth key, forwarding to Homer, SIP parsing, direction) and yields the
resulting SIP messages as :class:`~sipwatch.model.MessageBatch`\\ es, one per capture agent
(source ``hep/<id>``, node ``<id>``), which skip log framing in the pipeline.

Reading: the socket is non-blocking and read from an event-loop reader callback that drains
up to ``MAX_DRAIN`` datagrams per wake-up (asyncio's datagram transport reads one per loop
iteration, which caps a busy feed at the loop's iteration rate).  The messages of one
wake-up become one batch per agent, so a busy feed is a few queue items per wake-up, not
one per packet.  Reading and forwarding never wait for the pipeline: when it falls behind,
messages beyond the intake's backlog bound are dropped and counted, while Homer still gets
every packet.  What the kernel had to drop because sipwatch did not read in time is read
from ``/proc/net/udp`` and exported (``sipwatch_hep_kernel_drops_total``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import socket
import sys
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

import structlog

from sipwatch.config import parse_host_port
from sipwatch.model import MessageBatch
from sipwatch.sources.hep.addresses import AddressSet
from sipwatch.sources.hep.decode import HEP3_HEADER, HepDecodeError, hep3_frame_length
from sipwatch.sources.hep.forward import HepForwarder
from sipwatch.sources.hep.intake import DEFAULT_BACKLOG, HepIntake
from sipwatch.sources.hep.stats import HepCollector, HepStats

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from sipwatch.config import HepSourceConfig
    from sipwatch.sources import LogSource, SourceContext

log = structlog.get_logger("sipwatch.sources.hep")

SOURCE_NAME = "hep"
MAX_DRAIN = 256  # datagrams read per wake-up before other tasks get the loop
RECV_SIZE = 65535
MAX_TCP_CONNECTIONS = 64
TCP_IDLE_TIMEOUT = 300.0  # seconds without a complete frame before a connection is closed


class HepSource:
    """Receives HEP and yields one MessageBatch per capture agent and wake-up."""

    def __init__(
        self,
        config: HepSourceConfig,
        *,
        registry: CollectorRegistry | None = None,
        max_backlog: int | None = None,
    ) -> None:
        if config.listen is None:
            raise ValueError("sources.hep.listen is not set")
        self.config = config
        self.stats = HepStats()
        self.forwarder = HepForwarder(config.forward, self.stats) if config.forward else None
        self.intake = HepIntake(
            stats=self.stats,
            allow=AddressSet(config.allow_networks),
            auth_key=config.auth_key.reveal().encode() if config.auth_key is not None else None,
            sbc_addresses=AddressSet(config.sbc_addresses),
            max_agents=config.max_agents,
            forward=self.forwarder.send if self.forwarder is not None else None,
            max_backlog=DEFAULT_BACKLOG if max_backlog is None else max_backlog,
        )
        self.address: tuple[str, int] | None = None  # bound UDP address, once listening
        self.tcp_address: tuple[str, int] | None = None
        self._ready: asyncio.Event | None = None
        self.listening = asyncio.Event()  # set once the sockets are bound and read
        self._tcp_writers: set[asyncio.StreamWriter] = set()
        if registry is not None:
            registry.register(HepCollector(self.stats))

    def __repr__(self) -> str:
        return f"HepSource(listen={self.config.listen!r})"

    async def chunks(self) -> AsyncGenerator[MessageBatch, None]:
        """Listen until cancelled; yield the SIP messages of each wake-up."""
        loop = asyncio.get_running_loop()
        ready = self._ready = asyncio.Event()
        sock = await self._bind_udp(loop)
        fd = sock.fileno()
        server: asyncio.Server | None = None
        try:
            if self.config.tcp:
                server = await self._start_tcp()
            if self.forwarder is not None:
                await self.forwarder.start(self.address)
            loop.add_reader(fd, self._on_readable, sock)
            self.listening.set()
            log.info(
                "HEP source listening",
                udp=_show(self.address),
                tcp=_show(self.tcp_address),
                receive_buffer=self.stats.receive_buffer_bytes,
                forward=list(self.config.forward),
                sbc_addresses=list(self.config.sbc_addresses) or "learned per capture agent",
            )
            take = self.intake.take_batches
            while True:
                await ready.wait()
                ready.clear()
                for batch in take():
                    yield batch
        finally:
            self.listening.clear()
            with contextlib.suppress(Exception):
                loop.remove_reader(fd)
            sock.close()
            if server is not None:
                server.close()
                for writer in list(self._tcp_writers):
                    writer.close()
            if self.forwarder is not None:
                await self.forwarder.aclose()

    # ------------------------------------------------------------------ UDP
    async def _bind_udp(self, loop: asyncio.AbstractEventLoop) -> socket.socket:
        assert self.config.listen is not None
        host, port = _split_listen(self.config.listen)
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
        family, _, proto, _, sockaddr = infos[0]
        sock = socket.socket(family, socket.SOCK_DGRAM, proto)
        try:
            if family == socket.AF_INET6:  # "[::]:port" takes IPv4 senders too
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            self.stats.receive_buffer_bytes = size_receive_buffer(
                sock, self.config.receive_buffer_bytes
            )
            sock.bind(sockaddr)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        bound = sock.getsockname()
        self.address = (str(bound[0]), int(bound[1]))
        inode, fam = _socket_inode(sock), family
        self.stats.kernel_drops = lambda: udp_socket_drops(inode, fam)
        return sock

    def _on_readable(self, sock: socket.socket) -> None:
        """Drain the socket (bounded), then wake the generator if messages are waiting."""
        receive = self.intake.receive
        recvfrom = sock.recvfrom
        for _ in range(MAX_DRAIN):
            try:
                data, addr = recvfrom(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # e.g. a pending ICMP error; the next read is fine
                break
            receive(data, addr[0])
        if self.intake.pending and self._ready is not None:
            self._ready.set()

    # ------------------------------------------------------------------ TCP
    async def _start_tcp(self) -> asyncio.Server:
        assert self.config.listen is not None
        host, port = _split_listen(self.config.listen)
        server = await asyncio.start_server(self._tcp_client, host, port)
        bound = server.sockets[0].getsockname()
        self.tcp_address = (str(bound[0]), int(bound[1]))
        return server

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One HEP-over-TCP connection: HEP3 frames, each framed by its own total length."""
        peer = writer.get_extra_info("peername")
        ip = str(peer[0]) if peer else ""
        stats = self.stats
        intake = self.intake
        if intake.allow is not None and ip not in intake.allow:
            stats.dropped["sender_not_allowed"] += 1
            writer.close()
            return
        if stats.tcp_connections >= MAX_TCP_CONNECTIONS:
            stats.dropped["too_many_connections"] += 1
            writer.close()
            return
        stats.tcp_connections += 1
        self._tcp_writers.add(writer)
        try:
            while True:
                async with asyncio.timeout(TCP_IDLE_TIMEOUT):
                    header = await reader.readexactly(HEP3_HEADER)
                    try:
                        total = hep3_frame_length(header)
                    except HepDecodeError as exc:  # the stream is out of step: give up on it
                        stats.errors[exc.reason] += 1
                        return
                    frame = header + await reader.readexactly(total - HEP3_HEADER)
                intake.receive(frame, ip)
                if intake.pending and self._ready is not None:
                    self._ready.set()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError, OSError):
            return
        finally:
            stats.tcp_connections -= 1
            self._tcp_writers.discard(writer)
            writer.close()


def size_receive_buffer(sock: socket.socket, wanted: int) -> int:
    """Give the socket a ``wanted``-byte receive buffer; return what the kernel granted.

    Sizes are the kernel's own accounting, as getsockopt and /proc/net/udp report them: a
    queued datagram is charged its payload plus the kernel's overhead (about 1,500 bytes for
    a 600-byte SIP packet).  Linux doubles the value it is given to make room for that
    overhead, so half is asked.  It caps the request at net.core.rmem_max, which
    SO_RCVBUFFORCE passes when sipwatch has CAP_NET_ADMIN; otherwise the warning names the
    sysctl to raise.
    """
    ask = wanted // 2 if sys.platform.startswith("linux") else wanted
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, ask)
    got = int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
    force = _SO_RCVBUFFORCE
    if got < wanted and force is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, force, ask)
            got = int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
    if got < wanted:
        log.warning(
            "HEP receive buffer is smaller than configured; raise the kernel limit",
            wanted=wanted,
            granted=got,
            hint=f"sysctl -w net.core.rmem_max={ask}",
        )
    return got


# Python's socket module does not export SO_RCVBUFFORCE; 33 is its number in Linux's generic
# socket ABI, which these architectures use (alpha, mips, parisc and sparc differ).
_SO_RCVBUFFORCE: int | None = getattr(socket, "SO_RCVBUFFORCE", None)
if (
    _SO_RCVBUFFORCE is None
    and sys.platform.startswith("linux")
    and platform.machine()
    in ("x86_64", "aarch64", "armv7l", "armv8l", "i686", "riscv64", "ppc64le", "s390x")
):
    _SO_RCVBUFFORCE = 33


def udp_socket_drops(inode: int, family: int) -> int | None:
    """The kernel's drop counter of the UDP socket with this inode (Linux), else None."""
    path = "/proc/net/udp6" if family == socket.AF_INET6 else "/proc/net/udp"
    wanted = str(inode)
    try:
        with open(path, encoding="ascii") as f:
            next(f, None)  # header line
            for line in f:
                parts = line.split()
                if len(parts) >= 13 and parts[9] == wanted:
                    return int(parts[12])
    except (OSError, ValueError):
        return None
    return None


def _socket_inode(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


def _split_listen(listen: str) -> tuple[str, int]:
    hp = parse_host_port(listen)
    return hp.host, hp.port


def _show(address: tuple[str, int] | None) -> str | None:
    if address is None:
        return None
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def build(ctx: SourceContext) -> list[tuple[str, LogSource]]:
    """``[sources.hep] listen``: one listener; its messages are named ``hep/<agent id>``."""
    return [(SOURCE_NAME, HepSource(ctx.config.sources.hep, registry=ctx.registry))]
