"""registrar.py on its own: every message kind, the attributes kept, redaction, the bounds.

Messages are the exact strings of sbc-sip-sidecar v0.9.6 / digest-utils and the legacy
sbc-registrar v0.7.6, as their source writes them.
"""

from __future__ import annotations

import json

import pytest

from sipwatch.ingest.registrar import (
    MAX_JSON_DEPTH,
    MAX_MESSAGE,
    MAX_PINO_LINE,
    PinoError,
    _nesting_depth_ok,
    _redact,
    classify_drachtio_line,
    classify_registrar_message,
    load_json_object,
    parse_pino_line,
)
from sipwatch.ingest.sip import MAX_FIELD
from sipwatch.model import ServiceEvent, ServiceOrigin


def kind(msg: str, **obj: object) -> tuple[str, dict[str, str]]:
    return classify_registrar_message(msg, dict(obj))


def event(line: str) -> ServiceEvent:
    ev = parse_pino_line(line, "registrar")
    assert isinstance(ev, ServiceEvent)
    return ev


@pytest.mark.parametrize(
    ("msg", "expected"),
    [
        (
            "rejecting REGISTER from sip:10.0.0.1 as it has an ipv4 address and sip realm is required",
            ("ipv4_realm_rejected", {"uri": "sip:10.0.0.1", "realm": "10.0.0.1"}),
        ),
        (
            "rejecting REGISTER from garbage as it has an ipv4 address and sip realm is required",
            ("ipv4_realm_rejected", {"uri": "garbage", "realm": "garbage"}),
        ),
        ("rejecting REGISTER from sip:h.example for another reason", ("other", {})),
        (
            "checkAccountLimits: rejecting register for unknown sip realm: bad.example.org",
            ("unknown_realm", {"realm": "bad.example.org"}),
        ),
        (
            "checkAccountLimits: unknown sip realm :x.example",
            ("unknown_realm", {"realm": "x.example"}),
        ),
        (
            "checkAccountLimits: rejecting register for unknown sip realm: Xample.org",
            ("unknown_realm", {"realm": "Xample.org"}),
        ),
        (
            "checkAccountLimits: account is deactivated, reject registration",
            ("account_deactivated", {}),
        ),
        ("checkAccountLimits: registration rejected due to limits", ("limits", {})),
        ("checkAccountLimits: device calling not allowed for this account", ("limits", {})),
        ("checkAccountLimits: error checking account limits", ("db_error", {})),
        (
            "checkAccountLimits - passed: devices registered 1, limit is 10",
            ("account_limits_debug", {}),
        ),
        (
            "Error SyntaxError: Unexpected token 'p', \"pw1\" is not valid JSON, rejecting with 403",
            ("plaintext_password", {}),
        ),
        (
            "Error TypeError [ERR_INVALID_ARG_TYPE]: The first argument must be..., rejecting with 403",
            ("plaintext_password", {}),
        ),
        (
            "Error Error: error:1C800064:Provider routines::bad decrypt, rejecting with 403",
            ("decrypt_error", {}),
        ),
        (
            "Error Error: error:1C80006B:wrong final block length, rejecting with 403",
            ("decrypt_error", {}),
        ),
        (
            "Error TypeError: Cannot read properties of undefined (reading 'toLowerCase'), rejecting with 403",
            ("webhook_no_status", {}),
        ),
        (
            "Error Error: connect ECONNREFUSED 127.0.0.1:3306, rejecting with 403",
            ("auth_error", {}),
        ),
        ("Error: error:1C800064:Provider routines::bad decrypt", ("decrypt_error", {})),
        ("Error from calling auth callback: StatusError: 500", ("webhook_error", {})),
        ("http webhook failed", ("webhook_error", {})),
        ("http webhook failed badly", ("other", {})),
        (
            '{"statusCode":404,"hook":"http://h/reg","code":"StatusError"}',
            ("webhook_error", {"status_code": "404", "code": "StatusError"}),
        ),
        ("{}", ("webhook_error", {})),
        ('{"statusCode":"404","code":5}', ("webhook_error", {})),  # wrong types: not kept
        ('{"code":"' + "C" * 100 + '"}', ("webhook_error", {"code": "C" * 64})),
        ("{not json}", ("other", {})),
        (
            "Error looking up client for account (sid) and username 1001",
            ("client_lookup_error", {}),
        ),
        ("Error trying to process REGISTER", ("register_error", {})),
        (
            "responding to cached register for 1001@acme.example.com",
            ("cached_register", {"aor": "1001@acme.example.com"}),
        ),
        (
            "adding aor to redis 1001@acme.example.com with expires 60",
            ("registered", {"aor": "1001@acme.example.com"}),
        ),
        (
            "successfully added 3003@acme.example.com to redis, sending 200 OK",
            ("registered", {"aor": "3003@acme.example.com"}),
        ),
        (
            "successfully unregistered 1001@acme.example.com",
            ("unregistered", {"aor": "1001@acme.example.com"}),
        ),
        (
            "received REGISTER from udp/203.0.113.7:50933",
            ("received_register", {"from": "udp/203.0.113.7:50933"}),
        ),
        (
            "connected to drachtio listening on 127.0.0.1:9022, local hostports: udp/10.0.0.5:5060",
            ("startup", {"flavour_hint": "sidecar"}),
        ),
        (
            "connected to drachtio listening on 127.0.0.1:9022",
            ("startup", {"flavour_hint": "unknown"}),
        ),
        ("sbc public ip addresses", ("startup", {"flavour_hint": "sidecar"})),
        ("drachtio sip contacts", ("startup", {"flavour_hint": "sidecar"})),
        ("Error connecting to drachtio server", ("drachtio_connect_error", {})),
        ("trunk@carrier: got 200 registering to 192.0.2.50:5060", ("outbound_registration", {})),
        ("Disabling Outbound Registration for carrier x (sid:1)", ("outbound_registration", {})),
        ("trunk@carrier: Error registering to 192.0.2.50", ("outbound_registration", {})),
        ("some other message", ("other", {})),
        ("", ("other", {})),
    ],
)
def test_registrar_messages(msg: str, expected: tuple[str, dict[str, str]]) -> None:
    assert kind(msg) == expected


