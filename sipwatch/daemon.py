"""``sipwatch run``: the long-running pipeline.

    sources --(chunks, bounded queue)--> parse stage --(inline)--> tracker, metrics, failures
                                                     \\--(bounded, drop-counted)--> diagnosis
                                                                                  --> alerts

The parse stage never awaits a sink: metrics and the failure table are updated inline (cheap,
in-memory), while anything that talks to the network (MySQL, Redis, webhooks, Slack) sits
behind a bounded queue whose overflow is dropped *and counted*.  Sources are the only stage
that waits (backpressure on reading when parsing falls behind).

Signals: SIGTERM/SIGINT stop the sources, drain what was read, and exit within
``shutdown_timeout`` seconds; SIGHUP reloads the configuration and the rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from sipwatch.config import Config, RegistrarFlavour, load_config
from sipwatch.ingest.framing import LogParser
from sipwatch.ingest.transactions import RegisterTracker
from sipwatch.metrics import SipwatchMetrics
from sipwatch.model import (
    AttemptOutcome,
    MessageBatch,
    ParsedEvent,
    RegisterAttempt,
    RegisterTransaction,
    ServiceEvent,
    Side,
    SipMessage,
    SourceItem,
)
from sipwatch.pipeline.context import FailureContext
from sipwatch.pipeline.failures import FailureRecord, FailureTracker
from sipwatch.sources import LogSource

log = structlog.get_logger("sipwatch.daemon")

CHUNK_QUEUE = 256  # chunks of up to ~1 MiB (files) or a few KiB (Docker)
DIAGNOSIS_QUEUE = 1000
DIAGNOSIS_DELAY = 2.0  # let the registrar's lines (other stream) arrive before diagnosing
TICK = 1.0


@dataclass(slots=True)
class DiagnosisRequest:
    key: tuple[str, str, str, str, int | str]  # FailureRecord key
    due: float  # monotonic time at which to run


class FailureSink(Protocol):
    """What happens with a diagnosed failure: alerting and remediation plug in here."""

    async def on_diagnosis(self, record: FailureRecord, diagnosis: Any) -> None: ...

    def on_recovered(self, user: str, domain: str, source_ip: str, at: float) -> None: ...


class Pipeline:
    """Parser, tracker and the in-memory sinks, shared by the daemon's stages."""

    def __init__(self, config: Config, metrics: SipwatchMetrics) -> None:
        tz_offset = _tz_offset(config.sources.timezone)
        self.metrics = metrics
        self.parser = LogParser(tz_offset=tz_offset)
        self.tracker = RegisterTracker(
            timer_f=config.sip.timer_f_seconds, max_pending=config.sip.max_pending_transactions
        )
        self.failures = FailureTracker()
        self.context = FailureContext()
        self.diagnosis_queue: asyncio.Queue[DiagnosisRequest] = asyncio.Queue(DIAGNOSIS_QUEUE)
        self._pending_diagnosis: set[tuple[str, str, str, str, int | str]] = set()
        self.recovered: list[tuple[str, str, str, float]] = []  # user, domain, source IP, at
        self.log_now = 0.0  # newest log timestamp seen
        self.log_now_at = time.monotonic()  # when it was seen
        self._stats_seen: dict[str, tuple[int, dict[str, int], dict[str, int]]] = {}

    def feed(self, chunk: SourceItem) -> None:
        events: list[SipMessage] | list[ParsedEvent] = (
            chunk.messages if isinstance(chunk, MessageBatch) else self.parser.feed(chunk)
        )
        metrics = self.metrics
        for ev in events:
            if type(ev) is SipMessage:
                metrics.observe_message(ev)
                if ev.ts > self.log_now:
                    self.log_now = ev.ts
                    self.log_now_at = time.monotonic()
                done = self.tracker.on_message(ev)
                if done:
                    self._completed(done)
            else:
                assert isinstance(ev, ServiceEvent)
                metrics.observe_service_event(ev)
                self.context.observe_event(ev)
        self._publish_parse_stats(chunk.source)

    def tick(self) -> None:
        """Advance log time with the wall clock so silent transactions still time out."""
        if self.log_now:
            now = self.log_now + (time.monotonic() - self.log_now_at)
            done = self.tracker.advance(now)
            if done:
                self._completed(list(done))
        self.metrics.set_inflight(
            self.tracker.inflight_transactions, self.tracker.inflight_attempts
        )
        self.metrics.observe_queue(
            "diagnosis", self.diagnosis_queue.qsize(), self.diagnosis_queue.maxsize
        )
        self.metrics.expire()

    def _completed(self, done: list[RegisterTransaction | RegisterAttempt]) -> None:
        metrics = self.metrics
        for item in done:
            if type(item) is RegisterTransaction:
                metrics.observe_transaction(item)
                self.failures.observe_transaction(item)
                self.context.observe_transaction(item)
                if item.side is Side.INBOUND and (item.timed_out or item.status >= 400):
                    self._request_diagnosis(item)
            else:
                assert isinstance(item, RegisterAttempt)
                metrics.observe_attempt(item)
                self.failures.observe_attempt(item)
                self.context.observe_attempt(item)
                if item.outcome is AttemptOutcome.SUCCESS and item.side is Side.INBOUND:
                    self.recovered.append((item.to_user, item.to_host, item.peer_ip, item.finished))

    def _request_diagnosis(self, tx: RegisterTransaction) -> None:
        if tx.status in (401, 407):
            return
        status: int | str = "timeout" if tx.timed_out else tx.status
        key = (tx.side.value, tx.to_user[:128], tx.to_host[:255], tx.peer_ip[:45], status)
        if key in self._pending_diagnosis:
            return  # one request in flight per failure group; the engine caches results
        try:
            self.diagnosis_queue.put_nowait(
                DiagnosisRequest(key=key, due=time.monotonic() + DIAGNOSIS_DELAY)
            )
        except asyncio.QueueFull:
            self.metrics.observe_queue_drop("diagnosis")
            return
        self._pending_diagnosis.add(key)

    def diagnosis_done(self, key: tuple[str, str, str, str, int | str]) -> None:
        self._pending_diagnosis.discard(key)

    def record(self, key: tuple[str, str, str, str, int | str]) -> FailureRecord | None:
        return self.failures.get(key)

    def _publish_parse_stats(self, source: str) -> None:
        """Turn the parser's plain counters into metric increments (deltas since last time)."""
        metrics = self.metrics
        for name, st in self.parser.stats_by_source.items():
            if name != source and not name.startswith(source + "/"):
                continue
            lines, records, errors = self._stats_seen.get(name, (0, {}, {}))
            if st.lines > lines:
                metrics.observe_lines(name, st.lines - lines)
            for kind, n in st.records.items():
                if n > records.get(kind, 0):
                    metrics.observe_record(name, kind, n - records.get(kind, 0))
            for kind, n in st.errors.items():
                if n > errors.get(kind, 0):
                    metrics.observe_parse_error(name, kind, n - errors.get(kind, 0))
            self._stats_seen[name] = (st.lines, dict(st.records), dict(st.errors))


