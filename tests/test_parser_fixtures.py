"""Hand-written logs in drachtio's, pino's and the deployments' real formats, exact counts.

The fixtures (``tests/fixtures/``, see its README) were typed from the reference, not made by
``tools/synth.py``; each test states every count, so a change in framing shows up here.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from sipwatch.model import AttemptOutcome, Direction, Side, Stream
from tests.ingest_support import FIXTURES, parse, track


def read(name: str) -> str:
    return (FIXTURES / name).read_bytes().decode()


def at(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC).timestamp()


# ---------------------------------------------------------------- the fixtures themselves
_HEADER = re.compile(
    r"^(?P<stamp>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} |[0-9a-f]{8}\|[^|]+\| )"
    r"(?:recv|send) (?P<n>\d+) bytes (?:from|to) [a-z]+/\[[^\]]+\]:\d+ at [\d:.]+:\n",
    re.MULTILINE,
)
_NEXT_RECORD = re.compile(r"^(?:\d{4}-\d\d-\d\d \d\d:|[0-9a-f]{8}\|)", re.MULTILINE)


@pytest.mark.parametrize("name", ["drachtio/register-flows.log", "drachtio/legacy-2017.log"])
def test_every_dump_is_as_long_as_its_header_says(name: str) -> None:
    """Reference 2.3: the logged dump (CRLF lines, then " \\n" or "last line \\n") is the
    wire size.  The one exception is the dump sofia cut, announced by the marker after it."""
    text = read(name)
    checked = 0
    for m in _HEADER.finditer(text):
        end = _NEXT_RECORD.search(text, m.end())
        body = text[m.end() : end.start() if end else len(text)]
        assert body.endswith(" \n") and not body.endswith("\r\n")
        if "*** message truncated" in text[end.start() : end.start() + 80] if end else False:
            assert len(body) < int(m.group("n"))
            continue
        assert len(body) == int(m.group("n")), body[:60]
        checked += 1
    assert checked == {"drachtio/register-flows.log": 18, "drachtio/legacy-2017.log": 4}[name]


# ---------------------------------------------------------------- current drachtio format
@pytest.mark.parametrize("chunks", [1, 3, 11])
def test_register_flows(chunks: int) -> None:
    msgs, svc, p = parse(read("drachtio/register-flows.log"), chunks=chunks, stream=Stream.STDERR)
    assert p.stats.records == {"sip": 19, "service": 3, "api": 3, "other": 9, "truncation": 1}
    assert p.stats.errors == {}
    assert p.stats.lines == 256  # wc -l
    summary = [
        (m.direction.value, m.method, m.status, m.transport, m.peer_ip, m.peer_port, m.cseq)
        for m in msgs
    ]
    zoiper = ("udp", "203.0.113.7", 50933)
    yealink = ("tcp", "198.51.100.23", 38211)
    scanner = ("udp", "185.243.5.17", 5077)
    carrier = ("udp", "192.0.2.50", 5060)
    assert summary == [
        ("recv", "REGISTER", 0, *zoiper, 1),
        ("send", "REGISTER", 401, *zoiper, 1),
        ("recv", "REGISTER", 0, *zoiper, 2),
        ("recv", "REGISTER", 0, *zoiper, 2),  # retransmission
        ("send", "REGISTER", 200, *zoiper, 2),
        ("recv", "REGISTER", 0, *yealink, 1),
        ("send", "REGISTER", 401, *yealink, 1),
        ("recv", "REGISTER", 0, *yealink, 2),
        ("send", "REGISTER", 403, *yealink, 2),
        ("recv", "REGISTER", 0, *scanner, 1),
        ("send", "REGISTER", 603, *scanner, 1),
        ("send", "REGISTER", 0, *carrier, 91001),
        ("recv", "REGISTER", 407, *carrier, 91001),
        ("send", "REGISTER", 0, *carrier, 91002),
        ("recv", "REGISTER", 200, *carrier, 91002),
        ("recv", "INVITE", 0, *zoiper, 1),
        ("send", "INVITE", 100, *zoiper, 1),
        ("recv", "OPTIONS", 0, "udp", "2001:db8::7", 5060, 63104),
        ("recv", "MESSAGE", 0, *yealink, 5),
    ]
    assert [m.size for m in msgs] == [
        599, 463, 836, 836, 437, 400, 405, 624, 330, 491, 309, 383, 401, 569, 336, 611, 310,
        272, 3275,
    ]  # fmt: skip
    assert [m.reason for m in msgs if not m.is_request] == [
        "Unauthorized",
        "OK",
        "Unauthorized",
        "Forbidden",
        "Decline",
        "Proxy Authentication Required",
        "OK",
        "Trying",
    ]
    first, challenge, authed = msgs[0], msgs[1], msgs[2]
    assert first.ts == pytest.approx(at("2024-09-06 15:48:38.115571"), abs=1e-6)
    assert first.request_uri == "sip:sip.example.com;transport=UDP"
    assert first.call_id == "Mjk2ZTJhNTlkYzQ3NzE2OTFjZGE3YjA5Y2E2Nzg1ZDE"
    assert first.via_branch == "z9hG4bK-524287-1---6a8b0c4dd2a1f0e3"
    assert (first.from_user, first.from_host, first.to_user, first.to_host) == (
        "1001",
        "sip.example.com",
        "1001",
        "sip.example.com",
    )
    assert first.contact == "<sip:1001@192.168.1.20:5060;rinstance=3f1c2b9a0d7e6f51;transport=UDP>"
    assert first.expires == 60 and first.user_agent == "Z 5.6.4 v2.10.20.3"
    assert not first.has_auth and first.auth_username == "" and first.auth_realm == ""
    assert challenge.www_authenticate == (
        'Digest realm="sip.example.com", algorithm=MD5, qop="auth", nonce="d2b6c1f9a8e74c3f0b1d"'
    )
    assert challenge.expires is None and challenge.request_uri == ""
    # Zoiper writes no space after the commas: the parameters are still found
    assert authed.has_auth and (authed.auth_username, authed.auth_realm) == (
        "1001",
        "sip.example.com",
    )
    assert msgs[8].x_reason == "Invalid credentials" and msgs[8].reason == "Forbidden"
    assert msgs[7].request_uri == "sip:sip.example.com:5060" and msgs[7].expires == 3600
    assert msgs[9].user_agent == "friendly-scanner" and msgs[9].to_host == "203.0.113.200"
    proxy_challenge, proxy_authed = msgs[12], msgs[13]
    assert proxy_challenge.www_authenticate.startswith('Digest realm="carrier.example.net"')
    assert proxy_authed.has_auth and proxy_authed.auth_username == "trunk77"
    invite = msgs[15]
    assert invite.to_user == "+15551230000" and invite.contact.startswith("<sip:1001@")
    assert msgs[17].peer_ip == "2001:db8::7" and msgs[17].from_host == "2001:db8::7"
    assert [m.truncated for m in msgs] == [False] * 18 + [True]
    assert [(e.kind, e.attrs) for e in svc] == [
        ("drachtio_start", {"version": "v0.8.25"}),
        ("spammer", {"source_ip": "185.243.5.17", "header_value": "friendly-scanner"}),
        ("register_no_realm", {}),
    ]
    assert svc[1].ts == pytest.approx(at("2024-09-06 15:48:41.500188"), abs=1e-6)


def test_register_flows_transactions_and_attempts() -> None:
    msgs, _, _ = parse(read("drachtio/register-flows.log"))
    txs, atts, tracker = track(msgs)
    assert [(t.side, t.status, t.to_user, t.requests, t.responses) for t in txs] == [
        (Side.INBOUND, 401, "1001", 1, 1),
        (Side.INBOUND, 200, "1001", 2, 1),
        (Side.INBOUND, 401, "2002", 1, 1),
        (Side.INBOUND, 403, "2002", 1, 1),
        (Side.INBOUND, 603, "100", 1, 1),
        (Side.OUTBOUND, 407, "trunk77", 1, 1),
        (Side.OUTBOUND, 200, "trunk77", 1, 1),
    ]
    assert txs[1].latency == pytest.approx(0.702216 - 0.163340, abs=1e-6)
    assert [(a.side, a.outcome, a.to_user, a.challenged, a.transactions) for a in atts] == [
        (Side.INBOUND, AttemptOutcome.SUCCESS, "1001", True, 2),
        (Side.INBOUND, AttemptOutcome.FAILURE, "2002", True, 2),
        (Side.INBOUND, AttemptOutcome.FAILURE, "100", False, 1),
        (Side.OUTBOUND, AttemptOutcome.SUCCESS, "trunk77", True, 2),
    ]
    assert atts[1].x_reason == "Invalid credentials" and atts[1].auth_username == "2002"
    assert tracker.stats.retransmitted_requests == 1
    assert tracker.stats.transactions == 7 and tracker.stats.orphan_responses == 0


def test_legacy_2017_stamps() -> None:
    msgs, svc, p = parse(read("drachtio/legacy-2017.log"))
    assert p.stats.records == {"sip": 4, "service": 1, "other": 2}
    assert p.stats.errors == {}
    assert [(m.direction, m.status, m.cseq) for m in msgs] == [
        (Direction.RECV, 0, 101),
        (Direction.SEND, 401, 101),
        (Direction.RECV, 0, 102),
        (Direction.SEND, 200, 102),
    ]
    assert msgs[0].ts == pytest.approx(at("2017-06-27 07:48:59.059161"), abs=1e-6)
    assert msgs[2].auth_username == "3003" and msgs[2].user_agent.startswith("Grandstream")
    assert [(e.kind, e.attrs) for e in svc] == [("drachtio_start", {"version": "v0.7.3-rc2"})]
    txs, atts, _ = track(msgs)
    assert [t.status for t in txs] == [401, 200]
    assert [a.outcome for a in atts] == [AttemptOutcome.SUCCESS]


# ---------------------------------------------------------------- deployment prefixes
ZOIPER_FLOW = [(Direction.RECV, 0, 1), (Direction.SEND, 401, 1), (Direction.RECV, 0, 2)]
ZOIPER_FLOW.append((Direction.SEND, 200, 2))


@pytest.mark.parametrize(
    ("name", "source", "pino_kinds"),
    [
        ("deploy/docker-logs-timestamps.log", "t", []),
        ("deploy/kubectl-prefix-timestamps.log", "t/jambonz-sbc-sip-5d8c7b9f4-x2k4p/drachtio", []),
        ("deploy/pm2-logs.log", "t/drachtio", ["received_register", "auth_data", "registered"]),
        (
            "deploy/compose-logs.log",
            "t/drachtio-sbc-1",
            ["received_register", "auth_data", "registered", "unknown_realm", "other"],
        ),
    ],
)
@pytest.mark.parametrize("chunks", [1, 4])
def test_deployment_prefixes(name: str, source: str, pino_kinds: list[str], chunks: int) -> None:
    msgs, svc, p = parse(read(name), chunks=chunks)
    assert [(m.direction, m.status, m.cseq) for m in msgs] == ZOIPER_FLOW
    assert {m.source for m in msgs} == {source}
    assert msgs[0].ts == pytest.approx(at("2024-09-06 15:48:38.115571"), abs=1e-6)
    assert msgs[0].call_id == "Mjk2ZTJhNTlkYzQ3NzE2OTFjZGE3YjA5Y2E2Nzg1ZDE"
    assert msgs[3].expires is None and msgs[2].auth_username == "1001"
    assert [e.kind for e in svc] == pino_kinds
    records = {"sip": 4, "other": 1}  # "other": the nta.c debug line
    if pino_kinds:
        records["pino"] = len(pino_kinds)
    assert p.stats.records == records and p.stats.errors == {}
    txs, atts, _ = track(msgs)
    assert [t.status for t in txs] == [401, 200] and atts[0].outcome is AttemptOutcome.SUCCESS


# ---------------------------------------------------------------- registrar flavours
def test_sbc_sip_sidecar_pino_lines() -> None:
    text = read("registrar/sbc-sip-sidecar.log")
    for chunks in (1, 5):
        msgs, svc, p = parse(text, chunks=chunks, stream=Stream.STDOUT)
        assert msgs == []
        assert p.stats.records == {"pino": 15, "other": 1}  # "other": the Node warning
        assert p.stats.errors == {"pino_json": 1}  # the line cut mid-write
    assert [(e.kind, e.level) for e in svc] == [
        ("startup", 30),
        ("startup", 30),
        ("startup", 30),
        ("received_register", 20),
        ("auth_data", 20),
        ("registered", 20),
        ("unknown_realm", 30),
        ("ipv4_realm_rejected", 30),
        ("limits", 30),
        ("register_error", 50),
        ("webhook_error", 30),
        ("webhook_no_status", 50),
        ("plaintext_password", 50),
        ("unregistered", 20),
        ("outbound_registration", 30),
    ]
    assert {e.attrs["flavour_hint"] for e in svc[:3]} == {"sidecar"}
    assert svc[0].ts == 1725637711.012
    assert svc[3].attrs == {"from": "udp/203.0.113.7:50933"}
    assert svc[4].attrs == {
        "username": "1001",
        "realm": "sip.example.com",
        "source_address": "203.0.113.7",
        "source_port": "50933",
        "method": "REGISTER",
        "expires": "60",
    }
    assert svc[5].attrs == {"aor": "1001@sip.example.com"}
    assert svc[6].attrs == {"realm": "bad.example.org"}
    assert svc[7].attrs == {"uri": "sip:203.0.113.200", "realm": "203.0.113.200"}
    assert svc[8].attrs == {"account_sid": "9351f46a-678c-43f5-b8a6-d4eb58d131af"}
    assert svc[9].attrs == {"error": "error:1C800064:Provider routines::bad decrypt"}
    assert svc[10].attrs == {"status_code": "404", "code": "StatusError"}
    assert svc[13].attrs == {"aor": "1001@sip.example.com"}
    # secrets never survive: the stored password, the digest response, the nonces
    for secret in ("pw1-secret", "5c0f0b7e6c5d8c1b2a3f4e5d6c7b8a90", "a1b2c3d4e5f60718"):
        assert all(secret not in e.message and secret not in str(e.attrs) for e in svc)
    assert svc[12].message == (
        "Error SyntaxError: <stored value redacted> is not valid JSON, rejecting with 403"
    )


def test_legacy_sbc_registrar_pino_lines() -> None:
    msgs, svc, p = parse(read("registrar/sbc-registrar-0.7.log"), stream=Stream.STDOUT)
    assert msgs == [] and p.stats.records == {"pino": 8} and p.stats.errors == {}
    assert [e.kind for e in svc] == [
        "startup",
        "registered",
        "registered",
        "webhook_error",
        "webhook_error",
        "auth_error",
        "unknown_realm",
        "unregistered",
    ]
    assert svc[0].attrs == {"flavour_hint": "unknown"}
    assert svc[1].attrs == svc[2].attrs == {"aor": "3003@acme.example.com"}
    assert svc[4].attrs == {"error": "Response code 500 (Internal Server Error)"}
    assert svc[7].ts == at("2021-02-23 08:00:09.001000")  # the ISO "time" of old pino


# ---------------------------------------------------------------- forum pastes (item 14)
YEALINK_FLOW = [(Direction.RECV, 0, 1), (Direction.SEND, 401, 1), (Direction.RECV, 0, 2)]
YEALINK_FLOW.append((Direction.SEND, 403, 2))


@pytest.mark.parametrize(
    ("name", "records"),
    [
        ("pastes/caret-m.log", {"sip": 4, "api": 1}),
        ("pastes/indented-one-space.log", {"sip": 4, "api": 1, "other": 1}),  # the intro text
        ("pastes/code-block-caret-m.log", {"sip": 4, "api": 1}),
    ],
)
@pytest.mark.parametrize("chunks", [1, 3, 9])
def test_forum_pastes_count_every_message(name: str, records: dict[str, int], chunks: int) -> None:
    msgs, svc, p = parse(read(name), chunks=chunks)
    assert [(m.direction, m.status, m.cseq) for m in msgs] == YEALINK_FLOW
    assert p.stats.records == records and p.stats.errors == {} and svc == []
    assert msgs[0].ts == pytest.approx(at("2024-09-06 15:48:40.001001"), abs=1e-6)
    assert {m.call_id for m in msgs} == {"0_2716534019@10.1.1.42"}
    assert msgs[0].request_uri == "sip:sip.example.com:5060"
    assert msgs[0].user_agent == "Yealink SIP-T46S 66.86.0.15"
    assert msgs[2].auth_username == "2002" and msgs[3].x_reason == "Invalid credentials"
    assert msgs[3].reason == "Forbidden"
    txs, atts, _ = track(msgs)
    assert [t.status for t in txs] == [401, 403]
    assert [(a.outcome, a.challenged) for a in atts] == [(AttemptOutcome.FAILURE, True)]
