"""Property tests: the framer/parser never raises and never loses a well-formed message."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipwatch.ingest.framing import LogParser
from sipwatch.model import LogChunk, SipMessage, Stream
from tests.ingest_support import feed_text
from tools.synth import Device, sip_dump, stamp

T0 = 1772366400.0

noise_line = st.one_of(
    st.text(max_size=120).map(lambda s: s.replace("\n", " ") + "\n"),
    st.sampled_from(
        [
            "tport.c:3233 tport_recv_iovec() msg 0x1 from (udp/1.2.3.4:5060) has 423 bytes\n",
            "DrachtioController::run ready\n",
            "Client::read_handler read: 1|sip|2|REGISTER sip:x SIP/2.0\n",
            "   *** message truncated at 12 ***\n",
            '{"level":30,"time":1,"msg":"hello"}\n',
            "{not json\n",
            "recv 12 bytes from udp/[1.2.3.4]:5060 at 00:00:00.000000:\n",
            "\r\n",
            " \n",
        ]
    ),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=4000), st.integers(min_value=1, max_value=64))
def test_arbitrary_bytes_never_raise(data: bytes, cut: int) -> None:
    text = data.decode("utf-8", "replace")
    p = LogParser()
    for i in range(0, len(text), cut):
        p.feed(LogChunk("x", Stream.TEXT, text[i : i + cut]))
    p.feed(LogChunk("x", Stream.TEXT, ""))
    p.flush()


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.lists(noise_line, max_size=4)), min_size=1, max_size=12),
    st.integers(1, 5),
)
def test_well_formed_messages_survive_interleaved_noise(
    plan: list[tuple[bool, list[str]]], chunks: int
) -> None:
    parts: list[str] = []
    expected: list[str] = []
    t = T0
    for i, (is_msg, noise) in enumerate(plan):
        for line in noise:
            t += 0.001
            parts.append(f"{stamp(t)} {line}")
        if is_msg:
            dev = Device(str(1000 + i), "acme.example.com", "203.0.113.9")
            req = dev.register()
            t += 0.001
            parts.append(sip_dump(t, "recv", "udp", dev.ip, 5060, req))
            expected.append(dev.call_id)
    events = feed_text(LogParser(), "".join(parts), chunks=chunks)
    assert [e.call_id for e in events if isinstance(e, SipMessage)] == expected
