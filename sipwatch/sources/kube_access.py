"""How to reach the Kubernetes API server: in a pod (service account) or from a kubeconfig.

Split from :mod:`sipwatch.sources.kubernetes` so that deployment discovery
(:mod:`sipwatch.sources.discovery`, which runs on every start) can tell whether it runs in a
pod without importing the Kubernetes source: that module, and the client library it loads,
are imported only when the ``kubernetes`` source kind is enabled.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

#: Where Kubernetes mounts a pod's service account (token, ca.crt, namespace).
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
SERVICE_HOST_ENV = "KUBERNETES_SERVICE_HOST"
SERVICE_PORT_ENV = "KUBERNETES_SERVICE_PORT"


class KubernetesSourceError(Exception):
    """The cluster cannot be used at all (no configuration, unreadable kubeconfig)."""


@dataclass(frozen=True)
class KubeAccess:
    """How to reach the API server.  The defaults are the real locations; tests inject."""

    kubeconfig: str | None = None
    context: str | None = None
    service_account_dir: Path = SERVICE_ACCOUNT_DIR
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)

    def in_cluster(self) -> bool:
        """Inside a pod: the service's env variables and a mounted service-account token."""
        return bool(
            self.environ.get(SERVICE_HOST_ENV)
            and self.environ.get(SERVICE_PORT_ENV)
            and (self.service_account_dir / "token").is_file()
        )

    def kubeconfig_path(self) -> str:
        if self.kubeconfig:
            return self.kubeconfig
        env = self.environ.get("KUBECONFIG", "")
        first = next((p for p in env.split(os.pathsep) if p), "")
        return first or os.path.expanduser("~/.kube/config")

    def existing_kubeconfig(self) -> str:
        path = self.kubeconfig_path()
        if not os.path.isfile(path):
            raise KubernetesSourceError(
                f"not in a pod and no kubeconfig at {path} "
                "(set sources.kubernetes.kubeconfig or KUBECONFIG)"
            )
        return path


def pod_namespace(service_account_dir: Path) -> str:
    """The pod's own namespace, from its service account ("" when not mounted)."""
    try:
        return (service_account_dir / "namespace").read_text(encoding="utf-8").strip()
    except OSError:
        return ""
