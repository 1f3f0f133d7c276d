"""Diagnosis settings from command line, environment and config file, and the runtime they build.

Two ways in: :func:`settings_from_config` maps sipwatch's validated config file
(``[database]``, ``[redis]``, ``[jambonz]``, ``[diagnosis]``), and
:meth:`DiagnosisSettings.resolve` takes plain mappings (command line > environment >
mapping > defaults).
The jambonz secret has no command-line flag on purpose: arguments are visible in ``ps`` and
shell history.  ``repr`` never shows URLs or secrets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import unquote, urlsplit

from sipwatch.config import Config
from sipwatch.diagnosis.db import Database, DbSettings
from sipwatch.diagnosis.engine import DiagnosisEngine, DiagnosisMetrics
from sipwatch.diagnosis.jambonz import JambonzDb
from sipwatch.diagnosis.redis_store import RegistrationStore
from sipwatch.diagnosis.rules import default_rules_dir, load_rules
from sipwatch.diagnosis.secret_proof import SECRET_VARIABLE, SecretStatus

FlavourSetting = Literal["sidecar", "legacy", "auto"]

ENV_DB_URL = "SIPWATCH_DB_URL"
ENV_REDIS_URL = "SIPWATCH_REDIS_URL"
ENV_SECRET = SECRET_VARIABLE
ENV_LEGACY_CRYPTO = "SIPWATCH_JAMBONZ_LEGACY_CRYPTO"
ENV_FLAVOUR = "SIPWATCH_REGISTRAR_FLAVOUR"
ENV_PROBES = "SIPWATCH_WEBHOOK_PROBES"
ENV_RULES_DIR = "SIPWATCH_RULES_DIR"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class SettingsError(ValueError):
    """Invalid configuration; the message is safe to print (no secrets)."""


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    s = str(value).strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise SettingsError(f"{name} must be true or false")


@dataclass(frozen=True)
class DiagnosisSettings:
    db_url: str | None = field(default=None, repr=False)
    redis_url: str | None = field(default=None, repr=False)
    encryption_secret: str | None = field(default=None, repr=False)
    legacy_crypto: bool = False
    registrar_flavour: FlavourSetting = "auto"
    webhook_probes: bool = True
    rules_dir: Path | None = None
    cache_ttl: float = 60.0
    db_timeout: float = 5.0
    db_connect_timeout: float = 3.0
    db_pool_size: int = 4
    redis_timeout: float = 2.0
    probe_timeout: float = 5.0
    scanner_min_users: int = 5

    @classmethod
    def resolve(
        cls,
        *,
        cli: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> DiagnosisSettings:
        cli = {k: v for k, v in (cli or {}).items() if v is not None}
        env = env or {}
        config = config or {}
        env_map = {
            "db_url": env.get(ENV_DB_URL),
            "redis_url": env.get(ENV_REDIS_URL),
            "encryption_secret": env.get(ENV_SECRET),
            "legacy_crypto": env.get(ENV_LEGACY_CRYPTO),
            "registrar_flavour": env.get(ENV_FLAVOUR),
            "webhook_probes": env.get(ENV_PROBES),
            "rules_dir": env.get(ENV_RULES_DIR),
        }
        known = {
            "db_url",
            "redis_url",
            "encryption_secret",
            "legacy_crypto",
            "registrar_flavour",
            "webhook_probes",
            "rules_dir",
            "cache_ttl",
            "db_timeout",
        }
        bad = sorted(set(config) - known)
        if bad:
            raise SettingsError(f"unknown [diagnosis] setting {bad[0]!r}")

        def pick(key: str) -> Any:
            for source in (cli, env_map, config):
                value = source.get(key)
                if value is not None and value != "":
                    return value
            return None

        flavour = pick("registrar_flavour") or "auto"
        if flavour not in ("sidecar", "legacy", "auto"):
            raise SettingsError("registrar flavour must be sidecar, legacy or auto")
        values: dict[str, Any] = {
            "db_url": pick("db_url"),
            "redis_url": pick("redis_url"),
            "encryption_secret": pick("encryption_secret"),
            "legacy_crypto": _bool("legacy_crypto", pick("legacy_crypto") or False),
            "registrar_flavour": cast(FlavourSetting, flavour),
            "webhook_probes": _bool(
                "webhook_probes", True if pick("webhook_probes") is None else pick("webhook_probes")
            ),
        }
        rules_dir = pick("rules_dir")
        values["rules_dir"] = Path(rules_dir) if rules_dir else None
        for key in ("cache_ttl", "db_timeout"):
            raw = pick(key)
            if raw is not None:
                try:
                    values[key] = float(raw)
                except (TypeError, ValueError):
                    raise SettingsError(f"{key} must be a number") from None
        return cls(**values)

    def secrets(self) -> list[str]:
        """Every secret these settings hold, for output scrubbing."""
        out: list[str] = []
        for url in (self.db_url, self.redis_url):
            if url:
                try:
                    pw = urlsplit(url).password
                except ValueError:
                    pw = None
                if pw:
                    out.extend({pw, unquote(pw)})
        if self.encryption_secret:
            out.append(self.encryption_secret)
        return out


def _reveal(secret: Any) -> str | None:
    return secret.reveal() if secret is not None else None


def settings_from_config(
    config: Config,
    *,
    cli: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> DiagnosisSettings:
    """Settings from sipwatch's validated config (``sipwatch.config.load_config``).

    The config loader already applied ``SIPWATCH_DB_URL``, ``SIPWATCH_REDIS_URL`` and
    ``SIPWATCH_JAMBONZ_ENCRYPTION_SECRET``; command-line values win over it.  LEGACY_CRYPTO
    has no config key yet and is read from ``SIPWATCH_JAMBONZ_LEGACY_CRYPTO``.
    """
    cli = {k: v for k, v in (cli or {}).items() if v is not None}
    env = env or {}
    flavour = cli.get("registrar_flavour") or config.jambonz.registrar_flavour
    if flavour not in ("sidecar", "legacy", "auto"):
        raise SettingsError("registrar flavour must be sidecar, legacy or auto")
    rules_dir = cli.get("rules_dir") or config.diagnosis.rules_dir
    db_timeout = cli.get("db_timeout")
    return DiagnosisSettings(
        db_url=cli.get("db_url") or _reveal(config.database.url),
        redis_url=cli.get("redis_url") or _reveal(config.redis.url),
        encryption_secret=_reveal(config.jambonz.encryption_secret),
        legacy_crypto=_bool("legacy_crypto", env.get(ENV_LEGACY_CRYPTO) or False),
        registrar_flavour=cast(FlavourSetting, flavour),
        webhook_probes=cli.get("webhook_probes", config.diagnosis.webhook_probes),
        rules_dir=Path(rules_dir) if rules_dir else None,
        cache_ttl=config.diagnosis.cache_ttl_seconds,
        db_timeout=float(db_timeout) if db_timeout is not None else config.database.read_timeout,
        db_connect_timeout=config.database.connect_timeout,
        db_pool_size=config.database.pool_size,
        redis_timeout=config.redis.read_timeout,
        probe_timeout=config.diagnosis.webhook_timeout_seconds,
        scanner_min_users=config.diagnosis.scanner_distinct_users,
    )


@dataclass
class DiagnosisRuntime:
    """An engine plus the connections it owns; ``await runtime.close()`` when done."""

    engine: DiagnosisEngine
    database: Database | None
    redis: RegistrationStore | None

    @property
    def secret_status(self) -> SecretStatus | None:
        """The latest proof of sipwatch's jambonz secret (None until one was made)."""
        return self.engine.collector.secret_status

    async def check_secret(self) -> SecretStatus:
        """Prove sipwatch's jambonz secret against the database now (cached for the cache
        TTL).  Raises :class:`~sipwatch.diagnosis.db.DbError` when the database fails."""
        return await self.engine.collector.check_secret()

    async def close(self) -> None:
        if self.database is not None:
            await self.database.close()
        if self.redis is not None:
            await self.redis.close()


