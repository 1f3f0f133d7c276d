"""The lifecycle the protocol fakes (``fake_docker``, ``fake_kube``) share: an aiohttp
server whose handlers die with their connection (``handler_cancellation``, like a Go
server's request context), every client connection dropped at once, and the listener
stopped and started again on the same address.  Each fake says only what it serves
(``_make_app``) and where it listens (``_make_site``)."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Self

from aiohttp import web


class FakeHttpServer:
    """``async with`` serves ``_make_app()`` on ``_make_site()``; the controls below
    simulate a crash (``drop_connections``) and an outage (``pause_api``/``resume_api``)."""

    _runner: web.AppRunner | None = None
    _site: web.BaseSite | None = None

    def _make_app(self) -> web.Application:
        raise NotImplementedError

    def _make_site(self, runner: web.AppRunner) -> web.BaseSite:
        raise NotImplementedError

    def _listening(self) -> None:
        """Called once the site listens (again)."""

    def _stopped(self) -> None:
        """Called once the site stopped listening (an outage, or the end)."""

    async def __aenter__(self) -> Self:
        self._runner = web.AppRunner(
            self._make_app(), handler_cancellation=True, shutdown_timeout=0.5
        )
        await self._runner.setup()
        await self._listen()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.drop_connections()
        if self._runner is not None:
            await self._runner.cleanup()
        self._stopped()

    async def _listen(self) -> None:
        assert self._runner is not None
        self._site = self._make_site(self._runner)
        await self._site.start()
        self._listening()

    async def drop_connections(self) -> None:
        """Close every client connection at once, mid-stream (a daemon crash, an apiserver
        restart, a load balancer reset)."""
        if self._runner is None or self._runner.server is None:
            return
        for handler in self._runner.server.connections:
            if handler.transport is not None:
                handler.transport.close()
        await asyncio.sleep(0)

    async def pause_api(self) -> None:
        """Stop listening and drop all connections (the API is unreachable)."""
        if self._site is not None:
            await self._site.stop()
            self._site = None
        self._stopped()
        await self.drop_connections()

    async def resume_api(self) -> None:
        """Listen again on the same address (the API is back; what it serves kept going)."""
        await self._listen()

    def connection_count(self) -> int:
        if self._runner is None or self._runner.server is None:
            return 0
        return len(self._runner.server.connections)
