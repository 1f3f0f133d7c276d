"""A fake kube-apiserver (plus the kubelet behind its ``pods/log``), speaking the real protocol.

Served over HTTPS (a throw-away CA made with ``cryptography``) or plain HTTP, with bearer
token authentication, so a real client reaches it through a real kubeconfig or the in-cluster
service-account files:

* ``GET /api/v1/namespaces/{ns}/pods``: a ``PodList`` (``labelSelector``, equality terms) with
  ``metadata.resourceVersion``; with ``watch=true`` a chunked stream of JSON lines
  ``{"type": "ADDED"|"MODIFIED"|"DELETED"|"BOOKMARK"|"ERROR", "object": ...}`` from the given
  ``resourceVersion``.  A resourceVersion older than the compacted history is ``410 Gone``
  (``reason: Expired``), as the watch cache answers, or - with ``expired_as_event`` - a 200
  with one ``ERROR`` event carrying the 410 Status, as an etcd watch does.
* ``GET /api/v1/namespaces/{ns}/pods/{name}`` for a single pod.
* ``GET /api/v1/namespaces/{ns}/pods/{name}/log``: what the kubelet serves from the CRI log
  file (``container``, ``follow``, ``timestamps``, ``sinceTime``, ``sinceSeconds``,
  ``tailLines``, ``previous``): every entry on its own, ``RFC3339NanoFixed`` timestamps, partial
  (``P``) entries without their newline (so the next entry's timestamp lands mid-line),
  stdout and stderr interleaved in file order.  ``sinceTime`` is cut to whole seconds, as the
  apiserver does when it forwards it to the kubelet (``Format(time.RFC3339)``), and is
  inclusive.  A follow stream ends when its container instance stops or the pod is deleted.
* Errors are ``Status`` objects (``application/json``): 401 without the token, 403 for verbs
  the test denies (RBAC), 404 for a missing pod, 400 for a bad or waiting container.

The log store is the CRI file format itself (:class:`CriEntry`), so the same entries can be
written to a ``/var/log/pods``-style file for the file source's CRI tests.

Test controls are plain methods: add/replace/delete pods, restart a container, append log
text (lines over 16 KiB cut into partial entries, like containerd), cut a log stream in the
middle of a line, drop every connection, end or expire watches, compact the history, deny
verbs, and stop listening for a while.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import json
import secrets
import ssl
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.fake_http import FakeHttpServer
from tests.tls_support import write_key

PARTIAL_SIZE = 16 * 1024  # containerd's default max_container_log_line_size


def rfc3339nano_fixed(ns: int) -> str:
    """The kubelet's output timestamp: nine fraction digits, UTC."""
    sec, nsec = divmod(ns, 1_000_000_000)
    base = dt.datetime.fromtimestamp(sec, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{nsec:09d}Z"


def rfc3339nano(ns: int) -> str:
    """Go's ``time.RFC3339Nano`` (what containerd writes): trailing zeros dropped."""
    sec, nsec = divmod(ns, 1_000_000_000)
    base = dt.datetime.fromtimestamp(sec, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{nsec:09d}".rstrip("0")
    return f"{base}.{frac}Z" if frac else f"{base}Z"


def parse_rfc3339(text: str) -> int:
    """RFC3339 (any fraction) -> epoch ns, as Go's time.Parse(time.RFC3339, ...) reads it."""
    main, frac = text[:19], ""
    rest = text[19:]
    if rest.startswith("."):
        end = 1
        while end < len(rest) and rest[end].isdigit():
            end += 1
        frac, rest = rest[1:end], rest[end:]
    tz = "+00:00" if rest in ("Z", "z") else rest
    when = dt.datetime.fromisoformat(main + tz)
    return int(when.timestamp()) * 1_000_000_000 + int(frac.ljust(9, "0")[:9] or "0")


@dataclass
class CriEntry:
    """One line of a CRI container log file."""

    ts_ns: int
    stream: str  # "stdout" | "stderr"
    partial: bool
    content: bytes  # without the newline

    def cri_line(self) -> bytes:
        tag = "P" if self.partial else "F"
        return f"{rfc3339nano(self.ts_ns)} {self.stream} {tag} ".encode() + self.content + b"\n"

    def api_bytes(self, timestamps: bool) -> bytes:
        """What the kubelet writes for it: partial entries lose their newline."""
        prefix = (rfc3339nano_fixed(self.ts_ns) + " ").encode() if timestamps else b""
        return prefix + self.content + (b"" if self.partial else b"\n")


def cri_entries(
    text: str | bytes, stream: str, clock: Iterable[int], *, partial_size: int = PARTIAL_SIZE
) -> list[CriEntry]:
    """Cut program output into CRI entries the way containerd does (one timestamp each)."""
    data = text.encode() if isinstance(text, str) else text
    ticks = iter(clock)
    out: list[CriEntry] = []
    for line in data.splitlines(keepends=True):
        body, ended = (line[:-1], True) if line.endswith(b"\n") else (line, False)
        while len(body) > partial_size:
            out.append(CriEntry(next(ticks), stream, True, body[:partial_size]))
            body = body[partial_size:]
        out.append(CriEntry(next(ticks), stream, not ended, body))
    return out


def _status(code: int, reason: str, message: str, **details: Any) -> web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return web.Response(
        status=code, body=json.dumps(body).encode(), content_type="application/json"
    )


def _json(data: Any) -> web.Response:
    return web.Response(body=json.dumps(data).encode(), content_type="application/json")


def _flag(value: str | None) -> bool:
    return value in ("true", "1", "True")


@dataclass
class ContainerRun:
    """One instance of a container (a restart starts a new run with a new log file)."""

    entries: list[CriEntry] = field(default_factory=list)
    running: bool = True
    started_ns: int = 0


@dataclass
class FakeContainer:
    name: str
    image: str
    runs: list[ContainerRun] = field(default_factory=list)
    waiting: bool = False  # created but not started (ContainerCreating)

    @property
    def current(self) -> ContainerRun | None:
        return self.runs[-1] if self.runs else None

    @property
    def restart_count(self) -> int:
        return max(0, len(self.runs) - 1)


@dataclass
class FakePod:
    name: str
    namespace: str
    labels: dict[str, str]
    node: str
    containers: dict[str, FakeContainer]
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    resource_version: int = 0
    created_ns: int = field(default_factory=time.time_ns)
    deleted: bool = False

    def to_json(self) -> dict[str, Any]:
        statuses = []
        for c in self.containers.values():
            run = c.current
            if c.waiting or run is None:
                state: dict[str, Any] = {"waiting": {"reason": "ContainerCreating"}}
            elif run.running:
                state = {"running": {"startedAt": rfc3339nano(run.started_ns)[:19] + "Z"}}
            else:
                state = {"terminated": {"exitCode": 0, "reason": "Completed"}}
            statuses.append(
                {
                    "name": c.name,
                    "image": c.image,
                    "ready": state.get("running") is not None,
                    "restartCount": c.restart_count,
                    "started": state.get("running") is not None,
                    "state": state,
                    "containerID": f"containerd://{secrets.token_hex(32)}",
                }
            )
        meta: dict[str, Any] = {
            "name": self.name,
            "namespace": self.namespace,
            "uid": self.uid,
            "resourceVersion": str(self.resource_version),
            "labels": dict(self.labels),
            "creationTimestamp": rfc3339nano(self.created_ns)[:19] + "Z",
        }
        if self.deleted:
            meta["deletionTimestamp"] = rfc3339nano(time.time_ns())[:19] + "Z"
        return {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": meta,
            "spec": {
                "nodeName": self.node,
                "hostNetwork": True,
                "containers": [
                    {"name": c.name, "image": c.image} for c in self.containers.values()
                ],
            },
            "status": {
                "phase": "Running",
                "podIP": "10.0.0.5",
                "containerStatuses": statuses,
            },
        }


def _selector_matches(selector: str, labels: dict[str, str]) -> bool:
    """Equality-based label selectors (``a=b``, ``a==b``, ``a!=b``, ``a``)."""
    for term in (t.strip() for t in selector.split(",") if t.strip()):
        if "!=" in term:
            key, value = (x.strip() for x in term.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = (x.strip() for x in term.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif term not in labels:
            return False
    return True


@dataclass
class TlsFiles:
    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx


def make_tls(directory: Path) -> TlsFiles:
    """A CA and a server certificate for 127.0.0.1 / localhost, as PEM files."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-kube-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(directory / "ca.crt", directory / "apiserver.crt", directory / "apiserver.key")
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    write_key(files.key, key)
    return files


class FakeKubeApiServer(FakeHttpServer):
    """``async with FakeKubeApiServer(token=..., tls=make_tls(tmp)) as kube: kube.url``."""

    def __init__(self, *, token: str, tls: TlsFiles | None = None, namespace: str = "jambonz"):
        self.token = token
        self.tls = tls
        self.namespace = namespace
        self.pods: dict[tuple[str, str], FakePod] = {}
        self.events: list[tuple[int, str, dict[str, Any]]] = []  # (rv, type, object)
        self.history_floor = 0  # events at or below this resourceVersion were compacted
        self.expired_as_event = False  # 410 as an ERROR watch event instead of an HTTP 410
        self.denied: set[tuple[str, str]] = set()  # (verb, resource) RBAC refuses
        self.requests: list[tuple[str, dict[str, str]]] = []  # (path, query) of every request
        self.log_requests = 0
        self.open_log_streams = 0
        self.open_watches = 0
        self.cuts = 0  # log streams cut mid-line by cut_next_log_write()
        self.port = 0
        self._rv = 100
        self._clock = 0
        self._changed = asyncio.Event()
        self._cut_next_log = False
        self._end_watches = False

    # ----------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        base = "/api/v1/namespaces/{ns}/pods"
        app.router.add_get(base, self._pods)
        app.router.add_get(base + "/{name}", self._pod)
        app.router.add_get(base + "/{name}/log", self._log)
        return app

    def _make_site(self, runner: web.AppRunner) -> web.BaseSite:
        ctx = self.tls.server_context() if self.tls else None
        return web.TCPSite(runner, "127.0.0.1", self.port, ssl_context=ctx)

    def _listening(self) -> None:
        if not self.port:  # the first start picked a port: later ones keep it
            assert isinstance(self._site, web.TCPSite)
            server = self._site._server
            assert server is not None and server.sockets
            self.port = int(server.sockets[0].getsockname()[1])

    # ----------------------------------------------------------------- controls

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def next_ts(self) -> int:
        """A wall-clock timestamp strictly after every one handed out before."""
        self._clock = max(time.time_ns(), self._clock + 1)
        return self._clock

    def _event(self, kind: str, pod: FakePod) -> None:
        self._rv += 1
        pod.resource_version = self._rv
        self.events.append((self._rv, kind, pod.to_json()))
        self._notify()

    def add_pod(
        self,
        name: str,
        labels: dict[str, str],
        containers: Iterable[str],
        *,
        node: str = "sbc-node-1",
        image: str = "drachtio/drachtio-server:0.9.2",
        namespace: str | None = None,
        waiting: bool = False,
    ) -> FakePod:
        ns = namespace or self.namespace
        pod = FakePod(
            name,
            ns,
            dict(labels),
            node,
            {c: FakeContainer(c, image, waiting=waiting) for c in containers},
        )
        if not waiting:
            for c in pod.containers.values():
                c.runs.append(ContainerRun(started_ns=self.next_ts()))
        self.pods[(ns, name)] = pod
        self._event("ADDED", pod)
        return pod

    def start_containers(self, pod: FakePod) -> None:
        """A waiting pod's containers start (ContainerCreating -> Running)."""
        for c in pod.containers.values():
            c.waiting = False
            c.runs.append(ContainerRun(started_ns=self.next_ts()))
        self._event("MODIFIED", pod)

    def restart_container(self, pod: FakePod, container: str) -> None:
        """The container exits and the kubelet starts it again (restartCount + 1)."""
        c = pod.containers[container]
        assert c.current is not None
        c.current.running = False
        c.runs.append(ContainerRun(started_ns=self.next_ts()))
        self._event("MODIFIED", pod)

    def delete_pod(self, pod: FakePod) -> None:
        for c in pod.containers.values():
            if c.current is not None:
                c.current.running = False
        pod.deleted = True
        del self.pods[(pod.namespace, pod.name)]
        self._event("DELETED", pod)

    def replace_pod(self, pod: FakePod, new_name: str, *, node: str | None = None) -> FakePod:
        """A rolling update / node drain: a new pod with the same labels, the old one gone."""
        new = self.add_pod(
            new_name,
            pod.labels,
            pod.containers,
            node=node or pod.node,
            image=next(iter(pod.containers.values())).image,
            namespace=pod.namespace,
        )
        self.delete_pod(pod)
        return new

    def log(
        self,
        pod: FakePod,
        container: str,
        text: str | bytes,
        *,
        stream: str = "stderr",
        ts_ns: int | None = None,
    ) -> list[CriEntry]:
        """The container writes ``text``: CRI entries (partial ones past 16 KiB) appended."""
        run = pod.containers[container].current
        assert run is not None and run.running, "the container is not running"
        clock = iter(lambda: ts_ns, None) if ts_ns is not None else iter(self.next_ts, None)
        entries = cri_entries(text, stream, clock)
        run.entries.extend(entries)
        self._notify()
        return entries

    def cut_next_log_write(self) -> None:
        """The next data a log stream sends is cut in the middle and the connection closed."""
        self._cut_next_log = True

    def end_watches(self) -> None:
        """Close open watches cleanly (what the apiserver does at timeoutSeconds)."""
        self._end_watches = True
        self._notify()

    def compact(self) -> None:
        """Forget the event history: older resourceVersions now get 410 Gone."""
        self.history_floor = self._rv
        self.events.clear()

    def bookmark(self) -> None:
        self._rv += 1
        self.events.append(
            (
                self._rv,
                "BOOKMARK",
                {"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": str(self._rv)}},
            )
        )
        self._notify()

    def deny(self, verb: str, resource: str = "pods") -> None:
        self.denied.add((verb, resource))

    def allow(self, verb: str, resource: str = "pods") -> None:
        self.denied.discard((verb, resource))

    # ----------------------------------------------------------------- handlers

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.path, dict(request.query)))
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _status(401, "Unauthorized", "Unauthorized")
        response: web.StreamResponse = await handler(request)
        return response

    def _forbidden(self, verb: str, resource: str, ns: str) -> web.Response | None:
        if (verb, resource) not in self.denied:
            return None
        group, _, sub = resource.partition("/")
        what = f'resource "{group}"' + (f' subresource "{sub}"' if sub else "")
        return _status(
            403,
            "Forbidden",
            f'{resource} is forbidden: User "system:serviceaccount:{ns}:sipwatch" cannot '
            f'{verb} {what} in API group "" in the namespace "{ns}"',
            kind=group,
        )

    async def _pods(self, request: web.Request) -> web.StreamResponse:
        ns = request.match_info["ns"]
        q = request.query
        watch = _flag(q.get("watch"))
        denied = self._forbidden("watch" if watch else "list", "pods", ns)
        if denied is not None:
            return denied
        selector = q.get("labelSelector", "")
        if not watch:
            items = [
                p.to_json()
                for p in self.pods.values()
                if p.namespace == ns and _selector_matches(selector, p.labels)
            ]
            return _json(
                {
                    "kind": "PodList",
                    "apiVersion": "v1",
                    "metadata": {"resourceVersion": str(self._rv)},
                    "items": items,
                }
            )
        return await self._watch(request, ns, selector)

    async def _watch(self, request: web.Request, ns: str, selector: str) -> web.StreamResponse:
        rv_text = request.query.get("resourceVersion", "")
        since = int(rv_text) if rv_text.isdigit() else self._rv
        if since < self.history_floor:
            message = f"too old resource version: {since} ({self.history_floor + 1})"
            if not self.expired_as_event:
                return _status(410, "Expired", message)
        resp = web.StreamResponse()
        resp.content_type = "application/json"
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        self.open_watches += 1
        try:
            if since < self.history_floor:
                error = {
                    "type": "ERROR",
                    "object": {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Failure",
                        "message": message,
                        "reason": "Expired",
                        "code": 410,
                    },
                }
                await resp.write(json.dumps(error).encode() + b"\n")
                return resp
            timeout = request.query.get("timeoutSeconds")
            deadline = time.monotonic() + int(timeout) if timeout and timeout.isdigit() else None
            sent = since
            bookmarks = _flag(request.query.get("allowWatchBookmarks"))
            while True:
                changed = self._changed
                out = []
                for rv, kind, obj in self.events:
                    if rv <= sent:
                        continue
                    sent = rv
                    if kind == "BOOKMARK":
                        if bookmarks:
                            out.append({"type": kind, "object": obj})
                        continue
                    meta = obj["metadata"]
                    if meta["namespace"] == ns and _selector_matches(selector, meta["labels"]):
                        out.append({"type": kind, "object": obj})
                if out:
                    await resp.write(b"".join(json.dumps(e).encode() + b"\n" for e in out))
                if self._end_watches:
                    break
                wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                if wait == 0.0:
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await changed.wait()
            await resp.write_eof()
        finally:
            self.open_watches -= 1
            if self.open_watches == 0:
                self._end_watches = False
        return resp

    def _named_pod(self, request: web.Request, resource: str) -> FakePod | web.Response:
        """The pod the path names, or the answer the apiserver gives instead (403, 404)."""
        ns, name = request.match_info["ns"], request.match_info["name"]
        denied = self._forbidden("get", resource, ns)
        if denied is not None:
            return denied
        pod = self.pods.get((ns, name))
        if pod is None:
            return _status(404, "NotFound", f'pods "{name}" not found', name=name, kind="pods")
        return pod

    async def _pod(self, request: web.Request) -> web.Response:
        pod = self._named_pod(request, "pods")
        return pod if isinstance(pod, web.Response) else _json(pod.to_json())

    async def _log(self, request: web.Request) -> web.StreamResponse:
        pod = self._named_pod(request, "pods/log")
        if isinstance(pod, web.Response):
            return pod
        name = pod.name
        q = request.query
        cname = q.get("container")
        if cname is None:
            if len(pod.containers) != 1:
                names = " ".join(pod.containers)
                return _status(
                    400,
                    "BadRequest",
                    f"a container name must be specified for pod {name}, choose one of: [{names}]",
                )
            cname = next(iter(pod.containers))
        container = pod.containers.get(cname)
        if container is None:
            return _status(400, "BadRequest", f"container {cname} is not valid for pod {name}")
        if _flag(q.get("previous")):
            if len(container.runs) < 2:
                return _status(
                    400,
                    "BadRequest",
                    f'previous terminated container "{cname}" in pod "{name}" not found',
                )
            run = container.runs[-2]
        else:
            run = container.current
            if container.waiting or run is None:
                return _status(
                    400,
                    "BadRequest",
                    f'container "{cname}" in pod "{name}" is waiting to start: ContainerCreating',
                )
        follow = _flag(q.get("follow")) and run.running
        timestamps = _flag(q.get("timestamps"))
        since: int | None = None
        if q.get("sinceTime"):
            # the apiserver forwards sinceTime to the kubelet as time.RFC3339: whole seconds
            since = parse_rfc3339(q["sinceTime"]) // 1_000_000_000 * 1_000_000_000
        elif q.get("sinceSeconds", "").isdigit():
            since = time.time_ns() - int(q["sinceSeconds"]) * 1_000_000_000
        tail = int(q["tailLines"]) if q.get("tailLines", "").isdigit() else None

        def keep(e: CriEntry) -> bool:
            return since is None or e.ts_ns >= since  # kubelet: skip if Before(since)

        resp = web.StreamResponse()
        resp.content_type = "text/plain"
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        self.log_requests += 1
        self.open_log_streams += 1
        try:
            entries = list(run.entries)
            if tail is not None:
                entries = entries[-tail:] if tail > 0 else []
            sent = len(run.entries)
            if not await self._send(request, resp, entries, keep, timestamps):
                return resp
            while follow:
                changed = self._changed
                new = run.entries[sent:]
                sent = len(run.entries)
                if not await self._send(request, resp, new, keep, timestamps):
                    return resp
                if not run.running or pod.deleted:
                    break  # drained to EOF of a stopped container: a clean end
                await changed.wait()
            await resp.write_eof()
        finally:
            self.open_log_streams -= 1
        return resp

    async def _send(
        self,
        request: web.Request,
        resp: web.StreamResponse,
        entries: Iterable[CriEntry],
        keep: Any,
        timestamps: bool,
    ) -> bool:
        """Write the entries; False when the test cut the stream (the connection is gone)."""
        data = b"".join(e.api_bytes(timestamps) for e in entries if keep(e))
        if not data:
            return True
        if self._cut_next_log and len(data) > 2:
            self._cut_next_log = False
            # half of the data, ending inside a line, then the connection is gone
            cut = len(data) // 2
            if data[cut - 1 : cut] == b"\n":
                cut -= 1
            await resp.write(data[:cut])
            await asyncio.sleep(0.05)
            if request.transport is not None:
                request.transport.close()
            self.cuts += 1
            return False
        await resp.write(data)
        return True


def write_kubeconfig(
    path: Path,
    kube: FakeKubeApiServer,
    *,
    token: str | None = None,
    namespace: str | None = "jambonz",
    context: str = "fake",
) -> Path:
    """A real kubeconfig file pointing at the fake (CA file, bearer token, namespace)."""
    cluster: dict[str, Any] = {"server": kube.url}
    if kube.tls is not None:
        cluster["certificate-authority"] = str(kube.tls.ca)
    ctx: dict[str, Any] = {"cluster": "fake-cluster", "user": "sipwatch"}
    if namespace:
        ctx["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake-cluster", "cluster": cluster}],
        "users": [{"name": "sipwatch", "user": {"token": token or kube.token}}],
        "contexts": [{"name": context, "context": ctx}],
        "current-context": context,
    }
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path
