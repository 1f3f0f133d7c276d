"""``sipwatch run``: the asyncio driver of the pipeline core.

    sources --(SourceItems, bounded queue)--> Pipeline (sipwatch.pipeline.core): parser,
        tracker, scanner classifier, failure table, context, metrics, DiagnosisHandoff
        --(bounded, devices first, drop-counted)--> diagnosis --> alerts, remediation

The pipeline is the very object ``sipwatch replay`` runs; this module only adds what a
daemon needs around it: sources that follow, a wall clock that times out silent
transactions, the HTTP endpoints and the network-facing stages.

The parse stage never awaits a sink: metrics and the failure table are updated inline
(cheap, in-memory), while anything that talks to the network (MySQL, Redis, webhooks, Slack) sits
behind a bounded queue whose overflow is dropped *and counted*.  Sources are the only stage
that waits (backpressure on reading when parsing falls behind).

Signals: SIGTERM/SIGINT stop the sources, drain what was read, and exit within
``shutdown_timeout`` seconds; SIGHUP reloads the configuration and the rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from sipwatch.config import Config, RegistrarFlavour, load_config
from sipwatch.daemon.dependencies import DependencyHealth
from sipwatch.daemon.health import SipActivity, SourceState, source_states
from sipwatch.metrics import SipwatchMetrics
from sipwatch.model import LogChunk, SourceItem, Stream
from sipwatch.pipeline.core import Pipeline, PipelineSettings
from sipwatch.pipeline.failures import FailureKey, FailureRecord
from sipwatch.pipeline.handoff import DiagnosisHandoff
from sipwatch.sources import LogSource
from sipwatch.sources.positions import PositionKeeper, PositionStore
from sipwatch.waits import honour_cancellation, stop_tasks

if TYPE_CHECKING:
    from sipwatch.sources.discovery import Detection

log = structlog.get_logger("sipwatch.daemon")

CHUNK_QUEUE = 256  # chunks of up to ~128 KiB (files) or a few KiB (Docker)
# Queued after the last item of finite input (files read once, stdin): finish the pipeline.
END_OF_INPUT = LogChunk("", Stream.TEXT, "")
TICK = 1.0
SOURCE_DOWN_GRACE = 30.0  # a container restart is not an incident


class ListenError(Exception):
    """The HTTP address cannot be bound (in use, not local, no permission): a configuration
    problem the operator fixes, reported in one line with the address."""

    def __init__(self, listen: str, error: OSError) -> None:
        reason = os.strerror(error.errno) if error.errno else str(error)
        super().__init__(f"cannot listen on {listen}: {reason.lower()}")
        self.listen = listen


class FailureSink(Protocol):
    """What happens with a diagnosed failure: alerting and remediation plug in here."""

    async def on_diagnosis(self, record: FailureRecord, diagnosis: Any) -> None: ...

    def on_recovered(self, user: str, domain: str, source_ip: str, at: float) -> None: ...


def build_sources(
    config: Config,
    metrics: SipwatchMetrics,
    on_status: Callable[[str, bool], None],
    detection: Detection | None = None,
    positions: PositionStore | None = None,
) -> list[tuple[str, LogSource]]:
    """The configured sources as (name, source) pairs (see ``sipwatch.sources``)."""
    from sipwatch.sources import SourceContext
    from sipwatch.sources import build_sources as build

    return build(
        SourceContext(
            config=config,
            on_status=on_status,
            registry=metrics.registry,
            detection=detection,
            positions=positions,
        )
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
        health: DependencyHealth | None = None,
    ) -> None:
        self.config = config
        # the database, Redis and the log sources: each loss and return said once
        self.health = health if health is not None else DependencyHealth()
        self.config_path = config_path
        self.metrics = SipwatchMetrics(
            top_n=config.metrics.top_n, series_ttl=config.metrics.series_ttl_seconds
        )
        self.handoff = DiagnosisHandoff(on_drop=self.metrics.observe_queue_drop)
        self.activity = SipActivity()
        self.pipeline = Pipeline(
            PipelineSettings.from_config(config),
            observers=(self.metrics, self.handoff, self.activity),
        )
        self._reported: dict[str, bool] = {}  # what sources said about themselves
        self._ended: set[str] = set()  # one-shot sources that reached their end
        self._source_list: list[tuple[str, LogSource]] = []
        self.source_states: dict[str, SourceState] = {}
        self.log_now_at = time.monotonic()  # wall clock when pipeline.log_now last moved
        self._log_now_seen = 0.0
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
        self._finite_inputs = False  # every source ends by itself (files read once, stdin)
        self.input_done = asyncio.Event()  # set once finite input was read and finished
        # checkpoints (sipwatch.sources.positions): off until run() opens the state directory
        self.positions = PositionKeeper(None, self.pipeline.parser)

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> int:
        from sipwatch.web.app import make_app
        from sipwatch.web.auth import load_web_config
        from sipwatch.web.server import start_http

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop_event.set)
        detection: Detection | None = None
        if self._sources is None:
            # decide what to follow first (a pod, a Docker host, a jambonz VM): readiness and
            # the registrar detection read config.sources and must see what is followed
            from sipwatch.sources.discovery import resolve_sources

            self.config, detection = resolve_sources(self.config)
        await self._detect_registrar_flavour()
        truth = self.pipeline.settings.sip_truth
        if truth != "all":
            log.info(
                "one source of SIP truth",
                sip_messages_from="HEP capture" if truth == "hep" else "logs",
                other_sources_give=(
                    "registrar and drachtio service lines"
                    if truth == "hep"
                    else "nothing (HEP packets are only forwarded)"
                ),
            )
        self._build_sinks()
        with contextlib.suppress(NotImplementedError, RuntimeError):  # after the first build
            loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        http = self.config.metrics
        web_config = load_web_config(http.web_config_file) if http.web_config_file else None
        app = make_app(
            self.metrics,
            self.pipeline.failures,
            self.readiness,
            users=web_config.users if web_config else None,
            details=self._readiness_details,
        )
        host, port = http.host, http.port
        try:
            runner = await start_http(
                app,
                host,
                port,
                max_connections=http.max_connections,
                idle_timeout=http.idle_timeout_seconds,
                ssl_context=web_config.ssl_context if web_config else None,
                on_refused=lambda: self.metrics.observe_queue_drop("http_connections"),
            )
        except OSError as exc:
            await self._close_sinks(1.0)
            raise ListenError(http.listen, exc) from None
        addresses = runner.addresses
        if addresses:
            self.http_address = (str(addresses[0][0]), int(addresses[0][1]))
        log.info("sipwatch started", listen=f"{host}:{self.http_address and self.http_address[1]}")

        self.positions = PositionKeeper.from_config(self.config, self.pipeline.parser)
        sources = (
            self._sources
            if self._sources is not None
            else build_sources(
                self.config,
                self.metrics,
                self._on_source_status,
                detection,
                positions=self.positions.store,
            )
        )
        self._source_list = list(sources)
        if not sources:
            log.warning("no log sources configured")
        source_tasks = [
            asyncio.create_task(self._pump(name, src), name=f"source:{name}")
            for name, src in sources
        ]
        self._live_sources = len(source_tasks)
        self._finite_inputs = bool(sources) and all(
            getattr(src, "finite", False) for _name, src in sources
        )
        workers = [
            asyncio.create_task(self._parse_loop(), name="parse"),
            asyncio.create_task(self._diagnosis_loop(), name="diagnosis"),
            asyncio.create_task(self._tick_loop(), name="tick"),
            asyncio.create_task(self.health.run(), name="dependencies"),
        ]
        await self.stop_event.wait()
        log.info("sipwatch stopping")
        deadline = time.monotonic() + self.shutdown_timeout

        def remaining() -> float:
            return max(0.1, deadline - time.monotonic())

        await stop_tasks(source_tasks, remaining())
        # let the parse stage drain what the sources already read
        await self.chunks.put(None)
        await asyncio.wait(workers[:1], timeout=remaining())
        await stop_tasks(workers, remaining())
        await self.positions.close()  # what the parse stage finished, saved for a restart
        await self._close_sinks(remaining())
        await runner.cleanup()
        log.info("sipwatch stopped")
        return 0

    def _on_source_status(self, name: str, up: bool) -> None:
        """A source's own report (the Docker source per compose service)."""
        self._reported[name] = up
        self._evaluate_sources()

    def _evaluate_sources(self) -> None:
        """Recompute every source's state (reports, ``health()``, silence) and publish it."""
        sources = self.config.sources
        silent = (
            self.activity.silent(
                silence_after=sources.silence_seconds,
                busy_per_minute=sources.busy_messages_per_minute,
            )
            if sources.silence_seconds > 0
            else {}
        )
        states = source_states(self._source_list, self._reported, silent)
        for name in self._ended:
            states[name] = SourceState(False, "input ended")
        for name, state in states.items():
            if self.source_states.get(name) != state:
                if not state.up:
                    log.warning("log source down", source=name, reason=state.reason or None)
                elif name in self.source_states:
                    log.info("log source up", source=name)
                if name not in self._ended:  # input that ended is done, not lost
                    self.health.report(
                        f"source:{name}",
                        state.up,
                        state.reason or "no log lines",
                        grace=SOURCE_DOWN_GRACE,
                    )
            self.metrics.set_source_up(name, state.up)
        self.source_states = states

    def _readiness_details(self) -> dict[str, Any]:
        """What /readyz adds: each dependency's state since when and why, and the proof of
        the jambonz secret."""
        from sipwatch.daemon.stages import readiness_details

        return {"dependencies": self.health.details(), **readiness_details(self.diagnoser)}

    def readiness(self) -> dict[str, SourceState]:
        """Sources and dependencies for /readyz.  Docker services are alternatives per role:
        a deployment runs either `registrar` (legacy) or `sbc-sip-sidecar`, so the Docker
        source reports the role, up if one of them is.  The database and Redis count too:
        without them the causes are guesses, and the daemon says so (a system alert, and 503
        here naming them)."""
        status = dict(self.source_states)
        details = self.health.details()
        for name, is_up in self.health.readiness(sources=False).items():
            reason = "" if is_up else str(details[name].get("reason", ""))
            status[name] = SourceState(is_up, reason)
        docker = self.config.sources.docker
        if not docker.enabled:
            return status
        from sipwatch.sources.docker import ROLE_DRACHTIO, ROLE_REGISTRAR

        out = {k: v for k, v in status.items() if k != "docker"}
        for role, names in (
            (ROLE_DRACHTIO, docker.drachtio_services),
            (ROLE_REGISTRAR, docker.registrar_services),
        ):
            state = out.pop(role, None)  # the Docker source reports each role
            if names:
                if state is not None and not state.up and not state.reason:
                    state = None
                out[f"docker:{role}"] = state or SourceState(
                    False, f"no running container of {', '.join(names)}"
                )
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

    def _adopt_flavour_from_log(self, flavour: str) -> None:
        """The registrar's own startup lines named it (replay reads the same hint): with
        ``registrar_flavour = "auto"``, rebuild the diagnoser for that registrar."""
        self._detected_flavour = "sidecar" if flavour == "sidecar" else "legacy"
        if self.config.jambonz.registrar_flavour != "auto":
            return
        jambonz = dataclasses.replace(self.config.jambonz, registrar_flavour=self._detected_flavour)
        self.config = dataclasses.replace(self.config, jambonz=jambonz)
        log.info("registrar detected from its log", flavour=self._detected_flavour)
        factory = self._diagnoser_factory
        if factory is None:
            return

        async def swap() -> None:
            async with self._reload_lock:
                old = self.diagnoser
                self.diagnoser = factory(self.config, self.metrics)
                await _close_quietly(old, 5.0)

        task = asyncio.ensure_future(swap())
        self._reload_tasks.add(task)
        task.add_done_callback(self._reload_tasks.discard)

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
                # the sources keep running as they are: a reload changes what is concluded
                # from them, not what is followed (restart sipwatch to follow other logs)
                new = dataclasses.replace(
                    load_config(self.config_path), sources=self.config.sources
                )
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
            take_over = getattr(sink, "take_over", None)
            if take_over is not None and self.sink is not None:
                take_over(self.sink)  # open incidents, throttles and kept alerts carry over
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
                    self._on_source_status(name, True)
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
                    self._on_source_status(name, False)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 30.0)
                    continue
                if not reports_itself:
                    self._ended.add(name)  # a one-shot source (stdin, a file read once) ended
                    self._on_source_status(name, False)
                if self._live_sources == 1 and self._finite_inputs:
                    # the last of the input was read (`journalctl ... | sipwatch run` hit EOF):
                    # what is still open will never be answered in this log, as in replay
                    await self.chunks.put(END_OF_INPUT)
                return
        finally:
            self._live_sources -= 1

    async def _parse_loop(self) -> None:
        q = self.chunks
        while True:
            item = await q.get()
            if item is None:
                return
            if item is END_OF_INPUT:
                self.pipeline.finish()
                self._deliver_recoveries()
                self.input_done.set()
                continue
            try:
                self.pipeline.feed(item)
            except Exception:  # a parser bug must not stop the daemon
                log.exception("parse stage error", source=item.source)
                self.metrics.observe_parse_error(item.source, "internal")
            self.positions.processed(item)  # checkpoints: this item is done
            if self.pipeline.log_now != self._log_now_seen:
                self._log_now_seen = self.pipeline.log_now
                self.log_now_at = time.monotonic()
            if self._detected_flavour is None and self.pipeline.context.flavour_hint:
                self._adopt_flavour_from_log(self.pipeline.context.flavour_hint)
            self._deliver_recoveries()

    def _deliver_recoveries(self) -> None:
        recoveries = self.handoff.take_recoveries()
        if self.sink is not None:
            for r in recoveries:
                self.sink.on_recovered(r.user, r.domain, r.source_ip, r.at)

    def tick(self) -> None:
        """Advance log time with the wall clock so silent transactions still time out."""
        pipeline = self.pipeline
        if pipeline.log_now:
            pipeline.advance(pipeline.log_now + (time.monotonic() - self.log_now_at))
        metrics = self.metrics
        metrics.observe_queue("diagnosis", self.handoff.depth(), self.handoff.capacity)
        metrics.observe_queue("parse", self.chunks.qsize(), self.chunks.maxsize)
        metrics.expire()
        self._evaluate_sources()
        self.positions.tick()  # checkpoints: write the changed positions when due

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            self.tick()
            self._deliver_recoveries()

    async def _diagnosis_loop(self) -> None:
        handoff = self.handoff
        while True:
            key = await handoff.next()
            try:
                await self._diagnose(key)
            except Exception:
                log.exception("diagnosis stage error")
            finally:
                handoff.done(key)
            honour_cancellation()  # the database or Redis client may have swallowed it

    async def _diagnose(self, key: FailureKey) -> None:
        record = self.pipeline.failures.get(key)
        if record is None or self.diagnoser is None:
            return
        diagnosis = await self.diagnoser.diagnose(self.pipeline.symptom(record))
        from sipwatch.daemon.stages import device_causes

        # sipwatch's own configuration problems (a wrong secret) are reported once elsewhere
        top = next(iter(device_causes(diagnosis)), None)
        record.cause = (
            {
                "id": top.id,
                "severity": top.severity,
                "confidence": top.confidence,
                "summary": top.summary,
                "fix": list(top.fix_steps),
                "command": top.fix_command,
            }
            if top is not None
            else None
        )
        if self.sink is not None:
            await self.sink.on_diagnosis(record, diagnosis)


async def _close_quietly(obj: Any, budget: float) -> None:
    """Close a stage that has ``aclose``; a failure is logged, never raised (shutdown)."""
    close = getattr(obj, "aclose", None)
    if close is None:
        return
    try:
        async with asyncio.timeout(budget):
            await close()
    except Exception as exc:
        log.warning("closing a stage failed", stage=type(obj).__name__, error=repr(exc))


async def run_daemon(config: Config, *, config_path: str | None) -> int:
    """Entry point used by ``sipwatch run``."""
    import functools

    from sipwatch.daemon.stages import make_diagnoser, make_sink

    health = DependencyHealth()
    daemon = Daemon(
        config,
        config_path=config_path,
        diagnoser_factory=functools.partial(make_diagnoser, health=health),
        sink_factory=functools.partial(make_sink, health=health),
        health=health,
    )
    return await daemon.run()
