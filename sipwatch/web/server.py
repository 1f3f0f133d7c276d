"""Serving the HTTP endpoints safely: bounded connections, idle timeouts, optional TLS.

The metrics port faces a network.  aiohttp alone keeps an idle or half-sent connection for
its keep-alive timeout (75 s by default) and accepts connections without limit, so 200
slowloris connections held the port for a minute, and at the file descriptor limit asyncio's
accept loop logged ``socket.accept() out of system resource`` hundreds of thousands of times.
So:

* ``idle_timeout``: a connection that has not delivered a complete request (or sits idle
  between requests) this long is closed - aiohttp's keep-alive timer runs from the moment a
  connection is accepted, so it doubles as a header timeout;
* ``max_connections``: connections beyond the cap are answered ``503`` and closed at once,
  so sipwatch never holds more sockets for HTTP than that (the cap stays far below the unit's
  ``LimitNOFILE``, leaving descriptors for the log sources and the database);
* asyncio's accept-error line is rate-limited (``RateLimitedAcceptErrors``).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable

from aiohttp import web

DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_IDLE_TIMEOUT = 10.0
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 21\r\nConnection: close\r\n"
    b"Retry-After: 1\r\n\r\ntoo many connections\n"
)


class _Refuse(asyncio.Protocol):
    """Answers 503 and hangs up: a connection over the cap costs one write."""

    def __init__(self, on_refused: Callable[[], None] | None) -> None:
        self._on_refused = on_refused

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(_BUSY)
        transport.close()
        if self._on_refused is not None:
            self._on_refused()


class CappedSite(web.BaseSite):
    """A TCP site that refuses connections beyond ``max_connections``."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        ssl_context: ssl.SSLContext | None = None,
        on_refused: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self._host = host
        self._port = port
        self._max = max_connections
        self._on_refused = on_refused

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None

        def protocol() -> asyncio.Protocol:
            if len(server.connections) >= self._max:
                return _Refuse(self._on_refused)
            return server()

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            protocol,
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=128,
            reuse_address=True,
        )


class RateLimitedAcceptErrors(logging.Filter):
    """Let asyncio's "socket.accept() out of system resource" through once per ``interval``.

    asyncio logs it on every failed accept, at ERROR, with a traceback; at the descriptor
    limit that is thousands of lines a second (143 MB of log in 40 s was seen).  The next line
    let through says how many were suppressed."""

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic):
        super().__init__("asyncio")
        self.interval = interval
        self._clock = clock
        self._next = 0.0
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("socket.accept() out of system resource"):
            return True
        now = self._clock()
        if now < self._next:
            self.suppressed += 1
            return False
        self._next = now + self.interval
        if self.suppressed:
            record.msg = f"{record.msg} ({self.suppressed} more suppressed)"
            self.suppressed = 0
        return True


def install_accept_error_limiter() -> RateLimitedAcceptErrors:
    """Attach the limiter to asyncio's logger once (idempotent)."""
    logger = logging.getLogger("asyncio")
    for existing in logger.filters:
        if isinstance(existing, RateLimitedAcceptErrors):
            return existing
    limiter = RateLimitedAcceptErrors()
    logger.addFilter(limiter)
    return limiter


async def start_http(
    app: web.Application,
    host: str,
    port: int,
    *,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    ssl_context: ssl.SSLContext | None = None,
    on_refused: Callable[[], None] | None = None,
) -> web.AppRunner:
    """Serve ``app`` on host:port; ``runner.addresses`` gives the bound address.

    Raises OSError when the address cannot be bound (in use, not local, no permission)."""
    install_accept_error_limiter()
    runner = web.AppRunner(app, keepalive_timeout=idle_timeout)
    await runner.setup()
    site = CappedSite(
        runner,
        host,
        port,
        max_connections=max_connections,
        ssl_context=ssl_context,
        on_refused=on_refused,
    )
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner
