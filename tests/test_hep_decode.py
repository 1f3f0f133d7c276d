"""The HEP decoder against packets built from the protocol (tests/hep_encoding.py), and
against hostile bytes."""

from __future__ import annotations

import gzip
import ipaddress
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipwatch.sources.hep.decode import (
    DECODE_ERRORS,
    MAX_PAYLOAD,
    HepDecodeError,
    HepPacket,
    _decode_drachtio_v3,
    decode_hep,
    decode_v3_chunks,
    hep3_frame_length,
)
from tests.hep_encoding import (
    DRACHTIO_ORDER,
    Capture,
    assemble_hep3,
    chunk,
    drachtio_ipv6_bug,
    encode_hep2,
    encode_hep3,
    hep3_chunks,
)

REGISTER = (
    b"REGISTER sip:acme.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK1;rport\r\n"
    b"Call-ID: a@b\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"
)


def capture(**kw: object) -> Capture:
    base: dict[str, object] = {
        "src_ip": "203.0.113.5",
        "src_port": 5060,
        "dst_ip": "10.0.0.5",
        "dst_port": 5060,
        "seconds": 1795766400,
        "micros": 123456,
        "payload": REGISTER,
    }
    base.update(kw)
    return Capture(**base)  # type: ignore[arg-type]


def same_address(packet: HepPacket, cap: Capture) -> None:
    """The same addresses and ports (IPv6 text forms differ between libraries)."""
    ip = ipaddress.ip_address
    assert (ip(packet.src_ip), ip(packet.dst_ip)) == (ip(cap.src_ip), ip(cap.dst_ip))
    assert (packet.src_port, packet.dst_port) == (cap.src_port, cap.dst_port)


def expect(cap: Capture, packet: HepPacket, version: int = 3) -> None:
    assert packet.version == version
    same_address(packet, cap)
    assert packet.ts == cap.seconds + cap.micros / 1_000_000
    assert packet.agent_id == (cap.agent_id if version == 3 else cap.agent_id & 0xFFFF)
    assert packet.payload == cap.payload
    assert packet.transport == cap.transport
    assert packet.proto_type == cap.proto_type


# ------------------------------------------------------------------ what drachtio sends


def test_drachtio_packet() -> None:
    cap = capture()
    data = encode_hep3(cap)
    # "HEP3", total length, then family first and the payload last, 11 chunks
    assert data[:4] == b"HEP3" and struct.unpack(">H", data[4:6])[0] == len(data)
    packet = decode_hep(data)
    expect(cap, packet)
    assert packet.family == 4 and not packet.garbled_addresses and packet.auth_key is None


def test_the_fast_path_takes_drachtio_layout_only_and_agrees_with_the_walk() -> None:
    cap = capture()
    data = encode_hep3(cap)
    assert _decode_drachtio_v3(data) == decode_v3_chunks(data)
    reordered = encode_hep3(cap, order=(0x0F, *DRACHTIO_ORDER[:-1]))
    assert _decode_drachtio_v3(reordered) is None
    assert decode_hep(reordered) == decode_hep(data)
    # a longer agent-id chunk, or trailing bytes, are not drachtio's layout
    assert _decode_drachtio_v3(data + b"x") is None


def test_drachtio_ipv6_addresses_are_flagged() -> None:
    cap = capture(src_ip="2001:db8::5", dst_ip="2001:db8::1")
    good = decode_hep(encode_hep3(cap))
    assert good.family == 6 and good.src_ip == "2001:db8::5" and not good.garbled_addresses
    bad = decode_hep(drachtio_ipv6_bug(encode_hep3(cap)))
    assert bad.src_ip == bad.dst_ip == "::" and bad.garbled_addresses
    assert bad.payload == REGISTER


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls", "sctp"])
def test_transports(transport: str) -> None:
    assert decode_hep(encode_hep3(capture(transport=transport))).transport == transport


def test_hep2_and_hep1() -> None:
    cap = capture(agent_id=7)
    for size in (10, 12):
        expect(cap, decode_hep(encode_hep2(cap, time_size=size)), version=2)
    v6 = capture(src_ip="2001:db8::5", dst_ip="::1")
    expect(v6, decode_hep(encode_hep2(v6)), version=2)
    v1 = decode_hep(encode_hep2(cap, version=1))
    assert v1.version == 1 and v1.ts == 0.0 and v1.agent_id == 0 and v1.payload == REGISTER


