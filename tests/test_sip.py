"""sip.py on its own: URIs, Digest parameters, start lines, header extraction, wire messages.

``parse_sip_message`` is what the HEP source feeds raw wire payloads to (start line first,
CRLF, maybe folded headers and a body), so it is tested here directly with wire text.
"""

from __future__ import annotations

import re

import pytest

from sipwatch.ingest.sip import (
    HEADER_FIELDS,
    MAX_FIELD,
    _int,
    _param,
    header_getter,
    headers_pattern,
    parse_sip_message,
    parse_uri_user_host,
    request_uri_host,
)
from sipwatch.model import Direction, SipMessage

CRLF = "\r\n"


def wire(*lines: str, body: str = "") -> str:
    """A SIP message as it travels: CRLF lines, the empty line, the body."""
    return CRLF.join(lines) + CRLF + CRLF + body


def parse(text: str, what: str = "recv") -> SipMessage | None:
    return parse_sip_message(1.5, "hep", what, len(text), "udp", "203.0.113.5", 5062, text)


def must(text: str, what: str = "recv") -> SipMessage:
    msg = parse(text, what)
    assert msg is not None
    return msg


REGISTER = wire(
    "REGISTER sip:acme.example.com;transport=udp SIP/2.0",
    "Via: SIP/2.0/UDP 10.1.1.5:5060;branch=z9hG4bK776asdhds;rport",
    "Max-Forwards: 70",
    'From: "Alice" <sip:alice@Acme.Example.com>;tag=1928301774',
    "To: <sip:alice@acme.example.com>",
    "Call-ID: a84b4c76e66710@pc33.example.com",
    "CSeq: 314159 REGISTER",
    "Contact: <sip:alice@10.1.1.5:5060>;expires=120",
    'Authorization: Digest username="alice", realm="acme.example.com", nonce="n1", cnonce="c1", response="r1"',
    "User-Agent:   Linphone/5.2  ",
    "Content-Length: 0",
)


# ---------------------------------------------------------------- wire messages (HEP)
def test_a_wire_register_yields_every_field() -> None:
    msg = must(REGISTER)
    assert (msg.ts, msg.source, msg.direction, msg.transport) == (1.5, "hep", Direction.RECV, "udp")
    assert (msg.peer_ip, msg.peer_port, msg.size) == ("203.0.113.5", 5062, len(REGISTER))
    assert msg.is_request and msg.method == "REGISTER" and msg.status == 0 and msg.reason == ""
    assert msg.request_uri == "sip:acme.example.com;transport=udp"
    assert msg.call_id == "a84b4c76e66710@pc33.example.com"
    assert msg.cseq == 314159 and msg.via_branch == "z9hG4bK776asdhds"
    assert (msg.from_user, msg.from_host) == ("alice", "acme.example.com")  # host lower-cased
    assert (msg.to_user, msg.to_host) == ("alice", "acme.example.com")
    assert msg.contact == "<sip:alice@10.1.1.5:5060>;expires=120"
    assert msg.expires == 120  # from the Contact parameter: there is no Expires header
    assert msg.user_agent == "Linphone/5.2"
    assert msg.has_auth and (msg.auth_username, msg.auth_realm) == ("alice", "acme.example.com")
    assert msg.x_reason == "" and msg.www_authenticate == "" and not msg.truncated


def test_a_wire_response_takes_its_method_from_cseq() -> None:
    text = wire(
        "SIP/2.0 403 Forbidden",
        "Via: SIP/2.0/UDP 10.1.1.5:5060;branch=z9hG4bK776asdhds;received=203.0.113.5",
        "From: <sip:alice@acme.example.com>;tag=1928301774",
        "To: <sip:alice@acme.example.com>;tag=99",
        "Call-ID: a84b4c76e66710@pc33.example.com",
        "CSeq: 314159 register",
        "X-Reason:  Invalid credentials ",
        "Expires: 60",
        "Contact: <sip:alice@10.1.1.5:5060>;expires=999",
        "Content-Length: 0",
    )
    msg = must(text, "send")
    assert msg.direction is Direction.SEND and not msg.is_request
    assert (msg.status, msg.reason, msg.method) == (403, "Forbidden", "REGISTER")
    assert msg.request_uri == "" and msg.cseq == 314159
    assert msg.x_reason == "Invalid credentials"
    assert msg.expires == 60  # a response's Expires header counts, never Contact's parameter
    assert msg.from_user == "" and msg.from_host == ""  # From matters for requests only
    assert (msg.to_user, msg.to_host) == ("alice", "acme.example.com")


