"""A fake Docker Engine API on a unix socket, speaking the real HTTP protocol.

It serves what sipwatch and aiodocker 0.27 use: ``GET /version``,
``/_ping`` and the versioned ``containers/json``, ``containers/{id}/json``,
``containers/{id}/logs``, ``containers/{id}/restart`` and ``events`` routes, with the real
wire formats: 8-byte multiplexed frames (raw stream for TTY containers) over chunked
transfer, RFC3339Nano fixed-width timestamps, inclusive ``since``, NDJSON events and
``{"message": ...}`` errors with ``Content-Type: application/json``.

Test controls (plain methods on :class:`FakeDockerEngine`): add containers, append log
entries (moby style: one entry per line, lines over 16 KiB cut into partial entries with
their own timestamps), deliver one entry in several frames, stop/start/restart/recreate/
remove containers (with the matching events), drop every connection mid-stream (a daemon
crash) and stop listening for a while.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import secrets
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

API_VERSION = "1.45"
PARTIAL_SIZE = 16 * 1024  # moby daemon/logger/copier.go bufSize
MULTIPLEXED = "application/vnd.docker.multiplexed-stream"
RAW_STREAM = "application/vnd.docker.raw-stream"
_HEADER = struct.Struct(">BxxxL")


def format_ts(ns: int) -> str:
    """RFC3339Nano, fixed width, UTC: what ``timestamps=1`` prints."""
    sec, nsec = divmod(ns, 1_000_000_000)
    base = dt.datetime.fromtimestamp(sec, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{nsec:09d}Z"


def parse_since(value: str | None) -> int | None:
    """The Engine's ``since``/``until``: unix seconds with an optional fraction."""
    if not value or value == "0":
        return None
    sec, _, frac = value.partition(".")
    return int(sec) * 1_000_000_000 + int((frac or "0").ljust(9, "0")[:9])


def _flag(value: str | None) -> bool:
    return value not in (None, "", "0", "false", "False")


def _error(status: int, message: str) -> web.Response:
    # body= (not text=) so aiohttp adds no "; charset=utf-8": aiodocker only parses the
    # message when the Content-Type is exactly application/json, like the real Engine's.
    return web.Response(
        status=status,
        body=json.dumps({"message": message}).encode(),
        content_type="application/json",
    )


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=json.dumps(data).encode(), content_type="application/json"
    )


@dataclass
class LogEntry:
    """One stored log message, like one line of a json-file log."""

    stream: int  # 1 stdout, 2 stderr
    ts_ns: int
    data: bytes  # ends in b"\n" unless it is a partial entry
    split_at: tuple[int, ...] = ()  # extra frame borders, offsets into ``data``
    run: int = 0  # which start of the container wrote it


@dataclass
class FakeContainer:
    id: str
    name: str
    service: str
    project: str
    image: str
    tty: bool
    env: dict[str, str]
    labels: dict[str, str]
    created_ns: int
    running: bool = False
    removed: bool = False
    run: int = 0  # incremented on every start
    restart_count: int = 0
    started_at: str = "0001-01-01T00:00:00Z"
    entries: list[LogEntry] = field(default_factory=list)

    @property
    def state(self) -> str:
        if self.running:
            return "running"
        return "exited" if self.run else "created"