def _tz_offset(name: str) -> float:
    """Seconds east of UTC of the drachtio container's time zone, as of now."""
    if name.upper() in ("UTC", "Z", "GMT"):
        return 0.0
    from sipwatch.config import get_timezone

    offset = datetime.now(UTC).astimezone(get_timezone(name)).utcoffset()
    return offset.total_seconds() if offset else 0.0


def build_sources(config: Config, metrics: SipwatchMetrics) -> list[tuple[str, LogSource]]:
    """The configured sources as (name, source) pairs (see ``sipwatch.sources``)."""
    from sipwatch.sources import SourceContext
    from sipwatch.sources import build_sources as build

    return build(
        SourceContext(config=config, on_status=metrics.set_source_up, registry=metrics.registry)
    )


class Daemon:
    """Owns the pipeline's tasks and their lifecycle."""

    def __init__(
        self,
        config: Config,
        *,
        config_path: str | None = None,
        sources: list[tuple[str, LogSource]] | None = None,
        sink_factory: Callable[[Config, SipwatchMetrics], FailureSink | None] | None = None,
        diagnoser_factory: Callable[[Config, SipwatchMetrics], Any] | None = None,
        shutdown_timeout: float = 5.0,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.metrics = SipwatchMetrics(
            top_n=config.metrics.top_n, series_ttl=config.metrics.series_ttl_seconds
        )
        self.pipeline = Pipeline(config, self.metrics)
        self._sources = sources
        self._sink_factory = sink_factory
        self._diagnoser_factory = diagnoser_factory
        self.sink: FailureSink | None = None
        self.diagnoser: Any = None
        self.shutdown_timeout = shutdown_timeout
        self.chunks: asyncio.Queue[SourceItem | None] = asyncio.Queue(CHUNK_QUEUE)
        self.stop_event = asyncio.Event()
        self.http_address: tuple[str, int] | None = None
        self.reloads = 0
        self._reload_lock = asyncio.Lock()
        self._reload_tasks: set[asyncio.Task[None]] = set()
        self._detected_flavour: RegistrarFlavour | None = None
        self._live_sources = 0

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> int:
        from sipwatch.web import make_app, start_http

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop_event.set)
        await self._detect_registrar_flavour()
        self._build_sinks()
        with contextlib.suppress(NotImplementedError, RuntimeError):  # after the first build
            loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        app = make_app(self.metrics, self.pipeline.failures, self.readiness)
        host, port = self.config.metrics.host, self.config.metrics.port
        runner = await start_http(app, host, port)
        addresses = runner.addresses
        if addresses:
            self.http_address = (str(addresses[0][0]), int(addresses[0][1]))
        log.info("sipwatch started", listen=f"{host}:{self.http_address and self.http_address[1]}")

        sources = (
            self._sources if self._sources is not None else build_sources(self.config, self.metrics)
        )
        if not sources:
            log.warning("no log sources configured")
        source_tasks = [
            asyncio.create_task(self._pump(name, src), name=f"source:{name}")
            for name, src in sources
        ]
        self._live_sources = len(source_tasks)
        workers = [
            asyncio.create_task(self._parse_loop(), name="parse"),
            asyncio.create_task(self._diagnosis_loop(), name="diagnosis"),
            asyncio.create_task(self._tick_loop(), name="tick"),
        ]
        await self.stop_event.wait()
        log.info("sipwatch stopping")
        deadline = time.monotonic() + self.shutdown_timeout
        for t in source_tasks:
            t.cancel()
        await asyncio.gather(*source_tasks, return_exceptions=True)
        # let the parse stage drain what the sources already read
        await self.chunks.put(None)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(workers[0], max(0.1, deadline - time.monotonic()))
        for t in workers[1:]:
            t.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        await self._close_sinks(max(0.1, deadline - time.monotonic()))
        await runner.cleanup()
        log.info("sipwatch stopped")
        return 0

    def readiness(self) -> dict[str, bool]:
        """Sources for /readyz.  Docker services are alternatives per role: a deployment runs
        either `registrar` (legacy) or `sbc-sip-sidecar`, so the role is up if one of them is."""
        status = self.metrics.source_status()
        docker = self.config.sources.docker
        if not docker.enabled:
            return status
        out = {k: v for k, v in status.items() if k != "docker"}
        for role, names in (
            ("drachtio", docker.drachtio_services),
            ("registrar", docker.registrar_services),
        ):
            seen = [status[n] for n in names if n in status]
            for n in names:
                out.pop(n, None)
            if names:
                out[f"docker:{role}"] = any(seen)
        return out

    async def _detect_registrar_flavour(self) -> None:
        """``registrar_flavour = "auto"`` on a Docker host: ask the Engine which image runs
        (jambonz/sbc-registrar is the legacy registrar, jambonz/sbc-sip-sidecar the current
        one); the causes differ.  Any trouble leaves "auto" (the rules then infer it)."""
        docker = self.config.sources.docker
        if not docker.enabled or self.config.jambonz.registrar_flavour != "auto":
            return
        from sipwatch.diagnosis.flavour import flavour_from_image
        from sipwatch.sources.docker import DockerControl

        try:
            async with (
                asyncio.timeout(5.0),
                DockerControl(docker.url, project=docker.project, api_timeout=3.0) as dc,
            ):
                for service in docker.registrar_services:
                    try:
                        info = await dc.service_container(service)
                    except Exception:  # noqa: S112 - the next service name may exist
                        continue
                    flavour = flavour_from_image(info.image)
                    if flavour is not None:
                        jambonz = dataclasses.replace(
                            self.config.jambonz, registrar_flavour=flavour
                        )
                        self.config = dataclasses.replace(self.config, jambonz=jambonz)
                        self._detected_flavour = flavour
                        log.info("registrar detected", service=service, flavour=flavour)
                        return
        except Exception as exc:
            log.warning("could not detect the registrar flavour", error=str(exc))

    def _build_sinks(self) -> None:
        if self._diagnoser_factory is not None:
            self.diagnoser = self._diagnoser_factory(self.config, self.metrics)
        if self._sink_factory is not None:
            self.sink = self._sink_factory(self.config, self.metrics)

    async def _close_sinks(self, budget: float) -> None:
        for obj in (self.sink, self.diagnoser):
            await _close_quietly(obj, budget)

    def _on_sighup(self) -> None:
        task = asyncio.ensure_future(self.reload())
        self._reload_tasks.add(task)
        task.add_done_callback(self._reload_tasks.discard)

    async def reload(self) -> None:
        """SIGHUP: re-read the configuration file and the rules, rebuild diagnosis and
        alerting.  The new stages are built first and swapped in only when all of them could
        be built; otherwise the running ones stay (a bad file or rule never stops the daemon).
        """
        async with self._reload_lock:
            try:
                new = load_config(self.config_path)
                if self._detected_flavour and new.jambonz.registrar_flavour == "auto":
                    jambonz = dataclasses.replace(
                        new.jambonz, registrar_flavour=self._detected_flavour
                    )
                    new = dataclasses.replace(new, jambonz=jambonz)
                diagnoser = (
                    self._diagnoser_factory(new, self.metrics) if self._diagnoser_factory else None
                )
                try:
                    sink = self._sink_factory(new, self.metrics) if self._sink_factory else None
                except Exception:
                    await _close_quietly(diagnoser, 5.0)
                    raise
            except Exception as exc:  # a bad file must not kill a running daemon
                log.error("reload failed; keeping the running configuration", error=str(exc))
                return
            old = (self.sink, self.diagnoser)
            self.config, self.diagnoser, self.sink = new, diagnoser, sink
            for obj in old:
                await _close_quietly(obj, 5.0)
            self.reloads += 1
            log.info("configuration reloaded", source=new.meta.source)

    # ------------------------------------------------------------------ stages
    async def _pump(self, name: str, source: LogSource) -> None:
        """Copy a source's chunks into the parse queue (waits when parsing falls behind).

        A source that fails (Docker socket missing, permission denied) is retried with
        capped backoff: the daemon must outlive an engine that starts after it."""
        reports_itself = getattr(source, "reports_status", False)
        backoff = 1.0
        try:
            while True:
                if not reports_itself:  # Docker sources report per container
                    self.metrics.set_source_up(name, True)
                try:
                    async for chunk in source.chunks():
                        backoff = 1.0
                        await self.chunks.put(chunk)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.error(
                        "log source failed; retrying", source=name, error=str(exc), retry_in=backoff
                    )
                    self.metrics.set_source_up(name, False)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 30.0)
                    continue
                if not reports_itself:
                    self.metrics.set_source_up(name, False)  # a one-shot source (stdin) ended
                return
        finally:
            self._live_sources -= 1

    async def _parse_loop(self) -> None:
        q = self.chunks
        while True:
            chunk = await q.get()
            if chunk is None:
                return
            try:
                self.pipeline.feed(chunk)
            except Exception:  # a parser bug must not stop the daemon
                log.exception("parse stage error", source=chunk.source)
                self.metrics.observe_parse_error(chunk.source, "internal")
            self._deliver_recoveries()

    def _deliver_recoveries(self) -> None:
        rec = self.pipeline.recovered
        if not rec:
            return
        if self.sink is not None:
            for user, domain, ip, at in rec:
                self.sink.on_recovered(user, domain, ip, at)
        rec.clear()

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            self.pipeline.tick()
            self._deliver_recoveries()
            self.metrics.observe_queue("parse", self.chunks.qsize(), self.chunks.maxsize)

    async def _diagnosis_loop(self) -> None:
        q = self.pipeline.diagnosis_queue
        while True:
            req = await q.get()
            delay = req.due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                await self._diagnose(req)
            except Exception:
                log.exception("diagnosis stage error")
            finally:
                self.pipeline.diagnosis_done(req.key)

    async def _diagnose(self, req: DiagnosisRequest) -> None:
        record = self.pipeline.record(req.key)
        if record is None or self.diagnoser is None:
            return
        from sipwatch.pipeline.symptoms import symptom_from_record

        symptom = symptom_from_record(record, self.pipeline.context)
        diagnosis = await self.diagnoser.diagnose(symptom)
        if self.sink is not None:
            await self.sink.on_diagnosis(record, diagnosis)


async def _close_quietly(obj: Any, budget: float) -> None:
    """Close a stage that has ``aclose``; a failure is logged, never raised (shutdown)."""
    close = getattr(obj, "aclose", None)
    if close is None:
        return
    try:
        await asyncio.wait_for(close(), budget)
    except Exception as exc:
        log.warning("closing a stage failed", stage=type(obj).__name__, error=repr(exc))


async def run_daemon(config: Config, *, config_path: str | None) -> int:
    """Entry point used by ``sipwatch run``."""
    from sipwatch.wiring import make_diagnoser, make_sink

    daemon = Daemon(
        config,
        config_path=config_path,
        diagnoser_factory=make_diagnoser,
        sink_factory=make_sink,
    )
    return await daemon.run()
