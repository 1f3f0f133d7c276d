"""Compute the named checks (see ``checks.py``) for one symptom.

The order mirrors the registrar's own decision path (reference §1a/§1b): realm → account →
(webhook | clients) → password, then Redis and the webhook probe.  Every source is optional
and bounded; whatever cannot be decided stays ``None`` and a line in ``unknown`` says why.
Evidence holds only safe values: ids, flags, counts, masked URLs - never a password, a digest,
a webhook secret or a DB URL with credentials.
"""

from __future__ import annotations

import asyncio
import difflib
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Literal

from sipwatch.diagnosis.cache import TtlCache
from sipwatch.diagnosis.crypto import (
    StoredForm,
    WrongSecretError,
    classify_stored_password,
    decrypt,
)
from sipwatch.diagnosis.db import DbError, DbSchemaError, DbTimeout
from sipwatch.diagnosis.jambonz import (
    REALM_MAX,
    Account,
    AuthHookLookup,
    JambonzDb,
    RealmLookup,
    Webhook,
)
from sipwatch.diagnosis.redis_store import RedisUnavailable, RegistrationStore
from sipwatch.diagnosis.symptom import Symptom, host_is_ip, host_is_ipv4
from sipwatch.diagnosis.webhook_probe import ProbeResult, probe_registration_webhook

Flavour = Literal["sidecar", "legacy"]
JsonValue = Any

# User-Agent fragments of known SIP scanners and brute-forcers (lower case).
SCANNER_USER_AGENTS = (
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "vaxsipuseragent",
    "sundayddr",
    "iwar",
    "sip-scan",
    "sivus",
    "smap",
    "pplsip",
    "sipptk",
    "voip-scan",
)
_GARBAGE_CHARS = frozenset("'\"<>\\;`")
_NUMERIC_USER = re.compile(r"^\+?[0-9]{1,32}$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9.-]{1,253}$")
REGISTRAR_SERVICE = {"sidecar": "sbc-sip-sidecar", "legacy": "sbc-registrar"}


@dataclass
class Facts:
    values: dict[str, bool | None] = field(default_factory=dict)
    evidence: dict[str, JsonValue] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # metric kinds, once each
    flavour: Flavour = "sidecar"
    flavour_source: str = "assumed"

    def error(self, kind: str, text: str) -> None:
        if kind not in self.errors:
            self.errors.append(kind)
        if text not in self.unknown:
            self.unknown.append(text)


def garbage_username(user: str) -> bool:
    """Not something a device would be configured with: quotes, spaces, control bytes, >64."""
    if not user or len(user) > 64:
        return True
    for ch in user:
        if ch in _GARBAGE_CHARS or ch.isspace():
            return True
        if unicodedata.category(ch).startswith("C"):
            return True
    return False


def scanner_user_agent(ua: str | None) -> bool:
    if not ua:
        return False
    low = ua.lower()
    return any(frag in low for frag in SCANNER_USER_AGENTS)


def strong_scanner_reasons(s: Symptom, min_users: int) -> list[str]:
    """Signals that mark a request as an attack without looking at the database."""
    reasons: list[str] = []
    if s.distinct_users_from_ip >= min_users:
        reasons.append(f"{s.distinct_users_from_ip} different usernames failed from this IP")
    if "spammer" in s.registrar_events:
        reasons.append("drachtio flagged the source as a potential spammer")
    if scanner_user_agent(s.user_agent):
        reasons.append("User-Agent of a known SIP scanner")
    if garbage_username(s.user) or (
        s.auth_username is not None and garbage_username(s.auth_username)
    ):
        reasons.append("username is not a plausible device username")
    return reasons


