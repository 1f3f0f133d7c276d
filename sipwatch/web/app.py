"""The HTTP face of the daemon: metrics, health, readiness and the current failures.

(How it is served - connection cap, timeouts, TLS - is ``sipwatch.web.server``.)

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
from aiohttp.typedefs import Middleware
from prometheus_client.aiohttp import make_aiohttp_handler

from sipwatch.daemon.health import SourceState
from sipwatch.metrics import SipwatchMetrics
from sipwatch.pipeline.failures import FailureTracker
from sipwatch.web.auth import basic_auth_middleware

DEFAULT_LIMIT = 100
#: A group that registered again stays listed (with ``resolved_at``) this long, in log time.
RESOLVED_KEEP_SECONDS = 3600.0
MAX_LIMIT = 1000

METRICS_KEY = web.AppKey("sipwatch_metrics", SipwatchMetrics)
FAILURES_KEY = web.AppKey("sipwatch_failures", FailureTracker)
Readiness = Callable[[], Mapping[str, "bool | SourceState"]]
DETAILS_KEY: web.AppKey[Callable[[], Mapping[str, Any]]] = web.AppKey("sipwatch_details")
READINESS_KEY: web.AppKey[Readiness] = web.AppKey("sipwatch_readiness")

_JSON_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(
        data, status=status, headers=_JSON_HEADERS, dumps=lambda o: json.dumps(o, indent=1)
    )


def make_app(
    metrics: SipwatchMetrics,
    failures: FailureTracker,
    readiness: Readiness,
    *,
    users: Mapping[str, bytes] | None = None,
    details: Callable[[], Mapping[str, Any]] | None = None,
) -> web.Application:
    """Build the aiohttp application (not started; see ``sipwatch.web.server.start_http``).

    ``users`` (user -> bcrypt hash) turns on basic authentication (``sipwatch.web.auth``);
    ``details`` adds a ``details`` object to ``/readyz`` (the dependencies the daemon checks,
    e.g. ``wiring.readiness_details``)."""
    middlewares: list[Middleware] = [basic_auth_middleware(users)] if users else []
    app = web.Application(middlewares=middlewares)
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
    """Ready while every log source delivers (503 names the ones that do not, and why).
    Dependencies (database, Redis, the secret) are reported as detail: losing them degrades
    the causes, not the counting, so they do not take the metrics out of service."""
    states = {
        name: state if isinstance(state, SourceState) else SourceState(bool(state))
        for name, state in request.app[READINESS_KEY]().items()
    }
    down = sorted(name for name, state in states.items() if not state.up)
    ready = bool(states) and not down
    body: dict[str, Any] = {
        "ready": ready,
        "sources": {name: states[name].up for name in sorted(states)},
    }
    if down:
        body["down"] = {name: states[name].reason or "down" for name in down}
    if not states:
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
    state = request.query.get("state", "all")
    if state not in ("open", "resolved", "all"):
        return _json({"error": "state must be open, resolved or all"}, status=400)
    tracker = request.app[FAILURES_KEY]
    records = tracker.records(
        include_resolved=state != "open", resolved_since=tracker.latest - RESOLVED_KEEP_SECONDS
    )
    if state == "resolved":
        records = [r for r in records if r.resolved_at is not None]
    # open groups first (most frequent first), then those that registered again, latest first
    records.sort(key=lambda r: (r.resolved_at is not None, -(r.resolved_at or 0.0)))
    return _json(
        {
            "total": len(records),
            "open": sum(r.resolved_at is None for r in records),
            "limit": limit,
            "dropped": tracker.dropped,
            "failures": [r.to_dict() for r in records[:limit]],
        }
    )
