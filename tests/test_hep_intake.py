"""The HEP receive path without sockets: packets in, per-node SIP messages out, every
rejection counted."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from sipwatch.ingest.framing import LogParser
from sipwatch.model import Direction, LogChunk, SipMessage, Stream
from sipwatch.sources.hep.addresses import AddressSet, SbcDirection
from sipwatch.sources.hep.intake import HepIntake, split_sip_stream, via_peer
from tests.hep_encoding import Capture, drachtio_ipv6_bug, encode_hep2, encode_hep3
from tests.hep_scenario import SBC_IP, mixed_scenario, wire_message
from tools.synth import Device

DEVICE = Device("1001", "acme.example.com", "203.0.113.21", 5062)


def register_packet(**kw: object) -> bytes:
    base: dict[str, object] = {
        "src_ip": DEVICE.ip,
        "src_port": DEVICE.port,
        "dst_ip": SBC_IP,
        "dst_port": 5060,
        "seconds": 1795766400,
        "micros": 0,
        "payload": wire_message(DEVICE.register()),
    }
    base.update(kw)
    return encode_hep3(Capture(**base))  # type: ignore[arg-type]


def messages(intake: HepIntake) -> list[SipMessage]:
    return [m for batch in intake.take_batches() for m in batch.messages]


def test_messages_are_the_ones_the_log_gives() -> None:
    """The same scenario as drachtio's log and as its HEP feed: the same SipMessages,
    field for field (direction, peer, size, time...), except the source name."""
    sc = mixed_scenario()
    intake = HepIntake()
    for packet in sc.packets():
        intake.receive(packet, "127.0.0.1")
    batches = intake.take_batches()
    assert {(b.source, b.node) for b in batches} == {("hep/101", "101")}
    from_hep = [m for b in batches for m in b.messages]
    parser = LogParser()
    events = parser.feed(LogChunk("drachtio.log", Stream.TEXT, sc.log_text)) + parser.flush()
    from_log = [e for e in events if type(e) is SipMessage]
    assert len(from_hep) == len(from_log) == len(sc.captures)
    for hep, logged in zip(from_hep, from_log, strict=True):
        assert hep.source == "hep/101"
        assert dataclasses.replace(hep, source="") == dataclasses.replace(logged, source="")
    # the SBC's own OPTIONS ping came after the SBC address was learned: it is a "send"
    options = [m for m in from_hep if m.method == "OPTIONS"]
    assert [(m.direction, m.is_request) for m in options] == [
        (Direction.SEND, True),
        (Direction.RECV, False),
    ]
    assert intake.stats.messages == {"101": len(from_hep)} and intake.pending == 0


def options_from_sbc() -> bytes:
    lines = [
        "OPTIONS sip:192.0.2.10 SIP/2.0",
        f"Via: SIP/2.0/UDP {SBC_IP}:5060;branch=z9hG4bKx",
        "From: <sip:10.0.0.5>;tag=1",
        "To: <sip:192.0.2.10>",
        "Call-ID: o1",
        "CSeq: 1 OPTIONS",
        "Content-Length: 0",
    ]
    return register_packet(
        src_ip=SBC_IP,
        src_port=5060,
        dst_ip="192.0.2.10",
        dst_port=5060,
        payload=wire_message(lines),
    )


def test_configured_sbc_addresses_decide_from_the_first_packet() -> None:
    learned = HepIntake()
    configured = HepIntake(sbc_addresses=AddressSet(["10.0.0.0/24"]))
    for intake in (learned, configured):
        intake.receive(options_from_sbc(), "127.0.0.1")
    assert messages(configured)[0].direction is Direction.SEND
    assert messages(configured) == []
    # before anything is learned, a request counts as received (the documented guess)
    assert messages(learned)[0].direction is Direction.RECV


def test_learning_the_sbc_address() -> None:
    seen: list[str] = []
    direction = SbcDirection(AddressSet(()), on_learned=seen.append)
    # three devices talk to the SBC: it is the address with three peers
    for i in range(3):
        device = f"203.0.113.{i + 1}"
        assert direction.sent_by_sbc(device, SBC_IP, True) is False
        assert direction.sent_by_sbc(SBC_IP, device, False) is True
    assert seen == [SBC_IP] and direction.learned == {SBC_IP}
    # now even the SBC's own requests and a carrier's responses are told apart
    assert direction.sent_by_sbc(SBC_IP, "192.0.2.10", True) is True
    assert direction.sent_by_sbc("192.0.2.10", SBC_IP, False) is False


def test_learning_prefers_the_busier_address_before_it_is_sure() -> None:
    direction = SbcDirection(AddressSet(()))
    assert direction.sent_by_sbc("203.0.113.1", SBC_IP, True) is False
    # the SBC has talked with one peer, the carrier with none: the SBC's own request is
    # already a "send", before any address is learned
    assert direction.sent_by_sbc(SBC_IP, "192.0.2.10", True) is True
    assert direction.learned == set()


@given(st.lists(st.ip_addresses(v=4).map(str), min_size=1, max_size=3000))
def test_learning_state_is_bounded(addresses: list[str]) -> None:
    from sipwatch.sources.hep import addresses as hep_addresses

    direction = SbcDirection(AddressSet(()))
    for i, src in enumerate(addresses):
        direction.sent_by_sbc(src, addresses[i // 2], bool(i % 2))
    assert len(direction._peers) <= hep_addresses.MAX_TRACKED
    assert len(direction.learned) <= hep_addresses.MAX_LEARNED
    assert all(len(p) <= hep_addresses.HUB_PEERS for p in direction._peers.values())


def test_address_set_membership() -> None:
    nets = AddressSet(["10.0.0.0/8", "2001:db8::/32", "127.0.0.1"])
    assert "10.1.2.3" in nets and "::ffff:10.1.2.3" in nets and "2001:db8::5" in nets
    assert "127.0.0.1" in nets and "127.0.0.2" not in nets
    assert "192.168.1.1" not in nets and "not an ip" not in nets and 5 not in nets
    assert "fe80::1%eth0" not in nets
    assert not AddressSet(())


def test_senders_outside_the_allowlist_are_dropped_and_not_forwarded() -> None:
    forwarded: list[bytes] = []
    intake = HepIntake(allow=AddressSet(["127.0.0.0/8"]), forward=forwarded.append)
    intake.receive(register_packet(), "198.51.100.7")
    intake.receive(register_packet(), "127.0.0.1")
    assert intake.stats.dropped["sender_not_allowed"] == 1
    assert len(forwarded) == 1 and len(messages(intake)) == 1


def test_auth_key() -> None:
    forwarded: list[bytes] = []
    intake = HepIntake(auth_key=b"k3y", forward=forwarded.append)
    for key in (None, b"wrong", b"k3y"):
        packet = encode_hep3(
            Capture(
                DEVICE.ip,
                DEVICE.port,
                SBC_IP,
                5060,
                1795766400,
                0,
                wire_message(DEVICE.register()),
                auth_key=key,
            )
        )
        intake.receive(packet, "127.0.0.1")
    assert intake.stats.dropped["auth_failed"] == 2
    assert len(forwarded) == 1 and len(messages(intake)) == 1


def test_agents_are_bounded() -> None:
    intake = HepIntake(max_agents=2)
    for agent in (1, 2, 3, 4, 1):
        intake.receive(register_packet(agent_id=agent), "127.0.0.1")
    batches = intake.take_batches()
    assert sorted((b.source, b.node, len(b.messages)) for b in batches) == [
        ("hep/1", "1", 2),
        ("hep/2", "2", 1),
        ("hep/other", "other", 2),
    ]
    assert intake.stats.notes["agent_over_limit"] == 2
    assert intake.stats.packets == {"1": 2, "2": 1, "other": 2}


def test_backlog_is_bounded_but_forwarding_goes_on() -> None:
    forwarded: list[bytes] = []
    intake = HepIntake(max_backlog=5, forward=forwarded.append)
    for _ in range(12):
        intake.receive(register_packet(), "127.0.0.1")
    assert intake.pending == 5 and intake.stats.dropped["backlog_full"] == 7
    assert len(forwarded) == 12
    assert len(messages(intake)) == 5 and intake.pending == 0
    intake.receive(register_packet(), "127.0.0.1")
    assert intake.pending == 1


def test_batches_are_bounded() -> None:
    intake = HepIntake()
    for _ in range(25):
        intake.receive(register_packet(), "127.0.0.1")
    assert [len(b.messages) for b in intake.take_batches(limit=10)] == [10, 10, 5]
    assert intake.take_batches() == []


def test_other_protocols_are_forwarded_not_analysed() -> None:
    forwarded: list[bytes] = []
    intake = HepIntake(forward=forwarded.append)
    rtcp = register_packet(proto_type=5, payload=b"\x80\xc8\x00\x06")
    intake.receive(rtcp, "127.0.0.1")
    assert forwarded == [rtcp] and intake.stats.dropped["not_sip"] == 1
    assert intake.stats.packets == {"101": 1} and messages(intake) == []


def test_invalid_packets_and_payloads_are_counted() -> None:
    intake = HepIntake()
    intake.receive(b"HEP3\x00\x20" + bytes(10), "127.0.0.1")
    intake.receive(register_packet(payload=b"\x16\x03\x01 TLS garbage"), "127.0.0.1")
    assert intake.stats.errors["bad_length"] == 1
    assert intake.stats.errors["unparsable_sip"] == 1
    assert messages(intake) == []


def test_a_bug_costs_one_packet_not_the_feed() -> None:
    def broken(data: bytes) -> None:
        raise RuntimeError("boom")

    intake = HepIntake(forward=broken)
    intake.receive(register_packet(), "127.0.0.1")
    assert intake.stats.errors["internal"] == 1


def test_hep1_packets_get_the_receive_time() -> None:
    intake = HepIntake(clock=lambda: 1234.5)
    cap = Capture(DEVICE.ip, DEVICE.port, SBC_IP, 5060, 99, 0, wire_message(DEVICE.register()))
    intake.receive(encode_hep2(cap, version=1), "127.0.0.1")
    intake.receive(encode_hep2(cap, version=2), "127.0.0.1")
    assert [m.ts for m in messages(intake)] == [1234.5, 99.0]


def test_drachtio_ipv6_bug_takes_the_peer_from_the_via() -> None:
    device = Device("1001", "acme.example.com", "2001:db8::21", 5062)
    request = device.register()
    request[1] = (
        "Via: SIP/2.0/UDP [fd00::21]:5062;branch=z9hG4bKv6;received=2001:db8::99;rport=40000"
    )
    intake = HepIntake()
    for src, dst, lines in (
        (device.ip, "2001:db8::1", request),
        ("2001:db8::1", device.ip, device.response(request, 401, "Unauthorized")),
    ):
        cap = Capture(src, 5062, dst, 5060, 1795766400, 0, wire_message(lines))
        intake.receive(drachtio_ipv6_bug(encode_hep3(cap)), "::1")
    got = [(m.direction, m.peer_ip, m.peer_port) for m in messages(intake)]
    assert got == [
        (Direction.RECV, "2001:db8::99", 40000),
        (Direction.SEND, "2001:db8::99", 40000),
    ]
    assert intake.stats.notes["ipv6_addresses_garbled"] == 2


def test_via_peer_forms() -> None:
    assert via_peer("REGISTER x SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4:5070;branch=z\r\n") == (
        "1.2.3.4",
        5070,
    )
    assert via_peer("X\r\nv: SIP/2.0/TCP host.example;rport=7;received=5.6.7.8\r\n") == (
        "5.6.7.8",
        7,
    )
    assert via_peer("X\r\nVia: SIP/2.0/UDP [2001:db8::1]\r\n") == ("2001:db8::1", 5060)
    assert via_peer("no via here") is None


def test_a_stream_payload_is_split_and_a_cut_message_marked() -> None:
    first = wire_message(DEVICE.register())
    body = b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\n"
    second = (
        b"MESSAGE sip:x SIP/2.0\r\nCall-ID: m\r\nCSeq: 1 MESSAGE\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    third = wire_message(DEVICE.register())[:-10]  # cut inside the headers
    payload = first + b"\r\n\r\n" + second + third  # keep-alive CRLFs between messages
    assert split_sip_stream(payload) == [(first, False), (second, False), (third, True)]
    cut_body = second[:-5]
    assert split_sip_stream(cut_body) == [(cut_body, True)]
    intake = HepIntake()
    intake.receive(register_packet(transport="tcp", payload=payload), "127.0.0.1")
    got = messages(intake)
    assert [(m.method, m.truncated, m.size) for m in got] == [
        ("REGISTER", False, len(first)),
        ("MESSAGE", False, len(second)),
        ("REGISTER", True, len(third)),
    ]
    assert intake.stats.notes["sip_truncated"] == 1
    assert all(m.transport == "tcp" for m in got)


@given(
    st.lists(
        st.sampled_from([b"\r\n", b"\r\n\r\n", b"X", b"l: 3", b"\n", b"SIP/2.0 "]), max_size=80
    ).map(b"".join)
    | st.binary(max_size=2000)
)
def test_splitting_is_bounded_and_loses_nothing(payload: bytes) -> None:
    """Parts are consecutive slices of the payload; only keep-alive CRLFs are left out."""
    parts = split_sip_stream(payload)
    assert len(parts) <= 64
    pos = 0
    for part, _ in parts:
        while payload.startswith(b"\r\n", pos):
            pos += 2
        assert part and payload[pos : pos + len(part)] == part
        pos += len(part)
    if len(parts) < 64:
        rest = payload[pos:]
        assert rest == b"\r\n" * (len(rest) // 2)


@given(st.binary(max_size=600), st.sampled_from(["127.0.0.1", "::1", "", "junk"]))
def test_arbitrary_packets_never_raise(data: bytes, sender: str) -> None:
    intake = HepIntake(allow=AddressSet(["127.0.0.0/8", "::1/128"]))
    intake.receive(data, sender)
    intake.receive(b"HEP3" + len(data + b"HEP3..").to_bytes(2, "big") + data, sender)
    assert intake.stats.errors["internal"] == 0
    assert intake.pending <= 2 * 64  # a stream payload holds at most 64 messages


def test_a_capture_time_far_ahead_is_not_believed() -> None:
    intake = HepIntake(clock=lambda: 1795766400.0)
    intake.receive(register_packet(seconds=1795766400 + 60), "127.0.0.1")  # clocks differ a bit
    intake.receive(register_packet(seconds=2**32 - 1), "127.0.0.1")  # the year 2106
    assert [m.ts for m in messages(intake)] == [1795766460.0, 1795766400.0]
    assert intake.stats.notes["clock_ahead"] == 1
