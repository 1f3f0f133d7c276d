"""What the pipeline observed about one failing registration: the input of the diagnosis.

The lead's pipeline builds a :class:`Symptom` from log data (a ``RegisterAttempt`` plus the
registrar's ``ServiceEvent`` kinds).  ``sipwatch diagnose`` builds one from command-line flags.
Every text field is attacker-controlled: it reaches SQL only as a bound parameter and output
only after escaping.

Unknown is not the same as absent: ``None`` means "the log did not tell" and makes a rule
condition on that field *unknown*, while ``""`` for ``x_reason`` means "the response carried
no X-Reason header".
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True)
class Symptom:
    """One failing (or questioned) registration, as seen in the logs."""

    user: str  # To user (AOR user)
    domain: str  # To host (realm)
    source_ip: str | None = None
    status: int | None = None  # final SIP status, None if unknown; 0 = timeout
    x_reason: str | None = None  # None = unknown, "" = no X-Reason header
    challenged: bool | None = None  # a 401/407 preceded the final answer
    request_uri_host: str | None = None
    auth_username: str | None = None  # Authorization username (may differ from To user)
    user_agent: str | None = None
    # ServiceEvent kinds seen for this user/realm/time, e.g. "plaintext_password",
    # "decrypt_error", "webhook_error", "webhook_no_status", "no_connected_clients",
    # "ipv4_realm_rejected", "unknown_realm", "account_deactivated"
    registrar_events: frozenset[str] = frozenset()
    distinct_users_from_ip: int = 0  # usernames this source IP failed with recently
    failures_from_ip: int = 0
    registered_before: bool | None = None  # the log showed a 200 for this AOR earlier

    @property
    def aor(self) -> str:
        """The Redis key suffix jambonz uses: To user @ To host."""
        return f"{self.user}@{self.domain}"

    @property
    def lookup_username(self) -> str:
        """The username jambonz matches against ``clients.username``.

        digest-utils uses the Authorization username, which can differ from the To user;
        when no Authorization was seen, the To user is the best guess.
        """
        return self.auth_username if self.auth_username else self.user


_IPV4_CHARS = "0123456789."


def _not_ipv4(text: str) -> bool:
    """True when ``text`` has a character no IPv4 literal has (anything but ASCII digits and
    dots): ``ipaddress`` would refuse it as IPv4, and without a ``:`` as IPv6 too.

    The rules ask this of every failure group's domain, nearly always a name; ``ipaddress``
    answers a name by raising twice (IPv4, then IPv6), which cost a tenth of a diagnosis."""
    return bool(text.strip(_IPV4_CHARS))


def host_is_ip(host: str | None) -> bool:
    """True for an IPv4 or IPv6 literal (``[::1]`` included), ignoring a ``:port`` suffix."""
    if not host:
        return False
    h = host.strip()
    if h.startswith("["):
        end = h.find("]")
        h = h[1:end] if end > 0 else h[1:]
    elif h.count(":") == 1:
        h = h.split(":", 1)[0]
    if ":" not in h and _not_ipv4(h):
        return False
    try:
        ipaddress.ip_address(h)
    except ValueError:
        return False
    return True


def host_is_ipv4(host: str | None) -> bool:
    """True for a dotted IPv4 literal: what the sidecar's ``rejectIpv4`` refuses."""
    if not host:
        return False
    h = host.strip().split(":", 1)[0]
    if _not_ipv4(h):
        return False
    try:
        return isinstance(ipaddress.ip_address(h), ipaddress.IPv4Address)
    except ValueError:
        return False
