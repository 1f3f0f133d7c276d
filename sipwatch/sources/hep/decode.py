"""Decode HEP (Homer Encapsulation Protocol) packets: v3 chunks, and the v1/v2 fixed header.

Anyone who can reach the HEP port can send anything, so the decoder trusts no byte:

* sizes are bounded by the datagram (at most 64 KiB) and every length is checked against
  what is really there before anything is read;
* HEP3 chunks are walked by their own length, in any order; unknown chunks (other types,
  other vendors) are skipped; a chunk shorter than its header, one that runs past the end,
  a total length that is not the packet's, or a value of the wrong size rejects the packet;
* a compressed payload (chunk 0x0010) is inflated with an output bound, so a "zip bomb"
  costs at most ``MAX_PAYLOAD`` bytes;
* the only exception that leaves :func:`decode_hep` is :class:`HepDecodeError`, whose
  ``reason`` is one of ``DECODE_ERRORS`` (a bounded metric label).

drachtio sends its eleven chunks in one fixed order (family, protocol, ports, time, protocol
type, capture id, IPv4 addresses, payload; observed from drachtio-server 0.9.10), so that exact
layout is recognised with one ``struct`` call before falling back to the generic walk.  The
two give identical results (a property test checks it); the fast path exists because a busy
SBC sends tens of thousands of packets a second and Python pays per operation.

Why hand-written: the HEP libraries on PyPI (hep-parser and the like) are unmaintained,
trust the lengths they read and raise arbitrary exceptions on short input.
"""

from __future__ import annotations

import socket
import struct
import zlib
from dataclasses import dataclass

MAX_PACKET = 65535  # a HEP3 total length is a u16, and so is a UDP datagram
MAX_PAYLOAD = MAX_PACKET  # after decompression, too
HEP3_HEADER = 6  # "HEP3" + u16 total length
CHUNK_HEADER = 6  # u16 vendor, u16 type, u16 length (the length includes these 6 bytes)

PROTO_SIP = 1  # chunk 0x000b value for SIP

AF_INET = 2
AF_INET6 = 10  # Linux's value; HEP carries the sender's AF_* number

# Why a packet was rejected: the ``reason`` label of sipwatch_hep_decode_errors_total.
DECODE_ERRORS: tuple[str, ...] = (
    "short",  # shorter than any HEP header
    "bad_version",  # neither "HEP3" nor a v1/v2 header
    "bad_length",  # the declared total/header length is not what arrived
    "bad_chunk_length",  # a chunk shorter than its own header
    "truncated_chunk",  # a chunk runs past the end of the packet
    "bad_chunk_value",  # a known chunk with a value of the wrong size or meaning
    "missing_chunk",  # no payload, addresses, ports or timestamp
    "bad_compression",  # a compressed payload that does not inflate within the bound
)

_IP_PROTOCOLS = {17: "udp", 6: "tcp", 132: "sctp", 22: "tls"}  # 22: sofia-sip marks TLS so