def test_fields_read_from_the_pino_object() -> None:
    sid = "9351f46a-678c-43f5-b8a6-d4eb58d131af"
    assert kind("checkAccountLimits: registration rejected due to limits", account_sid=sid) == (
        "limits",
        {"account_sid": sid},
    )
    assert kind("checkAccountLimits: registration rejected due to limits", account_sid="s" * 99)[
        1
    ] == {"account_sid": "s" * 64}
    assert kind("checkAccountLimits: registration rejected due to limits", account_sid=5)[1] == {}
    assert kind("checkAccountLimits: error checking account limits", realm="r.example") == (
        "db_error",
        {"realm": "r.example"},
    )
    assert kind("checkAccountLimits: error checking account limits", realm=["x"])[1] == {}
    attrs = kind(
        "Authorization data",
        username="1001",
        realm="r",
        source_address="203.0.113.7",
        source_port=50933,
        method="REGISTER",
        expires="60",
        response="SECRET",
        nonce="N",
        cnonce="C",
        headers={"x": 1},
    )
    assert attrs == (
        "auth_data",
        {
            "username": "1001",
            "realm": "r",
            "source_address": "203.0.113.7",
            "source_port": "50933",
            "method": "REGISTER",
            "expires": "60",
        },
    )
    assert kind("Authorization data", username="u" * 999)[1] == {"username": "u" * MAX_FIELD}
    assert kind("Authorization data", username=None)[1] == {}
    long_aor = "a" * 999
    assert kind(f"successfully unregistered {long_aor}")[1] == {"aor": "a" * MAX_FIELD}


@pytest.mark.parametrize(
    ("time", "ts"),
    [
        ("0.5", 0.0005),
        ("0.0", 0.0),
        ("253402300800000.0", 253402300800.0),
        ('"1970-01-01T00:00:00Z"', 0.0),
        ('"1970-01-01T00:00:00.5Z"', 0.5),
        ('"2021-02-23T08:00:09.001Z"', 1614067209.001),
        ('"2021-02-23T08:00:09.' + "0" * 44 + 'x"', 1614067209.0),  # read up to 64 chars
        ("{}", 0.0),
        ("[1]", 0.0),
    ],
)
def test_pino_times(time: str, ts: float) -> None:
    assert event('{"time":' + time + "}").ts == ts


