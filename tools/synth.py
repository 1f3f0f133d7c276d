"""Synthetic drachtio and registrar logs, byte-for-byte in drachtio's format.

Used to build the bundled example (``examples/``), test fixtures and the benchmark corpus.
The record layout is drachtio-server's (``src/controller.cpp`` with sofia-sip's
``tport_logging.c``): header line with a bare LF,
CRLF-terminated SIP lines, and a trailing space line closing the record.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path


def stamp(ts: float) -> str:
    """drachtio's ``YYYY-MM-DD HH:MM:SS.ffffff`` prefix for epoch seconds (UTC)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def sip_dump(
    ts: float,
    what: str,
    transport: str,
    ip: str,
    port: int,
    lines: list[str],
    body: list[str] | None = None,
) -> str:
    """One drachtio record for a SIP message given its start line + header lines."""
    parts = [*lines, "", *(body or [])]
    sip = "\r\n".join(parts)
    size = len(sip) + 2
    st = stamp(ts)
    direction = "from" if what == "recv" else "to"
    return f"{st} {what} {size} bytes {direction} {transport}/[{ip}]:{port} at {st[11:]}:\n{sip} \n"


def line(ts: float, text: str) -> str:
    """A plain drachtio log line (sofia debug, controller messages)."""
    return f"{stamp(ts)} {text}\n"


def pino(ts: float, level: int, msg: str, **fields: object) -> str:
    obj: dict[str, object] = {"level": level, "time": int(ts * 1000), "pid": 17, "hostname": "sbc"}
    obj.update(fields)
    obj["msg"] = msg
    return json.dumps(obj, separators=(",", ":")) + "\n"


@dataclass
class Device:
    """A SIP device registering through the SBC."""

    user: str
    domain: str
    ip: str
    port: int = 5060
    transport: str = "udp"
    user_agent: str = "Yealink SIP-T46S 66.86.0.15"
    request_host: str | None = None  # Request-URI host; defaults to domain
    call_id: str = ""
    cseq: int = 0
    tag: str = ""
    rng: random.Random | None = None

    def __post_init__(self) -> None:
        if self.rng is None:
            self.rng = random.Random(f"{self.user}@{self.domain}/{self.ip}:{self.port}")
        self._rng: random.Random = self.rng
        if not self.call_id:
            self.call_id = f"{self._rng.getrandbits(64):016x}@{self.ip}"
        if not self.tag:
            self.tag = f"{self._rng.getrandbits(32):08x}"

    def register(
        self, *, auth: bool = False, expires: int = 3600, branch: str | None = None
    ) -> list[str]:
        """Start line + headers of the next REGISTER (bumps CSeq unless a branch is reused)."""
        if branch is None:
            self.cseq += 1
            branch = f"z9hG4bK{self._rng.getrandbits(48):012x}"
        host = self.request_host or self.domain
        hdrs = [
            f"REGISTER sip:{host} SIP/2.0",
            f"Via: SIP/2.0/{self.transport.upper()} {self.ip}:{self.port};branch={branch};rport",
            "Max-Forwards: 70",
            f'From: "{self.user}" <sip:{self.user}@{self.domain}>;tag={self.tag}',
            f'To: "{self.user}" <sip:{self.user}@{self.domain}>',
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} REGISTER",
            f"Contact: <sip:{self.user}@{self.ip}:{self.port}>;expires={expires}",
        ]
        if auth:
            hdrs.append(
                f'Authorization: Digest username="{self.user}", realm="{self.domain}", '
                f'nonce="8d2c0a7e", uri="sip:{host}", response="0123456789abcdef0123456789abcdef", '
                'algorithm=MD5, qop=auth, nc=00000001, cnonce="4f2a"'
            )
        hdrs += [
            "Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, OPTIONS, INFO, MESSAGE",
            f"User-Agent: {self.user_agent}",
            "Expires: " + str(expires),
            "Content-Length: 0",
        ]
        return hdrs

    def response(
        self, request: list[str], status: int, reason: str, extra: list[str] | None = None
    ) -> list[str]:
        """The SBC's answer to ``request`` (copies Via, From, To, Call-ID, CSeq)."""
        copied = [
            h for h in request[1:] if h.split(":", 1)[0] in ("Via", "From", "To", "Call-ID", "CSeq")
        ]
        out = [f"SIP/2.0 {status} {reason}"]
        for h in copied:
            if h.startswith("To:") and status >= 200 and status != 100:
                h += ";tag=sbc" + str(status)
            out.append(h)
        out += extra or []
        out += ["Server: drachtio 0.9.2", "Content-Length: 0"]
        return out


