"""Read jambonz registrations from Redis (@jambonz/mw-registrar layout).

``user:<user>@<host>`` holds the registration JSON (SETEX, TTL = the granted expires), and
the ``active-user`` sorted set scores ``user:<aor>`` with its expiry time in ms (current
mw-registrar only; legacy keeps no set).  jambonz uses no key prefix and db 0.

Redis is optional for diagnosis: every failure becomes :class:`RedisUnavailable` and the
Redis-based causes report ``unknown``.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sipwatch.diagnosis.error_kinds import DiagnosisErrorKind

if TYPE_CHECKING:
    import redis.asyncio as aioredis

ACTIVE_SET = "active-user"
_MAX_VALUE = 65536


class RedisUnavailable(Exception):
    """Redis did not answer (refused, timeout, auth, protocol error)."""

    kind = DiagnosisErrorKind.REDIS_UNAVAILABLE


def registration_key(aor: str) -> str:
    return f"user:{aor}"


def safe_redis_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or 6379
    except ValueError:
        return "redis://<unparseable>"
    auth = "***@" if parts.password or parts.username else ""
    return f"{parts.scheme}://{auth}{host}:{port}{parts.path}"


@dataclass(frozen=True)
class CachedRegistration:
    """What the registrar stored for an AOR (no secrets are stored there)."""

    aor: str
    contact: str | None
    proxy: str | None  # sip:<src_ip>:<src_port>: the checkCache shortcut compares this
    protocol: str | None
    expiry_time_ms: int | None  # absent on legacy mw-registrar
    ttl_seconds: float | None
    in_active_set: bool

    @property
    def proxy_ip(self) -> str | None:
        if not self.proxy:
            return None
        hostport = self.proxy.removeprefix("sip:")
        if hostport.startswith("["):
            return hostport[1 : hostport.find("]")] if "]" in hostport else None
        return hostport.rsplit(":", 1)[0] if ":" in hostport else hostport


def _text(value: Any) -> str | None:
    if value is None:
        return None
    s = str(value)
    return s[:512]


class RegistrationStore:
    """Registration lookups with a hard deadline per call."""

    def __init__(
        self, client: aioredis.Redis, *, timeout: float = 2.0, where: str = "redis"
    ) -> None:
        self._client = client
        self._timeout = timeout
        self.where = where

    @classmethod
    def from_url(cls, url: str, *, timeout: float = 2.0) -> RegistrationStore:
        # imported with the first store: a replay without Redis never pays for redis-py
        import redis.asyncio as aioredis
        from redis.exceptions import RedisError

        try:
            client = aioredis.from_url(
                url,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                decode_responses=False,
                retry_on_timeout=False,
            )
        except (ValueError, RedisError) as exc:
            raise ValueError(f"invalid Redis URL {safe_redis_url(url)}: {exc}") from None
        return cls(client, timeout=timeout, where=safe_redis_url(url))

    async def lookup(self, aor: str) -> CachedRegistration | None:
        """The cached registration of ``aor`` or None; raises :class:`RedisUnavailable`."""
        from redis.exceptions import RedisError  # loaded already: the client is redis-py's

        key = registration_key(aor)
        try:
            key_bytes = key.encode("utf-8")
        except UnicodeEncodeError:
            return None  # jambonz could never have written such a key
        try:
            async with asyncio.timeout(self._timeout + 0.5):
                async with self._client.pipeline(transaction=False) as pipe:
                    pipe.get(key_bytes)
                    pipe.pttl(key_bytes)
                    pipe.zscore(ACTIVE_SET, key_bytes)
                    raw, pttl, score = await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            detail = "no answer in time" if isinstance(exc, TimeoutError) else type(exc).__name__
            raise RedisUnavailable(f"{self.where}: {detail}") from None
        if raw is None:
            return None
        data: dict[str, Any] = {}
        if isinstance(raw, bytes) and len(raw) <= _MAX_VALUE:
            try:
                parsed = json.loads(raw.decode("utf-8", "replace"))
                if isinstance(parsed, dict):
                    data = parsed
            except ValueError:
                data = {}
        expiry = data.get("expiryTime")
        return CachedRegistration(
            aor=aor,
            contact=_text(data.get("contact")),
            proxy=_text(data.get("proxy")),
            protocol=_text(data.get("protocol")),
            expiry_time_ms=int(expiry) if isinstance(expiry, (int, float)) else None,
            ttl_seconds=(pttl / 1000.0) if isinstance(pttl, int) and pttl >= 0 else None,
            in_active_set=score is not None,
        )

    async def close(self) -> None:
        await self._client.aclose()
