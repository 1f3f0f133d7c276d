"""Builds the daemon's network-facing stages (diagnosis, alerting, remediation) from Config.

Kept apart from ``daemon.py`` so the pipeline can be tested with any diagnoser or sink, and
so the heavy imports (asyncmy, redis, apprise) happen only when the daemon starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import structlog
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from sipwatch.config import Config
from sipwatch.diagnosis.secret_proof import SECRET_MISMATCH_CAUSE, SecretState, SecretStatus
from sipwatch.metrics import SipwatchMetrics
from sipwatch.pipeline.failures import FailureRecord

log = structlog.get_logger("sipwatch.wiring")

#: How often the daemon proves its jambonz secret again (a fixed secret shows within this).
SECRET_CHECK_INTERVAL = 300.0
_SECRET_CHECK_TIMEOUT = 30.0


class Diagnoser:
    """The diagnosis engine plus the connections it owns (closed on shutdown / reload).

    When it is built inside the daemon's event loop it also proves the jambonz secret at
    once and every ``SECRET_CHECK_INTERVAL`` seconds, so ``/readyz`` and the
    ``sipwatch_jambonz_secret_state`` metric tell a wrong secret before any device fails.
    """

    def __init__(self, config: Config, metrics: SipwatchMetrics) -> None:
        import os

        from sipwatch.diagnosis.settings import build_runtime, settings_from_config

        settings = settings_from_config(config, env=os.environ)
        self.runtime = build_runtime(settings, metrics=metrics)
        self._secret_task: asyncio.Task[None] | None = None
        if settings.encryption_secret and self.runtime.database is not None:
            with contextlib.suppress(RuntimeError):  # no running loop: checked on demand
                self._secret_task = asyncio.get_running_loop().create_task(
                    self._watch_secret(), name="secret-proof"
                )
        log.info(
            "diagnosis ready",
            rules=len(self.runtime.engine.rules),
            database=self.runtime.database is not None,
            redis=self.runtime.redis is not None,
        )

    def secret_status(self) -> SecretStatus | None:
        """The latest proof of the jambonz secret (None: not made yet, or nothing to prove
        it with because no database or no secret is configured)."""
        return self.runtime.secret_status

    async def _watch_secret(self) -> None:
        from sipwatch.diagnosis.db import DbError

        last: SecretState | None = None
        while True:
            try:
                async with asyncio.timeout(_SECRET_CHECK_TIMEOUT):
                    status = await self.runtime.check_secret()
            except (DbError, TimeoutError) as exc:
                log.warning("jambonz secret not checked", error=str(exc))
            else:
                if status.state is not last:
                    level = log.error if status.state is SecretState.MISMATCH else log.info
                    level(
                        "jambonz secret checked", state=status.state.value, detail=status.describe()
                    )
                    last = status.state
            await asyncio.sleep(SECRET_CHECK_INTERVAL)

    async def diagnose(self, symptom: Any) -> Any:
        return await self.runtime.engine.diagnose(symptom)

    async def aclose(self) -> None:
        if self._secret_task is not None:
            self._secret_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._secret_task
        await self.runtime.close()


class SecretStateCollector(Collector):
    """``sipwatch_jambonz_secret_state{state}``: 1 for the current verdict of the secret
    proof, 0 for the others (no samples before the first proof).  One per registry; it
    reads whichever Diagnoser is current, so a SIGHUP reload does not register it twice."""

    NAME = "sipwatch_jambonz_secret_state"
    DOC = (
        "Whether sipwatch's jambonz secret is the one jambonz uses, proven by decrypting a "
        "sample of the stored client passwords (state: proven, partial, mismatch, unproven, "
        "not_configured)."
    )

    def __init__(self) -> None:
        self.source: Callable[[], SecretStatus | None] = lambda: None

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(self.NAME, self.DOC, labels=["state"])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(self.NAME, self.DOC, labels=["state"])
        status = self.source()
        if status is not None:
            for state in SecretState:
                family.add_metric([state.value], 1.0 if state is status.state else 0.0)
        yield family


_SECRET_COLLECTORS: weakref.WeakKeyDictionary[CollectorRegistry, SecretStateCollector] = (
    weakref.WeakKeyDictionary()
)


def secret_state_collector(registry: CollectorRegistry) -> SecretStateCollector:
    """The registry's secret-state collector, registered on first use."""
    collector = _SECRET_COLLECTORS.get(registry)
    if collector is None:
        collector = _SECRET_COLLECTORS[registry] = SecretStateCollector()
        registry.register(collector)
    return collector


def make_diagnoser(config: Config, metrics: SipwatchMetrics) -> Diagnoser | None:
    exporter = secret_state_collector(metrics.registry)
    if not config.diagnosis.enabled:
        exporter.source = lambda: None
        return None
    diagnoser = Diagnoser(config, metrics)
    exporter.source = diagnoser.secret_status
    return diagnoser


def readiness_details(diagnoser: Diagnoser | None) -> dict[str, Any]:
    """Extra ``/readyz`` detail: the jambonz secret proof (``web.make_app(details=...)``)."""
    status = diagnoser.secret_status() if diagnoser is not None else None
    return {"jambonz_secret": status.to_dict() if status is not None else None}


# rule severities (critical/error/warning/info) -> alert severities (critical/warning/info)
_ALERT_SEVERITY = {"critical": "critical", "error": "warning", "warning": "warning", "info": "info"}
_MAX_ALERTED = 10_000
_SYSTEM_CAUSES = frozenset({"registrar_down", "registrar_db_error", "registrar_internal_error"})


#: Causes about sipwatch's own configuration, not about the device that revealed them: the
#: daemon reports each once (an alert and a log line), and alerts devices on their next cause.
CONFIGURATION_CAUSES = frozenset({SECRET_MISMATCH_CAUSE})


def device_causes(diagnosis: Any) -> list[Any]:
    """The diagnosis' causes without the ones about sipwatch's own configuration."""
    return [c for c in diagnosis.causes if c.id not in CONFIGURATION_CAUSES]


def alert_for(record: FailureRecord, diagnosis: Any) -> Any:
    """The AlertInput for a diagnosed failure group (its most likely device cause)."""
    from sipwatch.alerts import AlertInput

    causes = device_causes(diagnosis)
    top = causes[0] if causes else None
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
        self._configuration_reported: set[str] = set()

    def _report_configuration(self, diagnosis: Any) -> None:
        """sipwatch's own configuration problems: one log line and one alert each."""
        for cause in diagnosis.causes:
            if cause.id not in CONFIGURATION_CAUSES or cause.id in self._configuration_reported:
                continue
            self._configuration_reported.add(cause.id)
            detail = str(cause.evidence.get("secret_check") or cause.title)
            log.error("sipwatch configuration problem", cause=cause.id, detail=detail)
            if self.alerts is not None:
                from sipwatch.alerts import AlertInput

                self.alerts.submit(
                    AlertInput(
                        kind="system",
                        severity=_ALERT_SEVERITY.get(cause.severity, "warning"),
                        cause_id=cause.id,
                        summary=f"{detail}. sipwatch cannot judge stored passwords until "
                        "this is fixed.",
                        fix_steps=tuple(cause.fix_steps),
                    )
                )

    async def _ensure_started(self) -> None:
        if self._started:
            return
        self._started = True
        if self.alerts is not None:
            await self.alerts.start()
        if self.auto is not None:
            await self.auto.start()

    async def on_diagnosis(self, record: FailureRecord, diagnosis: Any) -> None:
        causes = device_causes(diagnosis)
        top = causes[0] if causes else None
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
        self._report_configuration(diagnosis)
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