def challenge_header(realm: str) -> str:
    return (
        f'WWW-Authenticate: Digest realm="{realm}", algorithm=MD5, qop="auth", '
        'nonce="1732627200:8d2c0a7e"'
    )


class Scenario:
    """Builds a drachtio log and a registrar (pino) log side by side, in time order."""

    def __init__(self, start: float, *, sbc_ip: str = "10.0.0.5") -> None:
        self.t = start
        self.drachtio: list[str] = []
        self.registrar: list[str] = []
        self.sbc_ip = sbc_ip

    def tick(self, seconds: float = 0.001) -> float:
        self.t += seconds
        return self.t

    def recv(self, dev: Device, lines: list[str]) -> None:
        self.drachtio.append(sip_dump(self.tick(), "recv", dev.transport, dev.ip, dev.port, lines))

    def send(self, dev: Device, lines: list[str]) -> None:
        self.drachtio.append(sip_dump(self.tick(), "send", dev.transport, dev.ip, dev.port, lines))

    def log(self, text: str) -> None:
        self.drachtio.append(line(self.tick(0.0001), text))

    def pino(self, level: int, msg: str, **fields: object) -> None:
        self.registrar.append(pino(self.tick(0.0001), level, msg, **fields))

    # -- whole exchanges ------------------------------------------------------------
    def register_ok(self, dev: Device) -> None:
        r1 = dev.register()
        self.recv(dev, r1)
        self.send(dev, dev.response(r1, 401, "Unauthorized", [challenge_header(dev.domain)]))
        r2 = dev.register(auth=True)
        self.recv(dev, r2)
        self.send(
            dev,
            dev.response(
                r2, 200, "OK", [f"Contact: <sip:{dev.user}@{dev.ip}:{dev.port}>;expires=30"]
            ),
        )

    def register_rejected(
        self,
        dev: Device,
        status: int,
        reason: str,
        x_reason: str | None,
        *,
        challenged: bool,
    ) -> None:
        if challenged:
            r1 = dev.register()
            self.recv(dev, r1)
            self.send(dev, dev.response(r1, 401, "Unauthorized", [challenge_header(dev.domain)]))
            req = dev.register(auth=True)
        else:
            req = dev.register()
        self.recv(dev, req)
        extra = [f"X-Reason: {x_reason}"] if x_reason else []
        self.send(dev, dev.response(req, status, reason, extra))

    def register_retransmitted(self, dev: Device, gap: float = 0.5) -> None:
        """A REGISTER sent again after ``gap`` seconds without an answer (UDP), then the
        usual challenge and success."""
        r = dev.register()
        self.recv(dev, r)
        self.tick(gap)
        self.recv(dev, r)
        self.send(dev, dev.response(r, 401, "Unauthorized", [challenge_header(dev.domain)]))
        r = dev.register(auth=True)
        self.recv(dev, r)
        self.send(dev, dev.response(r, 200, "OK"))