def test_a_response_without_expires_header_ignores_the_contact_parameter() -> None:
    text = wire(
        "SIP/2.0 200 OK",
        "CSeq: 2 REGISTER",
        "Contact: <sip:a@h>;expires=30",
        'Authorization: Digest username="nobody"',
    )
    msg = must(text)
    assert msg.expires is None and msg.contact == "<sip:a@h>;expires=30"
    assert msg.auth_username == "" and not msg.has_auth  # credentials: requests only


def test_the_body_never_poses_as_headers() -> None:
    body = "X-Reason: forged\r\nTo: <sip:evil@x>\r\nCSeq: 9 INVITE\r\n"
    text = wire("MESSAGE sip:b@h SIP/2.0", "To: <sip:b@h>", "CSeq: 1 MESSAGE", body=body)
    msg = must(text)
    assert (msg.to_user, msg.x_reason, msg.cseq) == ("b", "", 1)
    lf_only = text.replace("\r\n", "\n").replace("forged", "forged\r\n\r\nX: y")
    msg = must(lf_only)  # LF headers, a CRLF blank line later in the body: the first one ends
    assert (msg.to_user, msg.x_reason, msg.cseq) == ("b", "", 1)


@pytest.mark.parametrize("blank", [" ", "\t", "  \t"])
def test_one_kind_of_folding_is_enough(blank: str) -> None:
    text = wire("OPTIONS sip:h SIP/2.0", "User-Agent: Acme", f"{blank}Phone 3", "CSeq: 4 OPTIONS")
    msg = must(text)
    assert msg.user_agent == "Acme Phone 3" and msg.cseq == 4


def test_folded_header_lines_are_unfolded() -> None:
    text = wire(
        "REGISTER sip:h SIP/2.0",
        "Via: SIP/2.0/UDP 10.0.0.1:5060",
        "\t;branch=z9hG4bKfolded",
        "To:",
        "  <sip:carol@h>",
        "CSeq: 7 REGISTER",
    )
    msg = must(text)
    assert msg.via_branch == "z9hG4bKfolded" and msg.to_user == "carol" and msg.cseq == 7


def test_keepalive_crlfs_before_the_start_line_are_skipped() -> None:
    msg = must("\r\n\r\n" + REGISTER)
    assert msg.method == "REGISTER" and msg.cseq == 314159


def test_lf_only_and_header_only_messages() -> None:
    msg = must(REGISTER.replace("\r\n", "\n"))
    assert msg.call_id == "a84b4c76e66710@pc33.example.com" and msg.expires == 120
    bare = must("OPTIONS sip:h SIP/2.0")  # no headers, no line end
    assert bare.method == "OPTIONS" and bare.call_id == "" and bare.cseq == 0
    assert bare.expires is None and bare.via_branch == "" and bare.has_auth is False
    assert (bare.to_user, bare.to_host, bare.from_user, bare.contact) == ("", "", "", "")
    assert (bare.ts, bare.source, bare.direction, bare.size) == (1.5, "hep", Direction.RECV, 21)
    assert (bare.transport, bare.peer_ip, bare.peer_port) == ("udp", "203.0.113.5", 5062)
    assert bare.is_request is True and must("SIP/2.0 180 Ringing").is_request is False
    assert must("SIP/2.0 100 Trying\r\n").status == 100


@pytest.mark.parametrize(
    "start",
    [
        "",
        "garbage",
        "REGISTER sip:h",  # no version
        " REGISTER sip:h SIP/2.0",  # no method before the space
        "REGISTER sip:h SIP/3.0",
        "SIP/2.0 2000 OK",  # four digits
        "SIP/2.0 20 OK",
        "SIP/2.0 abc Nope",
        "SIP/2.0 ²00 OK",  # str.isdigit() says yes, int() says no
        "SIP/2.0 ٢٠٠ OK",  # Arabic-Indic digits are no status code either
        "SIP/2.0 200x",
        "SIP/2.0 000 Zero",  # found by the fuzzer: a "response" with status 0
        "SIP/2.0 099 Low",
        "SIP/2.0 700 High",
    ],
)
def test_start_lines_that_are_neither_request_nor_status_line(start: str) -> None:
    assert parse(wire(start, "CSeq: 1 REGISTER")) is None