class FakeDockerEngine:
    """The fake Engine.  ``async with FakeDockerEngine(tmp_path / "d.sock") as engine``."""

    def __init__(self, socket_path: str | os.PathLike[str]) -> None:
        self.path = str(socket_path)
        if len(self.path.encode()) >= 104:
            raise ValueError(f"unix socket path too long: {self.path}")
        self.containers: dict[str, FakeContainer] = {}
        self.events: list[dict[str, Any]] = []
        self.log_requests = 0  # logs requests served
        self.open_log_streams = 0  # logs responses currently open
        self.max_open_log_streams = 0
        self.write_chunk: int | None = None  # cut response bytes into pieces this small
        self.response_delay = 0.0  # seconds the request/response routes stall (timeouts)
        self.available = False
        self._last_ts = 0
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._site: web.UnixSite | None = None

    # ----------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    async def __aenter__(self) -> FakeDockerEngine:
        app = web.Application()
        ver = r"/{ver:v[0-9]+\.[0-9]+}"
        app.router.add_get("/version", self._version)
        app.router.add_get(ver + "/version", self._version)
        app.router.add_get("/_ping", self._ping)
        app.router.add_get(ver + "/containers/json", self._list)
        app.router.add_get(ver + "/containers/{id}/json", self._inspect)
        app.router.add_get(ver + "/containers/{id}/logs", self._logs)
        app.router.add_post(ver + "/containers/{id}/restart", self._restart)
        app.router.add_get(ver + "/events", self._events)
        # handler_cancellation: a streaming handler dies with its connection, like the
        # Engine's request context being cancelled.
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5)
        await self._runner.setup()
        await self._listen()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.drop_connections()
        if self._runner is not None:
            await self._runner.cleanup()
        with contextlib.suppress(FileNotFoundError):
            Path(self.path).unlink()

    async def _listen(self) -> None:
        assert self._runner is not None
        self._site = web.UnixSite(self._runner, self.path)
        await self._site.start()
        self.available = True

    async def drop_connections(self) -> None:
        """Close every client connection at once, mid-stream: what a daemon crash looks like."""
        if self._runner is None or self._runner.server is None:
            return
        for handler in self._runner.server.connections:
            if handler.transport is not None:
                handler.transport.close()
        await asyncio.sleep(0)

    async def pause_api(self) -> None:
        """Stop listening and drop all connections (the daemon is down)."""
        self.available = False
        if self._site is not None:
            await self._site.stop()
            self._site = None
        with contextlib.suppress(FileNotFoundError):
            Path(self.path).unlink()
        await self.drop_connections()

    async def resume_api(self) -> None:
        """Listen again on the same socket (the daemon is back; containers kept running)."""
        await self._listen()

    def connection_count(self) -> int:
        if self._runner is None or self._runner.server is None:
            return 0
        return len(self._runner.server.connections)

    # ---------------------------------------------------------------- controls

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def next_ts(self) -> int:
        """A wall-clock timestamp, strictly after every one handed out before."""
        self._last_ts = max(time.time_ns(), self._last_ts + 1)
        return self._last_ts

    def _emit(self, c: FakeContainer, action: str) -> None:
        now = max(time.time_ns(), self.events[-1]["timeNano"] + 1 if self.events else 0)
        attrs = dict(c.labels)
        attrs["name"] = c.name
        attrs["image"] = c.image
        self.events.append(
            {
                "status": action,
                "id": c.id,
                "from": c.image,
                "Type": "container",
                "Action": action,
                "Actor": {"ID": c.id, "Attributes": attrs},
                "scope": "local",
                "time": now // 1_000_000_000,
                "timeNano": now,
            }
        )
        self._notify()

    def add_container(
        self,
        service: str,
        *,
        project: str = "jambonz",
        image: str = "drachtio/drachtio-server:0.8.26",
        tty: bool = False,
        env: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
        name: str | None = None,
        number: int = 1,
        oneoff: bool = False,
        start: bool = True,
    ) -> FakeContainer:
        """Create (and by default start) a compose-style container."""
        all_labels = {
            "com.docker.compose.project": project,
            "com.docker.compose.service": service,
            "com.docker.compose.container-number": str(number),
            "com.docker.compose.oneoff": "True" if oneoff else "False",
        }
        all_labels.update(labels or {})
        c = FakeContainer(
            id=secrets.token_hex(32),
            name=name or f"{project}-{service}-{number}",
            service=service,
            project=project,
            image=image,
            tty=tty,
            env=dict(env or {}),
            labels=all_labels,
            created_ns=time.time_ns(),
        )
        self.containers[c.id] = c
        self._emit(c, "create")
        if start:
            self.start(c)
        return c

    def start(self, c: FakeContainer) -> None:
        c.running = True
        c.run += 1
        c.started_at = format_ts(time.time_ns())
        self._emit(c, "start")

    def stop(self, c: FakeContainer) -> None:
        """Stop: open follow streams send what is left and end cleanly."""
        if c.running:
            c.running = False
            self._emit(c, "die")
            self._emit(c, "stop")

    def restart(self, c: FakeContainer) -> None:
        self.stop(c)
        self.start(c)
        self._emit(c, "restart")

    def remove(self, c: FakeContainer) -> None:
        self.stop(c)
        c.removed = True
        del self.containers[c.id]
        self._emit(c, "destroy")

    def recreate(self, c: FakeContainer) -> FakeContainer:
        """``docker compose up`` after a config change: new id, same service labels."""
        self.stop(c)
        new = self.add_container(
            c.service,
            project=c.project,
            image=c.image,
            tty=c.tty,
            env=c.env,
            labels=c.labels,
            name=c.name,
            start=False,
        )
        self.remove(c)
        self.start(new)
        return new

    def log(
        self, c: FakeContainer, text: str | bytes, *, stream: int = 2, ts_ns: int | None = None
    ) -> list[LogEntry]:
        """Append output the way the daemon stores it: one entry per line, partial entries
        of 16 KiB for longer lines, each with its own timestamp (all ``ts_ns`` if given).
        A TTY container's pty turns each ``\\n`` into ``\\r\\n`` first."""
        data = text.encode() if isinstance(text, str) else text
        if c.tty:
            data = data.replace(b"\n", b"\r\n")
            stream = 1
        out: list[LogEntry] = []
        for line in data.splitlines(keepends=True):
            body, nl = (line[:-1], b"\n") if line.endswith(b"\n") else (line, b"")
            while len(body) > PARTIAL_SIZE:
                out.append(self._entry(c, stream, body[:PARTIAL_SIZE], ts_ns))
                body = body[PARTIAL_SIZE:]
            out.append(self._entry(c, stream, body + nl, ts_ns))
        self._notify()
        return out

    def log_split(
        self,
        c: FakeContainer,
        line: str | bytes,
        split_at: Iterable[int],
        *,
        stream: int = 2,
        ts_ns: int | None = None,
    ) -> LogEntry:
        """One entry delivered in several frames, cut at the given offsets of ``line``."""
        data = line.encode() if isinstance(line, str) else line
        entry = self._entry(c, stream, data, ts_ns)
        entry.split_at = tuple(sorted(split_at))
        self._notify()
        return entry

    def _entry(self, c: FakeContainer, stream: int, data: bytes, ts_ns: int | None) -> LogEntry:
        entry = LogEntry(stream, ts_ns if ts_ns is not None else self.next_ts(), data, run=c.run)
        c.entries.append(entry)
        return entry

    # ---------------------------------------------------------------- handlers

    def _find(self, ref: str) -> FakeContainer | None:
        if ref in self.containers:
            return self.containers[ref]
        for c in self.containers.values():
            if c.name == ref.lstrip("/"):
                return c
        matches = [c for c in self.containers.values() if c.id.startswith(ref)]
        return matches[0] if len(matches) == 1 else None

    async def _stall(self) -> None:
        if self.response_delay:
            await asyncio.sleep(self.response_delay)

    async def _version(self, request: web.Request) -> web.Response:
        return _json(
            {
                "Version": "26.1.4",
                "ApiVersion": API_VERSION,
                "MinAPIVersion": "1.24",
                "Os": "linux",
                "Arch": "amd64",
                "KernelVersion": "6.1.0",
            }
        )

    async def _ping(self, request: web.Request) -> web.Response:
        return web.Response(text="OK", headers={"Api-Version": API_VERSION})

    @staticmethod
    def _labels_match(labels: dict[str, str], wanted: Iterable[str]) -> bool:
        for want in wanted:
            key, eq, value = want.partition("=")
            if key not in labels or (eq and labels[key] != value):
                return False
        return True

    @staticmethod
    def _filters(request: web.Request) -> dict[str, list[str]] | web.Response:
        raw = request.query.get("filters")
        if not raw:
            return {}
        try:
            data = json.loads(raw)
        except ValueError:
            return _error(400, "invalid filter")
        if not isinstance(data, dict):
            return _error(400, "invalid filter")
        out: dict[str, list[str]] = {}
        for key, value in data.items():
            # the Engine accepts {"k": ["v"]} and the older {"k": {"v": true}}
            out[key] = list(value) if isinstance(value, list | dict) else [str(value)]
        return out

    async def _list(self, request: web.Request) -> web.Response:
        await self._stall()
        filters = self._filters(request)
        if isinstance(filters, web.Response):
            return filters
        show_all = _flag(request.query.get("all"))
        items = []
        for c in self.containers.values():
            if not (show_all or c.running):
                continue
            if not self._labels_match(c.labels, filters.get("label", [])):
                continue
            if "name" in filters and not any(n in c.name for n in filters["name"]):
                continue
            if "status" in filters and c.state not in filters["status"]:
                continue
            items.append(
                {
                    "Id": c.id,
                    "Names": [f"/{c.name}"],
                    "Image": c.image,
                    "ImageID": "sha256:" + "0" * 64,
                    "Command": "/entrypoint.sh",
                    "Created": c.created_ns // 1_000_000_000,
                    "State": c.state,
                    "Status": "Up 1 second" if c.running else "Exited (0) 1 second ago",
                    "Labels": c.labels,
                }
            )
        return _json(items)

    async def _inspect(self, request: web.Request) -> web.Response:
        await self._stall()
        c = self._find(request.match_info["id"])
        if c is None:
            return _error(404, f"No such container: {request.match_info['id']}")
        return _json(
            {
                "Id": c.id,
                "Created": format_ts(c.created_ns),
                "Name": f"/{c.name}",
                "RestartCount": c.restart_count,
                "State": {
                    "Status": c.state,
                    "Running": c.running,
                    "Paused": False,
                    "Restarting": False,
                    "ExitCode": 0,
                    "StartedAt": c.started_at,
                },
                "Config": {
                    "Hostname": c.id[:12],
                    "Tty": c.tty,
                    "Image": c.image,
                    "Env": [f"{k}={v}" for k, v in c.env.items()],
                    "Labels": c.labels,
                },
                "Image": "sha256:" + "0" * 64,
            }
        )

    async def _restart(self, request: web.Request) -> web.Response:
        await self._stall()
        c = self._find(request.match_info["id"])
        if c is None:
            return _error(404, f"No such container: {request.match_info['id']}")
        self.restart(c)
        return web.Response(status=204)

    def _encode(self, c: FakeContainer, entries: Iterable[LogEntry], timestamps: bool) -> bytes:
        out = bytearray()
        for e in entries:
            prefix = (format_ts(e.ts_ns) + " ").encode() if timestamps else b""
            if c.tty:
                out += prefix + e.data
                continue
            borders = [0, *(s for s in e.split_at if 0 < s < len(e.data)), len(e.data)]
            for i in range(len(borders) - 1):
                piece = e.data[borders[i] : borders[i + 1]]
                if i == 0:
                    piece = prefix + piece
                out += _HEADER.pack(e.stream, len(piece)) + piece
        return bytes(out)

    async def _send(self, resp: web.StreamResponse, data: bytes) -> None:
        if not data:
            return
        step = self.write_chunk or len(data)
        for i in range(0, len(data), step):
            await resp.write(data[i : i + step])

    async def _logs(self, request: web.Request) -> web.StreamResponse:
        c = self._find(request.match_info["id"])
        if c is None:
            return _error(404, f"No such container: {request.match_info['id']}")
        q = request.query
        want = set()
        if _flag(q.get("stdout")):
            want.add(1)
        if _flag(q.get("stderr")):
            want.add(2)
        if not want:
            return _error(400, "Bad parameters: you must choose at least one stream")
        follow = _flag(q.get("follow"))
        timestamps = _flag(q.get("timestamps"))
        since = parse_since(q.get("since"))
        until = parse_since(q.get("until"))
        tail = q.get("tail", "all")

        def keep(e: LogEntry) -> bool:
            # since is inclusive: an entry is skipped only if it is before since
            return (
                e.stream in want
                and (since is None or e.ts_ns >= since)
                and (until is None or e.ts_ns <= until)
            )

        resp = web.StreamResponse()
        resp.content_type = RAW_STREAM if c.tty else MULTIPLEXED
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        self.log_requests += 1
        self.open_log_streams += 1
        self.max_open_log_streams = max(self.max_open_log_streams, self.open_log_streams)
        try:
            snapshot = list(c.entries)
            if tail not in ("all", "", "-1"):
                n = int(tail)
                snapshot = snapshot[-n:] if n > 0 else []
            sent = len(c.entries)
            await self._send(resp, self._encode(c, (e for e in snapshot if keep(e)), timestamps))
            if follow and c.running and not c.removed:
                run = c.run
                while True:
                    changed = self._changed
                    new = [e for e in c.entries[sent:] if e.run == run and keep(e)]
                    sent = len(c.entries)
                    await self._send(resp, self._encode(c, new, timestamps))
                    if c.run != run or not c.running or c.removed:
                        # The rest of this run's entries, then a clean end of stream.
                        break
                    await changed.wait()
            await resp.write_eof()
        finally:
            self.open_log_streams -= 1
        return resp

    async def _events(self, request: web.Request) -> web.StreamResponse:
        filters = self._filters(request)
        if isinstance(filters, web.Response):
            return filters
        since = parse_since(request.query.get("since"))

        def keep(ev: dict[str, Any]) -> bool:
            actor = ev["Actor"]
            return (
                (since is None or ev["timeNano"] >= since)
                and ("type" not in filters or ev["Type"] in filters["type"])
                and ("event" not in filters or ev["Action"] in filters["event"])
                and (
                    "container" not in filters
                    or actor["ID"] in filters["container"]
                    or actor["Attributes"].get("name") in filters["container"]
                )
                and self._labels_match(actor["Attributes"], filters.get("label", []))
            )

        resp = web.StreamResponse()
        resp.content_type = "application/json"
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        index = 0 if since is not None else len(self.events)
        while True:
            changed = self._changed
            batch = [ev for ev in self.events[index:] if keep(ev)]
            index = len(self.events)
            if batch:
                await resp.write(b"".join(json.dumps(ev).encode() + b"\n" for ev in batch))
            await changed.wait()
