"""restart_registrar against the fake Docker Engine API (real HTTP on a unix socket)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sipwatch.remediation.actions import (
    Backends,
    PlanState,
    RemediationError,
    RestartRegistrar,
    Target,
)
from sipwatch.remediation.registrar import RegistrarTarget, parse_started_at
from tests.fake_docker import FakeDockerEngine, format_ts
from tests.remediation_support import bounded, short_socket

HOUR_NS = 3600 * 1_000_000_000


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[FakeDockerEngine]:
    async with FakeDockerEngine(short_socket(tmp_path)) as e:
        yield e


def target(engine: FakeDockerEngine, **kw: object) -> Backends:
    return Backends(
        docker=RegistrarTarget(url=engine.url, project="jambonz", grace=1, api_timeout=5, **kw)  # type: ignore[arg-type]
    )


def restarts(engine: FakeDockerEngine, container_id: str) -> int:
    return sum(1 for ev in engine.events if ev["id"] == container_id and ev["Action"] == "restart")


@bounded(20)
async def test_restart_registrar_restarts_verifies_and_is_idempotent(
    engine: FakeDockerEngine,
) -> None:
    engine.add_container("drachtio-sbc")
    reg = engine.add_container("sbc-sip-sidecar", image="jambonz/sbc-sip-sidecar:0.9.6")
    reg.started_at = format_ts(time.time_ns() - HOUR_NS)  # up for an hour
    other = engine.add_container("sbc-sip-sidecar", project="otherproject")
    other.started_at = format_ts(time.time_ns() - HOUR_NS)
    b = target(engine)
    action = RestartRegistrar()
    failure_seen = time.time() - 5
    t = Target("alice", "acme.sip.example.com", since=failure_seen)

    change = await action.plan(b, t)
    assert change.state is PlanState.CHANGE, change.summary
    assert change.statements == (f"POST /containers/{reg.id[:12]}/restart?t=1",)
    assert change.before["containers"][0]["container"] == "jambonz-sbc-sip-sidecar-1"
    assert restarts(engine, reg.id) == 0  # planning restarted nothing

    out = await action.apply(b, t)
    assert out.applied and out.verified, out.detail
    assert restarts(engine, reg.id) == 1
    assert restarts(engine, other.id) == 0  # another compose project is never touched
    started = parse_started_at(reg.started_at)
    assert started is not None and started >= failure_seen

    again = await action.apply(b, t)
    assert not again.applied and again.change.state is PlanState.NOOP
    assert restarts(engine, reg.id) == 1


@bounded(20)
async def test_recently_started_registrar_is_left_alone(engine: FakeDockerEngine) -> None:
    reg = engine.add_container("registrar", image="jambonz/sbc-registrar:latest")
    reg.started_at = format_ts(time.time_ns() - 10 * 1_000_000_000)  # 10 s ago
    change = await RestartRegistrar().plan(target(engine, min_uptime=60), Target("a", "b.c.d"))
    assert change.state is PlanState.NOOP
    change = await RestartRegistrar().plan(target(engine, min_uptime=5), Target("a", "b.c.d"))
    assert change.state is PlanState.CHANGE  # the first service found ("registrar") is used


@bounded(20)
async def test_stopped_or_missing_registrar_is_blocked(engine: FakeDockerEngine) -> None:
    change = await RestartRegistrar().plan(target(engine), Target("a", "b.c.d"))
    assert change.state is PlanState.BLOCKED and "no container" in change.summary
    reg = engine.add_container("sbc-sip-sidecar")
    engine.stop(reg)
    out = await RestartRegistrar().apply(target(engine), Target("a", "b.c.d"))
    assert not out.applied and out.change.state is PlanState.BLOCKED
    assert "not running" in out.change.summary
    assert restarts(engine, reg.id) == 0


@bounded(20)
async def test_engine_down_is_a_clean_error(engine: FakeDockerEngine) -> None:
    engine.add_container("sbc-sip-sidecar")
    await engine.pause_api()
    with pytest.raises(RemediationError, match="docker"):
        await RestartRegistrar().plan(target(engine), Target("a", "b.c.d"))


def test_parse_started_at() -> None:
    assert parse_started_at("0001-01-01T00:00:00Z") is None
    assert parse_started_at("") is None
    assert parse_started_at("garbage") is None
    assert parse_started_at("2024-05-01T12:00:00.123456789Z") == pytest.approx(
        1714564800.123456, abs=1e-6
    )
    assert parse_started_at("2024-05-01T12:00:00Z") == 1714564800.0
