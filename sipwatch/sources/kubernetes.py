"""Kubernetes source: follow the jambonz pods' container logs through the Kubernetes API.

With jambonz's Helm chart, drachtio-server is the ``drachtio`` container of the
``jambonz-sbc-sip`` DaemonSet (one pod per SBC node, host network) and the registrar the
``sbc-registrar`` container of the ``sbc-register`` Deployment, usually on other nodes.  Pods
are chosen by namespace, label selector and container name (:class:`PodTarget`); each one is
followed by its own task (``GET pods/{name}/log?follow&timestamps``), all feeding one
:class:`~sipwatch.sources.fanin.FanIn`.  Every pod is its own source (``LogChunk.source`` is
the pod name) and ``LogChunk.node`` is the node it runs on.

What changes a pod is seen through a list + watch of the pods (``resourceVersion``): new pods
(rolling update, node added, crash-loop replacement) are attached and read from their first
line, deleted ones detached once their stream has drained.  A watch that ends is resumed
from the last resourceVersion; one that is too old (``410 Gone``, as a status or as an
``ERROR`` event) makes a fresh list.

No line is lost or read twice when a log stream drops (apiserver restart, load balancer
reset, kubelet idle timeout): the stream is re-opened with ``sinceTime`` and the entries
already delivered are skipped (:class:`~sipwatch.sources.timestamped.EntryCursor`; the API
cuts ``sinceTime`` to whole seconds, the cursor copes).  A container restart starts a new
log: if the old one was not read to its end, its rest is read with ``previous=true`` first.
The kubelet only keeps the previous instance, so a container that restarted twice while
the API was unreachable loses the middle one (logged).

With a checkpoint store (``positions``) this holds across a restart of sipwatch too: every
chunk carries its pod container's resume point and the instance it was read from
(``kubernetes:<pod uid>/<container>``), a pod with a saved one continues from there (the
rest of a container instance that restarted meanwhile is read with ``previous=true`` first),
and a pod the store does not know - created while sipwatch was down - is read from its first
line.  The checkpoints must outlive sipwatch's own pod for this; an ``emptyDir`` only
outlives its container (deploy/kubernetes/deployment.yaml).

The API merges a container's stdout and stderr into one stream, so a pod's lines arrive as
``Stream.TEXT``, like a file.  Lines the runtime cut into 16 KiB partial entries are joined
again (:class:`~sipwatch.sources.timestamped.TimestampedLines`).

The client is ``kubernetes_asyncio`` (an optional extra, ``sipwatch[kubernetes]``): its
configuration loaders give kubeconfig files (with exec and OIDC auth plugins) and the
in-cluster service account (with token rotation), over the same aiohttp stack as the rest
of sipwatch.  Its generated ``read_namespaced_pod_log`` has no ``sinceTime`` (the OpenAPI
spec lacks it) and its model objects are heavy, so requests go through
``ApiClient.call_api`` with ``_preload_content=False`` and the JSON is read as plain dicts;
every response is closed in ``finally``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Unpack

import aiohttp
import structlog

from sipwatch.model import LogChunk, Position, Stream
from sipwatch.sources.fanin import Backoff, FollowingSource, FollowOptions, follow_options
from sipwatch.sources.kube_access import (
    SERVICE_ACCOUNT_DIR,
    KubeAccess,
    KubernetesSourceError,
    pod_namespace,
)
from sipwatch.sources.timestamped import ResumePoint, TimestampedLines

if TYPE_CHECKING:
    from sipwatch.sources import LogSource, SourceContext

log = structlog.get_logger(__name__)

_MAX_EVENT_LINE = 4 << 20  # a watch event larger than this is garbage (etcd caps at 1.5 MiB)
_MAX_ERROR_BODY = 64 << 10
#: Checkpoint keys of this source: ``kubernetes:<pod uid>/<container>``.
POSITION_PREFIX = "kubernetes:"

# Everything that means "the API could not be reached or the stream broke just now".
_TRANSIENT: tuple[type[BaseException], ...] = (
    aiohttp.ClientError,
    asyncio.IncompleteReadError,
    TimeoutError,
    OSError,
    ValueError,  # a watch line that is not JSON
)


class KubeApiError(Exception):
    """A ``Status`` answer of the API server (403 Forbidden, 404, 410 Gone...)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class PodTarget:
    """Which container of which pods to follow; ``role`` names it in status reports."""

    role: str
    selector: str
    container: str


