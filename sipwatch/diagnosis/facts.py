"""Gather what the checks (``checks.py``) need for one symptom, then decide them all.

The order mirrors the registrar's own decision path (reference §1a/§1b): realm → account →
(webhook | clients) → password, then Redis and the webhook probe.  Every source is optional
and bounded; whatever cannot be gathered stays ``None`` (the checks that need it are then
undecided) and a line in ``unknown`` says why.  The collector only gathers: the verdicts are
the registered checks' (:func:`sipwatch.diagnosis.checks.decide_all`).

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
from sipwatch.diagnosis.checks import Gathered, db_reject_reason, decide_all, scanner_reasons
from sipwatch.diagnosis.crypto import (
    DecryptError,
    StoredForm,
    classify_stored_password,
    decrypt,
)
from sipwatch.diagnosis.db import DbError, DbSchemaError, DbTimeout
from sipwatch.diagnosis.error_kinds import DiagnosisErrorKind
from sipwatch.diagnosis.jambonz import (
    REALM_MAX,
    Account,
    AuthHookLookup,
    JambonzDb,
    RealmLookup,
)
from sipwatch.diagnosis.redis_store import RedisUnavailable, RegistrationStore
from sipwatch.diagnosis.secret_proof import (
    SECRET_VARIABLE,
    SecretState,
    SecretStatus,
    prove_secret,
)
from sipwatch.diagnosis.symptom import Symptom
from sipwatch.diagnosis.webhook_probe import ProbeResult, probe_registration_webhook
from sipwatch.sip_meaning import scanner_tool

Flavour = Literal["sidecar", "legacy"]
JsonValue = Any

_GARBAGE_CHARS = frozenset("'\"<>\\;`")
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
    """The User-Agent names a known scanning tool (``sip_meaning.SCANNER_USER_AGENTS``)."""
    return bool(ua) and scanner_tool(ua or "") is not None


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
        self.secret_status: SecretStatus | None = None  # the latest proof, for /readyz

    async def check_secret(self) -> SecretStatus:
        """Prove sipwatch's secret against the database now (cached like other lookups).

        Raises :class:`DbError` when the database cannot answer; with no database or no
        secret the answer is "unproven" / "not configured"."""
        if self._secret is None:
            status = SecretStatus(SecretState.NOT_CONFIGURED, legacy_crypto=self._legacy_crypto)
        elif self._db is None:
            status = SecretStatus(SecretState.UNPROVEN, legacy_crypto=self._legacy_crypto)
        else:
            jdb, secret, legacy = self._db, self._secret, self._legacy_crypto

            async def load() -> SecretStatus:
                return await prove_secret(jdb.db, secret, legacy_crypto=legacy)

            status = await self.db_cache.get_or_load(("secret",), load)
        self.secret_status = status
        return status

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
        g = Gathered(
            symptom=s,
            scanner_min_users=self._scanner_min_users,
            strong_scanner_reasons=strong_scanner_reasons(s, self._scanner_min_users),
        )
        if self._flavour != "auto":
            g.flavour = self._flavour
            f.flavour, f.flavour_source = self._flavour, "configured"

        hook_secret: str | None = None
        probe_realm = s.domain
        if self._db is None:
            f.unknown.append("database: not configured (set SIPWATCH_DB_URL or --db-url)")
        elif g.strong_scanner_reasons:
            f.unknown.append("database: not queried for an attacker-shaped request")
        else:
            try:
                async with asyncio.timeout(self._deadline):
                    hook_secret, probe_realm = await self._db_facts(s, f, g, self._db)
            except TimeoutError:
                f.error(DiagnosisErrorKind.TIMEOUT, "database: diagnosis deadline exceeded")
            except DbError as exc:
                kind = (
                    exc.kind
                    if isinstance(exc, (DbTimeout, DbSchemaError))
                    else DiagnosisErrorKind.DB_UNAVAILABLE
                )
                f.error(kind, f"database: {exc.kind}: {exc}")

        await self._webhook_facts(f, g, hook_secret, probe_realm)
        await self._redis_facts(s, f, g)
        f.values = decide_all(g)
        ev["scanner_reasons"] = scanner_reasons(g) or None
        ev["db_reject_reason"] = db_reject_reason(g)[1]
        f.flavour = g.flavour  # type: ignore[assignment]
        ev["flavour"] = g.flavour
        ev["registrar_service"] = REGISTRAR_SERVICE[g.flavour]
        return f

    # ------------------------------------------------------------------ database

    async def _db_facts(
        self, s: Symptom, f: Facts, g: Gathered, jdb: JambonzDb
    ) -> tuple[str | None, str]:
        """Fill ``g`` from the database; returns (webhook secret, realm to probe with)."""
        ev = f.evidence
        lookup: RealmLookup = await self.db_cache.get_or_load(
            ("realm", s.domain), lambda: jdb.lookup_account_by_sip_realm(s.domain)
        )
        g.realm = lookup
        acct: Account | None = lookup.account
        ev["tried_realms"] = list(lookup.tried)
        if acct is None:
            ev["similar_realms"] = await self._similar_realms(jdb, s.domain)
        else:
            ev.update(
                account_sid=acct.account_sid,
                account_name=acct.name,
                matched_realm=acct.sip_realm,
                via_parent_domain=lookup.via_parent,
                account_active=acct.is_active,
                deactivated_reason=acct.deactivated_reason,
            )

        if self._flavour == "auto":
            flavour, f.flavour_source = _infer_flavour(s, acct)
            g.flavour = f.flavour = flavour

        hook_secret: str | None
        probe_realm = acct.sip_realm if acct and acct.sip_realm else s.domain
        if g.flavour == "legacy":
            auth: AuthHookLookup = await self.db_cache.get_or_load(
                ("authhook", s.domain), lambda: jdb.lookup_auth_hook(s.domain)
            )
            g.auth_hook, g.hook, hook_secret = auth, auth.webhook, auth.webhook_secret
            ev["webhook_source"] = auth.source
            if auth.source == "service_provider" and auth.matched:
                probe_realm = s.domain if _HOSTNAME.match(s.domain) else auth.matched
        else:
            g.hook = acct.registration_hook if acct else None
            hook_secret = acct.webhook_secret if acct else None
            ev["webhook_source"] = "account" if g.hook else None
        if g.hook is not None:
            ev["registration_webhook"] = g.hook.display_url
            ev["webhook_method"] = g.hook.method

        if g.flavour == "sidecar" and acct is not None and g.hook is None:
            await self._client_facts(s, f, g, jdb, acct)
        return hook_secret, probe_realm

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

    async def _client_facts(
        self, s: Symptom, f: Facts, g: Gathered, jdb: JambonzDb, acct: Account
    ) -> None:
        ev = f.evidence
        username = s.lookup_username
        ev["lookup_username"] = username
        ev["lookup_username_source"] = "authorization" if s.auth_username else "to"
        if self._secret is not None:
            # The clients path is where the secret matters: prove it (cached) whatever this
            # client's row looks like, so a wrong secret is reported even for plaintext rows.
            g.secret = await self.check_secret()
            ev.update(
                secret_check=g.secret.describe(),
                secret_sampled=g.secret.sampled,
                secret_decrypted=g.secret.decrypted,
            )
        clients = await self.db_cache.get_or_load(
            ("clients", acct.account_sid, username),
            lambda: jdb.lookup_clients(acct.account_sid, username),
        )
        g.clients = clients
        ev["client_rows"] = len(clients)
        if not clients:
            ev["other_realms"] = await self.db_cache.get_or_load(
                ("elsewhere", acct.account_sid, username),
                lambda: jdb.realms_with_client(username, acct.account_sid),
            )
            return
        first = clients[0]  # digest-utils uses clients[0]
        ev.update(client_sid=first.client_sid, client_active=first.is_active)
        if len(clients) > 1:
            ev["client_sids"] = [c.client_sid for c in clients[:10]]
            ev["client_rows_active"] = [c.is_active for c in clients[:10]]
        form = classify_stored_password(first.password)
        ev["password_form"] = form.value
        if form is not StoredForm.ENCRYPTED:
            return
        if self._secret is None or g.secret is None:
            f.unknown.append(
                f"password decryption: no jambonz secret configured (set {SECRET_VARIABLE})"
            )
            return
        ev["legacy_crypto"] = self._legacy_crypto
        if self._decrypts(first.password):
            g.password_decrypts = True
            ev["decrypt_result"] = "ok"
            return
        # The row does not decrypt.  Whose fault is it?  Only the other rows can tell.
        others = g.secret.excluding(first.client_sid)
        if others.sampled:
            ev["other_clients_decrypting"] = f"{others.decrypted}/{others.sampled}"
        if others.matches is True:
            g.password_decrypts = False
            ev["decrypt_result"] = "fails with the configured secret"
        elif others.matches is False:
            f.unknown.append(
                "password decryption: not judged - sipwatch's secret decrypts no stored "
                "password, so it is sipwatch's secret that is wrong (see "
                "encryption_secret_mismatch), not this client's row"
            )
        else:
            f.unknown.append(
                "password decryption: the stored password does not decrypt and no other "
                f"encrypted password exists to tell a wrong row from a wrong {SECRET_VARIABLE}"
            )

    def _decrypts(self, stored: str | None) -> bool:
        assert self._secret is not None
        try:
            decrypt(stored, self._secret, legacy_ctr=self._legacy_crypto)
        except DecryptError:
            return False
        return True

    # ------------------------------------------------------------------ webhook, redis

    async def _webhook_facts(
        self, f: Facts, g: Gathered, hook_secret: str | None, realm: str
    ) -> None:
        ev = f.evidence
        hook = g.hook
        if hook is None:
            return
        if not self._probes:
            f.unknown.append("webhook: probes disabled (--webhook-probe calls it once)")
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
        g.probe = probe
        ev.update(
            webhook_probe=probe.outcome,
            webhook_http_status=probe.http_status,
            webhook_probe_detail=probe.detail,
            webhook_probe_ms=probe.elapsed_ms,
        )

    async def _redis_facts(self, s: Symptom, f: Facts, g: Gathered) -> None:
        ev = f.evidence
        if self._redis is None:
            f.unknown.append("redis: not configured (set SIPWATCH_REDIS_URL or --redis-url)")
            return
        store = self._redis
        try:
            reg = await self.redis_cache.get_or_load(("reg", s.aor), lambda: store.lookup(s.aor))
        except RedisUnavailable as exc:
            f.error(DiagnosisErrorKind.REDIS_UNAVAILABLE, f"redis: unavailable: {exc}")
            return
        g.registration_cached = reg is not None
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
