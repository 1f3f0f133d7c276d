"""The HEP source on real loopback sockets: UDP and TCP intake, batching, forwarding,
the allowlist, the kernel drop counter and the Prometheus collector."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from sipwatch.sources.hep import forward as hep_forward
from sipwatch.sources.hep.forward import HepForwarder
from sipwatch.sources.hep.listener import HepSource, size_receive_buffer, udp_socket_drops
from sipwatch.sources.hep.stats import HepStats
from tests.daemon_runner import free_port
from tests.hep_scenario import mixed_scenario
from tests.hep_support import hep_config, receive_all, running, udp_sender


def target_socket() -> tuple[socket.socket, str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock, f"udp://127.0.0.1:{sock.getsockname()[1]}"


def metric(exposition: str, name: str) -> float:
    """The value of an unlabelled sample."""
    for line in exposition.splitlines():
        if line.split(" ", 1)[0] == name:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in the exposition")


async def test_udp_packets_become_batches_and_every_packet_is_forwarded() -> None:
    homer, homer_url = target_socket()
    homer2, homer2_url = target_socket()
    registry = CollectorRegistry()
    source = HepSource(hep_config(forward=(homer_url, homer2_url)), registry=registry)
    packets = mixed_scenario().packets()
    with homer, homer2, udp_sender() as sender:
        async with running(source) as run:
            assert source.address is not None
            # a burst sent while the loop is busy here arrives in one wake-up: few batches
            for packet in packets:
                sender.sendto(packet, source.address)
            await run.wait_messages(len(packets))
            assert len(run.batches) < len(packets) / 4
            assert {(b.source, b.node) for b in run.batches} == {("hep/101", "101")}
            for target in (homer, homer2):
                assert await receive_all(target, len(packets)) == packets  # byte-identical
            text = generate_latest(registry).decode()
    assert f'sipwatch_hep_packets_total{{agent="101"}} {float(len(packets))}' in text
    assert f'sipwatch_hep_sip_messages_total{{agent="101"}} {float(len(packets))}' in text
    assert f'sipwatch_hep_forward_sent_total{{target="{homer_url}"}} {float(len(packets))}' in text
    assert (
        f'sipwatch_hep_forward_dropped_total{{reason="buffer_full",target="{homer_url}"}} 0.0'
        in text
    )
    assert 'sipwatch_hep_decode_errors_total{reason="truncated_chunk"} 0.0' in text
    assert "sipwatch_hep_agents 1.0" in text
    assert metric(text, "sipwatch_hep_receive_buffer_bytes") >= 64 << 10
    assert metric(text, "sipwatch_hep_kernel_drops_total") == 0.0


async def test_senders_outside_the_allowlist_are_refused() -> None:
    homer, homer_url = target_socket()
    source = HepSource(hep_config(allow_networks=("10.0.0.0/8",), forward=(homer_url,)))
    packet = mixed_scenario().packets()[0]
    with homer, udp_sender() as sender:
        async with running(source):
            assert source.address is not None
            for _ in range(3):
                sender.sendto(packet, source.address)
            async with asyncio.timeout(5):
                while source.stats.dropped["sender_not_allowed"] < 3:
                    await asyncio.sleep(0.01)
        assert source.stats.packets == {}
        with pytest.raises(BlockingIOError):
            homer.recv(65535)  # nothing forwarded


async def test_dual_stack_listener_takes_ipv4_and_ipv6() -> None:
    source = HepSource(hep_config(listen=f"[::]:{free_port()}"))
    packet = mixed_scenario().packets()[0]
    async with running(source) as run:
        assert source.address is not None
        port = source.address[1]
        with udp_sender() as v4, udp_sender(socket.AF_INET6) as v6:
            v4.sendto(packet, ("127.0.0.1", port))
            v6.sendto(packet, ("::1", port))
            await run.wait_messages(2)


async def test_hep_over_tcp_is_framed_by_the_hep3_length() -> None:
    source = HepSource(hep_config(tcp=True))
    packets = mixed_scenario().packets()[:10]
    stream = b"".join(packets)
    async with running(source) as run:
        assert source.tcp_address is not None
        reader, writer = await asyncio.open_connection(*source.tcp_address)
        for i in range(0, len(stream), 333):  # frames split across writes
            writer.write(stream[i : i + 333])
            await writer.drain()
        await run.wait_messages(10)
        assert source.stats.tcp_connections == 1
        writer.write(b"GET / HTTP/1.1\r\n\r\n")  # out of step: the connection is closed
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        async with asyncio.timeout(5):
            while source.stats.tcp_connections:
                await asyncio.sleep(0.01)
    assert source.stats.errors["bad_version"] == 1


async def test_tcp_from_outside_the_allowlist_is_closed() -> None:
    source = HepSource(hep_config(tcp=True, allow_networks=("10.0.0.0/8",)))
    async with running(source):
        assert source.tcp_address is not None
        reader, writer = await asyncio.open_connection(*source.tcp_address)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
    assert source.stats.dropped["sender_not_allowed"] == 1


async def test_a_busy_port_fails_the_source_so_the_daemon_retries() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        source = HepSource(hep_config(listen=f"127.0.0.1:{taken.getsockname()[1]}"))
        with pytest.raises(OSError):
            async with running(source):
                pass


async def test_forwarding_to_itself_is_refused() -> None:
    port = free_port()
    source = HepSource(hep_config(listen=f"0.0.0.0:{port}", forward=(f"udp://127.0.0.1:{port}",)))
    packet = mixed_scenario().packets()[0]
    async with running(source) as run, asyncio.timeout(5):
        with udp_sender() as sender:
            sender.sendto(packet, ("127.0.0.1", port))
            await run.wait_messages(1)
        await asyncio.sleep(0.2)  # a loop would have brought the packet back by now
    assert run.messages == 1
    assert source.stats.forward_dropped[(f"udp://127.0.0.1:{port}", "would_loop")] == 1


async def test_a_full_forward_queue_drops_and_counts_and_drains_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Unix datagram socket pair blocks when the peer does not read (a UDP socket on
    loopback would just drop): the overflow queue fills, then drops, then flushes."""
    monkeypatch.setattr(hep_forward, "MAX_QUEUE_BYTES", 10_000)
    stats = HepStats()
    forwarder = HepForwarder(("udp://127.0.0.1:9",), stats)
    await forwarder.start()
    target = forwarder._targets[0]
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ours.setblocking(False)
    theirs.setblocking(False)
    target.attach(ours, ("peer", 0))
    packet = b"x" * 1000
    try:
        for _ in range(2000):
            forwarder.send(packet)
        sent = stats.forward_sent["udp://127.0.0.1:9"]
        dropped = stats.forward_dropped[("udp://127.0.0.1:9", "buffer_full")]
        assert sent > 0 and dropped > 0 and len(target.queue) == 10
        assert sent + dropped + len(target.queue) == 2000
        received = 0
        async with asyncio.timeout(5):
            while stats.forward_sent["udp://127.0.0.1:9"] < sent + 10:
                while True:
                    try:
                        theirs.recv(2000)
                        received += 1
                    except BlockingIOError:
                        break
                await asyncio.sleep(0.01)
        assert not target.queue
    finally:
        await forwarder.aclose()
        theirs.close()


