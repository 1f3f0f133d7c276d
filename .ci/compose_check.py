"""Security policy for deploy/docker-compose.sipwatch.yml that `docker compose config` does not
check (it validates the schema, not what the values grant).

Why each rule (docs/deployment.md explains them for operators):

* Only the socket proxy mounts the Docker socket; nothing else may, because access to it is
  root on the host.
* The proxy never has POST enabled together with CONTAINERS: that pair lets
  ``POST /containers/create`` through, i.e. a privileged container with the host's / mounted.
  EXEC, SECRETS and AUTH stay off.  It publishes no port and sits only on internal networks.
* sipwatch: read-only root file system, ``cap_drop: [ALL]``, ``no-new-privileges``, a
  non-root numeric user, DOCKER_HOST pointing at the proxy service, the config mounted
  read-only, every ``*_FILE`` variable pointing at a declared compose secret, and no
  environment value that carries a password (``scheme://user:password@host``) or looks like
  a secret.

Variables are expanded with their ``${VAR:-default}`` defaults (what a plain
``docker compose up`` gets), or with values passed in ``environ``.

Usage: python .ci/compose_check.py [compose.yml]   (exit 1 and one line per problem)
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

PROXY = "docker-socket-proxy"
SIPWATCH = "sipwatch"
DOCKER_SOCKET = re.compile(r"(^|/)docker\.sock$")
URL_WITH_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]*:[^@\s/]+@", re.I)
SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|PRIVATE_?KEY)", re.I)
_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}|\$([A-Za-z_]\w*)")
_TRUE = {"1", "true", "yes", "on"}


def interpolate(value: str, environ: Mapping[str, str]) -> str:
    """Expand ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}`` and ``$VAR`` like compose."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3)
        default = m.group(2) or ""
        return environ.get(name) or default

    return _INTERPOLATION.sub(sub, value.replace("$$", "\0")).replace("\0", "$")


def _expand(node: Any, environ: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, environ)
    if isinstance(node, list):
        return [_expand(item, environ) for item in node]
    if isinstance(node, dict):
        return {key: _expand(value, environ) for key, value in node.items()}
    return node


