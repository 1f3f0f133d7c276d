"""The named checks rules can use: each one registers itself here, once, with ``@check``.

A check is a tri-state fact about one symptom: True, False or None (could not be decided -
no database, probe disabled, no secret...).  It is a function of what the fact collector
(``facts.py``) gathered for the symptom (:class:`Gathered`); the decorator records its name,
the source it needs (``log``, ``db``, ``redis``, ``webhook``), the evidence keys it brings
into a cause, and its docstring as its meaning.  That one registry (:data:`CHECKS`) is what

* the rule loader validates ``checks:`` against (an unregistered name is a load error),
* the engine evaluates (every registered check, so none can be left silently undecided),
* the docs generator lists (``docs/rules.md``, with what each needs).

Adding a check: write a decorated function below; if it needs data nobody gathers yet, add
a field to :class:`Gathered` and fill it in ``facts.py``.  Checks may call other checks as
plain functions (a typo there is a NameError, not an undecided check).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

from sipwatch.diagnosis.crypto import StoredForm, classify_stored_password
from sipwatch.diagnosis.symptom import Symptom, host_is_ip, host_is_ipv4

if TYPE_CHECKING:
    from sipwatch.diagnosis.jambonz import AuthHookLookup, Client, RealmLookup, Webhook
    from sipwatch.diagnosis.secret_proof import SecretStatus
    from sipwatch.diagnosis.webhook_probe import ProbeResult

CheckSource = Literal["log", "db", "redis", "webhook"]
CHECK_SOURCES: tuple[str, ...] = ("log", "db", "redis", "webhook")
Verdict = bool | None

_NUMERIC_USER = re.compile(r"^\+?[0-9]{1,32}$")


@dataclass
class Gathered:
    """What the fact collector found out about one symptom; the input of every check.

    ``None`` always means "not looked at" (no database, not the registrar's path, probe
    off), never "absent": absence has its own value (an empty ``clients`` list, a realm
    lookup without an account).
    """

    symptom: Symptom
    flavour: str = "sidecar"
    scanner_min_users: int = 5
    strong_scanner_reasons: list[str] = field(default_factory=list)
    realm: RealmLookup | None = None  # the sidecar's realm -> account lookup
    auth_hook: AuthHookLookup | None = None  # legacy only: lookupAuthHook
    hook: Webhook | None = None  # the registration webhook the registrar would call
    clients: list[Client] | None = None  # clients rows of (account, username), server order
    password_decrypts: bool | None = None  # the first client's password, judged with `secret`
    secret: SecretStatus | None = None  # the proof of sipwatch's secret
    probe: ProbeResult | None = None
    registration_cached: bool | None = None


@dataclass(frozen=True)
class Check:
    """One registered check (see the module docstring)."""

    name: str
    source: CheckSource
    evidence: tuple[str, ...]
    meaning: str
    decide: Callable[[Gathered], Verdict] = field(repr=False)
    needs_secret: bool = False

    @property
    def needs(self) -> tuple[str, ...]:
        """What must be available for the check to be decided, in the words of the docs."""
        base = {
            "log": ("log",),
            "db": ("database",),
            "redis": ("redis",),
            "webhook": ("database", "webhook probe"),
        }[self.source]
        return (*base, "encryption secret") if self.needs_secret else base


_REGISTRY: dict[str, Check] = {}
#: Every registered check by name, in registration order.
CHECKS: Mapping[str, Check] = MappingProxyType(_REGISTRY)


def check(
    name: str, *, source: CheckSource, evidence: tuple[str, ...], needs_secret: bool = False
) -> Callable[[Callable[[Gathered], Verdict]], Callable[[Gathered], Verdict]]:
    """Register the decorated function as the check ``name``; its docstring is its meaning."""
    if source not in CHECK_SOURCES:
        raise ValueError(f"check {name!r}: source must be one of {', '.join(CHECK_SOURCES)}")

    def register(fn: Callable[[Gathered], Verdict]) -> Callable[[Gathered], Verdict]:
        if name in _REGISTRY:
            raise ValueError(f"check {name!r} is registered twice")
        meaning = (inspect.getdoc(fn) or "").split("\n\n", 1)[0].replace("\n", " ").strip()
        if not meaning:
            raise ValueError(f"check {name!r} needs a docstring: it is the check's meaning")
        _REGISTRY[name] = Check(name, source, tuple(evidence), meaning, fn, needs_secret)
        return fn

    return register


def decide_all(g: Gathered) -> dict[str, Verdict]:
    """Every registered check's value for ``g``."""
    return {name: c.decide(g) for name, c in _REGISTRY.items()}


# --------------------------------------------------------------------------------- log


