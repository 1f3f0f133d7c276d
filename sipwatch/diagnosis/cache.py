"""A bounded TTL cache with single-flight loading.

A flood of failing REGISTERs for the same (user, realm) must cost one database round trip per
TTL, not one per packet: concurrent callers for the same key wait for the first caller's load.
Keys are hashed so a 10 kB attacker username costs 16 bytes of key memory; the entry count is
capped (least recently used first out).  Failures are not cached (the database handle has its
own fail-fast window).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


def _hash_key(parts: tuple[object, ...]) -> bytes:
    raw = repr(parts).encode("utf-8", "backslashreplace")
    return hashlib.blake2b(raw, digest_size=16).digest()


class TtlCache:
    def __init__(self, ttl: float, max_entries: int = 4096) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._data: OrderedDict[bytes, tuple[float, Any]] = OrderedDict()
        self._inflight: dict[bytes, asyncio.Future[Any]] = {}
        self.hits = 0
        self.loads = 0

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        self._data.clear()

    async def get_or_load(self, parts: tuple[object, ...], loader: Callable[[], Awaitable[T]]) -> T:
        if self.ttl <= 0:
            self.loads += 1
            return await loader()
        key = _hash_key(parts)
        hit = self._data.get(key)
        if hit is not None and hit[0] > time.monotonic():
            self._data.move_to_end(key)
            self.hits += 1
            value: T = hit[1]
            return value
        pending = self._inflight.get(key)
        if pending is not None:
            try:
                shared: T = await asyncio.shield(pending)
                self.hits += 1
                return shared
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                # The loading caller was cancelled, not us: load ourselves below.
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            self.loads += 1
            value = await loader()
        except asyncio.CancelledError:
            fut.cancel()
            raise
        except Exception as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: nobody may be waiting
            raise
        finally:
            if self._inflight.get(key) is fut:
                del self._inflight[key]
        fut.set_result(value)
        self._data[key] = (time.monotonic() + self.ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)
        return value