def test_unknown_and_vendor_chunks_are_skipped_and_auth_key_is_read() -> None:
    cap = capture(auth_key=b"s3cret")
    extra = (chunk(0x11, b"correlation"), chunk(0x0F, b"vendor thing", vendor=0x0002))
    packet = decode_hep(encode_hep3(cap, extra=extra))
    expect(cap, packet)
    assert packet.auth_key == b"s3cret"


def test_compressed_payload() -> None:
    cap = capture()
    chunks = hep3_chunks(cap)
    chunks[0x0F] = chunk(0x10, gzip.compress(REGISTER))
    assert decode_hep(assemble_hep3(list(chunks.values()))).payload == REGISTER


def test_a_compression_bomb_is_bounded() -> None:
    chunks = hep3_chunks(capture())
    bomb = gzip.compress(bytes(MAX_PAYLOAD * 20))
    assert len(bomb) < 10_000
    chunks[0x0F] = chunk(0x10, bomb)
    with pytest.raises(HepDecodeError) as info:
        decode_hep(assemble_hep3(list(chunks.values())))
    assert info.value.reason == "bad_compression"


def test_tcp_frame_length() -> None:
    data = encode_hep3(capture())
    assert hep3_frame_length(data[:6]) == len(data)
    for header, reason in ((b"HEP2\x00\x20", "bad_version"), (b"HEP3\x00\x05", "bad_length")):
        with pytest.raises(HepDecodeError) as info:
            hep3_frame_length(header)
        assert info.value.reason == reason


# ------------------------------------------------------------------ hostile packets


def without(types: set[int]) -> bytes:
    return assemble_hep3([c for t, c in hep3_chunks(capture()).items() if t not in types])


def with_chunk(ctype: int, value: bytes) -> bytes:
    chunks = hep3_chunks(capture())
    chunks[ctype] = chunk(ctype, value)
    return assemble_hep3(list(chunks.values()))


def lying_total(data: bytes, total: int) -> bytes:
    return data[:4] + struct.pack(">H", total) + data[6:]


GOOD = encode_hep3(capture())
# a chunk of length 0 would make a naive walker loop forever
ZERO_LENGTH = assemble_hep3([*hep3_chunks(capture()).values(), b"\x00\x00\x00\x11\x00\x00"])


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"HEP3", "short"),
        (b"", "short"),
        (b"GET / HTTP/1.1\r\n\r\n", "bad_version"),
        (b"\x03" + GOOD[1:], "bad_version"),
        (lying_total(GOOD, len(GOOD) + 1), "bad_length"),
        (lying_total(GOOD, len(GOOD) - 1), "bad_length"),
        (GOOD[:-3], "bad_length"),  # the datagram was cut: total length no longer matches
        (ZERO_LENGTH, "bad_chunk_length"),
        (lying_total(GOOD + b"\x00\x00\x00", len(GOOD) + 3), "truncated_chunk"),
        (
            lying_total(GOOD + b"\x00\x00\x00\x0f\x01\x00", len(GOOD) + 6),
            "truncated_chunk",
        ),  # a chunk announcing 256 bytes with none left
        (with_chunk(0x03, b"\x01\x02\x03"), "bad_chunk_value"),
        (with_chunk(0x05, bytes(15)), "bad_chunk_value"),
        (with_chunk(0x07, b"\x13\xc4\x00"), "bad_chunk_value"),
        (with_chunk(0x0A, struct.pack(">I", 1_000_000)), "bad_chunk_value"),
        (with_chunk(0x01, b"\x07"), "bad_chunk_value"),
        (with_chunk(0x0C, b"\x01\x02\x03"), "bad_chunk_value"),
        (without({0x0F}), "missing_chunk"),
        (without({0x03}), "missing_chunk"),
        (without({0x07}), "missing_chunk"),
        (without({0x09}), "missing_chunk"),
        (without({0x0B}), "missing_chunk"),
        (with_chunk(0x10, b"not gzip"), "bad_compression"),
        (encode_hep2(capture())[:20], "bad_length"),  # cut inside the v2 header
        (b"\x02\x10\x07\x11" + bytes(40), "bad_chunk_value"),  # v2, unknown family
        (b"\x02\x11\x02\x11" + bytes(40), "bad_length"),  # v2, header length lies
    ],
)
def test_hostile_packets_are_rejected_with_a_reason(data: bytes, reason: str) -> None:
    assert reason in DECODE_ERRORS
    with pytest.raises(HepDecodeError) as info:
        decode_hep(data)
    assert info.value.reason == reason


