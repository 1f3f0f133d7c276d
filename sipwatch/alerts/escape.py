"""Make attacker-controlled text inert before it reaches a chat channel or a mailbox.

A SIP username, domain or User-Agent is chosen by whoever sends a REGISTER from the
internet.  Rendered naively into Slack, ``<!channel>`` pages the whole channel,
``<http://evil.example|click here to fix>`` becomes a phishing link that looks like part of
the alert, and ``*``/``_``/``~``/backticks reshape the message.  In HTML e-mail, ``<a>`` and
``<img>`` do the same.  So every untrusted string goes through two steps:

1. ``neutralise``, the same for every format: drop control, bidi and zero-width characters
   (which can hide or reorder text), collapse whitespace, mask credentials that may sit in a
   URL, swap ``<``/``>`` for look-alikes (this kills Slack's ``<!here>``, ``<@U123>`` and
   ``<url|label>`` syntax, HTML tags and markdown autolinks at once, even if a downstream
   relay re-renders plain text as markup), turn ``@word`` mentions into a full-width at sign
   (``@channel``, ``@here``, ``@everyone``, Mattermost/Discord user pings) and "defang"
   URLs (``http[:]//evil[.]example``) so no client makes them clickable; finally cap the
   length so one field cannot flood the message.
2. A per-format step: markdown prose swaps the formatting characters for look-alikes
   (``inert``), markdown values become code spans (nothing inside is formatted), HTML is
   entity-escaped.  apprise's "plain text" targets get ``inert`` too, because most of them
   (Discord, Mattermost, Telegram, webhooks relaying into chat) render markdown anyway.

Look-alikes rather than backslash escapes because the markdown apprise sends to Slack is
converted to Slack ``mrkdwn``, which has no reliable escape character: ``\\*`` survives the
conversion with its backslash, and what Slack then does with it is undocumented.  A
look-alike renders the same everywhere.  The cost is fidelity (a username ``*evil*`` shows
with U+2217 ASTERISK OPERATOR instead), which is acceptable in an alert.  Code blocks (a
suggested command) keep everything but backticks, mentions and clickable URLs, so the
command can still be copied unless it holds a URL.
"""

from __future__ import annotations

import html
import re
import unicodedata

ELLIPSIS = "…"
MASK = "****"

# Look-alikes (one character each, so lengths are preserved).
LEFT_ANGLE = "\u2039"  # SINGLE LEFT-POINTING ANGLE QUOTATION MARK
RIGHT_ANGLE = "\u203a"
_ANGLES = str.maketrans({"<": LEFT_ANGLE, ">": RIGHT_ANGLE})
_MARKDOWN = str.maketrans(
    {
        "*": "\u2217",  # ASTERISK OPERATOR
        "~": "\u223c",  # TILDE OPERATOR
        "`": "\u02cb",  # MODIFIER LETTER GRAVE ACCENT
        "\\": "\u29f5",  # REVERSE SOLIDUS OPERATOR
        "[": "\uff3b",  # FULLWIDTH LEFT SQUARE BRACKET
        "]": "\uff3d",
        "|": "\u00a6",  # BROKEN BAR: table cells, Slack's <url|label>
    }
)
_BACKTICK = str.maketrans({"`": "\u02cb"})
FULLWIDTH_AT = "\uff20"
FULLWIDTH_UNDERSCORE = "\uff3f"

# Categories removed outright: controls (Cc; tab/newline are handled first), format
# characters (Cf: zero-width space/joiner, bidi overrides U+202A-202E/2066-2069, BOM, soft
# hyphen), surrogates, private use and unassigned code points.
_DROP_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})
_MAX_COMBINING = 2  # "zalgo" text stacks hundreds of combining marks on one letter

# ``@word`` at a word start is a mention in Slack (with link_names), Mattermost, Discord,
# Teams and Rocket.Chat.  ``bob@example.com`` (``@`` after a letter or digit) is left alone;
# after anything else, underscore included, the ``@`` is replaced, so no later step (the
# markdown look-alikes turn ``_`` into a non-word character) can expose a mention.
_MENTION = re.compile(r"(?<![^\W_])@")
# Underscores between two word characters never start emphasis (CommonMark "intraword" rule,
# and Slack needs a boundary too), so ``john_doe`` keeps its underscore.
_EDGE_UNDERSCORE = re.compile(r"(?<![^\W_])_|_(?![^\W_])")

# Credentials that may sit in a URL copied into evidence (a registration webhook with basic
# auth, a token in a query string).  Alerts go to places with weaker access control than
# the jambonz database, so they are masked whatever their origin.
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*:)[^\s@/]+(?=@)")
_SECRET_PARAM = re.compile(
    r"([?&;](?:[\w.\-]*(?:pass|pwd|secret|token|key|auth|sig)[\w.\-]*)=)[^&;#\s]*",
    re.IGNORECASE,
)
_DIGEST_RESPONSE = re.compile(r"(\bresponse=\"?)[0-9a-f]{8,}", re.IGNORECASE)

# URL defanging (the security-industry convention): scheme "://" -> "[:]//" and the dots of
# the host -> "[.]".  Also "www.host" and "host.tld/path" without a scheme, which Slack and
# GFM auto-link.
# No ``\b`` anchors: "1http://x" or "_www.x" must not slip through because the character
# before the scheme happens to be a word character.
_SCHEME_URL = re.compile(r"://([^\s/?#\u2039\u203a]*)")
_WWW_HOST = re.compile(r"(?i)(www\.[^\s/?#\u2039\u203a]+)")
_HOST_PATH = re.compile(r"(?i)((?:[a-z0-9\-]+\.)+[a-z]{2,63})(?=/)")