def _environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # ["KEY=value", ...]
        pairs = (item.partition("=") for item in env)
        return {key: value for key, _, value in pairs}
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def _mounts(service: Mapping[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) of every volume entry, short or long syntax."""
    result = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, str):
            parts = entry.split(":")
            if len(parts) == 1:
                result.append(("", parts[0], False))
            else:
                options = parts[2].split(",") if len(parts) > 2 else []
                result.append((parts[0], parts[1], "ro" in options))
        elif isinstance(entry, dict):
            result.append(
                (
                    str(entry.get("source", "")),
                    str(entry.get("target", "")),
                    bool(entry.get("read_only", False)),
                )
            )
    return result


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() in _TRUE


def _check_proxy(name: str, proxy: Mapping[str, Any], networks: Mapping[str, Any]) -> list[str]:
    problems = []
    env = _environment(proxy)
    if _truthy(env.get("POST")) and _truthy(env.get("CONTAINERS")):
        problems.append(
            f"{name}: POST=1 together with CONTAINERS=1 lets POST /containers/create through "
            "(a privileged container is root on the host)"
        )
    for flag in ("EXEC", "SECRETS", "AUTH", "BUILD", "SWARM", "PLUGINS", "SYSTEM"):
        if _truthy(env.get(flag)):
            problems.append(f"{name}: {flag}=1 grants more than sipwatch reads")
    if proxy.get("ports"):
        problems.append(f"{name}: publishes ports (the proxy has no authentication)")
    if proxy.get("privileged"):
        problems.append(f"{name}: privileged")
    for net in proxy.get("networks") or []:
        definition = networks.get(net) or {}
        if not definition.get("internal"):
            problems.append(
                f"{name}: on network {net!r}, which is not internal (only sipwatch may reach "
                "the proxy)"
            )
    return problems


def _check_sipwatch(
    service: Mapping[str, Any], services: Mapping[str, Any], secrets: Mapping[str, Any]
) -> list[str]:
    problems = []
    if service.get("read_only") is not True:
        problems.append("sipwatch: read_only is not true (root file system must be read-only)")
    if "ALL" not in [str(c).upper() for c in service.get("cap_drop") or []]:
        problems.append("sipwatch: cap_drop does not include ALL")
    if not any("no-new-privileges" in str(o) for o in service.get("security_opt") or []):
        problems.append("sipwatch: security_opt lacks no-new-privileges:true")
    user = str(service.get("user", "")).split(":", 1)[0]
    if not user.isdigit() or user == "0":
        problems.append(f"sipwatch: user {user!r} is not a numeric non-root UID")
    if service.get("privileged"):
        problems.append("sipwatch: privileged")
    env = _environment(service)
    docker_host = env.get("DOCKER_HOST", "")
    host = re.sub(r"^tcp://|:\d+$", "", docker_host)
    if host not in services or host == SIPWATCH:
        problems.append(f"sipwatch: DOCKER_HOST {docker_host!r} does not name the proxy service")
    config_mounts = [m for m in _mounts(service) if m[1].startswith("/etc/sipwatch")]
    if not config_mounts:
        problems.append("sipwatch: no configuration mounted under /etc/sipwatch")
    for source, target, read_only in config_mounts:
        if not read_only:
            problems.append(f"sipwatch: {source} -> {target} is mounted read-write")
    declared = {
        (s if isinstance(s, str) else str(s.get("source", ""))) for s in service.get("secrets", [])
    }
    for key, value in env.items():
        if key.endswith("_FILE"):
            secret = value.removeprefix("/run/secrets/")
            if value == secret or secret not in declared or secret not in secrets:
                problems.append(f"sipwatch: {key}={value} is not a declared compose secret")
        elif URL_WITH_PASSWORD.search(value):
            problems.append(f"sipwatch: {key} carries a URL with a password (use a secret file)")
        elif value and SECRET_NAME.search(key):
            problems.append(f"sipwatch: {key} puts a secret in the environment")
    for name in declared:
        definition = secrets.get(name)
        if not isinstance(definition, dict) or "file" not in definition:
            problems.append(f"sipwatch: secret {name!r} is not defined as a file secret")
    return problems


def check_data(data: Any, environ: Mapping[str, str] | None = None) -> list[str]:
    """All policy problems of a parsed compose document; empty means it passes."""
    if not isinstance(data, dict) or not isinstance(data.get("services"), dict):
        return ["not a compose file: no services mapping"]
    data = _expand(data, environ or {})
    services: dict[str, Any] = data["services"]
    networks: dict[str, Any] = data.get("networks") or {}
    secrets: dict[str, Any] = data.get("secrets") or {}
    problems = []
    for required in (PROXY, SIPWATCH):
        if required not in services:
            problems.append(f"service {required!r} is missing")
    for name, service in services.items():
        mounts_socket = any(DOCKER_SOCKET.search(src) for src, _, _ in _mounts(service or {}))
        if mounts_socket and name != PROXY:
            problems.append(f"{name}: mounts the Docker socket (only {PROXY} may)")
    if PROXY in services:
        problems.extend(_check_proxy(PROXY, services[PROXY] or {}, networks))
    if SIPWATCH in services:
        problems.extend(_check_sipwatch(services[SIPWATCH] or {}, services, secrets))
    return problems


def check_text(text: str, environ: Mapping[str, str] | None = None) -> list[str]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return [f"invalid YAML: {exc}"]
    return check_data(data, environ)


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else Path("deploy/docker-compose.sipwatch.yml")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        print(f"{path}: cannot read: {exc.strerror}", file=sys.stderr)
        return 1
    problems = check_text(text)
    for problem in problems:
        print(f"{path}: {problem}", file=sys.stderr)
    if not problems:
        print(f"{path}: compose policy OK")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
