"""What SIP answers and signals mean to sipwatch: the one place these facts are written down.

Every stage asks the same questions of a REGISTER's outcome - is it a challenge, is it a
failure, which key does it count under, was it sent by a known scanner - and the answers must
never drift between the transaction tracker, the failure table, the metrics, the scanner
classifier and the diagnosis.  So they are answered here and nowhere else.
"""

from __future__ import annotations

from typing import Final

#: Answers that ask for credentials (RFC 3261 §22): part of a normal registration, not a
#: failure, unless they come back to a request that already carried credentials.
CHALLENGE_STATUSES: Final = frozenset({401, 407})

#: The outcome key of a transaction that got no final answer within Timer F.
TIMEOUT: Final = "timeout"

#: RFC 3261 Timer F (64*T1): a non-INVITE client transaction gives up after 32 s.
TIMER_F: Final = 32.0

#: An attempt whose credentials were answered with this many 401/407s is a challenge loop.
MAX_CHALLENGES: Final = 3

#: Answers to a REGISTER that say "your credentials or your identity are wrong".  Only these
#: are evidence of guessing (a scanner); 5xx and timeouts are outages, never attack evidence.
REJECTION_STATUSES: Final = frozenset({403, 404})

#: X-Reason values produced by the jambonz registrar (sbc-sip-sidecar, digest-utils,
#: drachtio-mw-registration-parser, as of sbc-sip-sidecar v0.9.6), matched on a
#: lower-case prefix because "detected potential spammer from <ip>:<port>" carries the peer.
X_REASONS: Final[tuple[tuple[str, str], ...]] = (
    ("unknown or invalid realm", "unknown_realm"),
    ("invalid credentials", "invalid_credentials"),
    ("account has been deactivated", "account_deactivated"),
    ("invalid address of record", "invalid_aor"),
    ("detected potential spammer", "potential_spammer"),
    ("contact header is required", "contact_required"),
    ("max devices registered", "max_devices"),
)

#: User-Agent fragments (lower case) of known SIP scanners and brute-forcers, and the tool
#: each names (anchors §3.4: SIPVicious and friends announce themselves).  Matching a
#: User-Agent only cuts noise - a determined attacker changes it - so it marks traffic as
#: attack-shaped (never remediated, counted per source IP), it never bans anything.
SCANNER_USER_AGENTS: Final[tuple[tuple[str, str], ...]] = (
    ("friendly-scanner", "sipvicious"),
    ("sipvicious", "sipvicious"),
    ("sipcli", "sipcli"),
    ("vaxsipuseragent", "vaxsip"),
    ("sundayddr", "sundayddr"),
    ("iwar", "iwar"),
    ("sip-scan", "sip_scan"),
    ("sivus", "sivus"),
    ("smap", "smap"),
    ("pplsip", "pplsip"),
    ("sipptk", "sipptk"),
    ("voip-scan", "voip_scan"),
)


#: SIP request methods (RFC 3261 and the extensions in the IANA registry that SBCs meet).
SIP_METHODS: Final = frozenset(
    {
        "REGISTER", "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "SUBSCRIBE", "NOTIFY",
        "MESSAGE", "INFO", "PRACK", "UPDATE", "REFER", "PUBLISH",
    }
)  # fmt: skip

#: Final answers a REGISTER meets in practice (IANA SIP response codes; jambonz passes a
#: registration webhook's HTTP status through as the SIP status, hence 404, 405, 500...).
REGISTER_STATUS_CODES: Final = frozenset(
    {
        100, 200, 202, 301, 302, 305, 380,
        400, 401, 402, 403, 404, 405, 406, 407, 408, 410, 412, 413, 414, 415, 416, 420, 421,
        423, 429, 480, 481, 482, 483, 484, 485, 486, 487, 488, 489, 491, 493, 494,
        500, 501, 502, 503, 504, 505, 513, 580,
        600, 603, 604, 606, 607, 608,
    }
)  # fmt: skip


def is_challenge(status: int) -> bool:
    """A 401/407: the registrar asks for (new) credentials."""
    return status in CHALLENGE_STATUSES


def is_failure_status(status: int) -> bool:
    """A final answer meaning "this device is not registered": 4xx-6xx except challenges.

    400 and 402 count too: jambonz answers 400 to a REGISTER without Contact or expires,
    which is just as much a broken device.
    """
    return status >= 400 and status not in CHALLENGE_STATUSES


def status_key(status: int, timed_out: bool) -> int | str:
    """What a failure groups and counts under: the status code, or ``"timeout"``."""
    return TIMEOUT if timed_out else status


def x_reason_id(x_reason: str) -> str | None:
    """The jambonz X-Reason as a fixed identifier; "" for none, None when not a known one."""
    text = x_reason.strip().lower()
    if not text:
        return ""
    for prefix, ident in X_REASONS:
        if text.startswith(prefix):
            return ident
    return None


def scanner_tool(user_agent: str) -> str | None:
    """The scanning tool a User-Agent announces, or None."""
    if not user_agent:
        return None
    ua = user_agent.lower()
    for needle, tool in SCANNER_USER_AGENTS:
        if needle in ua:
            return tool
    return None