def example_logs(start: float = 1795766400.0) -> tuple[str, str]:
    """The bundled example: one healthy device and one of each common failure.

    Returns (drachtio log, registrar log).
    """
    sc = Scenario(start)
    sc.log("Starting drachtio version v0.9.2")
    sc.log("DrachtioController::run tls key file not provided; tls will not be available")
    sc.pino(
        30, "connected to drachtio listening on 10.0.0.5:9022, local hostports: udp/10.0.0.5:5060"
    )
    sc.pino(30, "sbc public ip addresses", sbcPublicIpAddress={"udp": "198.51.100.10"})

    healthy = Device("1001", "acme.sip.example.com", "203.0.113.21", 5062)
    sc.register_ok(healthy)

    ip_realm = Device(
        "5001", "198.51.100.10", "203.0.113.45", 5060, user_agent="Grandstream HT801 1.0.43.11"
    )
    for _ in range(3):
        sc.tick(20)
        sc.pino(
            30,
            f"rejecting REGISTER from sip:{ip_realm.domain} as it has an ipv4 address and sip realm is required",
        )
        sc.register_rejected(ip_realm, 403, "Forbidden", None, challenged=False)

    unknown = Device(
        "2002", "pbx.unknown-customer.example", "192.0.2.77", 5080, user_agent="Zoiper rv2.10.20.2"
    )
    sc.tick(5)
    sc.register_rejected(unknown, 403, "Forbidden", "Unknown or invalid realm", challenged=False)

    wrong_pw = Device(
        "3003", "acme.sip.example.com", "203.0.113.30", 5060, user_agent="Linphone/5.2.5"
    )
    for _ in range(4):
        sc.tick(30)
        sc.register_rejected(wrong_pw, 403, "Forbidden", "Invalid credentials", challenged=True)

    inactive = Device("4004", "beta.sip.example.com", "203.0.113.40", 5060)
    sc.tick(3)
    sc.register_rejected(
        inactive, 403, "Forbidden", "Account has been deactivated", challenged=False
    )

    plaintext = Device(
        "6006", "acme.sip.example.com", "203.0.113.60", 5060, user_agent="MicroSIP/3.21.3"
    )
    sc.tick(2)
    r1 = plaintext.register()
    sc.recv(plaintext, r1)
    sc.send(
        plaintext, plaintext.response(r1, 401, "Unauthorized", [challenge_header(plaintext.domain)])
    )
    r2 = plaintext.register(auth=True)
    sc.recv(plaintext, r2)
    sc.pino(
        50,
        "Error SyntaxError: Unexpected token 's', \"s3cretpw\" is not valid JSON, rejecting with 403",
    )
    sc.send(plaintext, plaintext.response(r2, 500, "Internal Server Error"))

    # a retransmitted REGISTER (UDP, no answer for 500 ms), then the normal flow
    retx = Device(
        "1002", "acme.sip.example.com", "203.0.113.22", 5060, user_agent="Cisco/SPA504G-7.6.2c"
    )
    sc.tick(4)
    sc.register_retransmitted(retx)

    # drachtio <-> app API traffic is not network SIP and must not be counted
    sc.log(
        "Client::read_handler read: 11a3|sip|2b1f|unsolicited|REGISTER sip:acme.sip.example.com SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKapi\r\nCall-ID: api-traffic\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n"
    )
    sc.log(
        "tport.c:3233 tport_recv_iovec() tport_recv_iovec(0x55d) msg 0x55e from (udp/203.0.113.50:5060) has 612 bytes, veclen = 1"
    )

    # the registrar goes away: drachtio answers 503 itself
    down = Device(
        "7007",
        "acme.sip.example.com",
        "203.0.113.70",
        5060,
        user_agent="Yealink SIP-T54W 96.86.0.100",
    )
    sc.tick(60)
    sc.pino(
        50,
        "Error connecting to drachtio server",
        err={"type": "Error", "message": "connect ECONNREFUSED 10.0.0.5:9022"},
    )
    req = down.register()
    sc.recv(down, req)
    sc.log("No connected clients found to handle incoming register request")
    sc.log("DrachtioController::processNewRequest - No providers available for REGISTER")
    sc.send(down, down.response(req, 503, "Service Unavailable"))
    sc.tick(40)
    sc.pino(
        30, "connected to drachtio listening on 10.0.0.5:9022, local hostports: udp/10.0.0.5:5060"
    )

    # a scanner spraying usernames at the IP address of the SBC
    for i, user in enumerate(["100", "101", "1000", "admin", "test", "200", "2000", "9999"]):
        scan = Device(
            user, "198.51.100.10", "185.243.5.17", 5070 + i, user_agent="friendly-scanner"
        )
        sc.tick(0.2)
        sc.register_rejected(scan, 403, "Forbidden", None, challenged=False)

    # a device whose REGISTER never gets an answer (e.g. dropped by a firewall rule)
    lost = Device("8008", "acme.sip.example.com", "203.0.113.80", 5060)
    sc.tick(1)
    sc.recv(lost, lost.register())
    sc.tick(40)
    sc.register_ok(healthy)
    return "".join(sc.drachtio), "".join(sc.registrar)