def test_status_line_forms() -> None:
    assert (must("SIP/2.0 200").status, must("SIP/2.0 200").reason) == (200, "")
    msg = must("SIP/2.0 407 Proxy Authentication Required  \r\n")
    assert (msg.status, msg.reason) == (407, "Proxy Authentication Required")
    assert must("SIP/2.0 699 Whatever").status == 699
    assert must("SIP/2.0 100").status == 100
    long = must("SIP/2.0 480 " + "r" * 1000)
    assert len(long.reason) == MAX_FIELD


def test_request_line_forms() -> None:
    assert must("A sip:h SIP/2.0").method == "A"  # a one-letter token is a method
    assert must("SIP/2.0 200 OK\t").reason == "OK"
    msg = must("register  sip:a@h SIP/2.0  \r\nCSeq: 5 INVITE\r\n")
    assert msg.method == "REGISTER"  # the request line names the method, not CSeq
    assert msg.request_uri == "sip:a@h"
    long = must("X" * 1000 + " sip:" + "u" * 1000 + "@h SIP/2.0")
    assert len(long.method) == MAX_FIELD and len(long.request_uri) == MAX_FIELD
    assert request_uri_host("sip:acme.example.com;transport=udp") == "acme.example.com"
    assert request_uri_host("sip:1001@[2001:db8::1]:5060") == "2001:db8::1"
    assert request_uri_host("") == ""


@pytest.mark.parametrize(
    ("cseq", "number", "method"),
    [
        ("CSeq: 12 REGISTER", 12, "REGISTER"),
        ("CSeq:12 register", 12, "REGISTER"),
        ("CSeq: 99999999999 REGISTER", 99999999999, "REGISTER"),  # 11 digits: kept
        ("CSeq: 999999999999 REGISTER", 0, "REGISTER"),  # 12: not a count
        ("CSeq: ¹ REGISTER", 0, "REGISTER"),
        ("CSeq: -3 REGISTER", 0, "REGISTER"),
        ("CSeq: 7", 7, ""),
        ("CSeq:   ", 0, ""),
        ("CSeq: x" + "M" * 1000, 0, ""),  # one word: only the number is read
        ("CSeq: 1 " + "m" * 1000, 1, "M" * MAX_FIELD),
    ],
)
def test_cseq_of_a_response(cseq: str, number: int, method: str) -> None:
    msg = must(wire("SIP/2.0 200 OK", cseq))
    assert (msg.cseq, msg.method) == (number, method)


@pytest.mark.parametrize(
    ("via", "branch"),
    [
        ("Via: SIP/2.0/UDP h;branch=z9hG4bKa;rport", "z9hG4bKa"),
        ("Via: SIP/2.0/UDP h;rport;branch=z9hG4bKb", "z9hG4bKb"),
        ("Via: SIP/2.0/UDP h;branch=z9hG4bKc,SIP/2.0/UDP p;branch=z9hG4bKd", "z9hG4bKc"),
        ("Via: SIP/2.0/UDP h;branch=z9hG4bKe rport", "z9hG4bKe"),
        ("Via: SIP/2.0/UDP h;BRANCH = z9hG4bKf;x=1", "z9hG4bKf"),
        ("Via: SIP/2.0/UDP h;Branch=z9hG4bKg", "z9hG4bKg"),
        ("Via: SIP/2.0/UDP h;branch=", ""),
        ("Via: SIP/2.0/UDP h;rport", ""),
        ("v: SIP/2.0/UDP h;branch=z9hG4bKcompact", "z9hG4bKcompact"),
        ("VIA: SIP/2.0/UDP h;branch=" + "b" * 1000, "b" * MAX_FIELD),
    ],
)
def test_top_via_branch(via: str, branch: str) -> None:
    assert must(wire("REGISTER sip:h SIP/2.0", via, "CSeq: 1 REGISTER")).via_branch == branch


def test_the_first_via_wins_and_a_later_first_via_falls_back_to_the_last() -> None:
    first = wire(
        "REGISTER sip:h SIP/2.0",
        "Via: SIP/2.0/UDP p1;branch=z9hG4bKtop",
        "Via: SIP/2.0/UDP p2;branch=z9hG4bKmid",
        "Via: SIP/2.0/UDP p3;branch=z9hG4bKlow",
    )
    assert must(first).via_branch == "z9hG4bKtop"
    later = wire(
        "REGISTER sip:h SIP/2.0",
        "CSeq: 1 REGISTER",
        "Via: SIP/2.0/UDP p1;branch=z9hG4bKone",
        "Via: SIP/2.0/UDP p2;branch=z9hG4bKtwo",
    )
    assert must(later).via_branch == "z9hG4bKtwo"