@check("ip_used_as_domain", source="log", evidence=("domain", "request_uri_host"))
def ip_used_as_domain(g: Gathered) -> Verdict:
    """the Request-URI or To host is an IP address, not a SIP realm"""
    return host_is_ipv4(g.symptom.request_uri_host) or host_is_ip(g.symptom.domain)


def scanner_reasons(g: Gathered) -> list[str]:
    """Why the request looks like an attack (empty: it does not)."""
    s = g.symptom
    reasons = list(g.strong_scanner_reasons)
    # A numeric user against an IP address is also what a real phone with its SBC's IP as
    # "domain" sends (realm_is_ip), so it only supports other scanner evidence.
    if (
        (reasons or s.distinct_users_from_ip >= 2)
        and _NUMERIC_USER.match(s.user)
        and (ip_used_as_domain(g) or account_found(g) is False)
    ):
        reasons.append("numeric username against an IP address or unknown realm")
    return reasons


@check(
    "scanner_signal",
    source="log",
    evidence=(
        "source_ip",
        "scanner_reasons",
        "distinct_users_from_ip",
        "failures_from_ip",
        "user_agent",
    ),
)
def scanner_signal(g: Gathered) -> Verdict:
    """the request looks like a SIP scanner: many usernames from one IP, a scanner
    User-Agent, or a garbage username"""
    return bool(scanner_reasons(g))


# ---------------------------------------------------------------------------- database


@check(
    "account_found",
    source="db",
    evidence=(
        "tried_realms",
        "account_sid",
        "account_name",
        "matched_realm",
        "via_parent_domain",
        "similar_realms",
    ),
)
def account_found(g: Gathered) -> Verdict:
    """an account owns the To host (or its parent domain) as sip_realm"""
    return None if g.realm is None else g.realm.account is not None


@check(
    "account_active", source="db", evidence=("account_sid", "account_active", "deactivated_reason")
)
def account_active(g: Gathered) -> Verdict:
    """the realm's account has is_active = 1"""
    if g.realm is None or g.realm.account is None:
        return None
    return g.realm.account.is_active


@check(
    "account_has_webhook",
    source="db",
    evidence=("registration_webhook", "webhook_method", "webhook_source"),
)
def account_has_webhook(g: Gathered) -> Verdict:
    """the registrar authenticates this realm through a registration webhook"""
    if g.flavour == "legacy":
        return None if g.auth_hook is None else g.hook is not None
    if g.realm is None or g.realm.account is None:
        return None
    return g.hook is not None


@check("realm_served_by_sp_hook", source="db", evidence=("registration_webhook", "webhook_source"))
def realm_served_by_sp_hook(g: Gathered) -> Verdict:
    """legacy registrar only: a service provider's root_domain webhook serves the realm"""
    if g.flavour == "legacy":
        return None if g.auth_hook is None else g.auth_hook.source == "service_provider"
    return None if g.realm is None else False


@check(
    "legacy_hook_found",
    source="db",
    evidence=("registration_webhook", "webhook_source", "account_sid"),
)
def legacy_hook_found(g: Gathered) -> Verdict:
    """legacy registrar only: lookupAuthHook finds a registration webhook for the realm"""
    if g.flavour != "legacy" or g.auth_hook is None:
        return None
    return g.hook is not None


@check(
    "client_found",
    source="db",
    evidence=(
        "account_sid",
        "lookup_username",
        "lookup_username_source",
        "client_rows",
        "other_realms",
    ),
)
def client_found(g: Gathered) -> Verdict:
    """a clients row exists for the account and the Authorization (or To) username"""
    return None if g.clients is None else bool(g.clients)


@check("client_active", source="db", evidence=("client_sid", "client_active"))
def client_active(g: Gathered) -> Verdict:
    """the client row jambonz uses (the first one) has is_active = 1"""
    return g.clients[0].is_active if g.clients else None


@check(
    "client_duplicate",
    source="db",
    evidence=("client_rows", "client_sid", "client_sids", "client_rows_active"),
)
def client_duplicate(g: Gathered) -> Verdict:
    """more than one clients row has this username in the account"""
    return len(g.clients) > 1 if g.clients else None


@check("client_password_encrypted", source="db", evidence=("client_sid", "password_form"))
def client_password_encrypted(g: Gathered) -> Verdict:
    """the stored password has jambonz's encrypted {iv, content} form"""
    if not g.clients:
        return None
    return classify_stored_password(g.clients[0].password) is StoredForm.ENCRYPTED


