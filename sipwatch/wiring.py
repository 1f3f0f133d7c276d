"""Builds the daemon's network-facing stages (diagnosis, alerting, remediation) from Config.

Kept apart from ``daemon.py`` so the pipeline can be tested with any diagnoser or sink, and
so the heavy imports (asyncmy, redis, apprise) happen only when the daemon starts.
"""

from __future__ import annotations

from typing import Any

import structlog

from sipwatch.config import Config
from sipwatch.failures import FailureRecord
from sipwatch.metrics import SipwatchMetrics

log = structlog.get_logger("sipwatch.wiring")


class Diagnoser:
    """The diagnosis engine plus the connections it owns (closed on shutdown / reload)."""

    def __init__(self, config: Config, metrics: SipwatchMetrics) -> None:
        import os

        from sipwatch.diagnosis.settings import build_runtime, settings_from_config

        settings = settings_from_config(config, env=os.environ)
        self.runtime = build_runtime(settings, metrics=metrics)
        log.info(
            "diagnosis ready",
            rules=len(self.runtime.engine.rules),
            database=self.runtime.database is not None,
            redis=self.runtime.redis is not None,
        )

    async def diagnose(self, symptom: Any) -> Any:
        return await self.runtime.engine.diagnose(symptom)

    async def aclose(self) -> None:
        await self.runtime.close()


def make_diagnoser(config: Config, metrics: SipwatchMetrics) -> Diagnoser | None:
    if not config.diagnosis.enabled:
        return None
    return Diagnoser(config, metrics)


class LoggingSink:
    """Logs every diagnosis (the JSON log is the audit of what sipwatch concluded)."""

    async def on_diagnosis(self, record: FailureRecord, diagnosis: Any) -> None:
        top = diagnosis.top
        log.info(
            "registration failure diagnosed",
            user=record.user,
            domain=record.domain,
            source_ip=record.source_ip,
            status=record.status,
            count=record.count,
            cause=top.id if top else None,
            severity=top.severity if top else None,
            attack=diagnosis.attack,
        )

    def on_recovered(self, user: str, domain: str, at: float) -> None:
        return None


def make_sink(config: Config, metrics: SipwatchMetrics) -> LoggingSink:
    return LoggingSink()
