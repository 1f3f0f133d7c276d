"""Framing and SIP parsing across the log formats real deployments produce."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sipwatch.ingest.framing import LogParser
from sipwatch.model import Direction, LogChunk, SipMessage, Stream
from tests.ingest_support import parse
from tools.synth import Device, challenge_header, sip_dump, stamp

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC).timestamp()


def exchange(dev: Device | None = None, t: float = T0) -> str:
    """REGISTER -> 401 -> REGISTER+auth -> 403 Invalid credentials, as drachtio logs it."""
    dev = dev or Device("5001", "acme.example.com", "203.0.113.5", 5060)
    r1 = dev.register()
    r2 = None
    out = sip_dump(t, "recv", dev.transport, dev.ip, dev.port, r1)
    out += sip_dump(
        t + 0.01,
        "send",
        dev.transport,
        dev.ip,
        dev.port,
        dev.response(r1, 401, "Unauthorized", [challenge_header(dev.domain)]),
    )
    r2 = dev.register(auth=True)
    out += sip_dump(t + 0.1, "recv", dev.transport, dev.ip, dev.port, r2)
    out += sip_dump(
        t + 0.11,
        "send",
        dev.transport,
        dev.ip,
        dev.port,
        dev.response(r2, 403, "Forbidden", ["X-Reason: Invalid credentials"]),
    )
    return out


def check_exchange(msgs: list[SipMessage]) -> None:
    assert [m.status for m in msgs] == [0, 401, 0, 403]
    assert [m.direction for m in msgs] == [Direction.RECV, Direction.SEND] * 2
    req = msgs[2]
    assert req.method == "REGISTER" and req.is_request
    assert req.to_user == "5001" and req.to_host == "acme.example.com"
    assert req.from_user == "5001"
    assert req.peer_ip == "203.0.113.5" and req.peer_port == 5060
    assert req.cseq == 2 and req.has_auth and req.auth_username == "5001"
    assert req.auth_realm == "acme.example.com"
    assert req.expires == 3600
    assert req.user_agent.startswith("Yealink")
    assert req.via_branch.startswith("z9hG4bK")
    assert msgs[3].x_reason == "Invalid credentials"
    assert msgs[3].method == "REGISTER"
    assert msgs[3].call_id == req.call_id
    assert msgs[1].www_authenticate.startswith('Digest realm="acme.example.com"')
    assert abs(msgs[0].ts - T0) < 1e-6


def test_plain_drachtio_log() -> None:
    msgs, _, p = parse(exchange())
    check_exchange(msgs)
    assert p.stats.records["sip"] == 4
    assert not p.stats.errors


@pytest.mark.parametrize("chunks", [1, 2, 3, 7, 50])
def test_chunking_never_changes_the_result(chunks: int) -> None:
    msgs, _, _ = parse(exchange() * 3, chunks=chunks)
    assert len(msgs) == 12
    check_exchange(msgs[:4])


def prefix_lines(text: str, prefix: str) -> str:
    """Put ``prefix`` before every line, as docker/compose/pm2 do (only "\n" ends a line)."""
    return "".join(prefix + line + "\n" for line in text.split("\n")[:-1]) + (
        "" if text.endswith("\n") else prefix + text.rsplit("\n", 1)[-1]
    )


def test_docker_logs_timestamps_prefix() -> None:
    text = prefix_lines(exchange(), "2026-03-01T12:00:00.123456789Z ")
    msgs, _, _ = parse(text, chunks=3)
    check_exchange(msgs)


def test_kubectl_timestamps_and_pod_prefix() -> None:
    text = prefix_lines(
        exchange(), "[pod/jambonz-sbc-sip-0/drachtio] 2026-03-01T12:00:00.123456789Z "
    )
    msgs, _, _ = parse(text)
    check_exchange(msgs)
    assert msgs[0].source == "t/jambonz-sbc-sip-0/drachtio"


def test_pm2_time_prefix() -> None:
    text = prefix_lines(exchange(), "2026-03-01T12:00:00: ")
    msgs, _, _ = parse(text)
    check_exchange(msgs)


def test_pm2_logs_prefix() -> None:
    text = prefix_lines(exchange(), "3|drachtio  | ")
    msgs, _, _ = parse(text)
    check_exchange(msgs)


def test_compose_logs_interleaved_services_are_demultiplexed() -> None:
    """`docker compose logs` interleaves lines of drachtio and the registrar."""
    sip_lines = prefix_lines(exchange(), "drachtio-sbc-1  | ").splitlines(keepends=True)
    pino = 'registrar-1     | {"level":30,"time":1772366400000,"msg":"checkAccountLimits: rejecting register for unknown sip realm: x.example"}\n'
    mixed = []
    for i, line in enumerate(sip_lines):
        mixed.append(line)
        if i % 5 == 2:
            mixed.append(pino)
    msgs, svc, _ = parse("".join(mixed), chunks=4)
    check_exchange(msgs)
    assert all(m.source == "t/drachtio-sbc-1" for m in msgs)
    assert len(svc) == sum(1 for i in range(len(sip_lines)) if i % 5 == 2)
    assert svc[0].kind == "unknown_realm" and svc[0].attrs["realm"] == "x.example"


def test_compose_v1_names_and_colour_codes() -> None:
    text = prefix_lines(exchange(), "\x1b[36mdocker_drachtio-sbc_1 |\x1b[0m ")
    msgs, _, _ = parse(text)
    check_exchange(msgs)


def test_lf_only_and_mixed_line_endings() -> None:
    text = exchange()
    lf = text.replace("\r\n", "\n")
    check_exchange(parse(lf)[0])
    mixed = "".join(
        line.replace("\r\n", "\n") if i % 2 else line
        for i, line in enumerate(text.splitlines(keepends=True))
    )
    check_exchange(parse(mixed)[0])


def test_lone_carriage_returns() -> None:
    text = exchange().replace("\r\n", "\r")
    # header lines end with a bare LF in drachtio; restore those
    msgs, _, _ = parse(text)
    check_exchange(msgs)


def test_trailing_space_last_line_and_no_final_newline() -> None:
    text = exchange().rstrip("\n")
    msgs, _, _ = parse(text)
    check_exchange(msgs)


def test_truncation_marker_marks_previous_message() -> None:
    dev = Device("7", "a.example.com", "198.51.100.7")
    req = dev.register()
    text = sip_dump(T0, "recv", "udp", dev.ip, 5060, req)
    text += f"{stamp(T0 + 0.001)}    *** message truncated at 2957 ***\n"
    text += sip_dump(T0 + 0.01, "send", "udp", dev.ip, 5060, dev.response(req, 200, "OK"))
    msgs, _, p = parse(text)
    assert [m.truncated for m in msgs] == [True, False]
    assert p.stats.records["truncation"] == 1


def test_cut_off_message_is_parsed_as_far_as_it_goes() -> None:
    dev = Device("8", "a.example.com", "198.51.100.8")
    req = dev.register()
    full = sip_dump(T0, "recv", "udp", dev.ip, 5060, req)
    cut = full[: full.index("Contact:")]  # dump ends mid-message, then a new record
    text = (
        cut
        + "\n"
        + sip_dump(T0 + 1, "send", "udp", dev.ip, 5060, dev.response(req, 403, "Forbidden"))
    )
    msgs, _, _ = parse(text)
    assert len(msgs) == 2
    assert msgs[0].call_id == msgs[1].call_id and msgs[0].cseq == 1
    assert msgs[0].expires is None


def test_header_line_without_at_part() -> None:
    text = exchange().replace(" at 12:00:00.000000:", ":", 1)
    msgs, _, _ = parse(text)
    check_exchange(msgs)


def test_sofia_debug_controller_and_api_lines_are_not_network_sip() -> None:
    dev = Device("9", "a.example.com", "198.51.100.9")
    req = dev.register()
    text = f"{stamp(T0)} tport.c:3233 tport_recv_iovec() tport_recv_iovec(0x55) msg 0x56 from (udp/198.51.100.9:5060) has 423 bytes, veclen = 1\n"
    text += sip_dump(T0, "recv", "udp", dev.ip, 5060, req)
    text += f"{stamp(T0)} nta.c:2880 agent_recv_request() nta: received REGISTER sip:a.example.com SIP/2.0 (CSeq 1)\n"
    # app API traffic: a full SIP message without recv/send header
    text += (
        f"{stamp(T0)} Client::read_handler read: 11a3|sip|2b1f|unsolicited|"
        + "\r\n".join(req)
        + "\r\n \n"
    )
    text += f"{stamp(T0)} DrachtioController::processMessageStatelessly: rejecting REGISTER with no realm\n"
    text += f"{stamp(T0)} No connected clients found to handle incoming register request\n"
    text += sip_dump(
        T0 + 0.01, "send", "udp", dev.ip, 5060, dev.response(req, 503, "Service Unavailable")
    )
    msgs, svc, p = parse(text)
    assert [m.status for m in msgs] == [0, 503]
    assert [e.kind for e in svc] == ["register_no_realm", "no_connected_clients"]
    assert p.stats.records["api"] == 1


def test_legacy_pre_2017_prefix() -> None:
    dev = Device("10", "old.example.com", "192.0.2.10")
    req = dev.register()
    body = "\r\n".join([*req, ""]) + " \n"
    text = f"00001b65|2017-Jun-27 07:48:59.059161| recv 279 bytes from udp/[192.0.2.10]:5060 at 07:48:59.059100:\n{body}"
    msgs, _, _ = parse(text)
    assert len(msgs) == 1
    assert msgs[0].to_user == "10"
    assert msgs[0].ts == pytest.approx(
        datetime(2017, 6, 27, 7, 48, 59, 59161, tzinfo=UTC).timestamp()
    )


@pytest.mark.parametrize("transport", ["tcp", "tls", "ws", "wss"])
def test_transports(transport: str) -> None:
    dev = Device("11", "a.example.com", "198.51.100.11", transport=transport)
    msgs, _, _ = parse(sip_dump(T0, "recv", transport, dev.ip, 5061, dev.register()))
    assert msgs[0].transport == transport


def test_ipv6_peer() -> None:
    dev = Device("12", "v6.example.com", "2001:db8::12")
    msgs, _, _ = parse(sip_dump(T0, "recv", "udp", "2001:db8::12", 5060, dev.register()))
    assert msgs[0].peer_ip == "2001:db8::12"


def test_compact_and_oddly_cased_headers() -> None:
    lines = [
        "REGISTER sip:acme.example.com SIP/2.0",
        "v: SIP/2.0/UDP 198.51.100.20:5060;branch=z9hG4bKcompact",
        "f: <sip:2020@acme.example.com>;tag=1",
        "t: <sip:2020@acme.example.com>",
        "i: compact-call-id",
        "CSEQ: 7 REGISTER",
        "m: <sip:2020@198.51.100.20>;expires=120",
        "l: 0",
    ]
    msgs, _, _ = parse(sip_dump(T0, "recv", "udp", "198.51.100.20", 5060, lines))
    m = msgs[0]
    assert (m.call_id, m.cseq, m.via_branch) == ("compact-call-id", 7, "z9hG4bKcompact")
    assert (m.to_user, m.to_host, m.from_user, m.expires) == (
        "2020",
        "acme.example.com",
        "2020",
        120,
    )


def test_top_via_branch_is_used() -> None:
    lines = [
        "REGISTER sip:acme.example.com SIP/2.0",
        "Via: SIP/2.0/UDP proxy.example:5060;branch=z9hG4bKtop",
        "Via: SIP/2.0/UDP 10.1.1.1:5060;branch=z9hG4bKbottom",
        "From: <sip:1@acme.example.com>;tag=1",
        "To: <sip:1@acme.example.com>",
        "Call-ID: vias",
        "CSeq: 1 REGISTER",
    ]
    msgs, _, _ = parse(sip_dump(T0, "recv", "udp", "198.51.100.21", 5060, lines))
    assert msgs[0].via_branch == "z9hG4bKtop"


def test_body_is_not_mistaken_for_headers() -> None:
    lines = [
        "MESSAGE sip:acme.example.com SIP/2.0",
        "Via: SIP/2.0/UDP 198.51.100.22:5060;branch=z9hG4bKb",
        "From: <sip:1@acme.example.com>;tag=1",
        "To: <sip:2@acme.example.com>",
        "Call-ID: body",
        "CSeq: 1 MESSAGE",
        "Content-Type: text/plain",
    ]
    msgs, _, _ = parse(
        sip_dump(
            T0, "recv", "udp", "198.51.100.22", 5060, lines, ["To: <sip:evil@x>", "X-Reason: fake"]
        )
    )
    assert msgs[0].to_user == "2" and msgs[0].x_reason == ""


def test_pino_lines_old_and_new_and_non_json() -> None:
    text = (
        '{"level":30,"time":1772366400000,"pid":1,"hostname":"h","msg":"rejecting REGISTER from sip:10.0.0.1 as it has an ipv4 address and sip realm is required"}\n'
        '{"pid":1,"hostname":"h","level":50,"time":1772366400001,"msg":"Error SyntaxError: Unexpected token \'p\', \\"pw1\\" is not valid JSON, rejecting with 403","v":1}\n'
        "some layer barfed an error:  SyntaxError: Unexpected token\n"
        "    at JSON.parse (<anonymous>)\n"
        '{"level":30,"time":"2019-01-01T00:00:00.000Z","msg":"{\\"statusCode\\":404,\\"hook\\":\\"http://u:secret@hooks.example/reg\\",\\"code\\":\\"StatusError\\"}"}\n'
    )
    _, svc, _ = parse(text, stream=Stream.STDOUT)
    kinds = [e.kind for e in svc]
    assert kinds == ["ipv4_realm_rejected", "plaintext_password", "webhook_error"]
    assert svc[0].attrs["realm"] == "10.0.0.1"
    # the stored (plaintext) password quoted by the error must not survive
    assert "pw1" not in svc[1].message
    assert svc[2].attrs["status_code"] == "404"
    assert svc[2].ts == pytest.approx(datetime(2019, 1, 1, tzinfo=UTC).timestamp())


def test_attacker_sized_fields_are_capped() -> None:
    long_user = "a" * 10_000
    dev = Device(long_user, "acme.example.com", "198.51.100.30", user_agent="U" * 5000)
    msgs, _, _ = parse(sip_dump(T0, "recv", "udp", dev.ip, 5060, dev.register()))
    assert len(msgs[0].to_user) == 256 and len(msgs[0].user_agent) == 256


def test_idle_signal_flushes_held_record() -> None:
    p = LogParser()
    text = exchange()
    held = p.feed(LogChunk("d", Stream.STDERR, text))
    assert len(held) == 3  # the last record waits for the next one
    flushed = p.feed(LogChunk("d", Stream.STDERR, ""))
    assert len(flushed) == 1 and isinstance(flushed[0], SipMessage) and flushed[0].status == 403


def test_uri_user_may_contain_semicolons_and_password_is_dropped() -> None:
    from sipwatch.ingest.sip import parse_uri_user_host

    assert parse_uri_user_host("<sip:x&amp;y;z@evil.example>") == ("x&amp;y;z", "evil.example")
    assert parse_uri_user_host('"A" <sip:bob:secret@h.com:5060;transport=udp>;tag=9') == (
        "bob",
        "h.com",
    )
    assert parse_uri_user_host("sip:alice@x.com;tag=1") == ("alice", "x.com")
    assert parse_uri_user_host("<sip:[2001:db8::1]:5060>") == ("", "2001:db8::1")


def test_register_body_cannot_forge_registrar_events_or_sip_messages() -> None:
    """drachtio logs the whole message: a device-supplied body line that looks like a pino
    line or a drachtio record must stay body text."""
    dev = Device("9001", "acme.example.com", "203.0.113.99")
    req = dev.register()
    fake_pino = (
        '{"level":30,"time":1772366400000,"msg":"checkAccountLimits: account is deactivated"}'
    )
    fake_sip = f"{stamp(T0)} send 300 bytes to udp/[203.0.113.5]:5060 at 12:00:00.000000:"
    body = [fake_pino, fake_sip, "SIP/2.0 200 OK", "Call-ID: forged", "CSeq: 1 REGISTER"]
    text = sip_dump(
        T0,
        "recv",
        "udp",
        dev.ip,
        5060,
        [*req[:-1], f"Content-Length: {sum(len(b) + 2 for b in body)}"],
        body,
    )
    text += sip_dump(T0 + 0.01, "send", "udp", dev.ip, 5060, dev.response(req, 403, "Forbidden"))
    for chunks in (1, 3):
        msgs, svc, p = parse(text, chunks=chunks)
        assert [m.status for m in msgs] == [0, 403]
        assert all(m.call_id != "forged" for m in msgs)
        assert svc == []
        assert p.stats.records["embedded"] == 2


def test_unicode_line_separators_cannot_forge_compose_services() -> None:
    dev = Device(
        "9002", "acme.example.com", "203.0.113.98", user_agent="x\u2028evil-1 | boom\x1cother | z"
    )
    text = prefix_lines(
        sip_dump(T0, "recv", "udp", dev.ip, 5060, dev.register()), "drachtio-sbc-1  | "
    )
    p = LogParser()
    msgs = [
        e for e in p.feed(LogChunk("c", Stream.TEXT, text)) + p.flush() if isinstance(e, SipMessage)
    ]
    assert len(msgs) == 1 and msgs[0].user_agent.startswith("x\u2028evil-1")
    assert set(p.stats_by_source) <= {"c", "c/drachtio-sbc-1"}


def test_compose_service_channels_are_capped() -> None:
    lines = "".join(f"svc{i}-1  | {stamp(T0)} DrachtioController::run hello\n" for i in range(200))
    p = LogParser()
    p.feed(LogChunk("c", Stream.TEXT, lines))
    p.flush()
    assert len(p.stats_by_source) <= 32 + 2