def test_compact_and_long_forms_and_which_wins() -> None:
    text = wire(
        "REGISTER sip:h SIP/2.0",
        "i: compact-id",
        "f: <sip:fred@F.example>",
        "t: <sip:tom@T.example>",
        "m: <sip:fred@10.0.0.9>;expires=45",
        "CSEQ: 3 REGISTER",
    )
    msg = must(text)
    assert (msg.call_id, msg.from_user, msg.from_host) == ("compact-id", "fred", "f.example")
    assert (msg.to_user, msg.to_host, msg.expires) == ("tom", "t.example", 45)
    assert msg.contact == "<sip:fred@10.0.0.9>;expires=45"
    both = wire(
        "REGISTER sip:h SIP/2.0",
        "i: short",
        "Call-ID:  long-id ",
        "m: <sip:m@x>",
        "Contact: <sip:c@x>",
    )
    msg = must(both)
    assert msg.call_id == "long-id" and msg.contact == "<sip:c@x>"
    assert must(wire("REGISTER sip:h SIP/2.0", "Call-ID: " + "c" * 999)).call_id == "c" * MAX_FIELD


def test_expires_header_beats_the_contact_parameter_and_bad_values_are_none() -> None:
    head = ("REGISTER sip:h SIP/2.0", "Contact: <sip:a@h>;expires=30")
    assert must(wire(*head, "Expires: 600")).expires == 600
    assert must(wire(*head, "Expires: 0")).expires == 0
    assert must(wire(*head, "Expires: soon")).expires == 30  # unreadable header: the parameter
    assert must(wire(*head, "Expires: ³")).expires == 30
    assert must(wire("REGISTER sip:h SIP/2.0", "Contact: <sip:a@h>;expires=0")).expires == 0
    assert must(wire("REGISTER sip:h SIP/2.0", "Contact: <sip:a@h>;expires=x")).expires is None
    assert must(wire("REGISTER sip:h SIP/2.0", "Contact: *")).expires is None
    assert must(wire("SIP/2.0 200 OK", "Expires: 1x")).expires is None


def test_credentials_and_challenges_of_both_kinds() -> None:
    proxy = wire(
        "REGISTER sip:carrier.example SIP/2.0",
        'Proxy-Authorization: Digest username="trunk", realm="carrier.example", nonce="n"',
    )
    msg = must(proxy)
    assert msg.has_auth and (msg.auth_username, msg.auth_realm) == ("trunk", "carrier.example")
    both = wire(
        "REGISTER sip:h SIP/2.0",
        'Proxy-Authorization: Digest username="proxy"',
        'Authorization: Digest username="www"',
    )
    assert must(both).auth_username == "www"
    challenge = 'Digest realm="carrier.example", nonce="6f2c", algorithm=MD5'
    msg = must(
        wire("SIP/2.0 407 Proxy Authentication Required", f"Proxy-Authenticate: {challenge}")
    )
    assert msg.www_authenticate == challenge
    msg = must(
        wire(
            "SIP/2.0 401 Unauthorized",
            'Proxy-Authenticate: Digest realm="p"',
            'WWW-Authenticate: Digest realm="w"',
        )
    )
    assert msg.www_authenticate == 'Digest realm="w"'
    assert (
        len(
            must(
                wire("SIP/2.0 401 Unauthorized", "WWW-Authenticate: " + "d" * 999)
            ).www_authenticate
        )
        == MAX_FIELD
    )
    plain = must(wire("REGISTER sip:h SIP/2.0", "To: <sip:a@h>"))
    assert not plain.has_auth and plain.auth_username == plain.auth_realm == ""


def test_user_agent_and_x_reason_are_trimmed_and_capped() -> None:
    msg = must(wire("SIP/2.0 403 Forbidden", "User-Agent: " + "u" * 999, "X-Reason: " + "x" * 999))
    assert len(msg.user_agent) == len(msg.x_reason) == MAX_FIELD


