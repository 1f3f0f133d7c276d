"""Builds the daemon's network-facing stages (diagnosis, alerting, remediation) from Config.

Kept apart from ``daemon.py`` so the pipeline can be tested with any diagnoser or sink, and
so the heavy imports (asyncmy, redis, apprise) happen only when the daemon starts.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any

import structlog

from sipwatch.config import Config
from sipwatch.metrics import SipwatchMetrics
from sipwatch.pipeline.failures import FailureRecord

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


# rule severities (critical/error/warning/info) -> alert severities (critical/warning/info)
_ALERT_SEVERITY = {"critical": "critical", "error": "warning", "warning": "warning", "info": "info"}
_MAX_ALERTED = 10_000
_SYSTEM_CAUSES = frozenset({"registrar_down", "registrar_db_error", "registrar_internal_error"})


def alert_for(record: FailureRecord, diagnosis: Any) -> Any:
    """The AlertInput for a diagnosed failure group (its most likely cause)."""
    from sipwatch.alerts import AlertInput

    top = diagnosis.top
    if top is None:
        return None
    if diagnosis.attack:
        kind = "security"
    elif top.id in _SYSTEM_CAUSES:
        kind = "system"
    else:
        kind = "registration"
    evidence = {str(k): str(v) for k, v in list(top.evidence.items())[:12] if v is not None}
    return AlertInput(
        kind=kind,
        severity=_ALERT_SEVERITY.get(top.severity, "warning"),
        cause_id=top.id,
        summary=top.summary,
        user=record.user,
        domain=record.domain,
        source_ip=record.source_ip,
        status=record.status,
        x_reason=record.x_reason,
        count=record.count,
        first_seen=record.first_seen,
        last_seen=record.last_seen,
        evidence=evidence,
        fix_steps=tuple(top.fix_steps),
        fix_command=top.fix_command,
        user_agent=record.user_agent,
    )


class DaemonSink:
    """What the daemon does with a diagnosis: log it, alert on it, and (opt-in) remediate."""

    def __init__(self, config: Config, metrics: SipwatchMetrics) -> None:
        self.alerts: Any = None
        if config.alerts.targets:
            from sipwatch.alerts import AlertManager

            self.alerts = AlertManager(config.alerts, metrics=metrics)
        self.auto: Any = None
        if config.remediation.mode != "off":
            import os

            from sipwatch.remediation.auto import AutoRemediator

            self.auto = AutoRemediator.from_config(
                config,
                metrics=metrics,
                legacy_crypto=os.environ.get("SIPWATCH_JAMBONZ_LEGACY_CRYPTO", "").lower()
                in ("1", "true", "yes", "on"),
            )
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started = False
        # (source IP, user) -> domains alerted on: a phone fixed by changing its domain
        # (realm_is_ip, realm_unknown) registers under a new AOR from the same IP.
        self._alerted: OrderedDict[tuple[str, str], set[str]] = OrderedDict()

    async def _ensure_started(self) -> None:
        if self._started:
            return
        self._started = True
        if self.alerts is not None:
            await self.alerts.start()
        if self.auto is not None:
            await self.auto.start()

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
        await self._ensure_started()
        if self.auto is not None:
            decision = await self.auto.consider(
                diagnosis, user=record.user, domain=record.domain, source_ip=record.source_ip
            )
            log.info(
                "remediation decision",
                user=record.user,
                domain=record.domain,
                action=decision.action,
                result=str(decision.result),
                reason=decision.reason,
            )
        if self.alerts is not None:
            alert = alert_for(record, diagnosis)
            if alert is not None:
                self.alerts.submit(alert)
        if not diagnosis.attack:
            key = (record.source_ip, record.user)
            domains = self._alerted.setdefault(key, set())
            if len(domains) < 8:  # a phone tries a handful of domains, not thousands
                domains.add(record.domain)
            self._alerted.move_to_end(key)
            if len(self._alerted) > _MAX_ALERTED:
                self._alerted.popitem(last=False)

    def on_recovered(self, user: str, domain: str, source_ip: str, at: float) -> None:
        failed_domains = self._alerted.pop((source_ip, user), None)
        if self.auto is not None and failed_domains is not None:
            task = asyncio.ensure_future(self.auto.on_registered(user, domain))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if self.alerts is None:
            return
        self.alerts.resolve(user, domain, at)
        for old_domain in failed_domains or ():
            if old_domain != domain:
                self.alerts.resolve(user, old_domain, at)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.alerts is not None and self._started:
            await self.alerts.stop(5.0)
        if self.auto is not None and self._started:
            await self.auto.close()


def make_sink(config: Config, metrics: SipwatchMetrics) -> DaemonSink:
    return DaemonSink(config, metrics)
