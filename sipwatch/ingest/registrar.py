"""The registrar's pino JSON lines (legacy sbc-registrar and sbc-sip-sidecar) as ServiceEvents.

At the default ``info`` level the registrar logs almost nothing per REGISTER (sbc-sip-sidecar
v0.9.6 logs the outcome only at ``debug``), so these events *refine* what the drachtio SIP
dumps say: they name the error behind a 500 (plaintext password, bad decrypt, webhook
without status) and tell the registrar flavour apart.

Some messages embed secrets: the plaintext-password error quotes the stored password
(``Unexpected token 'p', "pw1" is not valid JSON``) and ``Authorization data`` carries the
digest response.  Those are never copied into an event: the message is rewritten and only
whitelisted fields are kept.

Every line here is attacker-reachable (a SIP body line that starts with ``{"`` in a log whose
CRLFs were lost is framed as a pino line), so parsing is total: a line longer than
``MAX_PINO_LINE``, nested deeper than ``MAX_JSON_DEPTH``, or carrying a ``time``/``level`` that
no pino writes is rejected *before* (or instead of) anything that could raise; no exception
leaves ``parse_pino_line``.  The caller counts a rejected line as a parse error (``PinoError``)
and goes on with the stream.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from enum import StrEnum

from sipwatch.ingest.sip import MAX_FIELD, parse_uri_user_host
from sipwatch.model import ServiceEvent, ServiceOrigin

MAX_MESSAGE = 512
# A pino line is one JSON object; the registrar's longest (an error with its stack) is a few
# kB.  Longer lines are not parsed: json.loads of a multi-MB line costs memory for nothing.
MAX_PINO_LINE = 64 * 1024
# pino objects nest a handful of levels ({"err":{"response":{...}}}).  CPython's json decoder
# recurses per level and raises RecursionError near 1000, so depth is checked before decoding.
MAX_JSON_DEPTH = 32
# Epoch milliseconds pino can write: from 1970 up to year 9999.  Anything else (a 400-digit
# number, 1e400 = inf, NaN, a negative time) is not a pino timestamp.
MAX_PINO_TIME_MS = 253_402_300_800_000
MAX_PINO_LEVEL = 100  # pino's levels are 10..60; custom levels are small integers too


class PinoError(StrEnum):
    """Why a pino-looking line was not turned into an event (the framer's parse-error kinds)."""

    NOT_JSON = "pino_json"  # not JSON, or JSON that is not an object
    BOUNDS = "pino_bounds"  # too long, too deep, or a time/level no pino writes


_REGISTRAR = ServiceOrigin.REGISTRAR
_NOT_JSON = " is not valid JSON"
_URL_USERINFO = re.compile(r"(\w+://)\S*@")  # greedy: up to the last "@" (passwords may hold "@")
_AUTH_DATA_FIELDS = ("username", "realm", "source_address", "source_port", "method", "expires")


def _redact(msg: str) -> str:
    """Remove values that may be secrets from a registrar message before it is kept.

    Node's JSON.parse error quotes the input (the stored *password*) in several forms
    (``"pw1"``, ``"abcdefghij"...``, ``..."xyz"...``); everything between the first
    "SyntaxError" and the last "is not valid JSON" is dropped rather than pattern-matched (the
    stored value may itself hold either phrase).
    """
    msg = msg[: MAX_MESSAGE * 4]  # bound the work on attacker-sized lines
    cut = msg.rfind(_NOT_JSON)
    if cut >= 0:
        head = msg.find("SyntaxError", 0, cut)
        keep = msg[: head + len("SyntaxError")] if head >= 0 else ""
        msg = f"{keep}: <stored value redacted>{msg[cut:]}".lstrip(": ")
    if "@" in msg and "://" in msg:
        msg = _URL_USERINFO.sub(r"\1<redacted>@", msg)
    return msg[:MAX_MESSAGE]


# a JSON string (with its escapes) or one bracket: what _nesting_depth_ok walks
_JSON_STRING_OR_BRACKET = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def _nesting_depth_ok(text: str) -> bool:
    """True when ``text`` nests objects/arrays at most ``MAX_JSON_DEPTH`` deep.

    Fast path: fewer opening brackets than the bound cannot nest deeper.  Otherwise walk the
    brackets outside strings (an unterminated string only over-counts, and such text is not
    valid JSON anyway).
    """
    if text.count("{") + text.count("[") <= MAX_JSON_DEPTH:
        return True
    depth = 0
    for m in _JSON_STRING_OR_BRACKET.finditer(text):
        c = m.group()
        if c == "{" or c == "[":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return False
        elif c == "}" or c == "]":
            depth -= 1
    return True


def load_json_object(text: str) -> dict[str, object] | PinoError:
    """``json.loads`` for attacker-controlled text: a dict, or why not (never raises)."""
    if len(text) > MAX_PINO_LINE or not _nesting_depth_ok(text):
        return PinoError.BOUNDS
    try:
        obj = json.loads(text)
    except RecursionError:  # only reachable when the caller's stack is already deep
        return PinoError.BOUNDS
    except ValueError:  # includes the 4300-digit int limit
        return PinoError.NOT_JSON
    return obj if isinstance(obj, dict) else PinoError.NOT_JSON


def _ts(value: object) -> float | None:
    """Epoch seconds of pino's ``time``; 0.0 when absent or an unreadable string, ``None``
    for a number no pino writes (the line is then rejected)."""
    if value is None:
        return 0.0
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value / 1000.0 if 0 <= value <= MAX_PINO_TIME_MS else None
    if isinstance(value, float):
        return value / 1000.0 if 0.0 <= value <= MAX_PINO_TIME_MS else None  # NaN fails too
    if isinstance(value, str):  # very old sbc-registrar: ISO timestamp
        try:
            ts = datetime.fromisoformat(value[:64]).timestamp()  # 3.11 reads "Z" too
        except (ValueError, OverflowError):  # naive times go through mktime: either may come
            return 0.0
        return ts if ts >= 0.0 else None  # year 9999 at most: the upper bound holds
    return 0.0


def _level(value: object) -> int | None:
    """pino's ``level``: 30 when absent or not a number (string levels), ``None`` for a
    number out of range (the line is then rejected)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 30
    if type(value) is int and 0 <= value <= MAX_PINO_LEVEL:
        return value
    return None


def _after(msg: str, marker: str) -> str:
    i = msg.find(marker)
    return msg[i + len(marker) :].strip()[:MAX_FIELD] if i >= 0 else ""


def classify_registrar_message(msg: str, obj: dict[str, object]) -> tuple[str, dict[str, str]]:
    """Map a registrar message to (kind, attrs).  Unknown messages map to ("other", {})."""
    attrs: dict[str, str] = {}
    if msg.startswith("rejecting REGISTER from ") and "ipv4" in msg:
        uri = msg[len("rejecting REGISTER from ") :].partition(" ")[0]
        attrs["uri"] = uri[:MAX_FIELD]
        attrs["realm"] = parse_uri_user_host(uri)[1] or uri[:MAX_FIELD]
        return "ipv4_realm_rejected", attrs
    if msg.startswith("checkAccountLimits"):
        if "unknown sip realm" in msg:
            attrs["realm"] = msg.rpartition(" ")[2].lstrip(":")[:MAX_FIELD]
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
        err = load_json_object(msg)
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
        attrs["aor"] = aor.partition(" ")[0]
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
    if "registering to" in msg or msg.startswith("Disabling Outbound Registration"):
        return "outbound_registration", attrs
    return "other", attrs


def parse_pino_line(line: str, source: str) -> ServiceEvent | PinoError:
    """Parse one pino JSON line; a ``PinoError`` (the caller counts it) if it is not one.

    Total: whatever ``line`` holds, this returns; see the module docstring for the bounds.
    """
    obj = load_json_object(line)
    if not isinstance(obj, dict):
        return obj
    ts = _ts(obj.get("time"))
    level = _level(obj.get("level"))
    if ts is None or level is None:
        return PinoError.BOUNDS
    msg = obj.get("msg")
    if not isinstance(msg, str):
        msg = "" if msg is None else str(msg)
    kind, attrs = classify_registrar_message(msg, obj)
    err = obj.get("err")
    if isinstance(err, dict):
        emsg = err.get("message")
        if isinstance(emsg, str):
            attrs["error"] = _redact(emsg)[:MAX_FIELD]
            if kind == "other" and ("bad decrypt" in emsg):
                kind = "decrypt_error"
    return ServiceEvent(
        ts=ts,
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
    """Recognise drachtio's own lines about REGISTER handling and its life cycle (start-up,
    spammer refusals, missing realm; drachtio-server's ``src/controller.cpp``)."""
    if "REGISTER" not in text and "register" not in text and "spammer" not in text:
        if text.startswith("Starting drachtio version"):
            return "drachtio_start", {"version": text.rpartition(" ")[2][:64]}
        return None
    for marker, kind in _DRACHTIO_MARKERS:
        if marker in text:
            attrs: dict[str, str] = {}
            if kind == "spammer":
                peer = _after(text, "detected potential spammer from ").partition(" ")[0]
                attrs["source_ip"] = peer.rsplit(":", 1)[0].strip("[]")[:64]
                attrs["header_value"] = _after(text, "due to header value:")
            elif kind == "register_invalid_contact":
                attrs["call_id"] = _after(text, "call-id:")
            return kind, attrs
    return None
