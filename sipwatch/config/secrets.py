"""Secrets in the configuration: a masked string type and the URL maskers used wherever a
setting is printed or logged."""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "****"

# ---------------------------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------------------------


class Secret:
    """A string that must not be printed.  ``reveal()`` is the only way to read it.

    ``repr()`` and ``str()`` are masked so that a config object in a log line, a traceback
    or an f-string cannot leak a password.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{MASK}')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self._value)


_SECRET_QUERY_KEYS = re.compile(r"pass|pwd|secret|token|key|auth|sig", re.IGNORECASE)


def mask_url(url: str) -> str:
    """Mask the password of a ``scheme://user:password@host/...`` URL and secret-looking
    query parameters; the rest stays readable so an operator can check host and database."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostinfo = netloc.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{hostinfo}" if colon else f"{user}@{hostinfo}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, MASK if _SECRET_QUERY_KEYS.search(k) else v) for k, v in pairs], safe="*/:,"
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


@contextmanager
def quiet_apprise() -> Iterator[None]:
    """apprise logs the full URL (tokens included) when it cannot parse one, so its logger is
    silenced while sipwatch validates or masks URLs."""
    logger = logging.getLogger("apprise")
    previous = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = previous


# apprise URL parameters that carry arbitrary values into the request: ``?+Header=``,
# ``?-query=`` and ``?:payload=``.  Any of them can hold a token (``+Authorization=Bearer ...``).
_APPRISE_PASSTHROUGH = ("+", "-", ":")
# Generic webhook schemes: their path is the customer's endpoint, often with a token in it.
_WEBHOOK_SCHEMES = frozenset({"json", "jsons", "form", "forms", "xml", "xmls"})


def mask_apprise_url(url: str) -> str:
    """apprise's own privacy form (``slack://T...2/A...D/...``), plus what it leaves readable:
    header, query and payload pass-through values and generic webhook paths are masked too.
    A full mask if apprise cannot parse the URL."""
    import apprise

    with quiet_apprise():
        plugin = apprise.Apprise.instantiate(url)
    if plugin is None:
        return MASK
    private = str(plugin.url(privacy=True))  # type: ignore[no-untyped-call]
    try:
        parts = urlsplit(private)
    except ValueError:
        return MASK
    path = parts.path
    if parts.scheme.lower() in _WEBHOOK_SCHEMES and path.strip("/"):
        path = "/" + MASK
    query = urlencode(
        [
            (k, MASK if k[:1] in _APPRISE_PASSTHROUGH or _SECRET_QUERY_KEYS.search(k) else v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
        ],
        safe="*/:,",
    )
    return urlunsplit((parts.scheme, parts.netloc, path, query, ""))


def mask_value(value: Any, kind: str) -> str:
    text = value.reveal() if isinstance(value, Secret) else str(value)
    if kind == "url":
        return mask_url(text)
    if kind == "apprise":
        return mask_apprise_url(text)
    return MASK