def test_parse_pino_line_fields() -> None:
    ev = event('{"level":40,"time":1725637711012,"pid":1,"hostname":"h","msg":"hello"}')
    assert (ev.ts, ev.level, ev.kind, ev.message) == (1725637711.012, 40, "other", "hello")
    assert (ev.source, ev.origin, ev.attrs) == ("registrar", ServiceOrigin.REGISTRAR, {})
    assert event('{"msg":12}').message == "12"
    assert event('{"msg":null}').message == ""
    assert event('{"level":"warn"}').level == 30 and event('{"level":true}').level == 30
    assert event("{}").ts == 0.0 and event('{"time":"yesterday"}').ts == 0.0
    ev = event('{"msg":"m","err":{"message":"boom","stack":"s"}}')
    assert ev.attrs == {"error": "boom"} and ev.kind == "other"
    ev = event('{"msg":"m","err":{"message":"error:1C800064:Provider routines::bad decrypt"}}')
    assert ev.kind == "decrypt_error"  # the err object names what the message does not
    ev = event('{"msg":"Error trying to process REGISTER","err":{"message":"bad decrypt"}}')
    assert ev.kind == "register_error" and ev.attrs == {"error": "bad decrypt"}
    assert event('{"msg":"m","err":"text"}').attrs == {}
    assert event('{"msg":"m","err":{"message":5}}').attrs == {}
    assert event('{"msg":"m","err":{"message":"' + "e" * 999 + '"}}').attrs == {
        "error": "e" * MAX_FIELD
    }


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("not json", PinoError.NOT_JSON),
        ('{"level":30', PinoError.NOT_JSON),
        ("[1, 2]", PinoError.NOT_JSON),
        ('"text"', PinoError.NOT_JSON),
        ('{"a":' * (MAX_JSON_DEPTH + 1) + "1" + "}" * (MAX_JSON_DEPTH + 1), PinoError.BOUNDS),
        ("[" * 5000, PinoError.BOUNDS),
        ('{"msg":"' + "x" * MAX_PINO_LINE + '"}', PinoError.BOUNDS),
    ],
)
def test_lines_that_are_not_pino(line: str, error: PinoError) -> None:
    assert parse_pino_line(line, "r") is error


def test_load_json_object_bounds() -> None:
    exactly = '{"m":"' + "x" * (MAX_PINO_LINE - 8) + '"}'
    assert len(exactly) == MAX_PINO_LINE and isinstance(load_json_object(exactly), dict)
    assert load_json_object(exactly + " ") is PinoError.BOUNDS
    deepest = '{"a":' * (MAX_JSON_DEPTH - 1) + "{}" + "}" * (MAX_JSON_DEPTH - 1)
    assert isinstance(load_json_object(deepest), dict)


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH, True),
        ("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1), False),
        ("[]" * 100, True),  # many brackets, never deep
        ('["' + "[" * 100 + '"]', True),  # inside a string
        ('["\\"' + "[" * 100 + '"]', True),  # an escaped quote does not end the string
        ('{"a":[' + '{"b":1},' * 50 + "1]}", True),
        ("{" * 20 + "[" * 20, False),  # unbalanced counts as deep
        ("[" * 32 + "]" * 32 + "[]", True),  # past the fast path, exactly at the bound
        ("[]" + "[" * 32 + "]" * 32, True),  # closing brings the depth back to 0
        ("[" * 20 + "]" + "[" * 14, False),  # 20, 19, then 33
    ],
)
def test_nesting_depth(text: str, ok: bool) -> None:
    assert _nesting_depth_ok(text) is ok


