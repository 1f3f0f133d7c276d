"""Zero configuration: find out where sipwatch runs and what it should follow.

``sipwatch run`` without a word about sources has to do the right thing on each of the
three ways jambonz is deployed, checked in this order:

1. **in a Kubernetes pod** (``KUBERNETES_SERVICE_HOST``/``_PORT`` set and a service-account
   token mounted): follow the jambonz pods of its namespace (or ``SIPWATCH_K8S_NAMESPACE``)
   through the API, with the Helm chart's labels;
2. **next to a Docker engine** (``DOCKER_HOST`` set, ``sources.docker.url`` set, or a Docker
   socket present): follow the compose services, as before;
3. **on a jambonz VM** (pm2): follow the known log files that exist - drachtio's
   ``/var/log/drachtio/drachtio.log`` and the registrar's pm2 logs in the pm2 user's
   ``~/.pm2/logs/`` (``jambonz-sbc-sip-sidecar*.log``, ``jambonz-sbc-registrar*.log`` on old
   installs).

When nothing is found, the Docker source is kept (it waits for an engine that starts
later), and the start-up line says that nothing was found.

"Explicit" means the configuration chose its sources: ``[[sources.files]]``,
``sources.stdin``, ``sources.docker.enabled`` set (file or environment) or
``sources.kubernetes.enabled`` set to true or false.  Then nothing is detected.

Every fact looked at (environment, service-account directory, socket paths, log paths) is
an :class:`Environment` field, so tests describe a pod, a Docker host or a VM in ``tmp_path``.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sipwatch.sources.kube_access import SERVICE_ACCOUNT_DIR, KubeAccess, pod_namespace

if TYPE_CHECKING:
    from sipwatch.config import Config

__all__ = ["Detection", "Environment", "Mode", "detect", "explicit_sources", "resolve_sources"]

DOCKER_SOCKETS = (Path("/var/run/docker.sock"), Path("/run/docker.sock"))
DRACHTIO_LOGS = ("/var/log/drachtio/drachtio.log",)
PM2_LOG_DIRS = ("/home/*/.pm2/logs", "/root/.pm2/logs")
# The registrar's current pm2 log files (not pm2-logrotate's "name__2024-01-01_00-00-00.log"
# archives): "-out"/"-error" when pm2 splits the streams.
_PM2_REGISTRAR_LOG = re.compile(
    r"^jambonz-sbc-(?:sip-sidecar|registrar)(?:-out|-error|-\d+)?\.log$"
)


class Mode(StrEnum):
    KUBERNETES = "kubernetes"
    DOCKER = "docker"
    VM = "vm"
    NONE = "none"  # nothing found: Docker kept, waiting for an engine
    CONFIGURED = "configured"  # the configuration named its sources


@dataclass(frozen=True)
class Environment:
    """The facts detection looks at.  The defaults are the real machine's."""

    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    service_account_dir: Path = SERVICE_ACCOUNT_DIR
    docker_sockets: tuple[Path, ...] = DOCKER_SOCKETS
    drachtio_logs: tuple[str, ...] = DRACHTIO_LOGS
    pm2_log_dirs: tuple[str, ...] = PM2_LOG_DIRS

    def in_pod(self) -> bool:
        access = KubeAccess(service_account_dir=self.service_account_dir, environ=self.environ)
        return access.in_cluster()

    def docker_endpoint(self, config: Config) -> str | None:
        """The Docker engine sipwatch would use, if there is one."""
        if config.sources.docker.url:
            return config.sources.docker.url
        if self.environ.get("DOCKER_HOST"):
            return self.environ["DOCKER_HOST"]
        for sock in self.docker_sockets:
            try:
                if stat.S_ISSOCK(sock.stat().st_mode):
                    return f"unix://{sock}"
            except OSError:
                continue
        return None

    def vm_logs(self) -> list[str]:
        """The jambonz VM log files that exist: drachtio's, then the registrar's pm2 logs."""
        found = [p for p in self.drachtio_logs if os.path.isfile(p)]
        for pattern in self.pm2_log_dirs:
            for directory in sorted(glob.glob(pattern)):
                try:
                    names = sorted(os.listdir(directory))
                except OSError:
                    continue
                found.extend(
                    os.path.join(directory, n) for n in names if _PM2_REGISTRAR_LOG.match(n)
                )
        return found


