"""Registration lookups against the real Redis (dedicated logical DB, own keys only)."""

from __future__ import annotations

import time

import pytest

from sipwatch.diagnosis.redis_store import (
    RedisUnavailable,
    RegistrationStore,
    safe_redis_url,
)
from tests.jambonz_db import RedisSeeder, closed_port, unique_realm


async def test_current_registration_is_found(
    redis_seeder: RedisSeeder, registration_store: RegistrationStore
) -> None:
    aor = f"alice@{unique_realm()}"
    await redis_seeder.register(aor, proxy="sip:198.51.100.7:61000", expires=600)
    reg = await registration_store.lookup(aor)
    assert reg is not None
    assert reg.proxy == "sip:198.51.100.7:61000" and reg.proxy_ip == "198.51.100.7"
    assert reg.protocol == "udp"
    assert reg.in_active_set is True
    assert reg.expiry_time_ms is not None and reg.expiry_time_ms > time.time() * 1000
    assert reg.ttl_seconds is not None and 590 < reg.ttl_seconds <= 600


async def test_legacy_registration_has_no_active_set(
    redis_seeder: RedisSeeder, registration_store: RegistrationStore
) -> None:
    aor = f"bob@{unique_realm()}"
    await redis_seeder.register(aor, legacy=True)
    reg = await registration_store.lookup(aor)
    assert reg is not None and reg.in_active_set is False and reg.expiry_time_ms is None


async def test_unregistered_and_unencodable_aors(registration_store: RegistrationStore) -> None:
    assert await registration_store.lookup(f"nobody@{unique_realm()}") is None
    assert await registration_store.lookup("bad\udcff@x") is None
    assert await registration_store.lookup(("u" * 10000) + "@" + unique_realm()) is None


async def test_unreachable_redis_raises_redis_unavailable() -> None:
    store = RegistrationStore.from_url(
        f"redis://:sekret-pw@127.0.0.1:{closed_port()}/0", timeout=0.5
    )
    try:
        with pytest.raises(RedisUnavailable) as info:
            await store.lookup("a@b")
        assert "sekret-pw" not in str(info.value)
    finally:
        await store.close()


def test_safe_redis_url_masks_password() -> None:
    assert safe_redis_url("redis://:pw@h:6380/2") == "redis://***@h:6380/2"
    assert safe_redis_url("redis://h") == "redis://h:6379"