# ---------------------------------------------------------------- URIs
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"Bob" <sip:bob@Biloxi.Example.COM>;tag=a6c85cf', ("bob", "biloxi.example.com")),
        ("<sip:Bob@biloxi.com:5060;transport=udp>", ("Bob", "biloxi.com")),  # user keeps case
        ("sip:alice@atlanta.com;tag=1", ("alice", "atlanta.com")),
        ("<sips:alice@atlanta.com>", ("alice", "atlanta.com")),
        ("<SIP:alice@atlanta.com>", ("alice", "atlanta.com")),
        ("<tel:+15551230000>", ("", "+15551230000")),
        ("<sip:bob:secret@h.com:5060>", ("bob", "h.com")),
        ("<sip:h.com>", ("", "h.com")),
        ("<sip:[2001:DB8::1]:5060>", ("", "2001:db8::1")),
        ("<sip:u@[2001:db8::2]>", ("u", "2001:db8::2")),
        ("<sip:%61lice@h>", ("%61lice", "h")),  # escapes are kept
        ("<sip:x;y@h>", ("x;y", "h")),
        ("sip:u@h?subject=x", ("u", "h")),
        ("no uri here", ("", "")),
        ("", ("", "")),
    ],
)
def test_parse_uri_user_host(value: str, expected: tuple[str, str]) -> None:
    assert parse_uri_user_host(value) == expected


def test_uri_parts_are_capped() -> None:
    user, host = parse_uri_user_host(f"<sip:{'u' * 999}@{'H' * 999}>")
    assert (user, host) == ("u" * MAX_FIELD, "h" * MAX_FIELD)


# ---------------------------------------------------------------- Digest parameters
@pytest.mark.parametrize(
    ("value", "name", "expected"),
    [
        ('Digest username="alice", realm="r"', "username", "alice"),
        ('Digest username="alice", realm="r"', "realm", "r"),
        ('Digest realm="r",nonce="n1",cnonce="c1"', "nonce", "n1"),
        ('Digest cnonce="c1", nonce="n1"', "nonce", "n1"),  # never inside "cnonce"
        ('Digest cnonce="c1"', "nonce", ""),
        ('Digest xrealm="no", realm="yes"', "realm", "yes"),
        ("Digest realm=unquoted, nonce=n", "realm", "unquoted"),
        ("Digest realm = spaced ,x=1", "realm", "spaced"),
        ('Digest realm\t=\t"tabbed"', "realm", "tabbed"),
        ("realm=first", "realm", "first"),  # at the very start
        ("Digest;realm=semi;x", "realm", "semi"),
        ('Digest REALM="Upper"', "realm", "Upper"),  # name case-insensitive, value kept
        ('Digest realm="unterminated', "realm", "unterminated"),
        ("Digest realm", "realm", ""),  # no "="
        ("Digest realm=", "realm", ""),
        ("Digest realmx=1, realm=2", "realm", "2"),  # "realmx" is another parameter
        ("Digest realmX=1, realm=2", "realm", "2"),
        ("Digest realm=Xyes", "realm", "Xyes"),
        ("Digest realm=aXb", "realm", "aXb"),
        ("Digest realm=abc,x=1", "realm", "abc"),
        ('Digest realm="", nonce="n"', "realm", ""),
        ("Digest realm x=1, realm=3", "realm", "3"),
        ("<sip:a@h>;expires=60;q=1", "expires", "60"),
        ("<sip:a@h>;expires=60\r", "expires", "60"),
        ('Digest username="' + "u" * 999 + '"', "username", "u" * MAX_FIELD),
        ("Digest username=" + "u" * 999, "username", "u" * MAX_FIELD),
    ],
)
def test_param(value: str, name: str, expected: str) -> None:
    assert _param(value, name) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("60", 60),
        (" 60 ", 60),
        ("0", 0),
        ("99999999999", 99999999999),
        ("999999999999", None),
        ("", None),
        ("-1", None),
        ("1.5", None),
        ("²", None),
        ("٣", None),
    ],
)
def test_int(text: str, expected: int | None) -> None:
    assert _int(text) == expected


def test_the_header_pattern_and_getter_built_at_run_time() -> None:
    """The log scanner builds its own regex from these (framing.RECORD_RE)."""
    pattern = re.compile(headers_pattern("(?!STOP)"))
    pick = header_getter(pattern)
    m = pattern.match("\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\nCall-ID: c1\r\nSTOP\nCSeq: 9 R\n")
    assert m is not None
    values = dict(zip(HEADER_FIELDS, pick(m.groups("")), strict=True))
    assert values["top_via"] == "SIP/2.0/UDP h;branch=z9hG4bKx"
    assert values["call_id"] == "c1"
    assert values["cseq"] == ""  # the guard stopped the walk at the STOP line
    assert set(values) == set(HEADER_FIELDS) and len(HEADER_FIELDS) == 16
    plain = re.compile(headers_pattern())
    m = plain.match("\nSTOP\ni: x\nUser-Agent: ua\n")
    assert m is not None
    assert header_getter(plain)(m.groups(""))[HEADER_FIELDS.index("call_id_c")] == "x"