def _since_time(ns: int) -> str:
    """``sinceTime`` for a resume at ``ns``: whole seconds, rounded down (the API cuts the
    fraction anyway; rounding down keeps the resume entry inside what is replayed)."""
    when = dt.datetime.fromtimestamp(ns // 1_000_000_000, dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


async def connect(access: KubeAccess) -> tuple[Any, str]:
    """An authenticated ``kubernetes_asyncio`` ApiClient and the default namespace.

    In a pod (service account present) the in-cluster configuration is used, whose token
    is re-read as the kubelet rotates it; otherwise the kubeconfig file and context.
    """
    try:
        from kubernetes_asyncio import client as k8s_client
        from kubernetes_asyncio import config as k8s_config
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise KubernetesSourceError(
            "the Kubernetes source needs the kubernetes extra: pip install 'sipwatch[kubernetes]'"
        ) from exc
    configuration = k8s_client.Configuration()
    try:
        if access.in_cluster():
            sa = access.service_account_dir
            k8s_config.load_incluster_config(
                client_configuration=configuration,
                token_filename=str(sa / "token"),
                cert_filename=str(sa / "ca.crt"),
                environ=dict(access.environ),
            )
            namespace = pod_namespace(sa)
        else:
            path = access.existing_kubeconfig()
            # persist_config=False: never write refreshed tokens back into the (often
            # read-only, mounted) kubeconfig file
            await k8s_config.load_kube_config(
                config_file=path,
                context=access.context,
                client_configuration=configuration,
                persist_config=False,
            )
            contexts, active = k8s_config.list_kube_config_contexts(config_file=path)
            chosen = next((c for c in contexts if c.get("name") == access.context), active)
            namespace = str(((chosen or {}).get("context") or {}).get("namespace") or "")
    except KubernetesSourceError:
        raise
    except Exception as exc:  # ConfigException, YAML and file errors: all mean "unusable"
        raise KubernetesSourceError(f"cannot load the Kubernetes configuration: {exc}") from exc
    return k8s_client.ApiClient(configuration), namespace or "default"


class KubeApi:
    """The few calls the source makes, typed, over a kubernetes_asyncio ApiClient.

    ``stream`` responses are closed when the context exits, whatever happens, so no pooled
    connection leaks when a follower is cancelled or a stream is abandoned.
    """

    def __init__(self, client: Any, *, api_timeout: float = 10.0) -> None:
        self.client = client
        self._timeout = aiohttp.ClientTimeout(total=api_timeout, connect=min(5.0, api_timeout))
        self._stream_timeout = aiohttp.ClientTimeout(
            total=None, sock_read=None, connect=min(5.0, api_timeout)
        )

    async def _request(
        self, path: str, query: Mapping[str, str], client_timeout: aiohttp.ClientTimeout
    ) -> aiohttp.ClientResponse:
        resp: aiohttp.ClientResponse = await self.client.call_api(
            path,
            "GET",
            query_params=list(query.items()),
            header_params={"Accept": "application/json, */*"},
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=client_timeout,
        )
        if resp.status >= 300:
            try:
                body = await resp.content.read(_MAX_ERROR_BODY)
            finally:
                resp.close()
            raise _api_error(resp.status, body)
        return resp

    async def get_json(self, path: str, query: Mapping[str, str] | None = None) -> dict[str, Any]:
        resp = await self._request(path, query or {}, self._timeout)
        try:
            data = await resp.json(content_type=None)
        finally:
            resp.close()
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object from {path}")
        return data

    @contextlib.asynccontextmanager
    async def stream(
        self, path: str, query: Mapping[str, str], *, idle_timeout: float | None = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A streaming response; ``idle_timeout`` bounds the silence between two reads (a
        watch hears bookmarks regularly, a quiet log stream may rightly say nothing)."""
        timeout = self._stream_timeout
        if idle_timeout is not None:
            timeout = aiohttp.ClientTimeout(
                total=None, sock_read=idle_timeout, connect=self._stream_timeout.connect
            )
        resp = await self._request(path, query, timeout)
        try:
            yield resp
        finally:
            resp.close()

    async def close(self) -> None:
        await self.client.close()


def _api_error(status: int, body: bytes) -> KubeApiError:
    """Turn an error body (a ``Status`` object, usually) into an exception; never echo more
    than a line of it (it is the server's text, not ours)."""
    reason, message = "", ""
    try:
        data = json.loads(body)
        if isinstance(data, dict):
            reason = str(data.get("reason") or "")
            message = str(data.get("message") or "")
    except ValueError:
        message = body[:300].decode("utf-8", "replace")
    return KubeApiError(status, reason or "Error", message[:500])


async def _json_lines(resp: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """The objects of a watch response, one per line."""
    buf = b""
    while True:
        data = await resp.content.readany()
        if not data:
            return
        buf += data
        *lines, buf = buf.split(b"\n")
        if len(buf) > _MAX_EVENT_LINE:
            raise ValueError("watch event line too long")
        for line in lines:
            if line.strip():
                event = json.loads(line)
                if isinstance(event, dict):
                    yield event


@dataclass(slots=True)
class PodInfo:
    """What the source needs to know about one pod, from the API's pod object."""

    uid: str
    name: str
    node: str
    resource_version: str
    has_container: bool
    restart_count: int
    running: bool
    terminated: bool
    deleting: bool

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], container: str) -> PodInfo:
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        names = {c.get("name") for c in spec.get("containers") or ()}
        cs: Mapping[str, Any] = next(
            (c for c in status.get("containerStatuses") or () if c.get("name") == container),
            {},
        )
        state = cs.get("state") or {}
        return cls(
            uid=str(meta.get("uid", "")),
            name=str(meta.get("name", "")),
            node=str(spec.get("nodeName") or ""),
            resource_version=str(meta.get("resourceVersion", "")),
            has_container=container in names,
            restart_count=int(cs.get("restartCount") or 0),
            running="running" in state,
            terminated="terminated" in state,
            deleting=bool(meta.get("deletionTimestamp")),
        )


class _Gone(Exception):
    """The followed pod no longer exists."""


@dataclass(eq=False, slots=True)
class _Follower:
    target: PodTarget
    uid: str
    pod: str
    source: str
    node: str
    fresh: bool  # appeared after the start: read from its first line
    decoder: TimestampedLines = field(default_factory=lambda: TimestampedLines(Stream.TEXT))
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    streaming: bool = False
    opened_at_ns: int | None = None
    read_restarts: int | None = None  # restartCount of the instance the last open read
    deleted: bool = False
    task: asyncio.Task[None] | None = None

    @property
    def position_key(self) -> str:
        return f"{POSITION_PREFIX}{self.uid}/{self.target.container}"


class KubernetesLogSource(FollowingSource[tuple[str, str], _Follower]):
    """Follow one container of the pods a label selector picks, per :class:`PodTarget`.

    ``tail`` ("0", a number or "all") or ``since_seconds`` apply to the pods found at start;
    a pod that appears later is read from its first line.  ``on_status(key, up)`` reports
    ``kubernetes:<role>``: up while at least one pod of the role streams.  The source
    reports its own status, so the daemon adds no entry of its own for it.
    """

    _log = log
    _kind = "kubernetes"
    _status_field = "source"

    def __init__(
        self,
        targets: Sequence[PodTarget],
        *,
        access: KubeAccess | None = None,
        namespace: str | None = None,
        tail: str = "0",
        since_seconds: int | None = None,
        watch_timeout: int = 300,
        **options: Unpack[FollowOptions],
    ) -> None:
        if not targets:
            raise ValueError("at least one pod target is needed")
        super().__init__(**options)
        self.targets = tuple(targets)
        self.access = access or KubeAccess()
        self.namespace = namespace or None
        self._tail = tail
        self._since_seconds = since_seconds
        self._watch_timeout = watch_timeout
        self._api: KubeApi | None = None
        self._ns = ""

    def status_keys(self) -> list[str]:
        return [f"kubernetes:{t.role}" for t in self.targets]

    # ------------------------------------------------------------------ public

    async def _open(self) -> None:
        """Raises :class:`KubernetesSourceError` when the cluster configuration is unusable."""
        client, default_ns = await connect(self.access)
        self._api = KubeApi(client, api_timeout=self._api_timeout)
        self._ns = self.namespace or default_ns
        log.info(
            "kubernetes_source_start",
            namespace=self._ns,
            in_cluster=self.access.in_cluster(),
            targets=[f"{t.selector}/{t.container}" for t in self.targets],
        )

    def _watchers(self) -> list[asyncio.Task[None]]:
        return [
            asyncio.create_task(self._watch_pods(t), name=f"kube-watch-{t.role}")
            for t in self.targets
        ]

    # ----------------------------------------------------------------- helpers

    async def _close_client(self) -> None:
        if self._api is not None:
            await self._api.close()
            self._api = None

    @property
    def _client(self) -> KubeApi:
        assert self._api is not None, "only used while chunks() runs"
        return self._api

    def _pods_path(self) -> str:
        return f"/api/v1/namespaces/{self._ns}/pods"

    def _report_role(self, target: PodTarget) -> None:
        up = any(f.streaming for f in self._followers.values() if f.target == target)
        self._report(f"kubernetes:{target.role}", up)

    def _set_streaming(self, f: _Follower, up: bool) -> None:
        f.streaming = up
        self._report_role(f.target)

    # ------------------------------------------------------------------ pods

    async def _watch_pods(self, target: PodTarget) -> None:
        """List, then watch, the target's pods for as long as the source runs."""
        backoff = Backoff(self._backoff_initial, self._backoff_max)
        rv: str | None = None
        initial = True
        selector = {"labelSelector": target.selector}
        while True:
            try:
                if rv is None:
                    listing = await self._client.get_json(self._pods_path(), selector)
                    rv = str((listing.get("metadata") or {}).get("resourceVersion") or "")
                    self._reconcile(target, listing.get("items") or [], fresh=not initial)
                    initial = False
                query = {
                    **selector,
                    "watch": "true",
                    "allowWatchBookmarks": "true",
                    "timeoutSeconds": str(self._watch_timeout),
                }
                if rv:
                    query["resourceVersion"] = rv
                # the server ends the watch after timeoutSeconds: a longer silence means the
                # connection died without telling us
                idle = self._watch_timeout + 60.0
                async with self._client.stream(self._pods_path(), query, idle_timeout=idle) as resp:
                    backoff.reset()
                    async for event in _json_lines(resp):
                        kind = str(event.get("type", ""))
                        obj = event.get("object") or {}
                        if kind == "ERROR":
                            code = int(obj.get("code") or 0)
                            raise KubeApiError(
                                code, str(obj.get("reason", "")), str(obj.get("message", ""))
                            )
                        rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                        if kind in ("ADDED", "MODIFIED", "DELETED"):
                            self._on_pod(target, kind, obj, fresh=True)
                # a clean end (timeoutSeconds): watch again from where we are
            except KubeApiError as exc:
                if exc.status == 410:
                    log.info("kubernetes_watch_expired", selector=target.selector)
                    rv = None
                    continue
                self._api_trouble(target, exc)
                await asyncio.sleep(backoff.next())
            except _TRANSIENT as exc:
                log.warning(
                    "kubernetes_watch_failed", selector=target.selector, error=str(exc)[:300]
                )
                self._report_role(target)
                await asyncio.sleep(backoff.next())

    def _api_trouble(self, target: PodTarget, exc: KubeApiError) -> None:
        if exc.status in (401, 403):
            log.error(
                "kubernetes_access_denied",
                selector=target.selector,
                namespace=self._ns,
                error=str(exc)[:500],
                hint="sipwatch needs get/list/watch on pods and get on pods/log "
                "(deploy/kubernetes/rbac.yaml)",
            )
        else:
            log.warning("kubernetes_api_error", selector=target.selector, error=str(exc)[:500])
        self._report_role(target)

    def _reconcile(self, target: PodTarget, items: list[Any], *, fresh: bool) -> None:
        """A full list: follow new pods, wake known ones, let vanished ones finish."""
        seen: set[str] = set()
        for obj in items:
            if isinstance(obj, dict):
                info = self._on_pod(target, "ADDED", obj, fresh=fresh)
                if info is not None:
                    seen.add(info.uid)
        for (uid, container), f in list(self._followers.items()):
            if f.target == target and container == target.container and uid not in seen:
                f.deleted = True
                f.wake.set()
        if not any(f.target == target for f in self._followers.values()):
            self._report(f"kubernetes:{target.role}", False)  # no pod: down (no flap at start)

    def _on_pod(
        self, target: PodTarget, kind: str, obj: Mapping[str, Any], *, fresh: bool
    ) -> PodInfo | None:
        info = PodInfo.from_json(obj, target.container)
        if not info.uid or not info.has_container:
            return None
        key = (info.uid, target.container)
        follower = self._followers.get(key)
        if kind == "DELETED":
            if follower is not None:
                follower.deleted = True
                follower.wake.set()
            return info
        if follower is not None:
            follower.node = info.node or follower.node
            follower.wake.set()
            return info
        if key in self._gone:
            return info
        self._spawn(target, info, fresh=fresh)
        return info

    def _spawn(self, target: PodTarget, info: PodInfo, *, fresh: bool) -> None:
        source = info.name
        if any(f.source == source for f in self._followers.values()):
            source = f"{info.name}:{target.container}"  # two followed containers in one pod
        f = _Follower(
            target=target,
            uid=info.uid,
            pod=info.name,
            source=source,
            node=info.node,
            fresh=fresh,
        )
        if self._positions is not None:
            self._restore(f)
        self._followers[(info.uid, target.container)] = f
        f.task = asyncio.create_task(self._follow(f), name=f"kube-logs-{info.name}")
        assert self._fanin is not None
        self._fanin.watch(f.task)
        log.info(
            "kubernetes_follow_start", pod=info.name, container=target.container, node=info.node
        )

    def _restore(self, f: _Follower) -> None:
        """Continue where an earlier run of sipwatch stopped (see the module docstring)."""
        assert self._positions is not None
        state = self._positions.get(f.position_key)
        if state is None:
            if not f.fresh and self._positions.has_kind(POSITION_PREFIX):
                # followed before, unknown pod: it appeared while sipwatch was down
                f.fresh = True
                log.info("kubernetes_follow_new_while_down", pod=f.pod)
            return
        restarts = state.get("restarts")
        since_ns = state.get("since_ns")
        point = ResumePoint.from_state(state)
        if isinstance(since_ns, int) and since_ns > 0:
            f.opened_at_ns, f.fresh = since_ns, False  # attached, had logged nothing
        elif point is not None:
            f.decoder.cursor.restore(point)
        else:
            return
        if isinstance(restarts, int) and restarts >= 0:
            f.read_restarts = restarts
        log.info("kubernetes_follow_resume", pod=f.pod, container=f.target.container)

    def _position(self, f: _Follower) -> Position | None:
        """The checkpoint after what was queued so far (None without a store).  Entries
        are counted only when their line ends, so every point between chunks is one."""
        if self._positions is None:
            return None
        resume = f.decoder.resume
        if not resume.ts:
            return Position(f.position_key, None)
        state: dict[str, str | int | float | bool] = dict(resume.to_state())
        if f.read_restarts is not None:
            state["restarts"] = f.read_restarts
        return Position(f.position_key, state)

    # ---------------------------------------------------------------- follower

    async def _follow(self, f: _Follower) -> None:
        """Follow one pod's container until the pod is gone and its log drained."""
        backoff = Backoff(self._backoff_initial, self._backoff_max)
        try:
            while True:
                f.wake.clear()
                try:
                    info = await self._pod(f)
                    if not (info.running or info.terminated):
                        # waiting (ContainerCreating, CrashLoopBackOff): nothing to read yet
                        await self._sleep_or_wake(f, backoff.next())
                        continue
                    await self._catch_up_previous(f, info)
                    got = await self._stream_once(f, info)
                except _Gone:
                    return
                except KubeApiError as exc:
                    self._set_streaming(f, False)
                    if exc.status == 404:
                        return
                    if exc.status in (401, 403):
                        self._api_trouble(f.target, exc)
                    else:  # 400: the container is waiting or was just replaced
                        log.info("kubernetes_logs_retry", pod=f.pod, error=str(exc)[:300])
                    await self._sleep_or_wake(f, backoff.next())
                    continue
                except _TRANSIENT as exc:
                    self._set_streaming(f, False)
                    log.info("kubernetes_logs_retry", pod=f.pod, error=str(exc)[:300])
                    await self._sleep_or_wake(f, backoff.next())
                    continue
                # The stream ended cleanly: the container stopped, or the pod is going.
                self._set_streaming(f, False)
                if f.deleted:
                    return
                if got:
                    backoff.reset()
                else:  # ended at once with nothing new: wait for the pod to change
                    await self._sleep_or_wake(f, backoff.next())
        finally:
            self._followers.pop((f.uid, f.target.container), None)
            self._mark_gone((f.uid, f.target.container))
            self._set_streaming(f, False)
            if self._fanin is not None:
                for stream, text in f.decoder.flush():
                    self._fanin.put_nowait(
                        LogChunk(f.source, stream, text, f.node, position=self._position(f))
                    )
            log.info("kubernetes_follow_end", pod=f.pod, container=f.target.container)

    async def _pod(self, f: _Follower) -> PodInfo:
        """The pod as it is now (a fresh GET, not the watch's view: it decides what to read)."""
        try:
            obj = await self._client.get_json(f"{self._pods_path()}/{f.pod}")
        except KubeApiError as exc:
            if exc.status == 404:
                raise _Gone from exc
            raise
        info = PodInfo.from_json(obj, f.target.container)
        if info.uid != f.uid:  # a new pod took the name (StatefulSet-style): not ours
            raise _Gone
        f.node = info.node or f.node
        return info

    def _query(self, f: _Follower, *, previous: bool = False) -> dict[str, str]:
        q = {"container": f.target.container, "timestamps": "true"}
        if previous:
            q["previous"] = "true"
        else:
            q["follow"] = "true"
        resume = f.decoder.resume
        if resume.ts:
            ns = resume.ns
            assert ns is not None
            q["sinceTime"] = _since_time(ns)
        elif f.opened_at_ns is not None and not f.fresh and self._tail != "all":
            # attached with a tail, nothing came yet: what follows that first open is new
            q["sinceTime"] = _since_time(f.opened_at_ns)
        elif not f.fresh and f.opened_at_ns is None and not previous:
            if self._since_seconds is not None:
                q["sinceSeconds"] = str(self._since_seconds)
            elif self._tail != "all":
                q["tailLines"] = self._tail
        return q

    async def _catch_up_previous(self, f: _Follower, info: PodInfo) -> None:
        """The container restarted since the last open: read the rest of the instance we
        were reading (``previous=true``), which a dropped stream may have cut short."""
        before = f.read_restarts
        if before is None or info.restart_count <= before:
            return
        if not f.decoder.resume.ts and f.opened_at_ns is None:
            return
        if info.restart_count > before + 1:
            log.warning(
                "kubernetes_logs_lost_restarts",
                pod=f.pod,
                container=f.target.container,
                unread_instances=info.restart_count - before - 1,
            )
        path = f"{self._pods_path()}/{f.pod}/log"
        f.decoder.begin_stream()
        try:
            async with self._client.stream(path, self._query(f, previous=True)) as resp:
                await self._pump(f, resp)
        except KubeApiError as exc:
            if exc.status != 400:  # 400: the kubelet no longer has that instance
                raise
            log.warning("kubernetes_previous_log_unavailable", pod=f.pod, error=str(exc)[:300])
        f.read_restarts = info.restart_count

    async def _stream_once(self, f: _Follower, info: PodInfo) -> bool:
        """Open the follow stream once and pump it into the queue; True if a line came."""
        path = f"{self._pods_path()}/{f.pod}/log"
        query = self._query(f)
        started_ns = time.time_ns()
        f.decoder.begin_stream()
        async with self._client.stream(path, query) as resp:
            f.read_restarts = info.restart_count
            if f.opened_at_ns is None:
                f.opened_at_ns = started_ns
                if self._positions is not None and not f.fresh and self._tail != "all":
                    # attached with a tail: until a line comes, "everything from now on"
                    # is what a restart must not skip
                    state = {"since_ns": started_ns, "restarts": info.restart_count}
                    attached = Position(f.position_key, state)
                    assert self._fanin is not None
                    await self._fanin.put(
                        LogChunk(f.source, Stream.TEXT, "", f.node, position=attached)
                    )
            self._set_streaming(f, True)
            return await self._pump(f, resp)

    async def _pump(self, f: _Follower, resp: aiohttp.ClientResponse) -> bool:
        assert self._fanin is not None
        put = self._fanin.put
        feed = f.decoder.feed
        content = resp.content
        got = False
        while True:
            data = await content.readany()
            if not data:
                return got
            for stream, text in feed(data):
                got = True
                await put(LogChunk(f.source, stream, text, f.node, position=self._position(f)))


def targets_from_config(ctx: SourceContext) -> list[PodTarget]:
    k8s = ctx.config.sources.kubernetes
    targets = [PodTarget("drachtio", k8s.drachtio_selector, k8s.drachtio_container)]
    if k8s.registrar_selector:
        targets.append(PodTarget("registrar", k8s.registrar_selector, k8s.registrar_container))
    return targets


def build(ctx: SourceContext) -> list[tuple[str, LogSource]]:
    """``[sources.kubernetes]``: the drachtio and registrar pods of one namespace."""
    k8s = ctx.config.sources.kubernetes
    access = KubeAccess(kubeconfig=k8s.kubeconfig, context=k8s.context)
    if ctx.environment is not None:  # tests describe the machine
        access = KubeAccess(
            kubeconfig=k8s.kubeconfig,
            context=k8s.context,
            service_account_dir=ctx.environment.service_account_dir,
            environ=ctx.environment.environ,
        )
    source = KubernetesLogSource(
        targets_from_config(ctx),
        access=access,
        namespace=k8s.namespace or None,
        tail=k8s.tail,
        since_seconds=k8s.since_seconds,
        **follow_options(ctx),
    )
    return [("kubernetes", source)]


__all__ = [
    "SERVICE_ACCOUNT_DIR",
    "KubeAccess",
    "KubeApi",
    "KubeApiError",
    "KubernetesLogSource",
    "KubernetesSourceError",
    "PodInfo",
    "PodTarget",
    "ResumePoint",
    "build",
    "connect",
    "pod_namespace",
]
