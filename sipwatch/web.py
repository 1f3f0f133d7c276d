"""The HTTP face of the daemon: metrics, health, readiness and the current failures.

It runs on the pipeline's asyncio loop (aiohttp), so a scrape reads the same objects the
pipeline updates without threads or locks.  Routes:

* ``/metrics``  Prometheus text or OpenMetrics (content negotiation by prometheus-client);
* ``/healthz``  the process and its loop answer (liveness: restart me if this fails);
* ``/readyz``   every log source is connected (readiness: 503 names the ones that are not),
  plus ``details`` of the checks the daemon runs on its own configuration (the jambonz
  secret proof), which do not change readiness;
* ``/api/failures``  JSON list of the unresolved failures, most frequent first.

Everything in ``/api/failures`` is attacker-controlled text; it is only ever emitted through
``json.dumps`` with a JSON content type and ``nosniff``, never as HTML.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from sipwatch.metrics import SipwatchMetrics
from sipwatch.pipeline.failures import FailureTracker

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000

METRICS_KEY = web.AppKey("sipwatch_metrics", SipwatchMetrics)
FAILURES_KEY = web.AppKey("sipwatch_failures", FailureTracker)
READINESS_KEY: web.AppKey[Callable[[], dict[str, bool]]] = web.AppKey("sipwatch_readiness")
DETAILS_KEY: web.AppKey[Callable[[], Mapping[str, Any]]] = web.AppKey("sipwatch_details")

_JSON_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(
        data, status=status, headers=_JSON_HEADERS, dumps=lambda o: json.dumps(o, indent=1)
    )


def make_app(
    metrics: SipwatchMetrics,
    failures: FailureTracker,
    readiness: Callable[[], dict[str, bool]],
    details: Callable[[], Mapping[str, Any]] | None = None,
) -> web.Application:
    """Build the aiohttp application (not started; see ``start_http``).  ``details`` adds
    a ``details`` object to ``/readyz`` (e.g. ``wiring.readiness_details``)."""
    app = web.Application()
    app[METRICS_KEY] = metrics
    app[FAILURES_KEY] = failures
    app[READINESS_KEY] = readiness
    if details is not None:
        app[DETAILS_KEY] = details
    exposition = make_aiohttp_handler(metrics.registry)

    async def metrics_handler(request: web.Request) -> web.StreamResponse:
        # Expire stale per-user/IP series right before they would be exported.
        metrics.expire()
        return await exposition(request)

    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/api/failures", _failures)
    return app


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def _readyz(request: web.Request) -> web.Response:
    sources = request.app[READINESS_KEY]()
    down = sorted(name for name, up in sources.items() if not up)
    ready = bool(sources) and not down
    body: dict[str, Any] = {"ready": ready, "sources": dict(sorted(sources.items()))}
    if down:
        body["down"] = down
    if not sources:
        body["reason"] = "no sources registered"
    details = request.app.get(DETAILS_KEY)
    if details is not None:
        body["details"] = dict(details())
    return _json(body, status=200 if ready else 503)


async def _failures(request: web.Request) -> web.Response:
    raw = request.query.get("limit", str(DEFAULT_LIMIT))
    try:
        limit = int(raw)
    except ValueError:
        return _json({"error": "limit must be an integer"}, status=400)
    if limit < 1:
        return _json({"error": "limit must be >= 1"}, status=400)
    limit = min(limit, MAX_LIMIT)
    tracker = request.app[FAILURES_KEY]
    open_records = tracker.records(include_resolved=False)
    return _json(
        {
            "total": len(open_records),
            "limit": limit,
            "dropped": tracker.dropped,
            "failures": [r.to_dict() for r in open_records[:limit]],
        }
    )


async def start_http(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Serve ``app`` on host:port; ``runner.addresses`` gives the bound address (port 0)."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner
