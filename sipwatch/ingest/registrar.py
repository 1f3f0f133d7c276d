"""The registrar's pino JSON lines (legacy sbc-registrar and sbc-sip-sidecar) as ServiceEvents.

At the default ``info`` level the registrar logs almost nothing per REGISTER (see
jambonz-register.md section 4a), so these events *refine* what the drachtio SIP dumps say:
they name the error behind a 500 (plaintext password, bad decrypt, webhook without status)
and tell the registrar flavour apart.

Some messages embed secrets: the plaintext-password error quotes the stored password
(``Unexpected token 'p', "pw1" is not valid JSON``) and ``Authorization data`` carries the
digest response.  Those are never copied into an event: the message is rewritten and only
whitelisted fields are kept.
"""

from __future__ import annotations

import json
import re
from datetime import datetime

from sipwatch.ingest.sip import MAX_FIELD, parse_uri_user_host
from sipwatch.model import ServiceEvent, ServiceOrigin

MAX_MESSAGE = 512

_REGISTRAR = ServiceOrigin.REGISTRAR
_NOT_JSON = " is not valid JSON"
_URL_USERINFO = re.compile(r"(\w+://)\S*@")  # greedy: up to the last "@" (passwords may hold "@")
_AUTH_DATA_FIELDS = ("username", "realm", "source_address", "source_port", "method", "expires")


def _redact(msg: str) -> str:
    """Remove values that may be secrets from a registrar message before it is kept.

    Node's JSON.parse error quotes the input (the stored *password*) in several forms
    (``"pw1"``, ``"abcdefghij"...``, ``..."xyz"...``); everything between the error name and
    "is not valid JSON" is dropped rather than pattern-matched.
    """
    msg = msg[: MAX_MESSAGE * 4]  # bound the work on attacker-sized lines
    cut = msg.find(_NOT_JSON)
    if cut >= 0:
        head = msg.find("SyntaxError")
        keep = msg[: head + len("SyntaxError")] if head >= 0 else ""
        msg = f"{keep}: <stored value redacted>{msg[cut:]}".lstrip(": ")
    if "@" in msg and "://" in msg:
        msg = _URL_USERINFO.sub(r"\1<redacted>@", msg)
    return msg[:MAX_MESSAGE]


def _ts(value: object) -> float:
    if isinstance(value, int | float):
        return float(value) / 1000.0
    if isinstance(value, str):  # very old sbc-registrar: ISO timestamp
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return 0.0
    return 0.0


def _after(msg: str, marker: str) -> str:
    i = msg.find(marker)
    return msg[i + len(marker) :].strip()[:MAX_FIELD] if i >= 0 else ""