def busy_round(
    sc: Scenario,
    rng: random.Random,
    users: Sequence[str],
    on_options: Callable[[Scenario, Device, list[str]], None],
    *,
    devices: int = 50,
) -> None:
    """A few seconds of a busy SBC: ``devices`` registrations (70% fine, 15% a wrong
    password, 7% an unknown realm) and OPTIONS pings to the rest; ``on_options`` adds what
    follows a ping the SBC sent (its answer, a debug line)."""
    for _ in range(devices):
        dev = Device(
            rng.choice(users),
            "acme.sip.example.com",
            f"203.0.113.{rng.randrange(1, 250)}",
            5060,
            rng=rng,
        )
        roll = rng.random()
        if roll < 0.70:
            sc.register_ok(dev)
        elif roll < 0.85:
            sc.register_rejected(dev, 403, "Forbidden", "Invalid credentials", challenged=True)
        elif roll < 0.92:
            sc.register_rejected(
                dev, 403, "Forbidden", "Unknown or invalid realm", challenged=False
            )
        else:
            opts = [
                f"OPTIONS sip:{dev.ip}:5060 SIP/2.0",
                f"Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK{rng.getrandbits(40):x}",
                "From: <sip:10.0.0.5>;tag=abc",
                f"To: <sip:{dev.ip}:5060>",
                f"Call-ID: {rng.getrandbits(64):x}",
                "CSeq: 1 OPTIONS",
                "Content-Length: 0",
            ]
            sc.send(dev, opts)
            on_options(sc, dev, opts)
        sc.tick(rng.random() * 0.05)


def _options_debug_line(sc: Scenario, dev: Device, opts: list[str]) -> None:
    sc.log("nta.c:2880 agent_recv_request() nta: received OPTIONS (CSeq 1)")


def bench_corpus(target_bytes: int, *, seed: int = 1) -> Iterator[str]:
    """Yield drachtio log text until ``target_bytes`` is reached: a realistic mix of healthy
    registrations, rejections, retransmissions, OPTIONS pings and sofia debug lines."""
    rng = random.Random(seed)
    t = 1795766400.0
    produced = 0
    users = [str(1000 + i) for i in range(2000)]
    while produced < target_bytes:
        sc = Scenario(t)
        busy_round(sc, rng, users, _options_debug_line)
        chunk = "".join(sc.drachtio)
        produced += len(chunk)
        t = sc.t
        yield chunk


SCANNER_IP = "198.51.100.66"
FLOOD_REAL_USERS = ("1001", "1002", "1003", "1004", "1005")


def scanner_flood(usernames: int, *, start: float = 1795766400.0) -> Iterator[str]:
    """Yield drachtio log text of a username spray: one source IP tries ``usernames``
    distinct names (each REGISTER answered 403), and at 90% of the spray five real devices
    fail with a wrong password.  What a flood of attacker-chosen names must not do: grow
    memory with the number of names, or hide the five real failures."""
    rng = random.Random(7)
    sc = Scenario(start)
    real_at = usernames * 9 // 10
    for i in range(usernames):
        if i == real_at:
            for n, user in enumerate(FLOOD_REAL_USERS):
                dev = Device(user, "acme.sip.example.com", f"203.0.113.{10 + n}", rng=rng)
                sc.register_rejected(dev, 403, "Forbidden", "Invalid credentials", challenged=True)
        dev = Device(f"x{i:07d}", "acme.sip.example.com", SCANNER_IP, 5070, rng=rng)
        dev.user_agent = "PolycomSoundPointIP-SPIP_335-UA/3.2.3"  # no scanner User-Agent
        sc.register_rejected(dev, 403, "Forbidden", None, challenged=False)
        if len(sc.drachtio) >= 2000:
            yield "".join(sc.drachtio)
            sc.drachtio.clear()
    yield "".join(sc.drachtio)


def write_scanner_flood(path: Path, usernames: int) -> int:
    """Write :func:`scanner_flood` to ``path``; the number of SIP messages it holds."""
    messages = 0
    with path.open("w") as f:
        for chunk in scanner_flood(usernames):
            f.write(chunk)
            messages += chunk.count(" bytes ")
    return messages


def write_example(directory: str) -> None:
    """Write the bundled example logs (``python -m tools.synth examples``)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    drachtio, registrar = example_logs()
    (out / "drachtio-sbc.log").write_bytes(drachtio.encode())
    (out / "sbc-sip-sidecar.log").write_bytes(registrar.encode())


if __name__ == "__main__":
    import sys

    write_example(sys.argv[1] if len(sys.argv) > 1 else "examples")
