"""Probe an account's registration webhook the way the registrar calls it - with fake credentials.

digest-utils POSTs (or GETs) the parsed Authorization data to the webhook and expects HTTP 200
with JSON ``{"status": "ok"|"fail", ...}``.  Anything else breaks registration in a specific
way (reference §1a): a non-200 status is passed through as the SIP status, a refused
connection or a non-JSON body becomes SIP 500, a JSON body without ``status`` throws and
becomes SIP 500.

The probe reproduces the request shape - method, JSON body or query string, Basic auth when
the webhook row has it, and the ``Jambonz-Signature`` HMAC - but the digest fields are
dummies: a made-up username, a documentation-range source address and an all-zero response.
It never sends a device's credentials.  A healthy webhook therefore answers ``fail``, which is
a *valid* answer; one that answers ``ok`` to a made-up user with an all-zero digest checks no
credentials at all (the ``webhook_accepts_any_credentials`` check).  The body read is capped
and the call has a deadline; the URL comes from the database, never from logs.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlencode, urlsplit, urlunsplit

from sipwatch.diagnosis.jambonz import Webhook, safe_url

if TYPE_CHECKING:
    import aiohttp

ProbeOutcome = Literal[
    "ok", "fail", "unreachable", "http_error", "not_json", "no_status", "invalid_status"
]

PROBE_USERNAME = "sipwatch-probe"
PROBE_SOURCE_ADDRESS = "192.0.2.1"  # RFC 5737 TEST-NET-1: cannot belong to a real device
_MAX_BODY = 65536


@dataclass(frozen=True)
class ProbeResult:
    outcome: ProbeOutcome
    url: str  # password-free form
    http_status: int | None
    detail: str
    elapsed_ms: int

    @property
    def reachable(self) -> bool:
        return self.outcome != "unreachable"

    @property
    def http_ok(self) -> bool | None:
        return None if not self.reachable else self.outcome != "http_error"

    @property
    def response_valid(self) -> bool | None:
        if not self.reachable or self.outcome == "http_error":
            return None
        return self.outcome in ("ok", "fail")


def probe_payload(realm: str) -> dict[str, Any]:
    """The body digest-utils sends, with dummy digest values."""
    nonce = secrets.token_hex(16)
    return {
        "source_address": PROBE_SOURCE_ADDRESS,
        "source_port": 5060,
        "method": "REGISTER",
        "expires": 3600,
        "scheme": "digest",
        "username": PROBE_USERNAME,
        "realm": realm,
        "nonce": nonce,
        "uri": f"sip:{realm}",
        "algorithm": "MD5",
        "response": "0" * 32,
        "qop": "auth",
        "nc": "00000001",
        "cnonce": secrets.token_hex(8),
    }


def jambonz_signature(secret: str, body: str, now: int | None = None) -> str:
    """``Jambonz-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">``."""
    t = int(time.time()) if now is None else now
    mac = hmac.new(secret.encode("utf-8"), f"{t}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def classify_response(status: int, body: bytes) -> tuple[ProbeOutcome, str]:
    """Map an HTTP answer to what digest-utils would make of it."""
    if status != 200:
        return "http_error", f"HTTP {status}"
    try:
        parsed = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return "not_json", "200 with a body that is not JSON"
    if not isinstance(parsed, dict) or "status" not in parsed or parsed["status"] is None:
        return "no_status", "200 JSON without a 'status' field"
    value = parsed["status"]
    if not isinstance(value, str):
        return "invalid_status", "200 JSON whose 'status' is not a string"
    if value.lower() == "ok":
        return "ok", "200 status=ok"
    return "fail", "200 status=fail" if value.lower() == "fail" else "200 status is not 'ok'"


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


async def probe_registration_webhook(
    webhook: Webhook,
    *,
    realm: str,
    webhook_secret: str | None,
    timeout: float = 5.0,  # noqa: ASYNC109 - one deadline for the whole probe
    session: aiohttp.ClientSession | None = None,
) -> ProbeResult:
    """Call the webhook once with dummy digest data and classify the answer."""
    import aiohttp  # here: importing it costs every replay 0.15 s, and most never probe

    display = safe_url(webhook.url) or ""
    start = time.monotonic()

    def result(outcome: ProbeOutcome, status: int | None, detail: str) -> ProbeResult:
        return ProbeResult(outcome, display, status, detail, int((time.monotonic() - start) * 1000))

    try:
        scheme = urlsplit(webhook.url).scheme
    except ValueError:
        scheme = ""
    if scheme not in ("http", "https"):
        return result("unreachable", None, "webhook URL is not http(s)")

    payload = probe_payload(realm)
    method = "GET" if webhook.method.upper() == "GET" else "POST"
    headers = {"Content-Type": "application/json", "User-Agent": "sipwatch-probe"}
    body = json.dumps(payload, separators=(",", ":"))
    url = webhook.url
    data: str | None = body
    if method == "GET":
        sep = "&" if "?" in url else "?"
        url = f"{url}{sep}{urlencode(payload)}"
        data = None
    else:
        payload["headers"] = {}
        body = json.dumps(payload, separators=(",", ":"))
        data = body
    if webhook_secret:
        headers["Jambonz-Signature"] = jambonz_signature(webhook_secret, body)
    if webhook.username and webhook.password:
        # What jambonz sends too: the webhook row's own Basic auth, not a device secret.
        headers["Authorization"] = aiohttp.encode_basic_auth(webhook.username, webhook.password)
        url = _without_userinfo(url)

    own_session = session is None
    sess = session or aiohttp.ClientSession()
    try:
        async with asyncio.timeout(timeout):
            async with sess.request(
                method,
                url,
                data=data,
                headers=headers,
                allow_redirects=True,
                max_redirects=5,
            ) as resp:
                raw = await resp.content.read(_MAX_BODY)
                outcome, detail = classify_response(resp.status, raw)
                return result(outcome, resp.status, detail)
    except TimeoutError:
        return result("unreachable", None, f"no answer within {timeout:g}s")
    except aiohttp.ClientConnectorError as exc:
        reason = exc.os_error.strerror if exc.os_error and exc.os_error.strerror else "error"
        return result("unreachable", None, f"cannot connect ({reason})")
    except aiohttp.ClientError as exc:
        return result("unreachable", None, f"HTTP client error ({type(exc).__name__})")
    except OSError as exc:
        return result("unreachable", None, f"network error ({exc.strerror or type(exc).__name__})")
    except ValueError as exc:  # aiohttp refuses some URLs/header combinations up front
        return result("unreachable", None, f"invalid webhook request ({type(exc).__name__})")
    finally:
        if own_session:
            await sess.close()
