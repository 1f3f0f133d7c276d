"""Find and restart the jambonz registrar container through the Docker Engine API.

Built on :class:`sipwatch.sources.docker.DockerControl` (compose-label discovery, timeouts,
error mapping).  It adds the one fact remediation needs and ``ContainerInfo`` does not carry:
``State.StartedAt``.  That is what makes a restart idempotent - a registrar that (re)started
after the failure was seen, or only a moment ago, is not restarted again - and what proves a
restart happened (the start time moved forward).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import aiohttp

from sipwatch.sources.docker import ContainerInfo, ContainerNotFound, DockerControl

DEFAULT_SERVICES = ("registrar", "sbc-sip-sidecar")


def parse_started_at(value: object) -> float | None:
    """Docker's RFC3339Nano ``StartedAt`` as epoch seconds; None for "never started"."""
    if not isinstance(value, str) or not value or value.startswith("0001-01-01"):
        return None
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    main, dot, rest = text.partition(".")
    if dot:
        # Python parses at most 6 fraction digits; Docker prints up to 9.
        digits = "".join(ch for ch in rest if ch.isdigit())
        tz = rest[len(digits) :]
        text = f"{main}.{digits[:6].ljust(6, '0')}{tz}"
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


@dataclass(frozen=True)
class RegistrarTarget:
    """Where the registrar runs: Engine URL, compose project and candidate service names.

    ``services`` are tried in order; the first one with a container is the registrar
    (the official compose calls it ``registrar``, newer setups ``sbc-sip-sidecar``).
    ``min_uptime``: a registrar that started less than this many seconds ago is left alone.
    """

    url: str | None = None
    project: str | None = None
    services: tuple[str, ...] = DEFAULT_SERVICES
    grace: int = 10
    api_timeout: float = 10.0
    min_uptime: float = 60.0


@dataclass(frozen=True)
class RegistrarContainer:
    id: str
    name: str
    service: str
    running: bool
    state: str
    started_at: float | None

    def describe(self) -> dict[str, Any]:
        started = (
            dt.datetime.fromtimestamp(self.started_at, dt.UTC).isoformat()
            if self.started_at is not None
            else None
        )
        return {
            "service": self.service,
            "container": self.name,
            "id": self.id[:12],
            "state": self.state,
            "started_at": started,
        }


class RegistrarControl(DockerControl):
    """``DockerControl`` plus start times and a restart of one named container."""

    async def __aenter__(self) -> RegistrarControl:
        await super().__aenter__()
        return self

    async def _raw_inspect(self, container_id: str) -> dict[str, Any]:
        data: dict[str, Any] = await self._call(f"containers/{container_id}/json")
        return data

    async def describe(self, info: ContainerInfo) -> RegistrarContainer:
        raw = await self._raw_inspect(info.id)
        state = raw.get("State") or {}
        return RegistrarContainer(
            id=info.id,
            name=info.name,
            service=info.service,
            running=bool(state.get("Running", info.running)),
            state=str(state.get("Status", info.state)),
            started_at=parse_started_at(state.get("StartedAt")),
        )

    async def find(self, services: tuple[str, ...]) -> list[RegistrarContainer]:
        """The containers of the first service in ``services`` that has any."""
        for service in services:
            found = await self.containers(service, include_stopped=True)
            if found:
                return [await self.describe(c) for c in found]
        return []

    async def restart_container(self, container_id: str, *, grace: int) -> None:
        timeout = aiohttp.ClientTimeout(total=grace + self._api_timeout, connect=5.0)
        await self._call(
            f"containers/{container_id}/restart", "POST", params={"t": grace}, timeout=timeout
        )

    async def refresh(self, container: RegistrarContainer) -> RegistrarContainer:
        try:
            info = await self.inspect(container.id)
        except ContainerNotFound:
            return RegistrarContainer(
                container.id, container.name, container.service, False, "removed", None
            )
        return await self.describe(info)