@check(
    "client_password_decrypts",
    source="db",
    needs_secret=True,
    evidence=("client_sid", "decrypt_result", "other_clients_decrypting", "legacy_crypto"),
)
def client_password_decrypts(g: Gathered) -> Verdict:
    """the stored password decrypts with sipwatch's secret, once that secret is proven to be
    jambonz's (unknown when sipwatch's own secret is wrong or unproven)"""
    return g.password_decrypts


@check(
    "encryption_secret_matches",
    source="db",
    needs_secret=True,
    evidence=("secret_check", "secret_sampled", "secret_decrypted"),
)
def encryption_secret_matches(g: Gathered) -> Verdict:
    """sipwatch's secret decrypts the encrypted client passwords of the database, i.e. it is
    the ENCRYPTION_SECRET/JWT_SECRET jambonz uses"""
    return None if g.secret is None else g.secret.matches


# ----------------------------------------------------------------------------- webhook


@check(
    "webhook_probed",
    source="webhook",
    evidence=("registration_webhook", "webhook_probe"),
)
def webhook_probed(g: Gathered) -> Verdict:
    """the registration webhook was called by a probe during this diagnosis (false when
    probes are off: nothing about the webhook's answers is known)"""
    if g.hook is None:
        return None
    return g.probe is not None


@check(
    "webhook_reachable",
    source="webhook",
    evidence=("registration_webhook", "webhook_probe", "webhook_probe_detail", "webhook_probe_ms"),
)
def webhook_reachable(g: Gathered) -> Verdict:
    """the registration webhook accepted a connection and answered in time"""
    return None if g.probe is None else g.probe.reachable


@check(
    "webhook_http_ok",
    source="webhook",
    evidence=("registration_webhook", "webhook_probe", "webhook_http_status"),
)
def webhook_http_ok(g: Gathered) -> Verdict:
    """the registration webhook answered HTTP 200"""
    return None if g.probe is None else g.probe.http_ok


@check(
    "webhook_response_valid",
    source="webhook",
    evidence=("registration_webhook", "webhook_probe", "webhook_probe_detail"),
)
def webhook_response_valid(g: Gathered) -> Verdict:
    """the registration webhook answered JSON with a string 'status'"""
    return None if g.probe is None else g.probe.response_valid


@check(
    "webhook_accepts_any_credentials",
    source="webhook",
    evidence=("registration_webhook", "webhook_probe", "webhook_probe_detail"),
)
def webhook_accepts_any_credentials(g: Gathered) -> Verdict:
    """the registration webhook answered "ok" to the probe's made-up user and all-zero
    digest, so it lets any credentials register"""
    if g.probe is None or not g.probe.response_valid:
        return None
    return g.probe.outcome == "ok"


# ------------------------------------------------------------------------------- redis


@check(
    "registration_cached",
    source="redis",
    evidence=("registered_now", "cached_proxy", "cached_protocol", "cached_expires_in"),
)
def registration_cached(g: Gathered) -> Verdict:
    """Redis holds a registration (user:<aor>) for this AOR right now"""
    return g.registration_cached


# ----------------------------------------------------------------------------- derived


def db_reject_reason(g: Gathered) -> tuple[Verdict, str | None]:
    """Would a fresh REGISTER be refused, given what the database shows?  (verdict, why)"""
    if account_found(g) is None:
        return None, None
    webhook_broken = (
        webhook_reachable(g) is False
        or webhook_http_ok(g) is False
        or webhook_response_valid(g) is False
    )
    if g.flavour == "legacy":
        if legacy_hook_found(g) is False:
            return True, "no registration webhook for the realm"
        return (True, "registration webhook is broken") if webhook_broken else (None, None)
    if not account_found(g):
        return True, "no account owns the realm"
    if account_active(g) is False:
        return True, "account is deactivated"
    if account_has_webhook(g):
        return (True, "registration webhook is broken") if webhook_broken else (None, None)
    if client_found(g) is False:
        return True, "no client with this username"
    if client_active(g) is False:
        return True, "client is deactivated"
    if client_password_encrypted(g) is False:
        return True, "stored password is not encrypted"
    decrypts = client_password_decrypts(g)
    if decrypts is False:
        return True, "stored password does not decrypt"
    if decrypts is None:
        return None, None
    return False, None


@check("db_would_reject", source="db", evidence=("db_reject_reason",))
def db_would_reject(g: Gathered) -> Verdict:
    """the database state means a fresh REGISTER for this AOR would be refused"""
    return db_reject_reason(g)[0]


# Symptom fields a rule's match section may test, and the evidence they bring.
MATCH_EVIDENCE = MappingProxyType(
    {
        "status": ("status",),
        "x_reason": ("x_reason",),
        "challenged": ("challenged",),
        "registrar_events": ("registrar_events",),
    }
)
