"""Real local endpoints for alert delivery tests.

* ``HttpReceiver``: an aiohttp server on 127.0.0.1 that records every JSON POST and answers
  according to a programmable script ("ok", "500", "hang"), for apprise ``json://`` URLs.
* ``SmtpReceiver``: an aiosmtpd server on 127.0.0.1 collecting messages, for ``mailto://``.
* ``SlackEndpoint``: the native Slack webhook URL (``https://hooks.slack.com/services/...``)
  delivered to a local TLS server: an HTTP CONNECT proxy (``HTTPS_PROXY``) tunnels apprise's
  request to an aiohttp HTTPS server whose self-signed certificate for hooks.slack.com is
  trusted through ``REQUESTS_CA_BUNDLE``.  Nothing in apprise is patched: the exact URL an
  operator configures goes through apprise's real Slack plugin, requests, TLS and a proxy.

All servers bind port 0 and are used as async context managers.  The helpers at the end
build alert configurations and inputs the way the alert tests need them.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import os
import ssl
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session

from sipwatch.alerts import AlertInput, AlertManager
from sipwatch.config import AlertsConfig, AlertTargetConfig, Secret
from tests.tls_support import make_certificate

HANG_SECONDS = 60.0


@dataclass
class Received:
    at: float  # time.monotonic() when the request arrived
    path: str
    payload: Any
    headers: dict[str, str]
    answered: str  # the behaviour applied: "ok", "500" or "hang"


class HttpReceiver:
    """Records POSTed JSON; answers per ``script`` (consumed in order), then ``default``."""

    def __init__(self, default: str = "ok", *, tls: ssl.SSLContext | None = None) -> None:
        self.default = default
        self.script: list[str] = []
        self.outage_until = 0.0  # time.monotonic() before which ``outage`` is answered
        self.outage = "500"
        self.received: list[Received] = []
        self._tls = tls
        self._arrived = asyncio.Condition()
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    def program(self, behaviours: Iterable[str]) -> None:
        self.script.extend(behaviours)

    def fail_for(self, seconds: float, behaviour: str = "500") -> None:
        """Answer every request with ``behaviour`` for the next ``seconds``, then as before."""
        self.outage_until = time.monotonic() + seconds
        self.outage = behaviour

    @property
    def delivered(self) -> list[Received]:
        """Requests answered with 200."""
        return [r for r in self.received if r.answered == "ok"]

    def url(self, path: str = "/hook", query: str = "") -> str:
        q = f"?{query}" if query else ""
        return f"json://127.0.0.1:{self.port}{path}{q}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if time.monotonic() < self.outage_until:
            behaviour = self.outage
        else:
            behaviour = self.script.pop(0) if self.script else self.default
        try:
            payload: Any = await request.json()
        except ValueError:
            payload = await request.text()
        self.received.append(
            Received(time.monotonic(), request.path, payload, dict(request.headers), behaviour)
        )
        async with self._arrived:
            self._arrived.notify_all()
        if behaviour == "hang":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), HANG_SECONDS)
            return web.Response(status=504)
        if behaviour == "500":
            return web.Response(status=500, text="boom")
        return web.Response(status=200, text="ok")

    async def wait_for(self, count: int, timeout: float = 10.0, *, delivered: bool = True) -> None:
        """Until ``count`` requests (answered 200 if ``delivered``) have arrived."""

        def enough() -> bool:
            return len(self.delivered if delivered else self.received) >= count

        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(enough)

    async def __aenter__(self) -> HttpReceiver:
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._tls)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()


class _Collector:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.arrived = asyncio.Event()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content
        data = raw if isinstance(raw, bytes) else str(raw).encode()
        msg = email.message_from_bytes(data, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        self.messages.append(msg)
        self.envelopes.append((str(envelope.mail_from), list(envelope.rcpt_tos)))
        self.arrived.set()
        return "250 OK"


class SmtpReceiver:
    """A plain-SMTP server (no TLS, no AUTH) on 127.0.0.1 running in the test's loop."""

    def __init__(self) -> None:
        self._collector = _Collector()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def messages(self) -> list[EmailMessage]:
        return self._collector.messages

    @property
    def envelopes(self) -> list[tuple[str, list[str]]]:
        return self._collector.envelopes

    def url(self, to: str = "oncall@example.com", sender: str = "sipwatch@example.com") -> str:
        # No user/password and the plain "mailto" scheme: apprise picks its "insecure" mode
        # (no STARTTLS, no SSL) and uses the host/port as the SMTP server.
        return f"mailto://127.0.0.1:{self.port}?from={sender}&to={to}"

    async def wait_for(self, count: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.messages) < count:
                self._collector.arrived.clear()
                await self._collector.arrived.wait()

    async def __aenter__(self) -> SmtpReceiver:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SMTP(self._collector, hostname="sipwatch-test.local"), "127.0.0.1", 0
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)