def test_optional_chunks_have_defaults() -> None:
    packet = decode_hep(without({0x01, 0x02, 0x0A, 0x0C}))
    assert packet.family == 4 and packet.transport == "udp"
    assert packet.ts == 1795766400.0 and packet.agent_id == 0


# ------------------------------------------------------------------ properties

ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ports = st.integers(0, 65535)
header_text = st.text(
    st.characters(codec="utf-8", exclude_characters="\r\n\x00"), min_size=0, max_size=60
)


@st.composite
def sip_messages(draw: st.DrawFn) -> bytes:
    """Any SIP-shaped message: a start line, arbitrary headers, an arbitrary body."""
    start = draw(
        st.one_of(
            st.builds(
                lambda m, u: f"{m} {u} SIP/2.0",
                st.sampled_from(["REGISTER", "INVITE"]),
                header_text,
            ),
            st.builds(lambda c, r: f"SIP/2.0 {c} {r}", st.integers(100, 699), header_text),
        )
    )
    headers = draw(st.lists(st.tuples(header_text, header_text), max_size=12))
    body = draw(st.binary(max_size=2000))
    text = start + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    return text.encode() + body


@st.composite
def captures(draw: st.DrawFn) -> Capture:
    v6 = draw(st.booleans())
    address = ipv6 if v6 else ipv4
    return Capture(
        src_ip=draw(address),
        src_port=draw(ports),
        dst_ip=draw(address),
        dst_port=draw(ports),
        seconds=draw(st.integers(0, 2**32 - 1)),
        micros=draw(st.integers(0, 999_999)),
        payload=draw(sip_messages()),
        agent_id=draw(st.integers(0, 2**32 - 1)),
        transport=draw(st.sampled_from(["udp", "tcp", "tls", "sctp"])),
        proto_type=draw(st.sampled_from([1, 1, 1, 5, 100])),
        auth_key=draw(st.none() | st.binary(max_size=40)),
    )


@given(captures())
def test_any_message_and_address_survive_drachtio_order(cap: Capture) -> None:
    data = encode_hep3(cap)
    packet = decode_hep(data)
    expect(cap, packet)
    assert packet.auth_key == cap.auth_key
    assert packet == decode_v3_chunks(data)  # fast path and walk agree


@given(captures(), st.randoms(use_true_random=False))
def test_any_chunk_order_decodes_the_same(cap: Capture, rnd: object) -> None:
    chunks = list(hep3_chunks(cap).values())
    rnd.shuffle(chunks)  # type: ignore[attr-defined]
    packet = decode_hep(assemble_hep3(chunks))
    expect(cap, packet)


@given(captures(), st.sampled_from([1, 2]), st.sampled_from([10, 12]))
def test_any_message_and_address_survive_hep2(cap: Capture, version: int, size: int) -> None:
    packet = decode_hep(encode_hep2(cap, version=version, time_size=size))
    assert packet.payload == cap.payload
    same_address(packet, cap)


def decodes_or_rejects(data: bytes) -> None:
    try:
        packet = decode_hep(data)
    except HepDecodeError as exc:
        assert exc.reason in DECODE_ERRORS
    else:
        assert isinstance(packet, HepPacket)
        assert len(packet.payload) <= MAX_PAYLOAD


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_anything_else(data: bytes) -> None:
    decodes_or_rejects(data)
    decodes_or_rejects(b"HEP3" + data)
    decodes_or_rejects(b"HEP3" + struct.pack(">H", len(data) + 6) + data)
    decodes_or_rejects(b"\x02" + data)


@given(captures(), st.data())
def test_mutated_packets_never_raise_anything_else(cap: Capture, data: st.DataObject) -> None:
    packet = bytearray(encode_hep3(cap))
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(packet) - 1))
        packet[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(packet)))
    decodes_or_rejects(bytes(packet))
    decodes_or_rejects(bytes(packet[:cut]))
    decodes_or_rejects(lying_total(bytes(packet[:cut]), cut) if cut >= 6 else bytes(packet))
