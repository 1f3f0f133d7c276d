"""Builds the daemon's network-facing stages (diagnosis, alerting, remediation) from Config.

Kept apart from ``daemon.py`` so the pipeline can be tested with any diagnoser or sink, and
so the heavy imports (asyncmy, redis, apprise) happen only when the daemon starts.

A ``DependencyHealth`` (``sipwatch.daemon.dependencies``), when the daemon passes one, is fed from
here: the diagnoser probes its database and Redis and reports failed checks, the sink turns
each change into a system alert and its end.  The diagnoser also proves the jambonz secret
(``sipwatch.diagnosis.secret_proof``) and exposes the verdict as a metric and on ``/readyz``.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import structlog
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from sipwatch.config import Config
from sipwatch.daemon.dependencies import DependencyChange, DependencyHealth, ProbeFailed, dependency
from sipwatch.diagnosis.secret_proof import SECRET_MISMATCH_CAUSE, SecretState, SecretStatus
from sipwatch.metrics import SipwatchMetrics
from sipwatch.pipeline.failures import FailureRecord
from sipwatch.sip_meaning import TIMEOUT

log = structlog.get_logger("sipwatch.daemon.stages")

PROBE_REALM = "sipwatch-probe.invalid"  # RFC 2606: can never be a real account's realm
#: How often the daemon proves its jambonz secret again (a fixed secret shows within this).
SECRET_CHECK_INTERVAL = 300.0
_SECRET_CHECK_TIMEOUT = 30.0


class _ReportingMetrics:
    """The diagnosis engine's metrics sink that also tells the dependency tracker which
    checks failed (the engine reports them only as ``observe_diagnosis_error``)."""

    def __init__(self, metrics: SipwatchMetrics, health: DependencyHealth) -> None:
        self._metrics = metrics
        self._health = health

    def observe_root_cause(self, cause_id: str, severity: str) -> None:
        self._metrics.observe_root_cause(cause_id, severity)

    def observe_diagnosis_error(self, kind: str) -> None:
        self._metrics.observe_diagnosis_error(kind)
        self._health.suspect(kind)


class Diagnoser:
    """The diagnosis engine plus the connections it owns (closed on shutdown / reload).

    When it is built inside the daemon's event loop it also proves the jambonz secret at
    once and every ``SECRET_CHECK_INTERVAL`` seconds, so ``/readyz`` and the
    ``sipwatch_jambonz_secret_state`` metric tell a wrong secret before any device fails.
    """

    def __init__(
        self, config: Config, metrics: SipwatchMetrics, health: DependencyHealth | None = None
    ) -> None:
        import os

        from sipwatch.diagnosis.settings import build_runtime, settings_from_config

        settings = settings_from_config(config, env=os.environ)
        reporting: Any = metrics if health is None else _ReportingMetrics(metrics, health)
        self.runtime = build_runtime(settings, metrics=reporting)
        self._unprobe: list[Callable[[], None]] = []
        if health is not None:
            self._add_probes(health)
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

    def _add_probes(self, health: DependencyHealth) -> None:
        """The same reads diagnosis makes first, so "up" means diagnosis can work: the
        accounts table (reachable, schema present) and a registration key in Redis."""
        from sipwatch.diagnosis.db import DbError
        from sipwatch.diagnosis.jambonz import JambonzDb
        from sipwatch.diagnosis.redis_store import RedisUnavailable

        database, redis = self.runtime.database, self.runtime.redis
        if database is not None:
            jambonz = JambonzDb(database)

            async def probe_database() -> None:
                try:
                    await jambonz.lookup_account_by_sip_realm(PROBE_REALM)
                except DbError as exc:  # its text names the password-free URL
                    raise ProbeFailed(f"{exc.kind}: {exc}") from None

            self._unprobe.append(health.add_probe("database", probe_database))
        if redis is not None:
            store = redis

            async def probe_redis() -> None:
                try:
                    await store.lookup(f"sipwatch-probe@{PROBE_REALM}")
                except RedisUnavailable as exc:
                    raise ProbeFailed(f"{exc.kind}: {exc}") from None

            self._unprobe.append(health.add_probe("redis", probe_redis))

    async def diagnose(self, symptom: Any) -> Any:
        return await self.runtime.engine.diagnose(symptom)

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

    async def aclose(self) -> None:
        for remove in self._unprobe:
            remove()
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


def make_diagnoser(
    config: Config, metrics: SipwatchMetrics, health: DependencyHealth | None = None
) -> Diagnoser | None:
    exporter = secret_state_collector(metrics.registry)
    if not config.diagnosis.enabled:
        exporter.source = lambda: None
        return None
    diagnoser = Diagnoser(config, metrics, health)
    exporter.source = diagnoser.secret_status
    return diagnoser


def readiness_details(diagnoser: Diagnoser | None) -> dict[str, Any]:
    """Extra ``/readyz`` detail: the jambonz secret proof (``web.make_app(details=...)``)."""
    status = diagnoser.secret_status() if diagnoser is not None else None
    return {"jambonz_secret": status.to_dict() if status is not None else None}


# --- what reaches the on-call human -----------------------------------------------------------

#: Causes that are one fault of the whole system (one incident, however many devices fail),
#: ending when any device registers after the last failure (or the failures stop).
SYSTEM_CAUSES = frozenset({"registrar_down", "registrar_db_error"})
SCANNER_CAUSE = "scanner"
_EVIDENCE_ITEMS = 12
_MAX_ALERTED = 10_000
_MAX_LOGGED = 10_000


#: Causes about sipwatch's own configuration, not about the device that revealed them: the
#: daemon reports each once (an alert and a log line), and alerts devices on their next cause.
CONFIGURATION_CAUSES = frozenset({SECRET_MISMATCH_CAUSE})


def device_causes(diagnosis: Any) -> list[Any]:
    """The diagnosis' causes without the ones about sipwatch's own configuration."""
    return [c for c in diagnosis.causes if c.id not in CONFIGURATION_CAUSES]


def is_outage_status(status: int | str) -> bool:
    """A 5xx answer or a timeout: the SBC or registrar failed, whoever was asking.  Never
    evidence of an attack (``sip_meaning.REJECTION_STATUSES`` are the answers that are)."""
    return status == TIMEOUT or (isinstance(status, int) and status >= 500)


def reported_cause(record: FailureRecord, diagnosis: Any) -> Any:
    """The cause sipwatch reports for a diagnosed failure group - in its log line and in
    the alert alike: the most likely one, except that an outage answer (5xx, timeout) is
    never put down to a scanner, even from an address that sprayed usernames before (an
    office NAT failing together during a registrar outage is the outage)."""
    causes: Sequence[Any] = device_causes(diagnosis)
    if is_outage_status(record.status):
        causes = [c for c in causes if c.id != SCANNER_CAUSE]
    return causes[0] if causes else None


def alert_for(record: FailureRecord, diagnosis: Any) -> Any:
    """The AlertInput for a diagnosed failure group (see ``reported_cause``), or None."""
    from sipwatch.alerts import AlertInput, normalise_severity
    from sipwatch.alerts.render import evidence_text

    cause = reported_cause(record, diagnosis)
    if cause is None:
        return None
    if cause.id == SCANNER_CAUSE:
        kind = "security"
    elif cause.id in SYSTEM_CAUSES:
        kind = "system"
    else:
        kind = "registration"
    items = [(k, v) for k, v in cause.evidence.items() if v is not None][:_EVIDENCE_ITEMS]
    evidence = {str(k): evidence_text(v) for k, v in items}
    # The username count the text states is the one in the evidence (same diagnosis).
    distinct = cause.evidence.get("distinct_users_from_ip")
    if not isinstance(distinct, int) or isinstance(distinct, bool):
        distinct = record.distinct_users
    folded = record.scanner  # a scanner's per-IP record: its user/domain are placeholders
    return AlertInput(
        kind=kind,
        severity=normalise_severity(cause.severity),
        cause_id=cause.id,
        summary=cause.summary,
        user="" if folded else record.user,
        domain="" if folded else record.domain,
        source_ip=record.source_ip,
        status=record.status,
        x_reason=record.x_reason,
        count=record.count,
        first_seen=record.first_seen,
        last_seen=record.last_seen,
        evidence=evidence,
        fix_steps=tuple(cause.fix_steps),
        fix_command=cause.fix_command,
        user_agent=record.user_agent,
        side=record.side,
        distinct_users=distinct if kind == "security" else 0,
        ends_when="registrar" if kind == "system" else "",
        tally=record,
    )


def dependency_alert(change: DependencyChange) -> Any:
    """The system alert for a dependency that went down."""
    from sipwatch.alerts import AlertInput

    what = dependency(change.name)
    return AlertInput(
        kind="system",
        severity=what.severity,
        cause_id=what.cause_id,
        summary=f"{change.name} is unreachable: {what.impact}",
        subject=change.name,
        first_seen=change.since,
        last_seen=change.since,
        evidence={"reason": change.reason or "unknown"},
        fix_steps=what.fix,
    )


class DaemonSink:
    """What the daemon does with a diagnosis: log it, alert on it, and (opt-in) remediate."""

    def __init__(
        self, config: Config, metrics: SipwatchMetrics, health: DependencyHealth | None = None
    ) -> None:
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
        # (source IP, user) -> domains remediation may have changed: a phone fixed by changing
        # its domain (realm_is_ip, realm_unknown) registers under a new AOR from the same IP.
        self._alerted: OrderedDict[tuple[str, str], set[str]] = OrderedDict()
        # failure group -> the cause last logged for it: one info line per group and cause
        self._logged: OrderedDict[tuple[object, ...], str] = OrderedDict()
        self._unsubscribe: Callable[[], None] | None = None
        if health is not None and self.alerts is not None:
            self._unsubscribe = health.subscribe(self.on_dependency)
        self._configuration_reported: set[str] = set()

    def take_over(self, previous: DaemonSink) -> None:
        """Continue ``previous`` (the sink before a configuration reload): open incidents,
        what each target was told, waiting and kept messages, and what remediation waits
        to confirm.  Call before ``previous.aclose()``."""
        if previous._unsubscribe is not None:  # one sink hears dependency changes
            previous._unsubscribe()
            previous._unsubscribe = None
        if self.alerts is not None and previous.alerts is not None:
            self.alerts.take_over(previous.alerts)
        self._alerted, previous._alerted = previous._alerted, OrderedDict()
        self._logged, previous._logged = previous._logged, OrderedDict()
        self._configuration_reported = previous._configuration_reported

    def _report_configuration(self, diagnosis: Any) -> None:
        """sipwatch's own configuration problems: one log line and one alert each."""
        for cause in diagnosis.causes:
            if cause.id not in CONFIGURATION_CAUSES or cause.id in self._configuration_reported:
                continue
            self._configuration_reported.add(cause.id)
            detail = str(cause.evidence.get("secret_check") or cause.title)
            log.error("sipwatch configuration problem", cause=cause.id, detail=detail)
            if self.alerts is not None:
                from sipwatch.alerts import AlertInput, normalise_severity

                self.alerts.submit(
                    AlertInput(
                        kind="system",
                        severity=normalise_severity(cause.severity),
                        cause_id=cause.id,
                        summary=f"{detail}. sipwatch cannot judge stored passwords until "
                        "this is fixed.",
                        subject="sipwatch configuration",
                        fix_steps=tuple(cause.fix_steps),
                        ends_when="explicit",
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

    def _log_diagnosis(self, record: FailureRecord, diagnosis: Any, cause: Any) -> None:
        from sipwatch.alerts import normalise_severity

        cause_id = cause.id if cause is not None else None
        key = record.key
        first_time = self._logged.get(key) != cause_id
        self._logged[key] = cause_id or ""
        self._logged.move_to_end(key)
        if len(self._logged) > _MAX_LOGGED:
            self._logged.popitem(last=False)
        (log.info if first_time else log.debug)(
            "registration failure diagnosed",
            user=record.user,
            domain=record.domain,
            source_ip=record.source_ip,
            status=record.status,
            count=record.count,
            cause=cause_id,
            severity=normalise_severity(cause.severity) if cause is not None else None,
            attack=cause_id == SCANNER_CAUSE,
        )

    async def on_diagnosis(self, record: FailureRecord, diagnosis: Any) -> None:
        cause = reported_cause(record, diagnosis)
        self._log_diagnosis(record, diagnosis, cause)
        await self._ensure_started()
        self._report_configuration(diagnosis)
        if self.alerts is not None:  # first: remediation may take a while
            alert = alert_for(record, diagnosis)
            if alert is not None:
                self.alerts.submit(alert)
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
        if self.alerts is not None:
            # Only this device identity: a 200 for alice@acme ends nothing of alice@127.0.0.1.
            self.alerts.resolve_device(user, domain, at, "inbound")

    def on_dependency(self, change: DependencyChange) -> None:
        """A dependency went down (system alert) or is back (that alert ends)."""
        if self.alerts is None:
            return
        if change.up:
            what = dependency(change.name)
            self.alerts.end("system", what.cause_id, change.name, how="reachable again")
        else:
            self.alerts.submit(dependency_alert(change))
            if not self._started:  # no failure diagnosed yet: start delivering now
                task = asyncio.ensure_future(self._ensure_started())
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.alerts is not None:  # also when never started: what is queued goes out
            await self.alerts.stop(5.0)
        if self.auto is not None and self._started:
            await self.auto.close()


def make_sink(
    config: Config, metrics: SipwatchMetrics, health: DependencyHealth | None = None
) -> DaemonSink:
    return DaemonSink(config, metrics, health)
