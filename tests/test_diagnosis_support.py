"""Settings precedence, registrar flavour detection and the single-flight TTL cache."""

from __future__ import annotations

import asyncio

import pytest

from sipwatch.diagnosis.cache import TtlCache
from sipwatch.diagnosis.flavour import (
    flavour_from_image,
    flavour_from_log_message,
)
from sipwatch.diagnosis.settings import (
    DiagnosisSettings,
    SettingsError,
    settings_from_config,
)


def test_settings_precedence_cli_env_config() -> None:
    config = {"db_url": "mysql://c@h/c", "redis_url": "redis://c", "registrar_flavour": "legacy"}
    env = {"SIPWATCH_DB_URL": "mysql://e@h/e", "SIPWATCH_JAMBONZ_ENCRYPTION_SECRET": "s3cret!"}
    s = DiagnosisSettings.resolve(cli={"db_url": "mysql://cli@h/x"}, env=env, config=config)
    assert s.db_url == "mysql://cli@h/x"
    assert s.redis_url == "redis://c" and s.registrar_flavour == "legacy"
    assert s.encryption_secret == "s3cret!"
    assert "s3cret" not in repr(s) and "cli@h" not in repr(s)
    s = DiagnosisSettings.resolve(env=env, config=config)
    assert s.db_url == "mysql://e@h/e"


def test_settings_secrets_and_validation() -> None:
    s = DiagnosisSettings.resolve(
        env={
            "SIPWATCH_DB_URL": "mysql://u:p%40ss@h/db",
            "SIPWATCH_REDIS_URL": "redis://:rpw@h:6379/0",
            "SIPWATCH_JAMBONZ_ENCRYPTION_SECRET": "enc",
            "SIPWATCH_WEBHOOK_PROBES": "off",
            "SIPWATCH_JAMBONZ_LEGACY_CRYPTO": "1",
        }
    )
    assert set(s.secrets()) == {"p%40ss", "p@ss", "rpw", "enc"}
    assert s.webhook_probes is False and s.legacy_crypto is True
    with pytest.raises(SettingsError, match="flavour"):
        DiagnosisSettings.resolve(env={"SIPWATCH_REGISTRAR_FLAVOUR": "kamailio"})
    with pytest.raises(SettingsError, match="unknown"):
        DiagnosisSettings.resolve(config={"db_uri": "x"})
    with pytest.raises(SettingsError, match="true or false"):
        DiagnosisSettings.resolve(env={"SIPWATCH_WEBHOOK_PROBES": "sometimes"})


def test_settings_from_the_sipwatch_config_file() -> None:
    from sipwatch.config import parse_config

    config = parse_config(
        "[database]\n"
        'url = "mysql://sw:db-pw-1@db:3306/jambones"\n'
        "read_timeout = 7\n"
        "[redis]\n"
        'url = "redis://redis:6379/0"\n'
        "[jambonz]\n"
        'encryption_secret = "enc-secret-1"\n'
        'registrar_flavour = "legacy"\n'
        "[diagnosis]\n"
        "webhook_probes = true\n"
        "cache_ttl_seconds = 12\n"
        "scanner_distinct_users = 8\n"
    )
    s = settings_from_config(config, env={"SIPWATCH_JAMBONZ_LEGACY_CRYPTO": "1"})
    assert s.db_url == "mysql://sw:db-pw-1@db:3306/jambones"
    assert s.redis_url == "redis://redis:6379/0"
    assert s.encryption_secret == "enc-secret-1" and s.legacy_crypto is True
    assert s.registrar_flavour == "legacy" and s.webhook_probes is True
    assert (s.cache_ttl, s.db_timeout, s.scanner_min_users) == (12.0, 7.0, 8)
    assert set(s.secrets()) == {"db-pw-1", "enc-secret-1"}
    s = settings_from_config(
        config, cli={"db_url": "mysql://x@h/y", "webhook_probes": False, "registrar_flavour": None}
    )
    assert s.db_url == "mysql://x@h/y" and s.webhook_probes is False
    assert s.registrar_flavour == "legacy"


@pytest.mark.parametrize(
    ("image", "flavour"),
    [
        ("jambonz/sbc-sip-sidecar:0.9.6", "sidecar"),
        ("docker.io/jambonz/sbc-registrar:latest", "legacy"),
        ("jambonz/sbc-registrar@sha256:abc", "legacy"),
        ("drachtio/drachtio-server:latest", None),
        (None, None),
    ],
)
def test_flavour_from_image(image: str | None, flavour: str | None) -> None:
    assert flavour_from_image(image) == flavour


def test_flavour_from_log() -> None:
    assert (
        flavour_from_log_message(
            "connected to drachtio listening on 1.2.3.4:5060, local hostports: udp/1.2.3.4:5060"
        )
        == "sidecar"
    )
    assert flavour_from_log_message("sbc public ip addresses") == "sidecar"
    assert flavour_from_log_message("successfully added a@b to redis, sending 200 OK") == "legacy"
    assert flavour_from_log_message("connected to drachtio listening on 1.2.3.4:5060") is None


async def test_cache_single_flight_and_ttl() -> None:
    cache = TtlCache(ttl=0.2, max_entries=3)
    calls = 0

    async def load() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return calls

    results = await asyncio.gather(*(cache.get_or_load(("k",), load) for _ in range(50)))
    assert results == [1] * 50 and calls == 1
    await asyncio.sleep(0.25)
    assert await cache.get_or_load(("k",), load) == 2
    for i in range(5):
        await cache.get_or_load((i,), load)
    assert len(cache) == 3


async def test_cache_does_not_keep_failures_and_survives_cancelled_leader() -> None:
    cache = TtlCache(ttl=10)

    async def boom() -> int:
        raise RuntimeError("db down")

    with pytest.raises(RuntimeError):
        await cache.get_or_load(("k",), boom)

    async def ok() -> int:
        return 7

    assert await cache.get_or_load(("k",), ok) == 7

    started = asyncio.Event()

    async def slow() -> int:
        started.set()
        await asyncio.sleep(10)
        return 1

    leader = asyncio.create_task(cache.get_or_load(("s",), slow))
    await started.wait()
    follower = asyncio.create_task(cache.get_or_load(("s",), ok))
    await asyncio.sleep(0)
    leader.cancel()
    assert await follower == 7


async def test_cache_key_memory_is_bounded_for_huge_keys() -> None:
    cache = TtlCache(ttl=10)

    async def ok() -> int:
        return 1

    await cache.get_or_load(("u" * 100_000, "realm"), ok)
    [key] = list(cache._data)
    assert len(key) == 16
