"""Log sources, and the registry that builds them from the configuration.

A source is anything with an async ``chunks()`` iterator yielding ``SourceItem``s: whole-line
``LogChunk`` text (files, stdin, Docker, Kubernetes) or already-parsed ``MessageBatch``es
(wire captures).  An empty ``LogChunk`` text is the idle signal (see ``sipwatch.model``).

Adding a kind of source means one module with a ``build(ctx)`` function and one
``SourceKind`` line below.  A module is imported only when its kind is enabled, so a daemon
that reads files never imports aiodocker or a Kubernetes client.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from sipwatch.lazylog import get_logger
from sipwatch.model import SourceItem

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from sipwatch.config import Config
    from sipwatch.sources.discovery import Detection, Environment
    from sipwatch.sources.positions import PositionStore

log = get_logger("sipwatch.sources")


class LogSource(Protocol):
    """What the drivers consume: an async stream of pipeline input."""

    def chunks(self) -> AsyncIterator[SourceItem]: ...


@dataclass(frozen=True)
class SourceContext:
    """What a source kind's ``build`` gets.

    ``registry`` is where a source registers its own self-metrics, as a prometheus_client
    ``Collector`` that reads the source's plain counters at scrape time (the way
    client_python's ProcessCollector does); None when nothing is exported (replay).
    ``positions`` is where following sources resume from after a restart
    (:mod:`sipwatch.sources.positions`); None: no checkpoints (replay, or none configured).
    """

    config: Config
    on_status: Callable[[str, bool], None]  # (source name, up) for sipwatch_source_up
    registry: CollectorRegistry | None = None
    environment: Environment | None = None  # what discovery looks at; None = this machine
    # Set when the caller already ran ``resolve_sources`` (and keeps its config): its
    # detection is what the start-up line reports.
    detection: Detection | None = None
    positions: PositionStore | None = None


@dataclass(frozen=True)
class SourceKind:
    """One kind of source: the module that builds it, and when it is enabled."""

    name: str
    module: str  # defines ``build(ctx: SourceContext) -> list[tuple[str, LogSource]]``
    enabled: Callable[[Config], bool]


SOURCE_KINDS: tuple[SourceKind, ...] = (
    SourceKind("file", "sipwatch.sources.file", lambda c: bool(c.sources.files)),
    SourceKind("stdin", "sipwatch.sources.stdin", lambda c: c.sources.stdin),
    SourceKind("docker", "sipwatch.sources.docker", lambda c: c.sources.docker.enabled),
    SourceKind(
        "kubernetes", "sipwatch.sources.kubernetes", lambda c: c.sources.kubernetes.enabled is True
    ),
    SourceKind("hep", "sipwatch.sources.hep", lambda c: c.sources.hep.listen is not None),
)


def build_sources(ctx: SourceContext) -> list[tuple[str, LogSource]]:
    """The sources as (name, source) pairs, in ``SOURCE_KINDS`` order.

    A configuration that names no source gets the ones detected where sipwatch runs
    (:mod:`sipwatch.sources.discovery`); either way one log line says what is followed.
    Callers that also read ``config.sources`` elsewhere (readiness, registrar detection)
    should call :func:`~sipwatch.sources.discovery.resolve_sources` first, keep its config and
    pass its detection in ``ctx.detection``.
    """
    from sipwatch.sources.discovery import resolve_sources

    if ctx.detection is not None:
        config, detection = ctx.config, ctx.detection
    else:
        config, detection = resolve_sources(ctx.config, ctx.environment)
    log.info("log sources", **detection.log_fields())
    ctx = dataclasses.replace(ctx, config=config)
    out: list[tuple[str, LogSource]] = []
    for kind in SOURCE_KINDS:
        if kind.enabled(config):
            build: Callable[[SourceContext], list[tuple[str, LogSource]]] = importlib.import_module(
                kind.module
            ).build
            out.extend(build(ctx))
    return out
