"""Docker source: follow the logs of docker-compose services through the Engine API.

Containers are found by their compose service label and each one is followed by its own
task; all tasks feed one bounded queue, so a slow consumer slows the readers instead of
growing memory.  The ``/events`` stream drives everything that changes a container:

* a follow stream ends cleanly when its container stops (also inside a restart), so the
  follower re-opens it on the ``start`` event with ``since`` = the last entry's timestamp
  and skips the entries it already delivered (see :class:`ResumePoint`);
* a recreated container has a new id: its ``start`` event spawns a new follower that reads
  it from its first line; the old follower ends when its container is gone (404);
* a dropped connection or an unreachable Engine makes every stream retry with capped
  exponential backoff; when ``/events`` comes back, the containers are listed again and
  waiting followers are woken.

No line is lost or delivered twice across any of these, as long as the Engine still has
the log entries (json-file / local drivers).

With a checkpoint store (``positions``) the same holds across a restart of sipwatch: every
chunk carries its container's resume point (``docker:<container id>``), a container with a
saved one is read from there, and one the store does not know - created while sipwatch was
down - from its first line (``tail`` then only applies to the very first start).  A
container attached with a ``tail`` that has logged nothing yet is saved as "everything from
the moment of attaching", so what it logs while sipwatch is down is not skipped either.

:class:`DockerControl` is the small request/response side (list, inspect, restart) used by
diagnosis and remediation.  Every call has an explicit timeout: aiodocker's default has
none.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Unpack

import aiodocker
import aiohttp
import structlog

from sipwatch.model import LogChunk, Position, Stream
from sipwatch.sources.docker_logs import LogDecoder, iter_log_batches, ns_to_since
from sipwatch.sources.fanin import Backoff, FollowingSource, FollowOptions, follow_options
from sipwatch.sources.timestamped import ResumePoint

if TYPE_CHECKING:
    from sipwatch.sources import LogSource, SourceContext

log = structlog.get_logger(__name__)

COMPOSE_SERVICE = "com.docker.compose.service"
COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_ONEOFF = "com.docker.compose.oneoff"
COMPOSE_NUMBER = "com.docker.compose.container-number"

# Everything that means "the Engine could not be reached or answered badly just now".
_TRANSIENT: tuple[type[BaseException], ...] = (
    aiodocker.DockerError,
    aiohttp.ClientError,
    asyncio.IncompleteReadError,
    TimeoutError,
    OSError,
)

# /events also fails on a line that is not JSON (ValueError).
_EVENT_ERRORS: tuple[type[BaseException], ...] = (*_TRANSIENT, ValueError)

_MAX_EVENT_LINE = 1024 * 1024
#: What the drachtio and the registrar services are reported as (``on_status``, the
#: ``source`` label of ``sipwatch_source_up``, ``/readyz``'s ``docker:<role>``).
ROLE_DRACHTIO = "drachtio"
ROLE_REGISTRAR = "registrar"
#: Checkpoint keys of this source: ``docker:<container id>``.
POSITION_PREFIX = "docker:"


class DockerSourceError(Exception):
    """Base of the errors :class:`DockerControl` raises."""


class DockerUnavailable(DockerSourceError):
    """The Engine could not be reached, timed out or failed (5xx)."""


class ContainerNotFound(DockerSourceError):
    """No such container, or no container for the service."""


class RegistrarFlavour(StrEnum):
    """Which jambonz image handles REGISTER (the two differ in logs and config)."""

    SBC_REGISTRAR = "sbc-registrar"
    SBC_SIP_SIDECAR = "sbc-sip-sidecar"


def registrar_flavour(image: str) -> RegistrarFlavour | None:
    """Tell the registrar flavour from an image reference like ``jambonz/sbc-registrar:0.9``."""
    ref = image.split("@", 1)[0]
    repo = ref.rsplit("/", 1)[-1].split(":", 1)[0]
    for flavour in RegistrarFlavour:
        if repo == flavour.value:
            return flavour
    return None


@dataclass(slots=True)
class ContainerInfo:
    """The parts of ``GET /containers/{id}/json`` sipwatch uses.

    ``env`` can hold secrets (ENCRYPTION_SECRET, JWT_SECRET, DB passwords): it is excluded
    from ``repr`` so it never ends up in a log line by accident.
    """

    id: str
    name: str
    service: str
    project: str
    image: str
    state: str
    running: bool
    tty: bool
    restart_count: int = 0
    labels: dict[str, str] = field(default_factory=dict, repr=False)
    env: dict[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_inspect(cls, data: Mapping[str, Any]) -> ContainerInfo:
        config = data.get("Config") or {}
        state = data.get("State") or {}
        labels = dict(config.get("Labels") or {})
        env: dict[str, str] = {}
        for item in config.get("Env") or []:
            key, _, value = str(item).partition("=")
            env[key] = value
        return cls(
            id=str(data.get("Id", "")),
            name=str(data.get("Name", "")).lstrip("/"),
            service=labels.get(COMPOSE_SERVICE, ""),
            project=labels.get(COMPOSE_PROJECT, ""),
            image=str(config.get("Image", "")),
            state=str(state.get("Status", "")),
            running=bool(state.get("Running", False)),
            tty=bool(config.get("Tty", False)),
            restart_count=int(data.get("RestartCount", 0) or 0),
            labels=labels,
            env=env,
        )

    @property
    def registrar_flavour(self) -> RegistrarFlavour | None:
        return registrar_flavour(self.image)


def _make_client(docker_url: str | None, api_timeout: float) -> aiodocker.Docker:
    """An aiodocker client with a real timeout for request/response calls.

    ``docker_url`` None lets aiodocker resolve the host (DOCKER_HOST, context, the usual
    sockets).  Must be called inside a running loop (the connector needs one).
    """
    timeout = aiohttp.ClientTimeout(total=api_timeout, connect=min(5.0, api_timeout))
    try:
        return aiodocker.Docker(url=docker_url, timeout=timeout)
    except (AssertionError, ValueError) as exc:  # aiodocker asserts when it finds no host
        raise DockerUnavailable(
            f"no usable Docker host ({exc or 'none found'}): set DOCKER_HOST or docker_url"
        ) from exc


class _Gone(Exception):
    """The followed container no longer exists."""


@dataclass(eq=False, slots=True)
class _Follower:
    container_id: str
    key: str  # what on_status reports: the service (or configured container name)
    source: str  # LogChunk.source: one framing channel per running container
    tail: str
    since: str | None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    decoder: LogDecoder | None = None
    streaming: bool = False
    opened_at_ns: int | None = None
    task: asyncio.Task[None] | None = None
    saved: ResumePoint | None = None  # the checkpoint of an earlier run to continue from

    @property
    def position_key(self) -> str:
        return POSITION_PREFIX + self.container_id


class DockerLogSource(FollowingSource[str, _Follower]):
    """Follow the logs of the containers of some compose services.

    ``services`` are compose service names (label ``com.docker.compose.service``);
    ``project`` restricts to one compose project; ``name`` additionally follows a plain
    container by its exact name (deployments without compose), reported under that name.
    ``tail`` and ``since`` (epoch seconds) apply to the containers found at start; a
    container that starts later is read from its first line.  ``on_status(service, up)``
    is called when a service gains or loses its last live log stream, and once with
    ``False`` for services that have no running container at start.  ``roles`` maps
    services that are alternatives of one role to that role's name (a deployment runs the
    legacy ``registrar`` *or* ``sbc-sip-sidecar``): the role is what is reported, up while
    any of its services streams, so the alternative a deployment does not run is never
    reported down.

    It reports every service's state itself (``on_status``), so the daemon does not report
    the source as a whole (``reports_status``).

    ``LogChunk.source`` is the service name; further replicas of a scaled service get
    ``<service>-<n>`` (their container number) so that two containers never share one
    framing channel.  A TTY container delivers everything as ``Stream.STDOUT``.
    """

    _log = log
    _kind = "docker"
    _status_field = "service"

    def __init__(
        self,
        services: Sequence[str],
        *,
        docker_url: str | None = None,
        project: str | None = None,
        name: str | None = None,
        tail: str = "all",
        since: float | None = None,
        recheck_interval: float = 30.0,
        roles: Mapping[str, str] | None = None,
        **options: Unpack[FollowOptions],
    ) -> None:
        super().__init__(**options)
        self._services = frozenset(services)
        self._roles = dict(roles or {})
        self._docker_url = docker_url
        self._project = project
        self._name = name
        self._tail = tail
        self._since = ns_to_since(int(since * 1_000_000_000)) if since is not None else None
        self._recheck_interval = recheck_interval
        self._docker: aiodocker.Docker | None = None

    # ------------------------------------------------------------------ public

    async def _open(self) -> None:
        """Raises :class:`DockerUnavailable` when no Docker host can be found."""
        self._docker = _make_client(self._docker_url, self._api_timeout)

    def _watchers(self) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(self._watch_events(), name="docker-events")]

    # ----------------------------------------------------------------- helpers

    async def _close_client(self) -> None:
        if self._docker is not None:
            await self._docker.close()
            self._docker = None

    @property
    def _client(self) -> aiodocker.Docker:
        assert self._docker is not None, "only used while chunks() runs"
        return self._docker

    def _match(self, labels: Mapping[str, str], name: str) -> tuple[str, str] | None:
        """(status key, source name) if this container is one we follow."""
        if labels.get(COMPOSE_ONEOFF) == "True":
            return None
        service = labels.get(COMPOSE_SERVICE)
        if service in self._services and (
            self._project is None or labels.get(COMPOSE_PROJECT) == self._project
        ):
            number = labels.get(COMPOSE_NUMBER, "1")
            source = service if number in ("", "1") else f"{service}-{number}"
            return self._roles.get(service, service), source
        if self._name is not None and name == self._name:
            return name, name
        return None

    def _set_streaming(self, follower: _Follower, up: bool) -> None:
        follower.streaming = up
        key = follower.key
        self._report(key, any(f.streaming for f in self._followers.values() if f.key == key))

    def _spawn(self, container_id: str, key: str, source: str, *, fresh: bool) -> None:
        if container_id in self._gone:  # a replayed event of a removed container
            return
        known = self._followers.get(container_id)
        if known is not None:
            known.wake.set()
            return
        follower = _Follower(
            container_id=container_id,
            key=key,
            source=source,
            tail="all" if fresh else self._tail,
            since=self._since,
        )
        if self._positions is not None:
            self._restore(follower, fresh=fresh)
        self._followers[container_id] = follower
        follower.task = asyncio.create_task(
            self._follow(follower), name=f"docker-logs-{container_id[:12]}"
        )
        assert self._fanin is not None
        self._fanin.watch(follower.task)
        log.info("docker_follow_start", container=container_id[:12], source=source)

    def _restore(self, f: _Follower, *, fresh: bool) -> None:
        """Continue where an earlier run of sipwatch stopped (see the module docstring)."""
        assert self._positions is not None
        state = self._positions.get(f.position_key)
        since_ns = state.get("since_ns") if state is not None else None
        if state is not None and isinstance(since_ns, int) and since_ns > 0:
            f.since, f.tail = ns_to_since(since_ns), "all"  # attached, had logged nothing
        elif state is not None and (point := ResumePoint.from_state(state)) is not None:
            f.saved, f.tail, f.since = point, "all", None
        elif not fresh and self._positions.has_kind(POSITION_PREFIX):
            # sipwatch followed this engine before and does not know this container: it was
            # created while sipwatch was down, everything it logged is new
            f.tail, f.since = "all", None
        else:
            return
        log.info("docker_follow_resume", container=f.container_id[:12], source=f.source)

    def _position(self, f: _Follower) -> Position | None:
        """The checkpoint after what was queued so far (None without a store)."""
        if self._positions is None:
            return None
        decoder = f.decoder
        if decoder is None or not decoder.resume.ts or not decoder.settled:
            return Position(f.position_key, None)
        return Position(f.position_key, decoder.resume.to_state())

    # ----------------------------------------------------------------- events

    async def _watch_events(self) -> None:
        """Keep ``/events`` open; (re)list containers each time it (re)connects."""
        backoff = Backoff(self._backoff_initial, self._backoff_max)
        since_ns: int | None = None
        initial = True
        filters: dict[str, list[str]] = {"type": ["container"]}
        if self._project is not None and not self._name:
            filters["label"] = [f"{COMPOSE_PROJECT}={self._project}"]
        timeout = aiohttp.ClientTimeout(
            total=None, sock_read=None, connect=min(5.0, self._api_timeout)
        )
        while True:
            opened_ns = time.time_ns()
            params: dict[str, Any] = {"filters": filters}
            if since_ns is not None:
                params["since"] = ns_to_since(since_ns)
            try:
                async with self._client._query("events", params=params, timeout=timeout) as resp:
                    try:
                        await self._reconcile(fresh=not initial)
                        initial = False
                        backoff.reset()
                        since_ns = await self._read_events(resp, since_ns)
                    finally:
                        resp.close()
                log.info("docker_events_ended")
            except _EVENT_ERRORS as exc:
                log.warning("docker_events_failed", error=str(exc)[:300])
                self._report_unfollowed()
            if since_ns is None:
                since_ns = opened_ns
            await asyncio.sleep(backoff.next())

    async def _reconcile(self, *, fresh: bool) -> None:
        """List running containers: follow new ones, wake the known ones.

        ``fresh`` is True after a reconnect: a container we did not know then started while
        we were away, so it is read from its first line.
        """
        filters: dict[str, list[str]] = {}
        if self._project is not None and not self._name:
            filters["label"] = [f"{COMPOSE_PROJECT}={self._project}"]
        items = await self._client._query_json(
            "containers/json", params={"filters": filters} if filters else None
        )
        for item in items:
            names = item.get("Names") or [""]
            match = self._match(item.get("Labels") or {}, str(names[0]).lstrip("/"))
            if match is not None:
                self._spawn(str(item["Id"]), match[0], match[1], fresh=fresh)
        for follower in self._followers.values():
            follower.wake.set()
        self._report_unfollowed()

    def _report_unfollowed(self) -> None:
        """Services with no container (or no reachable Engine) are down."""
        wanted = {self._roles.get(s, s) for s in self._services}
        wanted |= {self._name} if self._name else set()
        followed = {f.key for f in self._followers.values()}
        for key in wanted - followed:
            self._report(key, False)

    async def _read_events(self, resp: aiohttp.ClientResponse, since_ns: int | None) -> int | None:
        buf = b""
        while True:
            data = await resp.content.readany()
            if not data:
                return since_ns
            buf += data
            *lines, buf = buf.split(b"\n")
            if len(buf) > _MAX_EVENT_LINE:
                buf = b""
            for line in lines:
                if not line.strip():
                    continue
                event = json.loads(line)
                if isinstance(event, dict):
                    since_ns = self._on_event(event) or since_ns

    def _on_event(self, event: Mapping[str, Any]) -> int | None:
        """Handle one container event; return its time in ns (for ``since`` on reconnect)."""
        when = event.get("timeNano")
        if not isinstance(when, int):
            when = int(event.get("time", 0) or 0) * 1_000_000_000 or None
        if event.get("Type", "container") != "container":
            return when
        action = str(event.get("Action") or event.get("status") or "").split(":", 1)[0]
        actor = event.get("Actor") or {}
        container_id = str(actor.get("ID") or event.get("id") or "")
        attrs = actor.get("Attributes") or {}
        if action == "start":
            match = self._match(attrs, str(attrs.get("name", "")))
            if match is not None and container_id:
                self._spawn(container_id, match[0], match[1], fresh=True)
        elif action in ("destroy", "restart"):
            follower = self._followers.get(container_id)
            if follower is not None:
                follower.wake.set()
        return when

    # ---------------------------------------------------------------- follower

    async def _follow(self, f: _Follower) -> None:
        """Follow one container until it is removed."""
        backoff = Backoff(self._backoff_initial, self._backoff_max)
        try:
            while True:
                f.wake.clear()
                try:
                    got = await self._stream_once(f)
                except _Gone:
                    self._mark_gone(f.container_id)
                    return
                except _TRANSIENT as exc:
                    self._set_streaming(f, False)
                    log.info(
                        "docker_logs_retry", container=f.container_id[:12], error=str(exc)[:300]
                    )
                    await self._sleep_or_wake(f, backoff.next())
                    continue
                # The Engine ended the stream cleanly: the container stopped or restarts.
                self._set_streaming(f, False)
                try:
                    info = await self._inspect(f.container_id)
                except _Gone:
                    self._mark_gone(f.container_id)
                    return
                except _TRANSIENT:
                    await self._sleep_or_wake(f, backoff.next())
                    continue
                if info.running:
                    if got:
                        backoff.reset()
                    else:  # ended at once with nothing new: do not spin
                        await self._sleep_or_wake(f, backoff.next())
                    continue
                backoff.reset()
                await self._sleep_or_wake(f, self._recheck_interval)
        finally:
            self._followers.pop(f.container_id, None)
            self._set_streaming(f, False)
            if f.decoder is not None and self._fanin is not None:
                for stream, text in f.decoder.flush():
                    chunk = LogChunk(f.source, stream, text, position=self._position(f))
                    if not self._fanin.put_nowait(chunk):
                        break  # shutting down with a backlog: nobody will read it
            log.info("docker_follow_end", container=f.container_id[:12], source=f.source)

    async def _inspect(self, container_id: str) -> ContainerInfo:
        try:
            data = await self._client._query_json(f"containers/{container_id}/json")
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                raise _Gone from exc
            raise
        return ContainerInfo.from_inspect(data)

    def _resume_params(self, f: _Follower) -> tuple[str | None, str]:
        assert f.decoder is not None
        resume = f.decoder.resume
        if resume.ts:
            ns = resume.ns
            assert ns is not None
            return ns_to_since(ns), "all"
        if f.opened_at_ns is None or f.tail == "all":
            return f.since, f.tail
        # Started with a tail but nothing came yet: everything since that first open is new.
        return ns_to_since(f.opened_at_ns), "all"

    async def _stream_once(self, f: _Follower) -> bool:
        """Open the logs once and pump them into the queue; True if any line came."""
        if f.decoder is None:
            info = await self._inspect(f.container_id)
            f.decoder = LogDecoder(tty=info.tty)
            if f.saved is not None:
                f.decoder.restore(f.saved)
        since, tail = self._resume_params(f)
        started_ns = time.time_ns()
        got = False
        assert self._fanin is not None
        put = self._fanin.put
        source = f.source
        batches = iter_log_batches(
            self._client,
            f.container_id,
            f.decoder,
            since=since,
            tail=tail,
            connect_timeout=min(5.0, self._api_timeout),
        )
        try:
            async with contextlib.aclosing(batches):
                async for batch in batches:
                    if not f.streaming:
                        if f.opened_at_ns is None:
                            f.opened_at_ns = started_ns
                            if self._positions is not None and f.tail != "all":
                                await put(self._attached(f, started_ns))
                        self._set_streaming(f, True)
                    last = len(batch) - 1
                    for i, (stream, text) in enumerate(batch):
                        got = True
                        # the resume point is after the whole batch: only its last chunk
                        position = self._position(f)
                        if i < last and position is not None:
                            position = Position(f.position_key, None)
                        await put(LogChunk(source, stream, text, position=position))
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                raise _Gone from exc
            raise
        return got

    @staticmethod
    def _attached(f: _Follower, opened_ns: int) -> LogChunk:
        """An idle signal carrying "everything from ``opened_ns`` on is new": the checkpoint
        of a container attached with a tail before it logged anything."""
        assert f.decoder is not None
        stream = Stream.STDOUT if f.decoder.tty else Stream.STDERR
        return LogChunk(
            f.source, stream, "", position=Position(f.position_key, {"since_ns": opened_ns})
        )


class DockerControl:
    """Request/response access to the Engine for diagnosis and remediation.

    Use as ``async with DockerControl(url) as dc:``.  Errors are mapped to
    :class:`DockerUnavailable` and :class:`ContainerNotFound` so callers branch on type.
    """

    def __init__(
        self,
        docker_url: str | None = None,
        *,
        project: str | None = None,
        api_timeout: float = 10.0,
    ) -> None:
        self._docker_url = docker_url
        self._project = project
        self._api_timeout = api_timeout
        self._docker: aiodocker.Docker | None = None

    async def __aenter__(self) -> DockerControl:
        self._docker = _make_client(self._docker_url, self._api_timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._docker is not None:
            await self._docker.close()
            self._docker = None

    @property
    def _client(self) -> aiodocker.Docker:
        if self._docker is None:
            raise RuntimeError("use DockerControl as 'async with'")
        return self._docker

    async def _call(self, path: str, method: str = "GET", **kw: Any) -> Any:
        try:
            return await self._client._query_json(path, method, **kw)
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                raise ContainerNotFound(exc.message) from exc
            raise DockerUnavailable(str(exc)) from exc
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise DockerUnavailable(f"{type(exc).__name__}: {exc}") from exc

    async def inspect(self, container_id: str) -> ContainerInfo:
        return ContainerInfo.from_inspect(await self._call(f"containers/{container_id}/json"))

    async def containers(
        self, service: str, *, include_stopped: bool = False
    ) -> list[ContainerInfo]:
        """The containers of a compose service (``compose run`` one-offs excluded)."""
        labels = [f"{COMPOSE_SERVICE}={service}"]
        if self._project is not None:
            labels.append(f"{COMPOSE_PROJECT}={self._project}")
        items = await self._call(
            "containers/json", params={"all": include_stopped, "filters": {"label": labels}}
        )
        out: list[ContainerInfo] = []
        for item in items:
            if (item.get("Labels") or {}).get(COMPOSE_ONEOFF) == "True":
                continue
            try:
                out.append(await self.inspect(str(item["Id"])))
            except ContainerNotFound:
                continue  # removed between list and inspect
        return out

    async def service_container(self, service: str) -> ContainerInfo:
        """The service's container, a running one if there is one."""
        found = await self.containers(service, include_stopped=True)
        if not found:
            raise ContainerNotFound(f"no container for service {service!r}")
        return sorted(found, key=lambda c: not c.running)[0]

    async def restart_service(self, service: str, *, grace: int = 10) -> list[str]:
        """Restart the service's running containers; return their ids.

        ``grace`` is the Engine's stop timeout before it kills; the HTTP timeout allows for
        it plus the normal API timeout.
        """
        targets = [c for c in await self.containers(service) if c.running]
        if not targets:
            raise ContainerNotFound(f"no running container for service {service!r}")
        timeout = aiohttp.ClientTimeout(total=grace + self._api_timeout, connect=5.0)
        for container in targets:
            await self._call(
                f"containers/{container.id}/restart",
                "POST",
                params={"t": grace},
                timeout=timeout,
            )
            log.info("docker_restarted", service=service, container=container.id[:12])
        return [c.id for c in targets]


def build(ctx: SourceContext) -> list[tuple[str, LogSource]]:
    """``[sources.docker]``: the drachtio and registrar compose services of one engine."""
    docker = ctx.config.sources.docker
    roles = {s: ROLE_DRACHTIO for s in docker.drachtio_services}
    roles |= {s: ROLE_REGISTRAR for s in docker.registrar_services}
    source = DockerLogSource(
        (*docker.drachtio_services, *docker.registrar_services),
        docker_url=docker.url,
        project=docker.project,
        tail=docker.tail,
        roles=roles,
        **follow_options(ctx),
    )
    return [("docker", source)]