def classify_registrar_message(msg: str, obj: dict[str, object]) -> tuple[str, dict[str, str]]:
    """Map a registrar message to (kind, attrs).  Unknown messages map to ("other", {})."""
    attrs: dict[str, str] = {}
    if msg.startswith("rejecting REGISTER from ") and "ipv4" in msg:
        uri = msg[len("rejecting REGISTER from ") :].split(" ", 1)[0]
        attrs["uri"] = uri[:MAX_FIELD]
        attrs["realm"] = parse_uri_user_host(uri)[1] or uri[:MAX_FIELD]
        return "ipv4_realm_rejected", attrs
    if msg.startswith("checkAccountLimits"):
        if "unknown sip realm" in msg:
            attrs["realm"] = msg.rsplit(" ", 1)[-1].lstrip(":")[:MAX_FIELD]
            return "unknown_realm", attrs
        if "account is deactivated" in msg:
            return "account_deactivated", attrs
        if "rejected due to limits" in msg or "device calling not allowed" in msg:
            sid = obj.get("account_sid")
            if isinstance(sid, str):
                attrs["account_sid"] = sid[:64]
            return "limits", attrs
        if "error checking account limits" in msg:
            realm = obj.get("realm")
            if isinstance(realm, str):
                attrs["realm"] = realm[:MAX_FIELD]
            return "db_error", attrs
        return "account_limits_debug", attrs
    if "rejecting with 403" in msg:
        # digest-utils / http-authenticator catch: these end in SIP 500 (drachtio-srf next(err))
        if "is not valid JSON" in msg or "ERR_INVALID_ARG_TYPE" in msg:
            return "plaintext_password", attrs
        if "bad decrypt" in msg or "wrong final block length" in msg:
            return "decrypt_error", attrs
        if "toLowerCase" in msg:
            return "webhook_no_status", attrs
        return "auth_error", attrs
    if "bad decrypt" in msg:
        return "decrypt_error", attrs
    if msg.startswith("Error from calling auth callback") or msg == "http webhook failed":
        return "webhook_error", attrs
    if msg.startswith("{") and msg.endswith("}"):
        # sidecar httpAuthenticate catch: msg = JSON.stringify(err)
        try:
            err = json.loads(msg)
        except ValueError:
            err = None
        if isinstance(err, dict):
            code = err.get("statusCode")
            if isinstance(code, int):
                attrs["status_code"] = str(code)
            kind = err.get("code")
            if isinstance(kind, str):
                attrs["code"] = kind[:64]
            return "webhook_error", attrs
    if msg.startswith("Error looking up client for account"):
        return "client_lookup_error", attrs
    if msg.startswith("Error trying to process REGISTER"):
        return "register_error", attrs
    if msg.startswith("responding to cached register for "):
        attrs["aor"] = _after(msg, "responding to cached register for ")
        return "cached_register", attrs
    if msg == "Authorization data":
        for key in _AUTH_DATA_FIELDS:  # never "response", "nonce", "cnonce"
            val = obj.get(key)
            if isinstance(val, str | int):
                attrs[key] = str(val)[:MAX_FIELD]
        return "auth_data", attrs
    if msg.startswith("adding aor to redis ") or msg.startswith("successfully added "):
        aor = _after(msg, "adding aor to redis ") or _after(msg, "successfully added ")
        attrs["aor"] = aor.split(" ", 1)[0]
        return "registered", attrs
    if msg.startswith("successfully unregistered "):
        attrs["aor"] = _after(msg, "successfully unregistered ")
        return "unregistered", attrs
    if msg.startswith("received REGISTER from "):
        attrs["from"] = _after(msg, "received REGISTER from ")
        return "received_register", attrs
    if msg.startswith("connected to drachtio listening on"):
        attrs["flavour_hint"] = "sidecar" if "local hostports" in msg else "unknown"
        return "startup", attrs
    if msg in ("sbc public ip addresses", "drachtio sip contacts"):
        attrs["flavour_hint"] = "sidecar"
        return "startup", attrs
    if msg.startswith("Error connecting to drachtio"):
        return "drachtio_connect_error", attrs
    if (
        "registering to" in msg
        or msg.startswith("Disabling Outbound Registration")
        or "Error registering to" in msg
    ):
        return "outbound_registration", attrs
    return "other", attrs


def parse_pino_line(line: str, source: str) -> ServiceEvent | None:
    """Parse one pino JSON line; ``None`` if it is not a pino object (the caller counts it)."""
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    msg = obj.get("msg")
    level = obj.get("level")
    if not isinstance(msg, str):
        msg = "" if msg is None else str(msg)
    if not isinstance(level, int):
        level = 30
    kind, attrs = classify_registrar_message(msg, obj)
    err = obj.get("err")
    if isinstance(err, dict):
        emsg = err.get("message")
        if isinstance(emsg, str):
            attrs["error"] = _redact(emsg)[:MAX_FIELD]
            if kind == "other" and ("bad decrypt" in emsg):
                kind = "decrypt_error"
    return ServiceEvent(
        ts=_ts(obj.get("time")),
        source=source,
        origin=_REGISTRAR,
        kind=kind,
        level=level,
        message=_redact(msg),
        attrs=attrs,
    )


# drachtio-server's own lines (not SIP dumps) that bear on REGISTER handling
_DRACHTIO_MARKERS: tuple[tuple[str, str], ...] = (
    ("No connected clients found to handle incoming register request", "no_connected_clients"),
    ("No providers available for REGISTER", "no_providers"),
    ("rejecting REGISTER with no realm", "register_no_realm"),
    ("rejecting REGISTER with invalid Contact header", "register_invalid_contact"),
    ("rejecting REGISTER with Contact: *", "register_bad_wildcard"),
    ("detected potential spammer from", "spammer"),
)


def classify_drachtio_line(text: str) -> tuple[str, dict[str, str]] | None:
    """Recognise the drachtio lines listed in drachtio-log-format.md section 3."""
    if "REGISTER" not in text and "register" not in text and "spammer" not in text:
        if text.startswith("Starting drachtio version"):
            return "drachtio_start", {"version": text.rsplit(" ", 1)[-1][:64]}
        return None
    for marker, kind in _DRACHTIO_MARKERS:
        if marker in text:
            attrs: dict[str, str] = {}
            if kind == "spammer":
                peer = _after(text, "detected potential spammer from ").split(" ", 1)[0]
                attrs["source_ip"] = peer.rsplit(":", 1)[0].strip("[]")[:64]
                attrs["header_value"] = _after(text, "due to header value:")
            elif kind == "register_invalid_contact":
                attrs["call_id"] = _after(text, "call-id:")
            return kind, attrs
    return None