def build_runtime(
    settings: DiagnosisSettings, *, metrics: DiagnosisMetrics | None = None
) -> DiagnosisRuntime:
    """Load rules and open (lazily) the database and Redis handles the settings name."""
    rules = load_rules(settings.rules_dir or default_rules_dir())
    database: Database | None = None
    if settings.db_url:
        try:
            db_settings = replace(
                DbSettings.from_url(settings.db_url).with_timeouts(settings.db_timeout),
                connect_timeout=min(settings.db_connect_timeout, settings.db_timeout),
                pool_size=settings.db_pool_size,
            )
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
        database = Database(db_settings)
    redis: RegistrationStore | None = None
    if settings.redis_url:
        try:
            redis = RegistrationStore.from_url(settings.redis_url, timeout=settings.redis_timeout)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
    engine = DiagnosisEngine(
        rules,
        db=JambonzDb(database) if database else None,
        redis=redis,
        secret=settings.encryption_secret,
        registrar_flavour=settings.registrar_flavour,
        webhook_probes=settings.webhook_probes,
        cache_ttl=settings.cache_ttl,
        metrics=metrics,
        legacy_crypto=settings.legacy_crypto,
        probe_timeout=settings.probe_timeout,
        scanner_min_users=settings.scanner_min_users,
    )
    return DiagnosisRuntime(engine, database, redis)