class HepDecodeError(ValueError):
    """The packet is not valid HEP; ``reason`` is one of ``DECODE_ERRORS``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class HepPacket:
    """What sipwatch uses of one decoded HEP packet.

    ``ts`` is 0.0 when the packet has no time (HEP v1): the receiver stamps it.
    ``garbled_addresses`` marks drachtio's IPv6 bug (only 4 of the 16 address bytes are
    filled, so both addresses are meaningless; the SIP Via still tells the truth).
    """

    version: int
    family: int  # 4 or 6
    transport: str  # udp | tcp | tls | sctp
    src_ip: str
    dst_ip: str
    src_port: int
    dst_port: int
    ts: float
    proto_type: int
    agent_id: int
    payload: bytes
    auth_key: bytes | None = None
    garbled_addresses: bool = False


def transport_name(ip_proto: int) -> str:
    """The SIP transport for an IP protocol number (unknown numbers count as UDP)."""
    return _IP_PROTOCOLS.get(ip_proto, "udp")


def decode_hep(data: bytes) -> HepPacket:
    """Decode one HEP packet (v3, v2 or v1).  Raises only :class:`HepDecodeError`."""
    if len(data) < 8:
        raise HepDecodeError("short")
    if data[:4] == b"HEP3":
        return _decode_drachtio_v3(data) or decode_v3_chunks(data)
    if data[0] in (1, 2):
        return _decode_v2(data)
    raise HepDecodeError("bad_version")


def hep3_frame_length(header: bytes) -> int:
    """The total length a HEP3 stream frame announces (TCP framing); HepDecodeError if the
    6-byte ``header`` is not a HEP3 header or announces less than a header."""
    if len(header) < HEP3_HEADER or header[:4] != b"HEP3":
        raise HepDecodeError("bad_version")
    total = int.from_bytes(header[4:6], "big")
    if total < HEP3_HEADER + CHUNK_HEADER:
        raise HepDecodeError("bad_length")
    return total


# ------------------------------------------------------------------------ v3, drachtio layout

# Each chunk is read as its 4-byte (vendor, type) tag, its u16 length and its value.
_DRACHTIO = struct.Struct(
    ">4sH"  # "HEP3", total length
    "4sHB"  # 0x0001 IP family
    "4sHB"  # 0x0002 IP protocol
    "4sHH"  # 0x0007 source port
    "4sHH"  # 0x0008 destination port
    "4sHI"  # 0x0009 seconds
    "4sHI"  # 0x000a microseconds
    "4sHB"  # 0x000b protocol type
    "4sHI"  # 0x000c capture agent id
    "4sH4s"  # 0x0003 source IPv4
    "4sH4s"  # 0x0004 destination IPv4
    "4sH"  # 0x000f payload (header only)
)
_DRACHTIO_TYPES = (1, 2, 7, 8, 9, 10, 11, 12, 3, 4)
_DRACHTIO_TAGS = tuple(struct.pack(">HH", 0, t) for t in _DRACHTIO_TYPES)
_DRACHTIO_LENGTHS = (7, 7, 8, 8, 10, 10, 7, 10, 10, 10)
_PAYLOAD_TAG = struct.pack(">HH", 0, 0x000F)
_DRACHTIO_FIXED = _DRACHTIO.size  # bytes before the payload value
_inet_ntoa = socket.inet_ntoa


def _decode_drachtio_v3(data: bytes) -> HepPacket | None:
    """drachtio's exact IPv4 layout in one ``struct`` call; None for any other layout."""
    n = len(data)
    if n < _DRACHTIO_FIXED:
        return None
    t = _DRACHTIO.unpack_from(data)
    if (
        t[1] != n
        or t[2:32:3] != _DRACHTIO_TAGS
        or t[3:33:3] != _DRACHTIO_LENGTHS
        or t[32] != _PAYLOAD_TAG
        or t[33] != n - _DRACHTIO_FIXED + CHUNK_HEADER
        or t[4] != AF_INET
        or t[19] >= 1_000_000
    ):
        return None
    return HepPacket(
        3,
        4,
        _IP_PROTOCOLS.get(t[7], "udp"),
        _inet_ntoa(t[28]),
        _inet_ntoa(t[31]),
        t[10],
        t[13],
        t[16] + t[19] / 1_000_000,
        t[22],
        t[25],
        data[_DRACHTIO_FIXED:],
    )


# ------------------------------------------------------------------------ v3, any layout

_CHUNK = struct.Struct(">HHH")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


def decode_v3_chunks(data: bytes) -> HepPacket:
    """Walk the HEP3 chunks by their lengths, in whatever order they come."""
    n = len(data)
    if n < HEP3_HEADER:
        raise HepDecodeError("short")
    if data[:4] != b"HEP3":
        raise HepDecodeError("bad_version")
    if _U16.unpack_from(data, 4)[0] != n:
        raise HepDecodeError("bad_length")
    family = 0
    ip_proto = 17
    src4 = dst4 = src6 = dst6 = None
    src_port = dst_port = -1
    seconds = -1
    micros = 0
    proto_type = -1
    agent_id = 0
    payload: bytes | None = None
    auth_key: bytes | None = None
    pos = HEP3_HEADER
    unpack_chunk = _CHUNK.unpack_from
    while pos < n:
        if n - pos < CHUNK_HEADER:
            raise HepDecodeError("truncated_chunk")
        vendor, ctype, clen = unpack_chunk(data, pos)
        if clen < CHUNK_HEADER:
            raise HepDecodeError("bad_chunk_length")
        end = pos + clen
        if end > n:
            raise HepDecodeError("truncated_chunk")
        start = pos + CHUNK_HEADER
        size = clen - CHUNK_HEADER
        pos = end
        if vendor != 0:
            continue  # vendor-specific chunks carry nothing sipwatch needs
        if ctype == 0x0F:
            payload = data[start:end]
        elif ctype == 0x10:
            payload = _inflate(data[start:end])
        elif ctype in (0x03, 0x04):
            if size != 4:
                raise HepDecodeError("bad_chunk_value")
            if ctype == 0x03:
                src4 = data[start:end]
            else:
                dst4 = data[start:end]
        elif ctype in (0x05, 0x06):
            if size != 16:
                raise HepDecodeError("bad_chunk_value")
            if ctype == 0x05:
                src6 = data[start:end]
            else:
                dst6 = data[start:end]
        elif ctype in (0x07, 0x08):
            if size != 2:
                raise HepDecodeError("bad_chunk_value")
            if ctype == 0x07:
                src_port = _U16.unpack_from(data, start)[0]
            else:
                dst_port = _U16.unpack_from(data, start)[0]
        elif ctype in (0x09, 0x0A):
            if size != 4:
                raise HepDecodeError("bad_chunk_value")
            if ctype == 0x09:
                seconds = _U32.unpack_from(data, start)[0]
            else:
                micros = _U32.unpack_from(data, start)[0]
        elif ctype == 0x0C:
            if size == 4:
                agent_id = _U32.unpack_from(data, start)[0]
            elif size == 2:  # some older agents send a u16 id
                agent_id = _U16.unpack_from(data, start)[0]
            else:
                raise HepDecodeError("bad_chunk_value")
        elif ctype in (0x01, 0x02, 0x0B):
            if size != 1:
                raise HepDecodeError("bad_chunk_value")
            if ctype == 0x01:
                family = data[start]
            elif ctype == 0x02:
                ip_proto = data[start]
            else:
                proto_type = data[start]
        elif ctype == 0x0E:
            auth_key = data[start:end]
        # any other generic chunk (correlation id, VLAN, node name, ...) is skipped
    if micros >= 1_000_000:
        raise HepDecodeError("bad_chunk_value")
    if payload is None or seconds < 0 or src_port < 0 or dst_port < 0 or proto_type < 0:
        raise HepDecodeError("missing_chunk")
    if family not in (0, AF_INET, AF_INET6):
        raise HepDecodeError("bad_chunk_value")
    garbled = False
    if family != AF_INET6 and src4 is not None and dst4 is not None:
        version, src_ip, dst_ip = 4, _inet_ntoa(src4), _inet_ntoa(dst4)
    elif family != AF_INET and src6 is not None and dst6 is not None:
        version = 6
        src_ip = socket.inet_ntop(socket.AF_INET6, src6)
        dst_ip = socket.inet_ntop(socket.AF_INET6, dst6)
        garbled = _garbled6(src6) and _garbled6(dst6)
    else:
        raise HepDecodeError("missing_chunk")
    return HepPacket(
        3,
        version,
        transport_name(ip_proto),
        src_ip,
        dst_ip,
        src_port,
        dst_port,
        seconds + micros / 1_000_000,
        proto_type,
        agent_id,
        payload,
        auth_key,
        garbled,
    )