class FactCollector:
    """Gathers facts from log, database, Redis and webhook, with per-source caches."""

    def __init__(
        self,
        *,
        db: JambonzDb | None,
        redis: RegistrationStore | None,
        secret: str | None,
        legacy_crypto: bool,
        flavour: Literal["sidecar", "legacy", "auto"],
        webhook_probes: bool,
        cache_ttl: float,
        probe_timeout: float,
        scanner_min_users: int,
        deadline: float,
    ) -> None:
        self._db = db
        self._redis = redis
        self._secret = secret or None
        self._legacy_crypto = legacy_crypto
        self._flavour = flavour
        self._probes = webhook_probes
        self._probe_timeout = probe_timeout
        self._scanner_min_users = scanner_min_users
        self._deadline = deadline
        self.db_cache = TtlCache(cache_ttl)
        self.probe_cache = TtlCache(cache_ttl, max_entries=256)
        self.redis_cache = TtlCache(min(cache_ttl, 5.0))

    async def collect(self, s: Symptom) -> Facts:
        f = Facts()
        ev = f.evidence
        ev.update(
            user=s.user,
            domain=s.domain,
            source_ip=s.source_ip,
            status=s.status,
            x_reason=s.x_reason,
            challenged=s.challenged,
            registrar_events=sorted(s.registrar_events)[:20] or None,
            request_uri_host=s.request_uri_host,
            auth_username=s.auth_username,
            user_agent=s.user_agent,
            distinct_users_from_ip=s.distinct_users_from_ip or None,
            failures_from_ip=s.failures_from_ip or None,
        )
        v = f.values
        v["ip_used_as_domain"] = host_is_ipv4(s.request_uri_host) or host_is_ip(s.domain)
        strong = strong_scanner_reasons(s, self._scanner_min_users)
        if self._flavour != "auto":
            f.flavour, f.flavour_source = self._flavour, "configured"

        hook: Webhook | None = None
        hook_secret: str | None = None
        probe_realm = s.domain
        if self._db is None:
            f.unknown.append("database: not configured (set SIPWATCH_DB_URL or --db-url)")
        elif strong:
            f.unknown.append("database: not queried for an attacker-shaped request")
        else:
            try:
                async with asyncio.timeout(self._deadline):
                    hook, hook_secret, probe_realm = await self._db_facts(s, f, self._db)
            except TimeoutError:
                f.error("timeout", "database: diagnosis deadline exceeded")
            except DbError as exc:
                kind = exc.kind if isinstance(exc, (DbTimeout, DbSchemaError)) else "db_unavailable"
                f.error(kind, f"database: {exc.kind}: {exc}")

        reasons = list(strong)
        # A numeric user against an IP address is also what a real phone with its SBC's IP as
        # "domain" sends (realm_is_ip), so it only supports other scanner evidence.
        if (
            (reasons or s.distinct_users_from_ip >= 2)
            and _NUMERIC_USER.match(s.user)
            and (v["ip_used_as_domain"] or v.get("account_found") is False)
        ):
            reasons.append("numeric username against an IP address or unknown realm")
        v["scanner_signal"] = bool(reasons)
        ev["scanner_reasons"] = reasons or None

        await self._webhook_facts(f, hook, hook_secret, probe_realm)
        await self._redis_facts(s, f)
        reject, why = _would_reject(v, f.flavour)
        v["db_would_reject"] = reject
        ev["db_reject_reason"] = why
        ev["flavour"] = f.flavour
        ev["registrar_service"] = REGISTRAR_SERVICE[f.flavour]
        return f

    # ------------------------------------------------------------------ database

    async def _db_facts(
        self, s: Symptom, f: Facts, jdb: JambonzDb
    ) -> tuple[Webhook | None, str | None, str]:
        v, ev = f.values, f.evidence
        lookup: RealmLookup = await self.db_cache.get_or_load(
            ("realm", s.domain), lambda: jdb.lookup_account_by_sip_realm(s.domain)
        )
        acct: Account | None = lookup.account
        ev["tried_realms"] = list(lookup.tried)
        v["account_found"] = acct is not None
        if acct is None:
            v["account_active"] = None
            ev["similar_realms"] = await self._similar_realms(jdb, s.domain)
        else:
            v["account_active"] = acct.is_active
            ev.update(
                account_sid=acct.account_sid,
                account_name=acct.name,
                matched_realm=acct.sip_realm,
                via_parent_domain=lookup.via_parent,
                account_active=acct.is_active,
                deactivated_reason=acct.deactivated_reason,
            )

        if self._flavour == "auto":
            f.flavour, f.flavour_source = _infer_flavour(s, acct)

        hook: Webhook | None
        hook_secret: str | None
        probe_realm = acct.sip_realm if acct and acct.sip_realm else s.domain
        if f.flavour == "legacy":
            auth: AuthHookLookup = await self.db_cache.get_or_load(
                ("authhook", s.domain), lambda: jdb.lookup_auth_hook(s.domain)
            )
            hook, hook_secret = auth.webhook, auth.webhook_secret
            v["legacy_hook_found"] = hook is not None
            v["realm_served_by_sp_hook"] = auth.source == "service_provider"
            v["account_has_webhook"] = hook is not None
            ev["webhook_source"] = auth.source
            if auth.source == "service_provider" and auth.matched:
                probe_realm = s.domain if _HOSTNAME.match(s.domain) else auth.matched
        else:
            hook = acct.registration_hook if acct else None
            hook_secret = acct.webhook_secret if acct else None
            v["legacy_hook_found"] = None
            v["realm_served_by_sp_hook"] = False
            v["account_has_webhook"] = (hook is not None) if acct else None
            ev["webhook_source"] = "account" if hook else None
        if hook is not None:
            ev["registration_webhook"] = hook.display_url
            ev["webhook_method"] = hook.method

        for name in (
            "client_found",
            "client_active",
            "client_duplicate",
            "client_password_encrypted",
            "client_password_decrypts",
        ):
            v[name] = None
        if f.flavour == "sidecar" and acct is not None and hook is None:
            await self._client_facts(s, f, jdb, acct)
        return hook, hook_secret, probe_realm

    async def _similar_realms(self, jdb: JambonzDb, domain: str) -> list[str]:
        """Realms under the same base domain, plus near-misses (typos) among all realms."""
        same_base: list[str] = await self.db_cache.get_or_load(
            ("similar", domain), lambda: jdb.similar_realms(domain)
        )
        found = list(same_base)
        if len(domain) <= REALM_MAX:
            realms: list[str] = await self.db_cache.get_or_load(("realms",), jdb.all_realms)
            for near in difflib.get_close_matches(domain.lower(), realms, n=3, cutoff=0.8):
                if near not in found:
                    found.append(near)
        return found[:5]

    async def _client_facts(self, s: Symptom, f: Facts, jdb: JambonzDb, acct: Account) -> None:
        v, ev = f.values, f.evidence
        username = s.lookup_username
        ev["lookup_username"] = username
        ev["lookup_username_source"] = "authorization" if s.auth_username else "to"
        clients = await self.db_cache.get_or_load(
            ("clients", acct.account_sid, username),
            lambda: jdb.lookup_clients(acct.account_sid, username),
        )
        v["client_found"] = bool(clients)
        ev["client_rows"] = len(clients)
        if not clients:
            ev["other_realms"] = await self.db_cache.get_or_load(
                ("elsewhere", acct.account_sid, username),
                lambda: jdb.realms_with_client(username, acct.account_sid),
            )
            return
        first = clients[0]  # digest-utils uses clients[0]
        v["client_active"] = first.is_active
        v["client_duplicate"] = len(clients) > 1
        ev.update(client_sid=first.client_sid, client_active=first.is_active)
        if len(clients) > 1:
            ev["client_sids"] = [c.client_sid for c in clients[:10]]
            ev["client_rows_active"] = [c.is_active for c in clients[:10]]
        form = classify_stored_password(first.password)
        ev["password_form"] = form.value
        v["client_password_encrypted"] = form is StoredForm.ENCRYPTED
        if form is not StoredForm.ENCRYPTED:
            return
        if self._secret is None:
            f.unknown.append(
                "password decryption: no jambonz secret configured "
                "(set SIPWATCH_JAMBONZ_ENCRYPTION_SECRET)"
            )
            return
        ev["legacy_crypto"] = self._legacy_crypto
        decrypts = self._decrypts(first.password)
        v["client_password_decrypts"] = decrypts
        ev["decrypt_result"] = "ok" if decrypts else "fails with the configured secret"
        if not decrypts:
            others = await self.db_cache.get_or_load(
                ("others", acct.account_sid, first.client_sid),
                lambda: jdb.other_client_passwords(acct.account_sid, first.client_sid),
            )
            encrypted = [p for p in others if classify_stored_password(p) is StoredForm.ENCRYPTED]
            ok = sum(1 for p in encrypted if self._decrypts(p))
            ev["other_clients_decrypting"] = f"{ok}/{len(encrypted)}" if encrypted else None

    def _decrypts(self, stored: str | None) -> bool:
        assert self._secret is not None
        try:
            decrypt(stored, self._secret, legacy_ctr=self._legacy_crypto)
        except WrongSecretError:
            return False
        except ValueError:
            return False
        return True

    # ------------------------------------------------------------------ webhook, redis

    async def _webhook_facts(
        self, f: Facts, hook: Webhook | None, hook_secret: str | None, realm: str
    ) -> None:
        v, ev = f.values, f.evidence
        for name in ("webhook_reachable", "webhook_http_ok", "webhook_response_valid"):
            v[name] = None
        if hook is None:
            return
        if not self._probes:
            f.unknown.append("webhook: probes disabled")
            return

        async def load() -> ProbeResult:
            return await probe_registration_webhook(
                hook, realm=realm, webhook_secret=hook_secret, timeout=self._probe_timeout
            )

        try:
            probe = await self.probe_cache.get_or_load(
                ("probe", hook.url, hook.method, realm), load
            )
        except Exception as exc:  # a probe bug must not break the diagnosis
            f.unknown.append(f"webhook: probe failed ({type(exc).__name__})")
            return
        v["webhook_reachable"] = probe.reachable
        v["webhook_http_ok"] = probe.http_ok
        v["webhook_response_valid"] = probe.response_valid
        ev.update(
            webhook_probe=probe.outcome,
            webhook_http_status=probe.http_status,
            webhook_probe_detail=probe.detail,
            webhook_probe_ms=probe.elapsed_ms,
        )

    async def _redis_facts(self, s: Symptom, f: Facts) -> None:
        v, ev = f.values, f.evidence
        v["registration_cached"] = None
        if self._redis is None:
            f.unknown.append("redis: not configured (set SIPWATCH_REDIS_URL or --redis-url)")
            return
        store = self._redis
        try:
            reg = await self.redis_cache.get_or_load(("reg", s.aor), lambda: store.lookup(s.aor))
        except RedisUnavailable as exc:
            f.error("redis_unavailable", f"redis: unavailable: {exc}")
            return
        v["registration_cached"] = reg is not None
        ev["registered_now"] = reg is not None
        if reg is not None:
            ev.update(
                cached_proxy=reg.proxy,
                cached_protocol=reg.protocol,
                cached_expires_in=round(reg.ttl_seconds) if reg.ttl_seconds is not None else None,
            )


