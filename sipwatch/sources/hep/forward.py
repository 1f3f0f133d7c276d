"""Forward every accepted HEP packet, byte for byte, to other capture servers (Homer).

drachtio sends its capture feed to one server only, so an operator who points it at
sipwatch must not lose Homer.  Each target gets the packet as it arrived, from the receive
callback itself: a non-blocking ``send`` on a connected UDP socket, which costs one system
call and never waits.  When the kernel's send buffer is full the packet waits in a bounded
per-target queue flushed when the socket is writable; beyond the bound it is dropped and
counted, so a slow or dead target can never hold up intake.

Host names are resolved at start and again every ``REFRESH`` seconds (a Homer container
that is recreated gets a new address); until a name resolves, its packets are dropped as
``unresolved``.  A target that is this listener itself (``udp://127.0.0.1:9060`` while
listening on 9060) would loop packets forever and is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections import deque

import structlog

from sipwatch.config import parse_udp_url
from sipwatch.sources.hep.stats import HepStats

log = structlog.get_logger("sipwatch.sources.hep")

MAX_QUEUE_BYTES = 4 << 20  # per target: about 5,000 typical SIP packets
REFRESH = 30.0  # seconds between re-resolutions of host names
RETRY = 2.0  # seconds before retrying a name that did not resolve


class _Target:
    """One forward target: a connected non-blocking UDP socket and its overflow queue."""

    def __init__(self, url: str, stats: HepStats, loop: asyncio.AbstractEventLoop) -> None:
        hp = parse_udp_url(url)
        self.url = url
        self.host = hp.host
        self.port = hp.port
        self.stats = stats
        self.loop = loop
        self.sock: socket.socket | None = None
        self.address: tuple[str, int] | None = None
        self.looping = False
        self.queue: deque[bytes] = deque()
        self.queued = 0
        self._writer = False
        stats.add_forward_target(url)

    @property
    def literal(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    def send(self, data: bytes) -> None:
        sock = self.sock
        if sock is None:
            self._drop("would_loop" if self.looping else "unresolved")
            return
        if self.queue:
            self._enqueue(data)
            return
        try:
            sock.send(data)
        except BlockingIOError:
            self._enqueue(data)
        except OSError:
            self._drop("send_error")
        else:
            self.stats.forward_sent[self.url] += 1

    def _enqueue(self, data: bytes) -> None:
        if self.queued + len(data) > MAX_QUEUE_BYTES:
            self._drop("buffer_full")
            return
        self.queue.append(data)
        self.queued += len(data)
        if not self._writer and self.sock is not None:
            self.loop.add_writer(self.sock.fileno(), self._flush)
            self._writer = True

    def _flush(self) -> None:
        sock = self.sock
        queue = self.queue
        while queue and sock is not None:
            data = queue[0]
            try:
                sock.send(data)
            except BlockingIOError:
                return
            except OSError:
                self._drop("send_error")
            else:
                self.stats.forward_sent[self.url] += 1
            queue.popleft()
            self.queued -= len(data)
        self._stop_writer()

    def _stop_writer(self) -> None:
        if self._writer and self.sock is not None:
            self.loop.remove_writer(self.sock.fileno())
        self._writer = False

    def _drop(self, reason: str) -> None:
        key = (self.url, reason)
        self.stats.forward_dropped[key] = self.stats.forward_dropped.get(key, 0) + 1

    def attach(self, sock: socket.socket, address: tuple[str, int]) -> None:
        """Use a newly connected socket (first resolution, or the address changed)."""
        old = self.sock
        self._stop_writer()
        for data in self.queue:  # what waited for the old address is lost with it
            self._drop("send_error")
            self.queued -= len(data)
        self.queue.clear()
        self.sock, self.address = sock, address
        if old is not None:
            old.close()

    def close(self) -> None:
        self._stop_writer()
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class HepForwarder:
    """Sends each packet to every target (see the module docstring)."""

    def __init__(self, targets: tuple[str, ...], stats: HepStats) -> None:
        self.urls = targets
        self.stats = stats
        self._targets: list[_Target] = []
        self._own: tuple[str, int] | None = None
        self._task: asyncio.Task[None] | None = None

    def send(self, data: bytes) -> None:
        for target in self._targets:
            target.send(data)

    async def start(self, own_address: tuple[str, int] | None = None) -> None:
        """Resolve the targets (those that do not resolve yet are retried in the
        background) and start the re-resolution task.  ``own_address`` is the HEP listener's
        bound address, to refuse a target that would loop."""
        loop = asyncio.get_running_loop()
        self._own = own_address
        self._targets = [_Target(url, self.stats, loop) for url in self.urls]
        for target in self._targets:
            await self._resolve(target)
        if self._targets:
            self._task = asyncio.create_task(self._maintain(), name="hep-forward-resolve")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for target in self._targets:
            target.close()

    async def _maintain(self) -> None:
        while True:
            unresolved = [t for t in self._targets if t.sock is None and not t.looping]
            await asyncio.sleep(RETRY if unresolved else REFRESH)
            for target in self._targets:
                if target.sock is None or not target.literal:
                    await self._resolve(target)

    async def _resolve(self, target: _Target) -> None:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_DGRAM)
        except (OSError, UnicodeError) as exc:
            if target.sock is None:
                log.warning(
                    "HEP forward target does not resolve", target=target.url, error=str(exc)
                )
            return
        family, _, proto, _, sockaddr = infos[0]
        address = (str(sockaddr[0]), int(sockaddr[1]))
        if target.sock is not None and address == target.address:
            return
        sock = socket.socket(family, socket.SOCK_DGRAM, proto)
        try:
            sock.setblocking(False)
            sock.connect(sockaddr)
            local = sock.getsockname()
        except OSError as exc:
            sock.close()
            log.warning("HEP forward target unreachable", target=target.url, error=str(exc))
            return
        if self._would_loop(address, str(local[0])):
            sock.close()
            if not target.looping:
                log.error(
                    "HEP forward target is this listener; not forwarding to it",
                    target=target.url,
                )
            target.looping = True
            return
        target.looping = False
        target.attach(sock, address)
        log.info("HEP forward target ready", target=target.url, address=f"{address[0]}")

    def _would_loop(self, target: tuple[str, int], local_ip: str) -> bool:
        """The target is our own listener: same port, and an address of this host."""
        own = self._own
        if own is None or target[1] != own[1]:
            return False
        ip = target[0]
        try:
            parsed = ipaddress.ip_address(ip)
        except ValueError:
            return False
        if own[0] in ("0.0.0.0", "::"):  # noqa: S104 - comparing, not binding
            return parsed.is_loopback or parsed.is_unspecified or ip == local_ip
        return ip == own[0] or (parsed.is_unspecified)