def html_part(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("html",))
    assert part is not None, "no text/html part"
    return str(part.get_content())


# --- native Slack webhook through a CONNECT proxy -------------------------------------------


@dataclass
class SlackEndpoint:
    """Context manager: while active, HTTPS to hooks.slack.com lands in ``receiver``."""

    directory: Path
    receiver: HttpReceiver = field(init=False)
    connects: list[bytes] = field(default_factory=list)
    _proxy: asyncio.Server | None = None
    _saved_env: dict[str, str | None] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def _tunnel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            self.connects.append(head.split(b"\r\n", 1)[0])
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.receiver.port)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()

            async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
                try:
                    while data := await src.read(65536):
                        dst.write(data)
                        await dst.drain()
                finally:
                    dst.close()

            await asyncio.gather(
                pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True
            )
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            writer.close()

    def _track(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._tunnel(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def __aenter__(self) -> SlackEndpoint:
        cert, key = make_certificate(self.directory, "hooks.slack.com")
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(cert, key)
        self.receiver = HttpReceiver(tls=tls)
        await self.receiver.__aenter__()
        self._proxy = await asyncio.start_server(self._track, "127.0.0.1", 0)
        proxy_port = self._proxy.sockets[0].getsockname()[1]
        env = {
            "HTTPS_PROXY": f"http://127.0.0.1:{proxy_port}",
            "https_proxy": f"http://127.0.0.1:{proxy_port}",
            "REQUESTS_CA_BUNDLE": str(cert),
            "NO_PROXY": "",
            "no_proxy": "",
        }
        for k, v in env.items():
            self._saved_env[k] = os.environ.get(k)
            os.environ[k] = v
        return self

    async def __aexit__(self, *exc: object) -> None:
        for k, old in self._saved_env.items():
            if old is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = old
        if self._proxy is not None:
            self._proxy.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.receiver.__aexit__()


# --- small helpers shared by the alert tests ---------------------------------------------------


class RecordingMetrics:
    """Implements ``observe_alert`` like ``SipwatchMetrics`` and remembers every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def observe_alert(self, target: str, result: str) -> None:
        self.calls.append((target, result))

    def count(self, target: str, result: str) -> int:
        return self.calls.count((target, result))


def target(name: str, url: str, **kw: Any) -> AlertTargetConfig:
    return AlertTargetConfig(name=name, url=Secret(url), **kw)


def config(*targets: AlertTargetConfig, **kw: Any) -> AlertsConfig:
    """Alerts configuration for tests: no group wait (a FakeClock never reaches it)."""
    values: dict[str, Any] = {
        "throttle_seconds": 900.0,
        "group_wait_seconds": 0.0,
        "group_window_seconds": 0.0,
        "retry_max": 2,
        "timeout_seconds": 5.0,
    }
    values.update(kw)
    return AlertsConfig(targets=tuple(targets), **values)


def registration(user: str = "alice", **kw: Any) -> AlertInput:
    values: dict[str, Any] = {
        "kind": "registration",
        "severity": "critical",
        "cause_id": "client_missing",
        "summary": f"{user}@acme.example.com is not a client in jambonz",
        "user": user,
        "domain": "acme.example.com",
        "source_ip": "203.0.113.7",
        "status": 403,
        "evidence": {"clients row": "absent"},
        "fix_steps": ("Create the SIP client in the jambonz portal.",),
        "fix_command": "mysql jambonz -e 'SELECT 1'",
    }
    values.update(kw)
    return AlertInput(**values)


def scanner(ip: str, user: str = "", **kw: Any) -> AlertInput:
    """A scanner alert: ``user`` "" is the scanner's per-IP record (``distinct_users`` set)."""
    values: dict[str, Any] = {
        "kind": "security",
        "severity": "warning",
        "cause_id": "scanner",
        "summary": f"Requests from {ip} look like an attack",
        "user": user,
        "domain": "203.0.113.1" if user else "",
        "source_ip": ip,
        "status": 403,
        "user_agent": "friendly-scanner",
        "fix_steps": ("Block the address at the firewall.",),
    }
    values.update(kw)
    return AlertInput(**values)


@contextlib.asynccontextmanager
async def running(cfg: AlertsConfig, **kw: Any) -> AsyncIterator[AlertManager]:
    manager = AlertManager(cfg, backoff_base=0.05, backoff_max=0.2, **kw)
    await manager.start()
    try:
        yield manager
    finally:
        await manager.stop(timeout=3)


async def settle(seconds: float = 0.3) -> None:
    """Give a worker time to send something it should not send."""
    await asyncio.sleep(seconds)
