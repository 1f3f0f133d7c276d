"""The jambonz lookups the registrar itself makes, mirrored against its MySQL schema.

Each query copies what @jambonz/db-helpers does on the REGISTER path, so sipwatch sees the
database the way sbc-sip-sidecar (or the legacy sbc-registrar) sees it:

* ``lookupAccountBySipRealm``: exact ``sip_realm`` match, then the parent domain (first label
  dropped) once, accepted only when exactly one row matches; no ``is_active`` filter.
* ``lookupClientByAccountAndUsername``: every row, in server order; jambonz uses the first.
* legacy ``lookupAuthHook``: realm, parent domain, then ``service_providers.root_domain``.

Values from logs are bound parameters only.  A value that can never match a column (longer
than the column, or not encodable as UTF-8) is answered "not found" without a query, which is
both what MySQL would answer and cheaper under a flood of garbage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from sipwatch.diagnosis.db import Database

REALM_MAX = 132  # accounts.sip_realm VARCHAR(132)
ROOT_DOMAIN_MAX = 128  # service_providers.root_domain VARCHAR(128)
USERNAME_MAX = 64  # clients.username VARCHAR(64)


def db_text(value: str, max_len: int) -> str | None:
    """``value`` if it could equal a column of ``max_len`` characters, else None."""
    if len(value.rstrip(" ")) > max_len:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value


def safe_url(url: str | None) -> str | None:
    """A URL fit for output: no userinfo, no query string or fragment (they carry tokens)."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparseable url>"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port else host
    query = "..." if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def parent_domain(realm: str) -> str | None:
    """db-helpers' single parent-domain fallback: only for realms with more than 2 labels."""
    labels = realm.split(".")
    if len(labels) > 2:
        return ".".join(labels[1:])
    return None


def root_domain(realm: str) -> str | None:
    """The last two labels, which legacy lookupAuthHook matches against SP root_domain."""
    labels = realm.split(".")
    if len(labels) >= 2:
        return ".".join(labels[-2:])
    return None


def _like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True)
class Webhook:
    webhook_sid: str
    url: str = field(repr=False)  # may embed credentials; show display_url instead
    method: str = "POST"
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def display_url(self) -> str:
        return safe_url(self.url) or ""


@dataclass(frozen=True)
class Account:
    account_sid: str
    name: str
    sip_realm: str | None
    service_provider_sid: str
    is_active: bool
    deactivated_reason: str | None
    webhook_secret: str | None = field(repr=False)
    registration_hook: Webhook | None


@dataclass(frozen=True)
class RealmLookup:
    """Result of the sidecar's realm → account mapping."""

    realm: str
    tried: tuple[str, ...]
    account: Account | None
    via_parent: bool = False

    @property
    def matched_realm(self) -> str | None:
        return self.account.sip_realm if self.account else None


@dataclass(frozen=True)
class Client:
    client_sid: str
    account_sid: str
    username: str | None
    is_active: bool
    password: str | None = field(repr=False)


@dataclass(frozen=True)
class AuthHookLookup:
    """Result of the legacy registrar's realm → registration webhook mapping."""

    webhook: Webhook | None
    source: Literal["account", "parent", "service_provider"] | None = None
    matched: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)


_ACCOUNT_SQL = (
    "SELECT acc.account_sid, acc.name, acc.sip_realm, acc.service_provider_sid, acc.is_active,"
    " acc.deactivated_reason, acc.webhook_secret, acc.registration_hook_sid,"
    " rh.webhook_sid AS rh_sid, rh.url AS rh_url, rh.method AS rh_method,"
    " rh.username AS rh_username, rh.password AS rh_password"
    " FROM accounts acc LEFT JOIN webhooks AS rh ON acc.registration_hook_sid = rh.webhook_sid"
    " WHERE acc.sip_realm = %s"
)

_CLIENTS_SQL = (
    "SELECT client_sid, account_sid, username, password, is_active"
    " FROM clients WHERE account_sid = %s AND username = %s"
)

_ACCOUNT_HOOK_SQL = (
    "SELECT acc.webhook_secret, wh.webhook_sid, wh.url, wh.method, wh.username, wh.password"
    " FROM accounts acc INNER JOIN webhooks wh ON acc.registration_hook_sid = wh.webhook_sid"
    " WHERE acc.sip_realm = %s"
)

_SP_HOOK_SQL = (
    "SELECT wh.webhook_sid, wh.url, wh.method, wh.username, wh.password"
    " FROM service_providers sp INNER JOIN webhooks wh"
    " ON sp.registration_hook_sid = wh.webhook_sid WHERE sp.root_domain = %s"
)


def _webhook(row: dict[str, Any], prefix: str = "") -> Webhook | None:
    sid = row.get(f"{prefix}sid" if prefix else "webhook_sid")
    url = row.get(f"{prefix}url" if prefix else "url")
    if not sid or not url:
        # The sidecar falls back to the clients table when the hook has no url.
        return None
    return Webhook(
        webhook_sid=str(sid),
        url=str(url),
        method=str(row.get(f"{prefix}method" if prefix else "method") or "POST"),
        username=row.get(f"{prefix}username" if prefix else "username"),
        password=row.get(f"{prefix}password" if prefix else "password"),
    )


