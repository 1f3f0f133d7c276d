"""Issue 13.8: losing the jambonz database or Redis is said once (log line, system alert,
readiness) and so is its return - with real MariaDB and Redis behind a TCP gate that the
test closes and opens, and alerts delivered to a real local webhook."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from prometheus_client import CollectorRegistry

from sipwatch.config import Config, load_config
from sipwatch.daemon.dependencies import DependencyChange, DependencyHealth
from sipwatch.daemon.stages import DaemonSink, Diagnoser
from sipwatch.diagnosis.symptom import Symptom
from sipwatch.metrics import SipwatchMetrics
from tests.alert_receivers import HttpReceiver
from tests.jambonz_db import (
    MARIADB_HOST,
    MARIADB_PORT,
    create_database,
    drop_database,
    unique_name,
)
from tests.tcp_gate import TcpGate
from tests.waiting import until

REDIS_PORT = 6379


def _config(tmp_path: Path, db_port: int, database: str, redis_port: int, hook: str) -> Config:
    path = tmp_path / "sipwatch.toml"
    path.write_text(
        f"""
[database]
url = "mysql://root@127.0.0.1:{db_port}/{database}"
connect_timeout = 1
read_timeout = 1
[redis]
url = "redis://127.0.0.1:{redis_port}/13"
read_timeout = 1
[diagnosis]
webhook_probes = false
cache_ttl_seconds = 0.1
[alerts]
group_wait_seconds = 0.1
[[alerts.targets]]
name = "ops"
url = "{hook}"
"""
    )
    return load_config(str(path))


@contextlib.asynccontextmanager
async def _stack(
    config: Config, health: DependencyHealth
) -> AsyncIterator[tuple[Diagnoser, DaemonSink]]:
    """What the daemon builds: the diagnoser and the sink share one health tracker."""
    metrics = SipwatchMetrics(CollectorRegistry(), process_metrics=False)
    diagnoser = Diagnoser(config, metrics, health)
    sink = DaemonSink(config, metrics, health)
    task = asyncio.create_task(health.run())
    try:
        yield diagnoser, sink
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await sink.aclose()
        await diagnoser.aclose()


def _events(captured: list[dict[str, Any]], event: str, dependency: str) -> int:
    return sum(1 for e in captured if e["event"] == event and e.get("dependency") == dependency)


async def test_database_and_redis_loss_is_said_once_and_their_return_too(
    tmp_path: Path,
    http: HttpReceiver,
    jambonz_database: str,
) -> None:
    health = DependencyHealth(probe_interval=0.5, down_interval=0.2, probe_timeout=2.0)
    async with (
        TcpGate(MARIADB_HOST, MARIADB_PORT) as db_gate,
        TcpGate("127.0.0.1", REDIS_PORT) as redis_gate,
    ):
        config = _config(tmp_path, db_gate.port, jambonz_database, redis_gate.port, http.url())
        with structlog.testing.capture_logs() as captured:
            async with asyncio.timeout(60), _stack(config, health):
                await until(lambda: health.readiness() == {"database": True, "redis": True})
                await db_gate.close()
                await redis_gate.close()
                await until(lambda: health.readiness() == {"database": False, "redis": False})
                await http.wait_for(1)
                await asyncio.sleep(1.5)  # several more failed probes: nothing more is said
                down = health.details()
                await db_gate.open()
                await redis_gate.open()
                await until(lambda: health.readiness() == {"database": True, "redis": True})
                await until(lambda: len(http.delivered) >= 2)
                await asyncio.sleep(0.5)
    for name in ("database", "redis"):
        assert _events(captured, "dependency unreachable", name) == 1
        assert _events(captured, "dependency is back", name) == 1
        assert down[name]["up"] is False
    assert down["database"]["reason"].startswith("db_unavailable: ")
    assert down["redis"]["reason"].startswith("redis_unavailable: ")
    assert "password" not in repr(down)
    titles = [r.payload["title"] for r in http.delivered]
    assert sorted(titles[:2]) == [
        "[ERROR] database_unreachable: database",
        "[ERROR] redis_unreachable: redis",
    ]
    # both came back at the same moment: one message, or one each
    assert sorted(titles[2:]) in (
        [
            "[RESOLVED] database_unreachable: database reachable again",
            "[RESOLVED] redis_unreachable: redis reachable again",
        ],
        ["[RESOLVED] 2 problems ended"],
    )


async def test_a_failed_diagnosis_query_is_confirmed_by_a_probe_at_once(
    tmp_path: Path,
    http: HttpReceiver,
    jambonz_database: str,
) -> None:
    """The periodic probe is slow (60 s); the diagnosis engine's own failed query makes the
    tracker probe now, so the loss is known as soon as a failure is diagnosed."""
    health = DependencyHealth(probe_interval=60.0, down_interval=60.0, probe_timeout=2.0)
    async with TcpGate(MARIADB_HOST, MARIADB_PORT) as db_gate:
        config = _config(tmp_path, db_gate.port, jambonz_database, REDIS_PORT, http.url())
        async with asyncio.timeout(30), _stack(config, health) as (diagnoser, _sink):
            await until(lambda: health.is_up("database") is True)
            await db_gate.close()
            assert health.is_up("database") is True  # no probe due for a minute
            symptom = Symptom("alice", "acme.example.com", status=403, x_reason="")
            diagnosis = await diagnoser.diagnose(symptom)
            assert "db_unavailable" in diagnosis.errors
            await until(lambda: health.is_up("database") is False, timeout=5)
            await http.wait_for(1)
    assert http.delivered[0].payload["title"] == "[ERROR] database_unreachable: database"


async def test_missing_tables_are_a_lost_database_too(tmp_path: Path, http: HttpReceiver) -> None:
    """A database without the jambonz schema (wrong database name) is as useless."""
    empty = unique_name()
    await create_database(empty, statements=[])
    try:
        health = DependencyHealth(probe_interval=60.0, probe_timeout=2.0)
        config = _config(tmp_path, MARIADB_PORT, empty, REDIS_PORT, http.url())
        async with asyncio.timeout(30), _stack(config, health):
            await until(lambda: health.is_up("database") is False)
            await http.wait_for(1)
        assert health.details()["database"]["reason"].startswith("missing_table: ")
    finally:
        await drop_database(empty)


async def test_a_down_report_with_grace_counts_only_if_it_lasts() -> None:
    health = DependencyHealth()
    changes: list[DependencyChange] = []
    health.subscribe(changes.append)
    task = asyncio.create_task(health.run())
    try:
        health.report("source:drachtio", True)
        health.report("source:drachtio", False, "container restarting", grace=0.3)
        await asyncio.sleep(0.1)
        health.report("source:drachtio", True)  # back within the grace: nothing happened
        await asyncio.sleep(0.5)
        assert changes == []
        assert health.readiness() == {"source:drachtio": True}
        health.report("source:drachtio", False, "container gone", grace=0.3)
        async with asyncio.timeout(5):
            while not changes:
                await asyncio.sleep(0.05)
        assert changes[0].up is False and changes[0].reason == "container gone"
        assert health.readiness() == {"source:drachtio": False}
        health.report("source:drachtio", True)
        assert changes[-1].up is True and changes[-1].down_seconds >= 0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.parametrize("kind", ["db_unavailable", "missing_table", "timeout"])
def test_diagnosis_error_kinds_name_the_database(kind: str) -> None:
    health = DependencyHealth()  # no probe registered: the report is the answer
    health.suspect(kind)
    assert health.readiness() == {"database": False}
    health.suspect("redis_unavailable")
    assert health.readiness() == {"database": False, "redis": False}
    health.suspect("some_future_kind")  # unknown kinds are not guessed at
    assert set(health.readiness()) == {"database", "redis"}
