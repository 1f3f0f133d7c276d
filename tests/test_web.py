"""The aiohttp app over real sockets: /metrics, /healthz, /readyz, /api/failures."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sipwatch.metrics import USER_FAILURES, SipwatchMetrics
from sipwatch.model import AttemptOutcome
from sipwatch.pipeline.failures import FailureTracker
from sipwatch.web.app import MAX_LIMIT, make_app
from sipwatch.web.server import start_http
from tests.samples import FakeClock, attempt, transaction

T0 = 1767268800.0


@dataclass
class Server:
    url: str
    metrics: SipwatchMetrics
    failures: FailureTracker
    sources: dict[str, bool]
    clock: FakeClock
    session: aiohttp.ClientSession


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    clock = FakeClock()
    metrics = SipwatchMetrics(top_n=5, series_ttl=900.0, clock=clock)
    failures = FailureTracker()
    sources: dict[str, bool] = {}
    readiness: Callable[[], dict[str, bool]] = lambda: dict(sources)  # noqa: E731
    runner = await start_http(make_app(metrics, failures, readiness), "127.0.0.1", 0)
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession() as session:
            yield Server(f"http://{host}:{port}", metrics, failures, sources, clock, session)
    finally:
        await runner.cleanup()


async def test_metrics_text_format(server: Server) -> None:
    server.metrics.observe_lines("drachtio", 42)
    async with server.session.get(server.url + "/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        body = await resp.text()
    families = {f.name: f for f in text_string_to_metric_families(body)}
    lines = families["sipwatch_log_lines"]
    assert [(s.labels, s.value) for s in lines.samples] == [({"source": "drachtio"}, 42.0)]


async def test_metrics_openmetrics_negotiation(server: Server) -> None:
    server.metrics.observe_transaction(transaction())
    headers = {"Accept": "application/openmetrics-text; version=1.0.0"}
    async with server.session.get(server.url + "/metrics", headers=headers) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
        body = await resp.text()
    assert body.endswith("# EOF\n")
    assert "# UNIT sipwatch_register_latency_seconds seconds" in body
    assert "_created" not in body


async def test_metrics_scrape_expires_stale_user_series(server: Server) -> None:
    server.metrics.observe_attempt(attempt(to_user="stale"))
    async with server.session.get(server.url + "/metrics") as resp:
        assert 'user="stale@acme.example.com"' in await resp.text()
    server.clock.now += 901
    async with server.session.get(server.url + "/metrics") as resp:
        body = await resp.text()
    assert 'user="stale@acme.example.com"' not in body
    assert USER_FAILURES in body  # the "other"-free family is still described


async def test_healthz(server: Server) -> None:
    async with server.session.get(server.url + "/healthz") as resp:
        assert resp.status == 200
        assert await resp.text() == "ok\n"


async def test_readyz_reports_sources(server: Server) -> None:
    async with server.session.get(server.url + "/readyz") as resp:
        assert resp.status == 503
        assert (await resp.json())["reason"] == "no sources registered"

    server.sources.update({"drachtio": True, "registrar": False})
    async with server.session.get(server.url + "/readyz") as resp:
        assert resp.status == 503
        body = await resp.json()
    assert body == {
        "ready": False,
        "sources": {"drachtio": True, "registrar": False},
        "down": {"registrar": "down"},
    }

    server.sources["registrar"] = True
    async with server.session.get(server.url + "/readyz") as resp:
        assert resp.status == 200
        assert (await resp.json())["ready"] is True


async def test_readyz_with_metrics_source_status(server: Server) -> None:
    """SipwatchMetrics.source_status is a ready-made readiness callable."""
    metrics = SipwatchMetrics()
    metrics.set_source_up("drachtio", False)
    runner = await start_http(
        make_app(metrics, FailureTracker(), metrics.source_status), "127.0.0.1", 0
    )
    host, port = runner.addresses[0][:2]
    try:
        async with server.session.get(f"http://{host}:{port}/readyz") as resp:
            assert resp.status == 503
        metrics.set_source_up("drachtio", True)
        async with server.session.get(f"http://{host}:{port}/readyz") as resp:
            assert resp.status == 200
    finally:
        await runner.cleanup()


async def test_api_failures_lists_unresolved_records(server: Server) -> None:
    ft = server.failures
    for i in range(3):
        ft.observe_transaction(transaction(to_user="alice", finished=T0 + i))
    ft.observe_transaction(transaction(to_user="bob", status=0, timed_out=True, x_reason=""))
    ft.observe_transaction(transaction(to_user="carol", finished=T0 + 1))
    ft.observe_attempt(
        attempt(to_user="carol", outcome=AttemptOutcome.SUCCESS, status=200, finished=T0 + 2)
    )
    async with server.session.get(server.url + "/api/failures?state=open") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("application/json")
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        body = await resp.json()
    assert body["total"] == body["open"] == 2
    assert body["dropped"] == 0
    first, second = body["failures"]
    assert first == {
        "side": "inbound",
        "user": "alice",
        "domain": "acme.example.com",
        "source_ip": "203.0.113.5",
        "status": 403,
        "x_reason": "Invalid credentials",
        "count": 3,
        "first_seen": T0,
        "last_seen": T0 + 2,
        "challenged": True,
        "user_agent": "Yealink SIP-T46S",
        "resolved_at": None,
        "scanner": False,
        "distinct_users": 0,
        "cause": None,
    }
    assert second["user"] == "bob"
    assert second["status"] == "timeout"

    # by default the groups that registered again stay listed, after the open ones, with
    # the log time of the success that resolved them
    async with server.session.get(server.url + "/api/failures") as resp:
        body = await resp.json()
    assert (body["total"], body["open"]) == (3, 2)
    assert [f["user"] for f in body["failures"]] == ["alice", "bob", "carol"]
    assert body["failures"][2]["resolved_at"] == T0 + 2
    async with server.session.get(server.url + "/api/failures?state=resolved") as resp:
        assert [f["user"] for f in (await resp.json())["failures"]] == ["carol"]
    async with server.session.get(server.url + "/api/failures?state=bogus") as resp:
        assert resp.status == 400


async def test_api_failures_limit(server: Server) -> None:
    for i in range(MAX_LIMIT + 50):
        server.failures.observe_transaction(transaction(to_user=f"u{i}"))
    async with server.session.get(server.url + "/api/failures?limit=2") as resp:
        body = await resp.json()
    assert len(body["failures"]) == 2
    assert body["total"] == MAX_LIMIT + 50
    async with server.session.get(server.url + "/api/failures?limit=999999") as resp:
        body = await resp.json()
    assert len(body["failures"]) == MAX_LIMIT
    assert body["limit"] == MAX_LIMIT
    for bad in ("abc", "0", "-3"):
        async with server.session.get(server.url + f"/api/failures?limit={bad}") as resp:
            assert resp.status == 400
            assert "error" in await resp.json()


async def test_api_failures_escapes_hostile_text(server: Server) -> None:
    evil = '<script>alert(1)</script>"\n\u202e'
    server.failures.observe_transaction(transaction(to_user=evil, user_agent=evil))
    async with server.session.get(server.url + "/api/failures") as resp:
        raw = await resp.read()
        body = await resp.json()
    assert b"<script>" in raw  # as JSON string content, never interpreted
    # newline and bidi override are JSON-escaped, not sent raw
    assert b'</script>\\"\\n' in raw
    assert "\u202e".encode() not in raw
    assert b"\\u202e" in raw
    assert body["failures"][0]["user"] == evil


async def test_unknown_route_is_404(server: Server) -> None:
    async with server.session.get(server.url + "/admin") as resp:
        assert resp.status == 404
