"""A registrar line is evidence only for the failure it can explain (issue 10, item 6).

The real sbc-sip-sidecar at debug level logs ``checkAccountLimits: account is deactivated,
reject registration`` with no realm and no user.  Seven devices failing within seconds for
seven different reasons must each keep the cause their own response supports; the line
belongs to the one device that got 403 "Account has been deactivated" before any challenge.

The logs below are written out by hand in drachtio-server's console format (header line,
CRLF SIP lines, a record ending in a line with one space) and pino JSON, not produced by
sipwatch's own synthesiser.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sipwatch.model import ServiceEvent, ServiceOrigin
from sipwatch.pipeline.context import FailureContext
from tests.cli_support import run_cli
from tests.daemon_runner import clean_env

ROOT = Path(__file__).resolve().parents[1]
DAY = "2026-11-27"
BASE_MS = 1795766400000  # 2026-11-27 08:00:00 UTC, the drachtio timestamps below
SBC = "198.51.100.10"


def _record(clock: str, direction: str, peer: str, lines: list[str]) -> str:
    """One SIP dump as drachtio-server writes it: a header line without CR, the SIP lines
    ending in CRLF, then a line holding a single space (the message has no body)."""
    sip = "".join(line + "\r\n" for line in lines)
    verb, prep = ("recv", "from") if direction == "recv" else ("send", "to")
    ip, port = peer.rsplit(":", 1)
    size = len(sip) + 2
    return f"{DAY} {clock} {verb} {size} bytes {prep} udp/[{ip}]:{port} at {clock}:\n{sip} \n"


@dataclass(frozen=True)
class Device:
    """One failing phone: what it sent, what jambonz answered, and the first cause its own
    response supports without a database."""

    user: str
    domain: str
    peer: str
    final: str
    headers: tuple[str, ...]
    challenged: bool
    expected: str
    request_uri: str = ""

    def register(self, call: str, cseq: int, auth: bool) -> list[str]:
        lines = [
            f"REGISTER sip:{self.request_uri or self.domain} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.peer};branch=z9hG4bK{call}{cseq};rport",
            "Max-Forwards: 70",
            f"From: <sip:{self.user}@{self.domain}>;tag={call}",
            f"To: <sip:{self.user}@{self.domain}>",
            f"Call-ID: {call}@{self.peer.split(':')[0]}",
            f"CSeq: {cseq} REGISTER",
            f"Contact: <sip:{self.user}@{self.peer}>;expires=3600",
        ]
        if auth:
            lines.append(
                f'Authorization: Digest username="{self.user}", realm="{self.domain}", '
                f'nonce="n{call}", uri="sip:{self.domain}", '
                'response="00000000000000000000000000000000", algorithm=MD5, qop=auth, '
                'nc=00000001, cnonce="c0ffee"'
            )
        return [*lines, "User-Agent: Yealink SIP-T46S 66.86.0.15", "Content-Length: 0"]

    def response(self, call: str, cseq: int, status: str, headers: tuple[str, ...]) -> list[str]:
        return [
            f"SIP/2.0 {status}",
            f"Via: SIP/2.0/UDP {self.peer};branch=z9hG4bK{call}{cseq};rport",
            f"From: <sip:{self.user}@{self.domain}>;tag={call}",
            f"To: <sip:{self.user}@{self.domain}>;tag=sbc{cseq}",
            f"Call-ID: {call}@{self.peer.split(':')[0]}",
            f"CSeq: {cseq} REGISTER",
            *headers,
            "Server: drachtio 0.9.2",
            "Content-Length: 0",
        ]

    def dumps(self, second: int) -> str:
        """REGISTER, 401, REGISTER with credentials (when challenged), then the answer."""
        call, t = f"c{second:02d}x{self.user}", f"08:00:{second:02d}"
        out = []
        cseq = 1
        if self.challenged:
            challenge = (
                f'WWW-Authenticate: Digest realm="{self.domain}", algorithm=MD5, qop="auth", '
                f'nonce="n{call}"',
            )
            out.append(_record(f"{t}.100000", "recv", self.peer, self.register(call, 1, False)))
            out.append(
                _record(
                    f"{t}.110000",
                    "send",
                    self.peer,
                    self.response(call, 1, "401 Unauthorized", challenge),
                )
            )
            cseq = 2
        out.append(
            _record(f"{t}.200000", "recv", self.peer, self.register(call, cseq, self.challenged))
        )
        out.append(
            _record(
                f"{t}.210000",
                "send",
                self.peer,
                self.response(call, cseq, self.final, self.headers),
            )
        )
        return "".join(out)


CREDS = ("X-Reason: Invalid credentials",)
ACME = "acme.sip.example.com"
DEVICES = (
    Device(
        "wrongpw", ACME, "203.0.113.1:5060", "403 Forbidden", CREDS, True, "credentials_rejected"
    ),
    Device(
        "plain",
        ACME,
        "203.0.113.2:5060",
        "500 Internal Server Error",
        (),
        True,
        "client_password_plaintext",
    ),
    Device(
        "sleepy", ACME, "203.0.113.3:5060", "403 Forbidden", CREDS, True, "credentials_rejected"
    ),
    Device(
        "typo",
        "acne.sip.example.com",
        "203.0.113.4:5060",
        "403 Forbidden",
        ("X-Reason: Unknown or invalid realm",),
        False,
        "realm_unknown",
    ),
    Device(
        "unpaid",
        "unpaid.sip.example.com",
        "203.0.113.5:5060",
        "403 Forbidden",
        ("X-Reason: Account has been deactivated",),
        False,
        "account_inactive",
    ),
    Device("ghost", ACME, "203.0.113.6:5060", "403 Forbidden", CREDS, True, "credentials_rejected"),
    Device("5001", SBC, "203.0.113.7:5060", "403 Forbidden", (), False, "realm_is_ip", SBC),
)


def _pino(ms: int, level: int, msg: str) -> str:
    return json.dumps({"level": level, "time": ms, "pid": 17, "hostname": "sbc", "msg": msg})


def write_logs(tmp_path: Path) -> tuple[Path, Path]:
    drachtio = tmp_path / "drachtio-sbc.log"
    text = f"{DAY} 08:00:00.000100 Starting drachtio version v0.9.2\n"
    text += "".join(d.dumps(i + 1) for i, d in enumerate(DEVICES))
    drachtio.write_bytes(text.encode())
    sidecar = tmp_path / "sbc-sip-sidecar.log"
    lines = [
        _pino(
            BASE_MS,
            30,
            "connected to drachtio listening on 10.0.0.5:9022, local hostports: udp/10.0.0.5:5060",
        ),
        # device 2 (500 after the challenge): the registrar's JSON.parse error, level 50
        _pino(
            BASE_MS + 2205,
            50,
            "Error SyntaxError: Unexpected token 'c', \"carolplain\" is not valid JSON, "
            "rejecting with 403",
        ),
        # device 5 (deactivated account): the debug line that names nobody, amid the others
        _pino(
            BASE_MS + 5205, 20, "checkAccountLimits: account is deactivated, reject registration"
        ),
        # device 7: rejectIpv4 names the Request-URI
        _pino(
            BASE_MS + 7205,
            30,
            f"rejecting REGISTER from sip:{SBC} as it has an ipv4 address and sip realm is required",
        ),
    ]
    sidecar.write_text("\n".join(lines) + "\n")
    return drachtio, sidecar


def test_each_device_keeps_the_cause_its_own_response_supports(tmp_path: Path) -> None:
    drachtio, sidecar = write_logs(tmp_path)
    env = clean_env()
    env["PYTHONPATH"] = str(ROOT)
    res = run_cli("replay", "--format", "json", str(drachtio), str(sidecar), env=env, timeout=60)
    assert res.returncode == 0, res.stderr
    failures = json.loads(res.stdout)["register_failures"]
    first = {f["user"]: f["causes"][0]["id"] if f["causes"] else None for f in failures}
    assert first == {d.user: d.expected for d in DEVICES}
    # the deactivation line was attached to exactly one device
    paired = [
        f["user"] for f in failures if any(c["id"] == "account_inactive" for c in f["causes"])
    ]
    assert paired == ["unpaid"]


def _event(ts: float, kind: str, **attrs: str) -> ServiceEvent:
    return ServiceEvent(ts, "sidecar", ServiceOrigin.REGISTRAR, kind, 30, kind, dict(attrs))


def test_pairing_rules_per_event_kind() -> None:
    ctx = FailureContext(window=3.0)
    for ev in (
        _event(100.0, "account_deactivated"),
        _event(100.0, "plaintext_password"),
        _event(100.0, "limits", account_sid="a1"),
        _event(100.0, "webhook_error", status_code="404"),
        _event(100.0, "unknown_realm", realm="acme.example.com"),
        _event(100.0, "no_connected_clients"),
    ):
        ctx.observe_event(ev)

    def near(
        status: int | str, x_reason: str, challenged: bool, realm: str = "acme.example.com"
    ) -> set[str]:
        found = ctx.events_near(
            100.5, 100.5, realm, status, x_reason=x_reason, challenged=challenged
        )
        return set(found)

    deactivated = "Account has been deactivated"
    assert near(403, deactivated, False) == {"account_deactivated", "unknown_realm"}
    assert near(403, deactivated, False, "other.example.com") == {"account_deactivated"}
    assert near(403, "Invalid credentials", True) == set()
    assert near(500, "", True) == {"plaintext_password"}
    assert near(500, "", False) == set()
    assert near(404, "", True) == {"webhook_error"}
    assert near(502, "", True) == set()  # the webhook answered 404, not 502
    assert near(503, "Max Devices Registered", False) == {"limits", "no_connected_clients"}
    assert near("timeout", "", False) == {"no_connected_clients"}
    # outside the window nothing is paired
    late = ctx.events_near(110.0, 110.0, "acme.example.com", 500, x_reason="", challenged=True)
    assert late == frozenset()
