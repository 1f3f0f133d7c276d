"""One scenario, two renderings: drachtio's log (tools.synth) and drachtio's HEP feed.

``HepScenario`` is a ``tools.synth.Scenario`` that also captures every SIP message it logs
the way drachtio's capture would: one HEP3 packet per message, the device on one side and
the SBC's SIP address on the other, the wire bytes as payload, the log's timestamp.
"""

from __future__ import annotations

from tests.hep_encoding import Capture, encode_hep3, split_time
from tools.synth import Device, Scenario

SBC_IP = "10.0.0.5"
SBC_PORT = 5060
AGENT_ID = 101


def wire_message(lines: list[str]) -> bytes:
    """The SIP message drachtio's log record shows, as it was on the wire."""
    return ("\r\n".join([*lines, ""]) + "\r\n").encode()


class HepScenario(Scenario):
    def __init__(
        self,
        start: float,
        *,
        sbc_ip: str = SBC_IP,
        sbc_port: int = SBC_PORT,
        agent_id: int = AGENT_ID,
    ) -> None:
        super().__init__(start, sbc_ip=sbc_ip)
        self.sbc_port = sbc_port
        self.agent_id = agent_id
        self.captures: list[Capture] = []

    def recv(self, dev: Device, lines: list[str]) -> None:
        super().recv(dev, lines)
        self._capture(dev, lines, (dev.ip, dev.port), (self.sbc_ip, self.sbc_port))

    def send(self, dev: Device, lines: list[str]) -> None:
        super().send(dev, lines)
        self._capture(dev, lines, (self.sbc_ip, self.sbc_port), (dev.ip, dev.port))

    def _capture(
        self, dev: Device, lines: list[str], src: tuple[str, int], dst: tuple[str, int]
    ) -> None:
        seconds, micros = split_time(self.t)  # the timestamp the log record got
        self.captures.append(
            Capture(
                src_ip=src[0],
                src_port=src[1],
                dst_ip=dst[0],
                dst_port=dst[1],
                seconds=seconds,
                micros=micros,
                payload=wire_message(lines),
                agent_id=self.agent_id,
                transport=dev.transport,
            )
        )

    @property
    def log_text(self) -> str:
        return "".join(self.drachtio)

    def packets(self) -> list[bytes]:
        return [encode_hep3(c) for c in self.captures]


def mixed_scenario(start: float = 1795766400.0, **kwargs: object) -> HepScenario:
    """Healthy registrations and the common failures, a retransmission, a timeout, a
    scanner, and the SBC's own OPTIONS ping to a carrier (a request the SBC sends).
    SIP messages only: HEP carries nothing else, so the log must not either."""
    sc = HepScenario(start, **kwargs)  # type: ignore[arg-type]
    healthy = Device("1001", "acme.sip.example.com", "203.0.113.21", 5062)
    sc.register_ok(healthy)
    sc.register_ok(Device("1003", "acme.sip.example.com", "203.0.113.23", 5060))
    ip_realm = Device("5001", "198.51.100.10", "203.0.113.45", user_agent="Grandstream HT801")
    for _ in range(3):
        sc.tick(20)
        sc.register_rejected(ip_realm, 403, "Forbidden", None, challenged=False)
    carrier = Device("trunk", "sip.carrier.example", "192.0.2.10", 5060)
    ping = [
        "OPTIONS sip:192.0.2.10:5060 SIP/2.0",
        f"Via: SIP/2.0/UDP {SBC_IP}:5060;branch=z9hG4bKping1",
        f"From: <sip:{SBC_IP}>;tag=ping",
        "To: <sip:192.0.2.10:5060>",
        "Call-ID: ping-1@10.0.0.5",
        "CSeq: 1 OPTIONS",
        "Content-Length: 0",
    ]
    sc.send(carrier, ping)
    sc.recv(carrier, carrier.response(ping, 200, "OK"))
    unknown = Device("2002", "pbx.unknown.example", "192.0.2.77", 5080, user_agent="Zoiper")
    sc.tick(5)
    sc.register_rejected(unknown, 403, "Forbidden", "Unknown or invalid realm", challenged=False)
    wrong_pw = Device("3003", "acme.sip.example.com", "203.0.113.30", user_agent="Linphone")
    for _ in range(4):
        sc.tick(30)
        sc.register_rejected(wrong_pw, 403, "Forbidden", "Invalid credentials", challenged=True)
    inactive = Device("4004", "beta.sip.example.com", "203.0.113.40")
    sc.tick(3)
    sc.register_rejected(
        inactive, 403, "Forbidden", "Account has been deactivated", challenged=False
    )
    plaintext = Device("6006", "acme.sip.example.com", "203.0.113.60", user_agent="MicroSIP")
    sc.tick(2)
    sc.register_rejected(plaintext, 500, "Internal Server Error", None, challenged=True)
    retx = Device("1002", "acme.sip.example.com", "203.0.113.22", user_agent="Cisco/SPA504G")
    sc.tick(4)
    sc.register_retransmitted(retx)
    down = Device("7007", "acme.sip.example.com", "203.0.113.70", user_agent="Yealink T54W")
    sc.tick(60)
    req = down.register()
    sc.recv(down, req)
    sc.send(down, down.response(req, 503, "Service Unavailable"))
    for i, user in enumerate(["100", "101", "1000", "admin", "test", "200", "2000", "9999"]):
        scan = Device(
            user, "198.51.100.10", "185.243.5.17", 5070 + i, user_agent="friendly-scanner"
        )
        sc.tick(0.2)
        sc.register_rejected(scan, 403, "Forbidden", None, challenged=False)
    lost = Device("8008", "acme.sip.example.com", "203.0.113.80")
    sc.tick(1)
    sc.recv(lost, lost.register())
    sc.tick(40)  # past Timer F in log time: the lost REGISTER has timed out
    sc.register_ok(healthy)
    return sc
