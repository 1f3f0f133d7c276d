"""A HEP encoder for the tests, written from the protocol, not from sipwatch's decoder.

HEP3 (HEP/EEP v3): ``"HEP3"``, a u16 total length (header included), then chunks of
``u16 vendor, u16 type, u16 length (6-byte chunk header included), value``, all network
byte order.  Generic chunk types (vendor 0) used here: 0x01 IP family (u8), 0x02 IP protocol
(u8), 0x03/0x04 IPv4 source/destination, 0x05/0x06 IPv6 source/destination, 0x07/0x08 ports
(u16), 0x09 seconds (u32), 0x0a microseconds (u32), 0x0b protocol type (u8, 1 = SIP),
0x0c capture agent id (u32), 0x0e auth key, 0x0f payload, 0x10 compressed payload.

drachtio-server (sofia-sip's tport_logging.c) always sends eleven chunks in the order of
``DRACHTIO_ORDER``: the ports come before the addresses.

HEP v1/v2: a fixed header ``u8 version, u8 header length, u8 family, u8 protocol,
u16 source port, u16 destination port`` (network order), the source and destination
addresses, and for v2 a C struct ``{u32 seconds; u32 microseconds; u16 capture id}`` copied
in the sender's byte order (little-endian on x86/ARM) and padded to 12 bytes; the header
length counts all of it.  The payload follows.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from datetime import UTC, datetime

AF_INET = 2
AF_INET6 = 10

DRACHTIO_ORDER = (0x01, 0x02, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x03, 0x04, 0x0F)
DRACHTIO_ORDER_V6 = (0x01, 0x02, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x05, 0x06, 0x0F)
IP_PROTOCOLS = {"udp": 17, "tcp": 6, "sctp": 132, "tls": 22}


@dataclass
class Capture:
    """One captured SIP message, as a capture agent describes it."""

    src_ip: str
    src_port: int
    dst_ip: str
    dst_port: int
    seconds: int
    micros: int
    payload: bytes
    agent_id: int = 101
    transport: str = "udp"
    proto_type: int = 1
    auth_key: bytes | None = None

    @property
    def ipv6(self) -> bool:
        return ipaddress.ip_address(self.src_ip).version == 6


def split_time(ts: float) -> tuple[int, int]:
    """(seconds, microseconds) of epoch seconds, rounded exactly as drachtio's log stamp
    (``datetime`` rounds to the microsecond), so a log and its packets tell the same time."""
    dt = datetime.fromtimestamp(ts, UTC)
    return int(dt.replace(microsecond=0).timestamp()), dt.microsecond


def chunk(ctype: int, value: bytes, vendor: int = 0) -> bytes:
    return struct.pack(">HHH", vendor, ctype, 6 + len(value)) + value


def hep3_chunks(cap: Capture) -> dict[int, bytes]:
    """Every chunk of ``cap`` by type, values encoded."""
    v6 = cap.ipv6
    src = ipaddress.ip_address(cap.src_ip).packed
    dst = ipaddress.ip_address(cap.dst_ip).packed
    out = {
        0x01: chunk(0x01, bytes([AF_INET6 if v6 else AF_INET])),
        0x02: chunk(0x02, bytes([IP_PROTOCOLS[cap.transport]])),
        0x07: chunk(0x07, struct.pack(">H", cap.src_port)),
        0x08: chunk(0x08, struct.pack(">H", cap.dst_port)),
        0x09: chunk(0x09, struct.pack(">I", cap.seconds)),
        0x0A: chunk(0x0A, struct.pack(">I", cap.micros)),
        0x0B: chunk(0x0B, bytes([cap.proto_type])),
        0x0C: chunk(0x0C, struct.pack(">I", cap.agent_id)),
        (0x05 if v6 else 0x03): chunk(0x05 if v6 else 0x03, src),
        (0x06 if v6 else 0x04): chunk(0x06 if v6 else 0x04, dst),
        0x0F: chunk(0x0F, cap.payload),
    }
    if cap.auth_key is not None:
        out[0x0E] = chunk(0x0E, cap.auth_key)
    return out


def assemble_hep3(chunks: list[bytes]) -> bytes:
    body = b"".join(chunks)
    return b"HEP3" + struct.pack(">H", 6 + len(body)) + body


def encode_hep3(
    cap: Capture,
    *,
    order: tuple[int, ...] | None = None,
    extra: tuple[bytes, ...] = (),
) -> bytes:
    """A HEP3 packet with the chunks in ``order`` (default: drachtio's), then ``extra``."""
    by_type = hep3_chunks(cap)
    if order is None:
        order = DRACHTIO_ORDER_V6 if cap.ipv6 else DRACHTIO_ORDER
        if 0x0E in by_type:
            order = (*order[:-1], 0x0E, 0x0F)
    return assemble_hep3([by_type[t] for t in order] + list(extra))


def encode_hep2(cap: Capture, *, version: int = 2, time_size: int = 12) -> bytes:
    """A HEP v2 (or v1) packet; ``time_size`` 12 is the padded C struct, 10 packed."""
    v6 = cap.ipv6
    src = ipaddress.ip_address(cap.src_ip).packed
    dst = ipaddress.ip_address(cap.dst_ip).packed
    hlen = 8 + len(src) + len(dst) + (time_size if version == 2 else 0)
    out = struct.pack(
        "!BBBBHH",
        version,
        hlen,
        AF_INET6 if v6 else AF_INET,
        IP_PROTOCOLS[cap.transport],
        cap.src_port,
        cap.dst_port,
    )
    out += src + dst
    if version == 2:
        out += struct.pack("<IIH", cap.seconds, cap.micros, cap.agent_id & 0xFFFF)
        out += bytes(time_size - 10)
    return out + cap.payload


def drachtio_ipv6_bug(packet: bytes) -> bytes:
    """What drachtio really sends for IPv6: it copies 4 bytes from the wrong place of the
    sockaddr (sin_addr of an IPv6 sockaddr is sin6_flowinfo, normally 0) into 16-byte
    chunks that start zeroed, so both addresses come out as ``::``."""
    out = bytearray(packet)
    pos = 6
    while pos < len(out):
        _, ctype, clen = struct.unpack_from(">HHH", out, pos)
        if ctype in (0x05, 0x06):
            out[pos + 6 : pos + clen] = bytes(16)
        pos += clen
    return bytes(out)