@dataclass(frozen=True)
class Detection:
    """What sipwatch follows and why: the one start-up line (:meth:`log_fields`)."""

    mode: Mode
    follows: tuple[str, ...]
    files: tuple[str, ...] = ()
    namespace: str = ""

    def log_fields(self) -> dict[str, Any]:
        return {"mode": self.mode.value, "follows": list(self.follows)}


def explicit_sources(config: Config) -> bool:
    """Whether the configuration itself says which sources to use."""
    src = config.sources
    return (
        bool(src.files)
        or src.stdin
        or src.kubernetes.enabled != "auto"
        or "sources.docker.enabled" in config.meta.origins
    )


def describe_configured(config: Config) -> Detection:
    """The start-up line for a configuration that names its sources."""
    src = config.sources
    follows: list[str] = [f"file {f.path}" for f in src.files]
    if src.stdin:
        follows.append("stdin")
    if src.docker.enabled:
        services = ", ".join((*src.docker.drachtio_services, *src.docker.registrar_services))
        follows.append(f"docker compose services {services}")
    if src.kubernetes.enabled is True:
        follows.extend(_pod_targets(config, src.kubernetes.namespace or "(from kubeconfig)"))
    return Detection(Mode.CONFIGURED, tuple(follows))


def _pod_targets(config: Config, namespace: str) -> list[str]:
    k8s = config.sources.kubernetes
    out = [f"pods {k8s.drachtio_selector} container {k8s.drachtio_container} in {namespace}"]
    if k8s.registrar_selector:
        out.append(
            f"pods {k8s.registrar_selector} container {k8s.registrar_container} in {namespace}"
        )
    return out


def detect(config: Config, env: Environment | None = None) -> Detection:
    """Decide the sources of a configuration that does not name any."""
    env = env or Environment()
    if env.in_pod():
        namespace = config.sources.kubernetes.namespace or pod_namespace(env.service_account_dir)
        return Detection(
            Mode.KUBERNETES, tuple(_pod_targets(config, namespace or "default")), (), namespace
        )
    docker = env.docker_endpoint(config)
    if docker is not None:
        return Detection(Mode.DOCKER, (f"docker compose services at {docker}",))
    logs = env.vm_logs()
    if logs:
        return Detection(Mode.VM, tuple(f"file {p}" for p in logs), tuple(logs))
    return Detection(
        Mode.NONE,
        (
            "nothing found (no service account, no Docker socket, no jambonz VM logs): "
            "waiting for a Docker engine",
        ),
    )


def resolve_sources(config: Config, env: Environment | None = None) -> tuple[Config, Detection]:
    """The configuration with its sources decided, and the start-up line describing them.

    An explicit configuration is returned unchanged, except that ``sources.kubernetes.enabled
    = true`` switches the Docker source off unless Docker is configured too.  Otherwise the
    detected mode is written
    into it (``sources.kubernetes.enabled`` becomes true or false, Docker is switched off in
    a pod and on a VM, the VM's files are added), so the result is explicit: calling this
    again changes nothing, and everything that reads ``config.sources`` later (readiness,
    registrar detection) sees what is really followed.
    """
    if explicit_sources(config):
        src = config.sources
        origins = config.meta.origins
        if (
            src.kubernetes.enabled is True
            and src.docker.enabled
            and "sources.docker.enabled" not in origins
            and "sources.docker.url" not in origins
        ):
            # "kubernetes = true" says what this deployment is: no Docker engine to wait for
            docker = dataclasses.replace(src.docker, enabled=False)
            config = dataclasses.replace(config, sources=dataclasses.replace(src, docker=docker))
        return config, describe_configured(config)
    detection = detect(config, env)
    src = config.sources
    if detection.mode is Mode.KUBERNETES:
        k8s = dataclasses.replace(
            src.kubernetes, enabled=True, namespace=detection.namespace or src.kubernetes.namespace
        )
        sources = dataclasses.replace(
            src, kubernetes=k8s, docker=dataclasses.replace(src.docker, enabled=False)
        )
    elif detection.mode is Mode.VM:
        from sipwatch.config import FileSourceConfig

        sources = dataclasses.replace(
            src,
            kubernetes=dataclasses.replace(src.kubernetes, enabled=False),
            docker=dataclasses.replace(src.docker, enabled=False),
            files=tuple(FileSourceConfig(path=p) for p in detection.files),
        )
    else:  # Docker, or nothing found: the Docker source (it waits for an engine)
        sources = dataclasses.replace(
            src, kubernetes=dataclasses.replace(src.kubernetes, enabled=False)
        )
    return dataclasses.replace(config, sources=sources), detection
