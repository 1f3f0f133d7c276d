"""Coverage-guided fuzzing of the HEP receive path with atheris (libFuzzer for Python).

    python -m tests.hep_fuzz -runs=20000 CORPUS_DIR          # short, bounded (the test)
    python -m tests.hep_fuzz -max_total_time=600 CORPUS_DIR  # a longer campaign

``CORPUS_DIR`` is seeded with valid packets of every shape the decoder knows (drachtio's
HEP3, any chunk order, IPv6 and drachtio's garbled IPv6, compressed payloads, HEP2/HEP1,
a stream payload with several messages) when it is empty, so mutations start deep inside
the format.  The target decodes the input, runs it through the whole intake (decode, auth
key, agents, SIP parsing, direction) with and without a leading valid HEP3 header, and
splits it as a stream payload.  A crash is any exception other than HepDecodeError out of
the decoder, any exception out of the intake (it swallows and counts them as ``internal``,
so that counter must stay 0), or a broken invariant.  libFuzzer writes a crashing input to
``crash-<sha1>``; keep it in ``tests/hep_fuzz_regressions/`` so that
``tests/test_hep_fuzz.py`` replays it forever.
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["sipwatch"]):
    from sipwatch.sources.hep.addresses import AddressSet
    from sipwatch.sources.hep.decode import (
        DECODE_ERRORS,
        MAX_PAYLOAD,
        HepDecodeError,
        decode_hep,
    )
    from sipwatch.sources.hep.intake import HepIntake, split_sip_stream, via_peer

from tests.hep_encoding import (
    Capture,
    assemble_hep3,
    chunk,
    drachtio_ipv6_bug,
    encode_hep2,
    encode_hep3,
    hep3_chunks,
)
from tests.hep_scenario import mixed_scenario

INTAKE = HepIntake(allow=AddressSet(["127.0.0.0/8"]), auth_key=None, max_agents=4, max_backlog=1000)


def check(data: bytes) -> None:
    """The fuzz target: raises only on a real defect."""
    try:
        packet = decode_hep(data)
    except HepDecodeError as exc:
        if exc.reason not in DECODE_ERRORS:
            raise AssertionError(f"unknown reason {exc.reason!r}") from None
    else:
        if len(packet.payload) > MAX_PAYLOAD or not 0 <= packet.src_port <= 65535:
            raise AssertionError("bounds")
    INTAKE.receive(data, "127.0.0.1")
    header = b"HEP3" + (len(data) + 6).to_bytes(2, "big") if len(data) < 65530 else b""
    INTAKE.receive(header + data, "127.0.0.1")
    INTAKE.take_batches()
    if INTAKE.stats.errors["internal"] or INTAKE.pending:
        raise AssertionError("the intake raised (counted as internal) or kept messages")
    parts = split_sip_stream(data)
    if len(parts) > 64 or sum(len(p) for p, _ in parts) > len(data):
        raise AssertionError("split_sip_stream invented bytes")
    via_peer(data.decode("utf-8", "replace"))


def TestOneInput(data: bytes) -> None:  # atheris' conventional name
    check(data)


def seeds() -> list[bytes]:
    packets = mixed_scenario().packets()
    register = mixed_scenario().captures[0]
    v6 = Capture("2001:db8::5", 5060, "2001:db8::1", 5060, 1, 2, register.payload)
    chunks = hep3_chunks(register)
    chunks[0x0F] = chunk(0x10, gzip.compress(register.payload))
    out = [
        packets[0],
        packets[1],
        assemble_hep3(list(reversed(list(hep3_chunks(register).values())))),
        encode_hep3(v6),
        drachtio_ipv6_bug(encode_hep3(v6)),
        assemble_hep3(list(chunks.values())),
        encode_hep2(register),
        encode_hep2(register, version=1),
        encode_hep2(v6, time_size=10),
        encode_hep3(
            Capture(**{**register.__dict__, "transport": "tcp", "payload": register.payload * 3})
        ),
    ]
    return out


def main() -> None:
    dirs = [a for a in sys.argv[1:] if not a.startswith("-")]
    if dirs:
        corpus = Path(dirs[0])
        corpus.mkdir(parents=True, exist_ok=True)
        if not any(corpus.iterdir()):
            for i, seed in enumerate(seeds()):
                (corpus / f"seed-{i:02d}").write_bytes(seed)
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