def _infer_flavour(s: Symptom, acct: Account | None) -> tuple[Flavour, str]:
    """Only sbc-registrar refuses a realm that has an account before challenging."""
    refused_realm = (s.x_reason or "").strip().lower().startswith("unknown or invalid realm")
    if (
        acct is not None
        and acct.registration_hook is None
        and refused_realm
        and s.challenged is False
    ):
        return "legacy", "inferred: realm with an account refused before any challenge"
    return "sidecar", "assumed: sbc-sip-sidecar (current registrar)"


def _would_reject(v: dict[str, bool | None], flavour: str) -> tuple[bool | None, str | None]:
    """Would a fresh REGISTER be refused, given what the database shows?"""
    if v.get("account_found") is None:
        return None, None
    webhook_broken = (
        v.get("webhook_reachable") is False
        or v.get("webhook_http_ok") is False
        or v.get("webhook_response_valid") is False
    )
    if flavour == "legacy":
        if v.get("legacy_hook_found") is False:
            return True, "no registration webhook for the realm"
        return (True, "registration webhook is broken") if webhook_broken else (None, None)
    if not v["account_found"]:
        return True, "no account owns the realm"
    if v.get("account_active") is False:
        return True, "account is deactivated"
    if v.get("account_has_webhook"):
        return (True, "registration webhook is broken") if webhook_broken else (None, None)
    if v.get("client_found") is False:
        return True, "no client with this username"
    if v.get("client_active") is False:
        return True, "client is deactivated"
    if v.get("client_password_encrypted") is False:
        return True, "stored password is not encrypted"
    if v.get("client_password_decrypts") is False:
        return True, "stored password does not decrypt"
    if v.get("client_password_decrypts") is None:
        return None, None
    return False, None