@pytest.mark.parametrize(
    ("msg", "expected"),
    [
        (
            "Error SyntaxError: Unexpected token 'p', \"pw1\" is not valid JSON, rejecting with 403",
            "Error SyntaxError: <stored value redacted> is not valid JSON, rejecting with 403",
        ),
        (
            'Unexpected token a, "abcdefghij"... is not valid JSON',
            "<stored value redacted> is not valid JSON",
        ),
        (
            "hook http://user:p@ss@hooks.example/reg failed",
            "hook http://<redacted>@hooks.example/reg failed",
        ),
        ("mail alice@example.com about https://h/x", "mail alice@example.com about https://h/x"),
        ("user@host only", "user@host only"),
        ("x" * 5000, "x" * MAX_MESSAGE),
        (" is not valid JSON", "<stored value redacted> is not valid JSON"),
        (
            "XYZ SyntaxError: Unexpected token 'p', \"pw\" is not valid JSON",
            "XYZ SyntaxError: <stored value redacted> is not valid JSON",
        ),
        (
            "SyntaxError: Unexpected token 'p', \"pw\" is not valid JSON",
            "SyntaxError: <stored value redacted> is not valid JSON",
        ),
        # the stored value holds the phrases themselves: nothing of it may survive
        (
            "Error SyntaxError: Unexpected token 'p', \"pwSyntaxError1\" is not valid JSON",
            "Error SyntaxError: <stored value redacted> is not valid JSON",
        ),
        (
            "Error SyntaxError: Unexpected token 'a', \"a is not valid JSON b\" is not valid JSON",
            "Error SyntaxError: <stored value redacted> is not valid JSON",
        ),
        (
            'Unexpected token "pw" is not valid JSON, SyntaxError',
            "<stored value redacted> is not valid JSON, SyntaxError",
        ),
        # the search is bounded: past 2048 characters nothing is looked at (and cut anyway)
        ("x" * 2100 + ' "pw" is not valid JSON', "x" * MAX_MESSAGE),
    ],
)
def test_redact(msg: str, expected: str) -> None:
    assert _redact(msg) == expected


def test_secrets_never_reach_an_event() -> None:
    line = json.dumps(
        {
            "level": 50,
            "msg": "Error SyntaxError: Unexpected token 'p', \"hunter2\" is not valid JSON, rejecting with 403",
            "err": {"message": "Unexpected token 'p', \"hunter2\" is not valid JSON"},
        }
    )
    ev = event(line)
    assert ev.kind == "plaintext_password"
    assert "hunter2" not in ev.message and "hunter2" not in str(ev.attrs)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("Starting drachtio version v0.8.25", ("drachtio_start", {"version": "v0.8.25"})),
        ("Starting drachtio version " + "v" * 99, ("drachtio_start", {"version": "v" * 64})),
        (
            "No connected clients found to handle incoming register request",
            ("no_connected_clients", {}),
        ),
        ("No providers available for REGISTER", ("no_providers", {})),
        (
            "DrachtioController::processMessageStatelessly: rejecting REGISTER with no realm",
            ("register_no_realm", {}),
        ),
        (
            "DrachtioController::processMessageStatelessly: rejecting REGISTER with invalid Contact header, call-id: abc@h",
            ("register_invalid_contact", {"call_id": "abc@h"}),
        ),
        (
            "DrachtioController::processMessageStatelessly: rejecting REGISTER with Contact: * and non-zero Expires",
            ("register_bad_wildcard", {}),
        ),
        (
            "DrachtioController::processMessageStatelessly: detected potential spammer from 185.243.5.17:5077 due to header value: friendly-scanner",
            ("spammer", {"source_ip": "185.243.5.17", "header_value": "friendly-scanner"}),
        ),
        (
            "detected potential spammer from [2001:db8::66]:5060 due to header value: sipvicious",
            ("spammer", {"source_ip": "2001:db8::66", "header_value": "sipvicious"}),
        ),
        (
            "detected potential spammer from 185.243.5.17:5077 due to header value: detected potential spammer from 6.6.6.6:1",
            (
                "spammer",
                {
                    "source_ip": "185.243.5.17",  # the header value cannot name another source
                    "header_value": "detected potential spammer from 6.6.6.6:1",
                },
            ),
        ),
        (
            "detected potential spammer from " + "a" * 99 + ":5060 due to header value: x",
            ("spammer", {"source_ip": "a" * 64, "header_value": "x"}),
        ),
        (
            "rejecting REGISTER with invalid Contact header",
            ("register_invalid_contact", {"call_id": ""}),
        ),
        ("No connected clients found to handle incoming invite request", None),
        ("nta.c:2880 agent_recv_request() nta: received REGISTER sip:h SIP/2.0 (CSeq 1)", None),
        ("DrachtioController::run ready", None),
    ],
)
def test_drachtio_lines(line: str, expected: tuple[str, dict[str, str]] | None) -> None:
    assert classify_drachtio_line(line) == expected
