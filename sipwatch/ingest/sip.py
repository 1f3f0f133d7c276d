"""SIP message parsing for drachtio ``recv``/``send`` dumps.

This is the hot path of sipwatch.  A message is parsed with a handful of C-level string
operations and one regex scan over the header block; only the headers sipwatch needs are
looked at, and each value is cut to ``MAX_FIELD`` characters so a 10 kB username cannot
blow up memory downstream.  Nothing here raises on malformed input: a message that cannot be
understood yields ``None`` and the caller counts a parse error.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from operator import itemgetter

from sipwatch.model import Direction, SipMessage

MAX_FIELD = 256  # longest user/host/UA we keep; longer values are cut, never rejected


# One regex ``match`` walks the whole header block and captures the headers sipwatch uses
# (long and compact forms).  Written for CPython's regex engine: no re.IGNORECASE (several
# times slower) but [Vv][Ii][Aa] spellings, and alternatives nested by first letter so a line
# is tested against one letter class per branch instead of every header name.  Inside a
# repeated group the *last* occurrence of a header wins, so the top Via is captured
# separately when it is the first header (as RFC 3261 proxies and nearly every UA write it);
# otherwise the branch of the last Via is used, equally stable between a request and its
# responses.
def _value(name: str) -> str:
    return rf"[ \t]*:[ \t]*(?P<{name}>[^\r\n]*)\r?"


_HEADER_ALTERNATIVES = (
    rf"[Vv](?:[Ii][Aa])?{_value('via')}"
    rf"|[Cc](?:[Aa][Ll][Ll]-[Ii][Dd]{_value('call_id')}|[Ss][Ee][Qq]{_value('cseq')}"
    rf"|[Oo][Nn][Tt][Aa][Cc][Tt]{_value('contact')})"
    rf"|[Ff](?:[Rr][Oo][Mm])?{_value('from_')}"
    rf"|[Tt](?:[Oo])?{_value('to')}"
    rf"|[Ii]{_value('call_id_c')}"
    rf"|[Mm]{_value('contact_c')}"
    rf"|[Ee][Xx][Pp][Ii][Rr][Ee][Ss]{_value('expires')}"
    rf"|[Uu][Ss][Ee][Rr]-[Aa][Gg][Ee][Nn][Tt]{_value('user_agent')}"
    rf"|[Aa][Uu][Tt][Hh][Oo][Rr][Ii][Zz][Aa][Tt][Ii][Oo][Nn]{_value('authz')}"
    rf"|[Pp][Rr][Oo][Xx][Yy]-[Aa][Uu][Tt][Hh](?:[Oo][Rr][Ii][Zz][Aa][Tt][Ii][Oo][Nn]{_value('proxy_authz')}"
    rf"|[Ee][Nn][Tt][Ii][Cc][Aa][Tt][Ee]{_value('proxy_authn')})"
    rf"|[Xx]-[Rr][Ee][Aa][Ss][Oo][Nn]{_value('x_reason')}"
    rf"|[Ww][Ww][Ww]-[Aa][Uu][Tt][Hh][Ee][Nn][Tt][Ii][Cc][Aa][Tt][Ee]{_value('www_authn')}"
)
# The order build_sip_message receives the captured values in.
HEADER_FIELDS = (
    "top_via",
    "via",
    "call_id",
    "call_id_c",
    "cseq",
    "from_",
    "to",
    "contact",
    "contact_c",
    "expires",
    "user_agent",
    "authz",
    "proxy_authz",
    "x_reason",
    "www_authn",
    "proxy_authn",
)


def headers_pattern(line_guard: str = "") -> str:
    """The header-block regex; ``line_guard`` is a lookahead every header line must pass
    (the log scanner uses it to stop at the next record and at the empty line)."""
    return (
        "(?:\\n" + line_guard + r"[Vv](?:[Ii][Aa])?[ \t]*:[ \t]*(?P<top_via>[^\r\n]*)\r?)?"
        "(?:\\n" + line_guard + "(?:" + _HEADER_ALTERNATIVES + "|[^\\n]*))*"
    )


def header_getter(pattern: re.Pattern[str]) -> Callable[[tuple[str, ...]], tuple[str, ...]]:
    """A fast accessor: from ``match.groups("")`` of a pattern that embeds
    ``headers_pattern``, the header values in ``HEADER_FIELDS`` order ("" if absent)."""
    pick: Callable[[tuple[str, ...]], tuple[str, ...]] = itemgetter(
        *(pattern.groupindex[name] - 1 for name in HEADER_FIELDS)
    )
    return pick


HEADERS_RE = re.compile(headers_pattern())
_header_values = header_getter(HEADERS_RE)

# user@host of a SIP URI inside a header value: optional display name and "<", the scheme,
# an optional "user[:password]@", then the host (bracketed IPv6 or up to ":;>?" or space).
_URI_RE = re.compile(
    r"(?:sips?|tel):(?:([^@>\s:]*)(?::[^@>\s]*)?@)?(\[[^\]]*\]|[^:;>?\s]*)", re.IGNORECASE
)
_BRANCH_RE = re.compile(r"branch[ \t]*=[ \t]*([^;,\s]*)", re.IGNORECASE)
_BRANCH_VALUE_RE = re.compile(r"[^;,\s]*")

_RECV = Direction.RECV
_SEND = Direction.SEND


def parse_uri_user_host(value: str) -> tuple[str, str]:
    """Return (user, host) of the URI in a From/To/Contact value; ("", "") if there is none.

    Handles ``"Name" <sip:user@host:port;params>``, bare ``sip:user@host;tag=x``, ``sips:``,
    ``tel:``, ``user:password@`` (the password is dropped) and bracketed IPv6 hosts.  The user
    part keeps its %-escapes: it is compared, counted and escaped later, never decoded.
    """
    m = _URI_RE.search(value)
    if m is None:
        return "", ""
    user, host = m.groups()
    if host[:1] == "[":
        host = host[1:-1]
    return (user or "")[:MAX_FIELD], host[:MAX_FIELD].lower()


def _param(value: str, name: str) -> str:
    """Value of ``name=`` (quoted or not) inside a header value such as a Digest challenge."""
    low = value.lower()
    pos = 0
    while True:
        i = low.find(name, pos)
        if i < 0:
            return ""
        # must be at a parameter boundary, e.g. not "nonce" inside "cnonce"
        if i == 0 or low[i - 1] in " ,;\t":
            j = i + len(name)
            while j < len(value) and value[j] in " \t":
                j += 1
            if j < len(value) and value[j] == "=":
                j += 1
                while j < len(value) and value[j] in " \t":
                    j += 1
                if j < len(value) and value[j] == '"':
                    end = value.find('"', j + 1)
                    return value[j + 1 : end if end >= 0 else len(value)][:MAX_FIELD]
                end = j
                while end < len(value) and value[end] not in ",; \t\r":
                    end += 1
                return value[j:end][:MAX_FIELD]
        pos = i + len(name)


def _int(text: str) -> int | None:
    """A decimal count of at most 11 ASCII digits (``str.isdigit`` alone lets "²" through,
    which ``int`` then refuses)."""
    text = text.strip()
    if text.isascii() and text.isdigit() and len(text) < 12:
        return int(text)
    return None


_FOLDED_RE = re.compile(r"\r?\n[ \t]+")  # a header line continued on the next (RFC 3261 7.3.1)
_BLANK_LINE_RE = re.compile(r"\n\r?\n")  # the empty line that ends the header block
_NO_HEADERS = ("",) * len(HEADER_FIELDS)


def parse_sip_message(
    ts: float,
    source: str,
    what: str,
    size: int,
    transport: str,
    peer_ip: str,
    peer_port: int,
    body: str,
) -> SipMessage | None:
    """Parse one SIP message given as text: a raw wire message (the HEP source) or the lines
    of a drachtio dump (everything after its header line).

    ``body`` begins with the start line (CRLFs before it, stream keep-alives, are skipped).
    Header lines end in CRLF or LF; the first empty line ends the header block, and what
    follows (the message body, or the next message of a TCP read) is never read, so a body
    cannot pose as headers.  Header lines folded onto continuation lines (RFC 3261 7.3.1: a
    line starting with a space or tab) are unfolded first; drachtio dumps have lost their
    folding, wire messages keep it.  Returns ``None`` when the start line is neither a request
    nor a status line.  The log scanner in ``sipwatch.ingest.framing`` matches the headers
    itself, over whole chunks, and calls ``build_sip_message`` directly.
    """
    body = body.lstrip("\r\n")
    nl = body.find("\n")
    if nl < 0:
        return build_sip_message(
            ts, source, what, size, transport, peer_ip, peer_port, body, _NO_HEADERS
        )
    blank = _BLANK_LINE_RE.search(body, nl)
    head = body[nl : blank.start() if blank is not None else len(body)]
    if "\n " in head or "\n\t" in head:
        head = _FOLDED_RE.sub(" ", head)
    m = HEADERS_RE.match(head)
    assert m is not None  # the pattern matches the empty string
    return build_sip_message(
        ts,
        source,
        what,
        size,
        transport,
        peer_ip,
        peer_port,
        body[:nl],
        _header_values(m.groups("")),
    )


def build_sip_message(
    ts: float,
    source: str,
    what: str,
    size: int,
    transport: str,
    peer_ip: str,
    peer_port: int,
    start: str,
    headers: tuple[str, ...],
) -> SipMessage | None:
    """Make a SipMessage from its start line and the header values (``HEADER_FIELDS`` order)."""
    start = start.rstrip()  # the CR of a CRLF line, drachtio's trailing space
    if start.startswith("SIP/2.0 "):
        is_request = False
        code = start[8:11]
        # three ASCII digits, then a space or the end: "SIP/2.0 2000 OK" is no status line;
        # the first digit is the class, 1 to 6 (RFC 3261 21)
        if not (code.isascii() and code.isdigit()) or start[11:12] not in ("", " "):
            return None
        status = int(code)
        if not 100 <= status <= 699:
            return None
        reason = start[12:]
        method = ""
        request_uri = ""
    else:
        sp = start.find(" ")
        if sp <= 0 or not start.endswith("SIP/2.0"):
            return None
        is_request = True
        status = 0
        reason = ""
        method = start[:sp].upper()[:MAX_FIELD]
        request_uri = start[sp + 1 : -8].strip()[:MAX_FIELD]
    (
        top_via,
        via,
        call_id,
        call_id_c,
        cseq,
        from_v,
        to_v,
        contact,
        contact_c,
        expires,
        user_agent,
        authz,
        proxy_authz,
        x_reason,
        www_auth,
        proxy_authn,
    ) = headers
    via = top_via or via
    call_id = (call_id or call_id_c).strip()
    contact = contact or contact_c
    authz = authz or proxy_authz
    www_auth = www_auth or proxy_authn

    cseq_num = 0
    if cseq:
        parts = cseq.split()
        if parts:
            cseq_num = _int(parts[0]) or 0
            if len(parts) > 1 and not is_request:  # a response names its method in CSeq
                method = parts[1].upper()[:MAX_FIELD]
    branch = ""
    if via:
        b = via.find("branch=")
        if b < 0:
            bm = _BRANCH_RE.search(via)  # "Branch=", "BRANCH =" ...
            branch = bm.group(1) if bm is not None else ""
        else:
            bm = _BRANCH_VALUE_RE.match(via, b + 7)
            assert bm is not None  # the value pattern matches the empty string too
            branch = bm.group()
    to_user, to_host = parse_uri_user_host(to_v) if to_v else ("", "")
    # From, Contact expiry and credentials matter for requests only
    from_user = from_host = auth_username = auth_realm = ""
    has_auth = False
    exp: int | None = None
    if is_request:
        if from_v:
            from_user, from_host = parse_uri_user_host(from_v)
        if expires:
            exp = _int(expires)
        if exp is None and contact:
            ce = _param(contact, "expires")
            if ce:
                exp = _int(ce)
        if authz:
            has_auth = True
            auth_username = _param(authz, "username")
            auth_realm = _param(authz, "realm")
    elif expires:
        exp = _int(expires)

    return SipMessage(
        ts,
        source,
        _RECV if what == "recv" else _SEND,
        transport,
        peer_ip,
        peer_port,
        size,
        is_request,
        method,
        status,
        reason[:MAX_FIELD],
        request_uri,
        call_id[:MAX_FIELD],
        cseq_num,
        branch[:MAX_FIELD],
        from_user,
        from_host,
        to_user,
        to_host,
        contact[:MAX_FIELD],
        exp,
        user_agent.strip()[:MAX_FIELD],
        auth_username,
        auth_realm,
        has_auth,
        x_reason.strip()[:MAX_FIELD],
        www_auth[:MAX_FIELD],
    )


def request_uri_host(uri: str) -> str:
    """Host part of a Request-URI such as ``sip:acme.example.com;transport=udp``."""
    return parse_uri_user_host(uri)[1]