def _account(row: dict[str, Any]) -> Account:
    return Account(
        account_sid=str(row["account_sid"]),
        name=str(row["name"]),
        sip_realm=row["sip_realm"],
        service_provider_sid=str(row["service_provider_sid"]),
        is_active=bool(row["is_active"]),
        deactivated_reason=row["deactivated_reason"],
        webhook_secret=row["webhook_secret"],
        registration_hook=_webhook(row, prefix="rh_"),
    )


class JambonzDb:
    """Read-only jambonz queries over a :class:`Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def lookup_account_by_sip_realm(self, realm: str) -> RealmLookup:
        tried: list[str] = []
        exact = db_text(realm, REALM_MAX)
        if exact is not None:
            tried.append(exact)
            rows = await self.db.fetch_all(_ACCOUNT_SQL, (exact,))
            if rows:
                return RealmLookup(realm, tuple(tried), _account(rows[0]))
        parent = parent_domain(realm)
        parent = db_text(parent, REALM_MAX) if parent is not None else None
        if parent is not None:
            tried.append(parent)
            rows = await self.db.fetch_all(_ACCOUNT_SQL, (parent,))
            if len(rows) == 1:
                return RealmLookup(realm, tuple(tried), _account(rows[0]), via_parent=True)
        return RealmLookup(realm, tuple(tried), None)

    async def lookup_clients(self, account_sid: str, username: str) -> list[Client]:
        name = db_text(username, USERNAME_MAX)
        if name is None:
            return []
        rows = await self.db.fetch_all(_CLIENTS_SQL, (account_sid, name))
        return [
            Client(
                client_sid=str(r["client_sid"]),
                account_sid=str(r["account_sid"]),
                username=r["username"],
                is_active=bool(r["is_active"]),
                password=r["password"],
            )
            for r in rows
        ]

    async def lookup_auth_hook(self, realm: str) -> AuthHookLookup:
        """Legacy sbc-registrar: realm, parent domain, then service-provider root domain."""
        candidates: list[tuple[Literal["account", "parent"], str | None]] = [
            ("account", db_text(realm, REALM_MAX)),
        ]
        parent = parent_domain(realm)
        candidates.append(("parent", db_text(parent, REALM_MAX) if parent else None))
        for source, value in candidates:
            if value is None:
                continue
            rows = await self.db.fetch_all(_ACCOUNT_HOOK_SQL, (value,))
            if rows:
                hook = _webhook(rows[0])
                if hook is not None:
                    return AuthHookLookup(hook, source, value, rows[0].get("webhook_secret"))
        root = root_domain(realm)
        root = db_text(root, ROOT_DOMAIN_MAX) if root else None
        if root is not None:
            rows = await self.db.fetch_all(_SP_HOOK_SQL, (root,))
            if rows:
                hook = _webhook(rows[0])
                if hook is not None:
                    return AuthHookLookup(hook, "service_provider", root)
        return AuthHookLookup(None)

    async def similar_realms(self, realm: str, limit: int = 5) -> list[str]:
        """Account realms under the same base domain: "did you mean" evidence for typos."""
        base = root_domain(realm)
        if base is None or db_text(base, REALM_MAX) is None:
            return []
        pattern = "%." + _like_escape(base)
        rows = await self.db.fetch_all(
            "SELECT sip_realm FROM accounts WHERE sip_realm = %s OR sip_realm LIKE %s"
            " ORDER BY sip_realm LIMIT %s",
            (base, pattern, int(limit)),
        )
        return [str(r["sip_realm"]) for r in rows if r["sip_realm"]]

    async def all_realms(self, limit: int = 5000) -> list[str]:
        """Every account realm (bounded), for typo suggestions."""
        rows = await self.db.fetch_all(
            "SELECT sip_realm FROM accounts WHERE sip_realm IS NOT NULL LIMIT %s", (int(limit),)
        )
        return [str(r["sip_realm"]).lower() for r in rows]

    async def realms_with_client(
        self, username: str, exclude_account_sid: str, limit: int = 5
    ) -> list[str]:
        """Other accounts' realms that have a client with this username (device on wrong realm)."""
        name = db_text(username, USERNAME_MAX)
        if name is None:
            return []
        rows = await self.db.fetch_all(
            "SELECT DISTINCT acc.sip_realm FROM clients c"
            " INNER JOIN accounts acc ON c.account_sid = acc.account_sid"
            " WHERE c.username = %s AND c.account_sid <> %s AND acc.sip_realm IS NOT NULL"
            " ORDER BY acc.sip_realm LIMIT %s",
            (name, exclude_account_sid, int(limit)),
        )
        return [str(r["sip_realm"]) for r in rows]

    async def other_client_passwords(
        self, account_sid: str, exclude_client_sid: str, limit: int = 20
    ) -> list[str | None]:
        """Stored passwords of other clients, to tell a wrong secret from one bad row."""
        rows = await self.db.fetch_all(
            "SELECT password FROM clients WHERE account_sid = %s AND client_sid <> %s LIMIT %s",
            (account_sid, exclude_client_sid, int(limit)),
        )
        return [r["password"] for r in rows]

    async def schema_version(self) -> str | None:
        rows = await self.db.fetch_all("SELECT version FROM schema_version LIMIT 1")
        return str(rows[0]["version"]) if rows else None