async def test_an_unresolvable_target_counts_its_drops(monkeypatch: pytest.MonkeyPatch) -> None:
    stats = HepStats()
    forwarder = HepForwarder(("udp://homer.invalid:9060",), stats)

    async def no_dns(*args: object, **kwargs: object) -> list[object]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", no_dns)
    await forwarder.start()
    forwarder.send(b"HEP3")
    await forwarder.aclose()
    assert stats.forward_dropped[("udp://homer.invalid:9060", "unresolved")] == 1


def test_kernel_drops_are_read_from_proc() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, udp_sender() as tx:
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        rx.bind(("127.0.0.1", 0))
        inode = os.fstat(rx.fileno()).st_ino
        assert udp_socket_drops(inode, socket.AF_INET) == 0
        for _ in range(200):  # nobody reads: the kernel has to drop
            tx.sendto(b"x" * 1000, rx.getsockname())
        drops = udp_socket_drops(inode, socket.AF_INET)
        assert drops is not None and drops > 0
    assert udp_socket_drops(inode, socket.AF_INET) is None  # the socket is gone


def test_receive_buffer_size_is_what_the_kernel_granted() -> None:
    rmem_max = int(Path("/proc/sys/net/core/rmem_max").read_text())
    wanted = 4 * rmem_max  # more than the kernel gives without CAP_NET_ADMIN
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        got = size_receive_buffer(s, wanted)
        assert got == s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        if os.geteuid() == 0:  # CAP_NET_ADMIN: SO_RCVBUFFORCE passes the cap
            assert got == wanted
        else:  # capped: the kernel grants (twice) rmem_max, and says so
            assert got == 2 * rmem_max
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        # sizes are the kernel's accounting: asking 1 MiB gives 1 MiB, not 2
        assert size_receive_buffer(s, min(1 << 20, 2 * rmem_max)) == min(1 << 20, 2 * rmem_max)
