"""The HTTP port under slow, idle and surplus connections, with TLS and basic auth, over real
sockets on loopback (bounded counts, short timeouts)."""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import bcrypt
import pytest

from sipwatch.metrics import SipwatchMetrics
from sipwatch.pipeline.failures import FailureTracker
from sipwatch.web.app import make_app
from sipwatch.web.auth import WebConfigError, load_web_config
from sipwatch.web.server import RateLimitedAcceptErrors, start_http
from tests.cli_support import run_cli
from tests.tls_support import make_certificate

ROOT = Path(__file__).resolve().parent.parent


async def serve(port: int, **kw: object) -> aiohttp.web.AppRunner:
    users = kw.pop("users", None)
    metrics = SipwatchMetrics(process_metrics=False)
    app = make_app(metrics, FailureTracker(), lambda: {"x": True}, users=users)  # type: ignore[arg-type]
    return await start_http(app, "127.0.0.1", port, **kw)  # type: ignore[arg-type]


async def get(url: str, **kw: object) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(url, **kw) as r:  # type: ignore[arg-type]
        return r.status, await r.text()


async def test_slow_and_idle_connections_are_closed_after_the_idle_timeout(
    unused_tcp_port: int,
) -> None:
    runner = await serve(unused_tcp_port, idle_timeout=1.0)
    try:
        conns = []
        for _ in range(20):
            reader, writer = await asyncio.open_connection("127.0.0.1", unused_tcp_port)
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # headers never finished
            conns.append((reader, writer))
        async with asyncio.timeout(10):
            for reader, _writer in conns:
                assert await reader.read() == b""  # the server hung up
        assert (await get(f"http://127.0.0.1:{unused_tcp_port}/healthz"))[0] == 200
    finally:
        await runner.cleanup()


async def test_connections_beyond_the_cap_get_503_and_healthz_recovers(
    unused_tcp_port: int,
) -> None:
    refused: list[int] = []
    runner = await serve(
        unused_tcp_port, max_connections=8, idle_timeout=1.5, on_refused=lambda: refused.append(1)
    )
    try:
        holders = [await asyncio.open_connection("127.0.0.1", unused_tcp_port) for _ in range(8)]
        await asyncio.sleep(0.1)
        extra = [await asyncio.open_connection("127.0.0.1", unused_tcp_port) for _ in range(12)]
        async with asyncio.timeout(5):
            answers = [await r.read() for r, _w in extra]
        assert all(a.startswith(b"HTTP/1.1 503") for a in answers)
        assert len(refused) == 12
        async with asyncio.timeout(10):  # the idle holders are closed, the port serves again
            for r, _w in holders:
                await r.read()
        assert (await get(f"http://127.0.0.1:{unused_tcp_port}/healthz"))[0] == 200
    finally:
        await runner.cleanup()


@pytest.fixture
def web_config(tmp_path: Path) -> Path:
    make_certificate(tmp_path, "localhost", cert_name="tls.crt", key_name="tls.key")
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode().replace("$2b$", "$2y$")
    path = tmp_path / "web-config.yml"
    path.write_text(
        "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n"
        f"basic_auth_users:\n  prometheus: {hashed}\n"
    )
    return path


@pytest.fixture
async def secured(
    web_config: Path, unused_tcp_port: int
) -> AsyncIterator[tuple[str, ssl.SSLContext]]:
    config = load_web_config(web_config)
    runner = await serve(unused_tcp_port, users=config.users, ssl_context=config.ssl_context)
    client = ssl.create_default_context(cafile=str(web_config.parent / "tls.crt"))
    try:
        yield f"https://localhost:{unused_tcp_port}", client
    finally:
        await runner.cleanup()


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def test_tls_and_basic_auth(secured: tuple[str, ssl.SSLContext]) -> None:
    url, client = secured
    assert (await get(f"{url}/metrics", ssl=client))[0] == 401
    assert (await get(f"{url}/api/failures", ssl=client))[0] == 401
    assert (await get(f"{url}/metrics", ssl=client, headers=basic("prometheus", "x")))[0] == 401
    assert (await get(f"{url}/metrics", ssl=client, headers=basic("nobody", "s3cret")))[0] == 401
    status, body = await get(f"{url}/metrics", ssl=client, headers=basic("prometheus", "s3cret"))
    assert status == 200 and "sipwatch_build_info" in body
    # probes need no credentials (they learn only up/down)
    assert (await get(f"{url}/healthz", ssl=client))[0] == 200
    with pytest.raises(aiohttp.ClientError):  # no plain HTTP on a TLS port
        await get(url.replace("https", "http") + "/healthz")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("basic_auth_users:\n  a: plaintext\n", "expected a bcrypt hash"),
        ("tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n", "cannot load"),
        ("bogus: 1\n", "unknown key"),
        ("tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: SSL3\n", "TLS12"),
    ],
)
def test_bad_web_config_is_a_located_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "web.yml"
    path.write_text(text)
    with pytest.raises(WebConfigError, match=message):
        load_web_config(path)
    proc = run_cli(
        "check-config",
        env={"SIPWATCH_WEB_CONFIG_FILE": str(path), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert proc.returncode == 2
    assert "metrics.web_config_file" in proc.stderr and str(path) in proc.stderr


def test_port_in_use_names_the_address_and_exits_2(unused_tcp_port: int, tmp_path: Path) -> None:
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", unused_tcp_port))
        holder.listen()
        config = tmp_path / "sipwatch.toml"
        config.write_text(
            f'[metrics]\nlisten = "127.0.0.1:{unused_tcp_port}"\n[sources.docker]\nenabled = false\n'
        )
        proc = run_cli("run", "--config", str(config), timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert f"cannot listen on 127.0.0.1:{unused_tcp_port}: address already in use" in proc.stderr
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr


def test_accept_errors_are_logged_once_per_interval() -> None:
    now = [0.0]
    limiter = RateLimitedAcceptErrors(interval=60.0, clock=lambda: now[0])

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, msg, None, None)

    accept = "socket.accept() out of system resource"
    passed = [limiter.filter(record(accept)) for _ in range(1000)]
    assert passed.count(True) == 1
    assert limiter.filter(record("something else")) is True  # other asyncio lines untouched
    now[0] = 61.0
    late = record(accept)
    assert limiter.filter(late) is True
    assert "(999 more suppressed)" in str(late.msg)