def _garbled6(address: bytes) -> bool:
    """drachtio's IPv6 bug: only the first 4 bytes can be non-zero.  No real SIP peer has
    an address whose last 96 bits are all zero."""
    return address[4:] == bytes(12)


def _inflate(data: bytes) -> bytes:
    """A gzip or zlib payload, at most ``MAX_PAYLOAD`` bytes out, else bad_compression."""
    try:
        inflater = zlib.decompressobj(wbits=47)  # 32 + 15: gzip or zlib header, detected
        out = inflater.decompress(data, MAX_PAYLOAD + 1)
    except zlib.error:
        raise HepDecodeError("bad_compression") from None
    if len(out) > MAX_PAYLOAD or inflater.unconsumed_tail or not inflater.eof:
        raise HepDecodeError("bad_compression")
    return out


# ------------------------------------------------------------------------ v1 / v2

_V2_HEADER = struct.Struct("!BBBBHH")  # version, header length, family, protocol, ports
_V2_TIME = struct.Struct("<IIH")  # seconds, microseconds, capture id: the sender's byte order
_V2_TIME_SIZES = (10, 12)  # packed, or as C pads the struct (sofia-sip, Kamailio)


def _decode_v2(data: bytes) -> HepPacket:
    """The fixed v1/v2 header: 8 bytes, the two addresses, (v2) a time header, payload.

    The v2 time header is copied from a C struct in the sender's byte order; every capture
    agent in use runs on little-endian hardware (x86, ARM), so that is what is read.
    """
    version, hlen, family, ip_proto, src_port, dst_port = _V2_HEADER.unpack_from(data)
    if family == AF_INET:
        alen, af = 4, socket.AF_INET
    elif family == AF_INET6:
        alen, af = 16, socket.AF_INET6
    else:
        raise HepDecodeError("bad_chunk_value")
    base = 8 + 2 * alen
    if not (hlen == base if version == 1 else hlen - base in _V2_TIME_SIZES):
        raise HepDecodeError("bad_length")
    if len(data) < hlen:
        raise HepDecodeError("bad_length")
    src = data[8 : 8 + alen]
    dst = data[8 + alen : base]
    ts = 0.0
    agent_id = 0
    if version == 2:
        seconds, micros, agent_id = _V2_TIME.unpack_from(data, base)
        if micros >= 1_000_000:
            raise HepDecodeError("bad_chunk_value")
        ts = seconds + micros / 1_000_000
    return HepPacket(
        version,
        4 if alen == 4 else 6,
        transport_name(ip_proto),
        socket.inet_ntop(af, src),
        socket.inet_ntop(af, dst),
        src_port,
        dst_port,
        ts,
        PROTO_SIP,  # v1/v2 carry SIP only
        agent_id,
        data[hlen:],
        None,
        alen == 16 and _garbled6(src) and _garbled6(dst),
    )