def _clean_char_stream(text: str, multiline: bool) -> str:
    out: list[str] = []
    combining = 0
    for ch in text:
        if ch in "\r\n\u2028\u2029\x0b\x0c\x85":
            out.append("\n" if multiline and ch != "\r" else " ")
            combining = 0
            continue
        if ch == "\t":
            out.append(" ")
            combining = 0
            continue
        category = unicodedata.category(ch)
        if category in _DROP_CATEGORIES:
            continue
        if category.startswith("M"):
            combining += 1
            if combining > _MAX_COMBINING:
                continue
        else:
            combining = 0
        out.append(ch)
    return "".join(out)


def clean(text: object, limit: int, *, multiline: bool = False) -> str:
    """Printable text only, whitespace collapsed, at most ``limit`` characters.

    Newlines survive only with ``multiline`` (code blocks); elsewhere a line break in a
    username would let it fake a new line of the alert.
    """
    raw = text if isinstance(text, str) else str(text)
    # Bound the work before the per-character pass: a 10 MB "username" costs nothing more
    # than a long one.  Four times the limit leaves room for characters that get dropped.
    raw = raw[: max(limit, 1) * 4 + 64]
    cleaned = _clean_char_stream(raw, multiline)
    if multiline:
        lines = [" ".join(line.split()) for line in cleaned.split("\n")]
        collapsed = "\n".join(lines).strip("\n")
        collapsed = re.sub(r"\n{3,}", "\n\n", collapsed)
    else:
        collapsed = " ".join(cleaned.split())
    return cap(collapsed, limit)


def cap(text: str, limit: int) -> str:
    if limit <= 0:
        return ""
    if len(text) <= limit:
        return text
    return text[: limit - 1].rstrip() + ELLIPSIS


def redact_secrets(text: str) -> str:
    """Mask URL passwords, secret-looking query parameters and digest responses."""
    text = _URL_PASSWORD.sub(rf"\1{MASK}", text)
    text = _SECRET_PARAM.sub(rf"\1{MASK}", text)
    return _DIGEST_RESPONSE.sub(rf"\1{MASK}", text)


def defang_mentions(text: str) -> str:
    return _MENTION.sub(FULLWIDTH_AT, text)


def defang_urls(text: str) -> str:
    def scheme(m: re.Match[str]) -> str:
        return f"[:]//{m.group(1).replace('.', '[.]')}"

    text = _SCHEME_URL.sub(scheme, text)
    text = _WWW_HOST.sub(lambda m: m.group(1).replace(".", "[.]"), text)
    return _HOST_PATH.sub(lambda m: m.group(1).replace(".", "[.]"), text)


def neutralise(text: object, limit: int, *, multiline: bool = False) -> str:
    """The format-independent step (see the module docstring)."""
    out = clean(text, limit * 2 + 16, multiline=multiline)
    out = redact_secrets(out)
    out = out.translate(_ANGLES)
    out = defang_urls(out)
    out = defang_mentions(out)  # last: "www.@x" only becomes "www[.]@x" in defang_urls
    return cap(out, limit)


# --- per format -----------------------------------------------------------------------------


def plain(text: object, limit: int) -> str:
    """Neutralised, nothing else: for a consumer known to show text verbatim."""
    return neutralise(text, limit)


def inert(text: object, limit: int) -> str:
    """Text for a service that apprise calls "plain text" but that renders markdown anyway
    (Discord, Mattermost, Telegram and generic webhooks that relay into chat all do), and
    for titles: neutralised and with every formatting character swapped for a look-alike."""
    out = neutralise(text, limit).translate(_MARKDOWN)
    return _EDGE_UNDERSCORE.sub(FULLWIDTH_UNDERSCORE, out)


def markdown_prose(text: object, limit: int) -> str:
    """Untrusted text inside markdown prose: every formatting character becomes inert."""
    return inert(text, limit)


def markdown_code(text: object, limit: int) -> str:
    """Untrusted value as an inline code span: nothing inside a code span is formatted or
    linked, so only backticks (which would close it) need replacing."""
    out = neutralise(text, limit).translate(_BACKTICK)
    return f"`{out}`" if out else ""


def markdown_block(text: object, limit: int) -> str:
    """A fenced code block (a suggested command): newlines kept; backticks replaced so the
    fence cannot be closed early.  URLs are defanged here too: some clients link them even
    inside code, and the command may carry an attacker-chosen username."""
    out = neutralise(text, limit, multiline=True).translate(_BACKTICK)
    return f"```\n{out}\n```" if out else ""


def html_text(text: object, limit: int) -> str:
    return html.escape(neutralise(text, limit), quote=True)


def html_code(text: object, limit: int) -> str:
    out = html_text(text, limit)
    return f"<code>{out}</code>" if out else ""


def html_block(text: object, limit: int) -> str:
    out = html.escape(neutralise(text, limit, multiline=True), quote=True)
    return f"<pre>{out}</pre>" if out else ""


def title(text: object, limit: int) -> str:
    """A title is shown as plain text by some services (e-mail subject, Slack header) and
    as markdown by others (Discord embeds), so it is made inert for both."""
    return inert(text, limit)
