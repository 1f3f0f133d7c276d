"""Deployment artifacts: Dockerfile, compose snippet, systemd unit, docs/deployment.md.

No Docker engine exists here, so nothing is built or started in a container.  What is real:
the CI lint script itself (hadolint, `docker compose config`, systemd-analyze verify and
security, systemd-sysusers), sipwatch's own config loader fed the environment the compose
file gives the container, the container health check run against sipwatch's real HTTP app,
and the MySQL grants of the docs executed on the real MariaDB.  Every check is also shown to
fail on a broken input, so a green run means something.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncmy
import pytest
import yaml
from aiohttp import web
from asyncmy.errors import OperationalError, ProgrammingError

from sipwatch.config import (
    DEFAULT_CONFIG_PATHS,
    GENERIC_ENV_PREFIX,
    env_aliases,
    load_config,
)
from sipwatch.metrics import SipwatchMetrics
from sipwatch.pipeline.failures import FailureTracker
from sipwatch.web.app import make_app
from sipwatch.web.server import start_http

CONTAINER_LISTEN = "0.0.0.0:9466"
ROOT = Path(__file__).resolve().parent.parent
LINT = ROOT / ".ci" / "deploy-lint.sh"
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "deploy" / "docker-compose.sipwatch.yml"
CONTAINER_TOML = ROOT / "deploy" / "sipwatch.toml"
HEALTHCHECK = ROOT / "deploy" / "healthcheck.py"
UNIT = ROOT / "systemd" / "sipwatch.service"
ENV_EXAMPLE = ROOT / "systemd" / "sipwatch.env.example"
DOCS = ROOT / "docs" / "deployment.md"
K8S = ROOT / "deploy" / "kubernetes"


def _load(path: Path) -> ModuleType:
    name = f"deploy_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


dockerfile_check = _load(ROOT / ".ci" / "dockerfile_check.py")
compose_check = _load(ROOT / ".ci" / "compose_check.py")
k8s_check = _load(ROOT / ".ci" / "k8s_check.py")
unit_check = _load(ROOT / ".ci" / "unit_check.py")
healthcheck = _load(HEALTHCHECK)


def run_lint(**overrides: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": sys.executable, **overrides}
    return subprocess.run(
        ["bash", str(LINT)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )


def failed_checks(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The check names from the script's final 'N check(s) failed: a,b' line."""
    match = re.search(r"deploy-lint: \d+ check\(s\) failed: (.*)$", result.stderr, re.M)
    return match.group(1).split(",") if match else []


def tool(name: str) -> str:
    out = subprocess.run(
        ["bash", str(ROOT / ".ci" / "deploy-tools.sh"), name],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return out.stdout.strip()


def fenced_blocks(text: str, language: str) -> list[str]:
    """Bodies of ```language blocks, de-indented (the docs nest some in list items)."""
    blocks = []
    for m in re.finditer(rf"^([ \t]*)```{language}\n(.*?)^\1```", text, re.M | re.S):
        indent = len(m.group(1))
        blocks.append("\n".join(line[indent:] for line in m.group(2).splitlines()))
    return blocks


def block_after(text: str, marker: str, language: str) -> str:
    start = text.index(f"<!-- {marker} -->")
    return fenced_blocks(text[start:], language)[0]


# ---------------------------------------------------------------------------------------------
# The CI script as a whole
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lint_result() -> subprocess.CompletedProcess[str]:
    return run_lint()


def test_deploy_lint_passes_on_the_shipped_files(
    lint_result: subprocess.CompletedProcess[str],
) -> None:
    out = lint_result.stdout
    assert lint_result.returncode == 0, lint_result.stdout + lint_result.stderr
    for marker in (
        "hadolint OK",
        "Dockerfile: Dockerfile policy OK",
        "compose config OK",
        "compose policy OK",
        "config OK: deploy/sipwatch.toml",
        "database configured, redis configured",
        "verify OK",
        "Overall exposure level for sipwatch.service",
        "required directives OK",
        "sipwatch:x:",
        "env names OK",
        "generated manifests fresh",
        "kustomize OK",
        "kubernetes manifests OK: 9 objects",
        "RBAC minimal",
        "deploy-lint: all checks passed",
    ):
        assert marker in out, f"{marker!r} missing from:\n{out}"


def test_unit_security_exposure_is_low(lint_result: subprocess.CompletedProcess[str]) -> None:
    match = re.search(r"Overall exposure level for sipwatch.service: (\d+\.\d)", lint_result.stdout)
    assert match is not None, lint_result.stdout
    assert float(match.group(1)) <= 2.0


def _shipped_dockerfile_without_user() -> str:
    text = DOCKERFILE.read_text()
    assert "USER 10001:10001\n" in text
    return text.replace("USER 10001:10001\n", "")


def _unit_with_typos() -> str:
    text = UNIT.read_text()
    return text.replace("ProtectSystem=strict", "ProtectSystem=strikt").replace(
        "RestartSec=5s", "RestartSek=5s"
    )


def _weak_unit() -> str:
    weakened = (
        "ProtectSystem=",
        "ProtectHome=",
        "NoNewPrivileges=",
        "CapabilityBoundingSet=",
        "SystemCallFilter=",
        "PrivateDevices=",
        "MemoryDenyWriteExecute=",
        "RestrictAddressFamilies=",
        "ProtectKernel",
    )
    lines = UNIT.read_text().splitlines()
    return "\n".join(line for line in lines if not line.startswith(weakened)) + "\n"


def _compose_with_schema_error() -> str:
    text = COMPOSE.read_text()
    assert "    cap_drop:\n" in text
    return text.replace("    cap_drop:\n", "    cap_dorp:\n")


@pytest.mark.parametrize(
    ("variable", "filename", "content", "expected_failures", "expected_text"),
    [
        (
            "SIPWATCH_LINT_DOCKERFILE",
            "Dockerfile",
            _shipped_dockerfile_without_user,
            ["dockerfile_check.py"],
            "no USER: the container would run as root",
        ),
        (
            "SIPWATCH_LINT_UNIT",
            "sipwatch.service",
            _unit_with_typos,
            ["systemd-analyze verify printed warnings", "unit_check.py"],
            "Unknown key 'RestartSek'",
        ),
        (
            "SIPWATCH_LINT_UNIT",
            "sipwatch.service",
            _weak_unit,
            ["systemd-analyze security", "unit_check.py"],
            "missing NoNewPrivileges=yes",
        ),
        (
            "SIPWATCH_LINT_COMPOSE",
            "compose.yml",
            _compose_with_schema_error,
            ["docker compose config", "compose_check.py"],
            "additional properties 'cap_dorp' not allowed",
        ),
    ],
    ids=["dockerfile-as-root", "unit-typos", "unit-weak", "compose-schema"],
)
def test_deploy_lint_fails_on_a_broken_file(
    tmp_path: Path,
    variable: str,
    filename: str,
    content: Any,
    expected_failures: list[str],
    expected_text: str,
) -> None:
    broken = tmp_path / filename
    broken.write_text(content())
    result = run_lint(**{variable: str(broken)})
    assert result.returncode == 1, result.stdout + result.stderr
    assert failed_checks(result) == expected_failures, result.stderr
    assert expected_text in result.stderr


# ---------------------------------------------------------------------------------------------
# Dockerfile
# ---------------------------------------------------------------------------------------------


def _final_stage() -> Any:
    stages = dockerfile_check.stages(dockerfile_check.parse(DOCKERFILE.read_text()))
    assert len(stages) == 2
    return stages


def test_dockerfile_builds_a_venv_and_ships_only_it() -> None:
    builder, final = _final_stage()
    assert builder.name == "builder"
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", final.image)
    assert builder.image == final.image  # the venv's python symlink must resolve in the final
    runs = " ".join(i.args for i in builder.instructions if i.keyword == "RUN")
    assert "pip wheel" in runs and "python -m venv /opt/sipwatch" in runs
    assert "--no-index --find-links /wheels" in runs
    # the one image also runs as mode C: the Kubernetes client extra is in it
    assert '"/src[kubernetes]"' in runs and '"sipwatch[kubernetes]"' in runs
    assert "deploy/healthcheck.py /opt/sipwatch/healthcheck.py" in runs
    final_kw = [i.keyword for i in final.instructions]
    assert "RUN" in final_kw  # the user is created...
    final_runs = " ".join(i.args for i in final.instructions if i.keyword == "RUN")
    assert "apt-get" not in final_runs and "pip" not in final_runs  # ...but nothing installed
    copies = [i.args for i in final.instructions if i.keyword == "COPY"]
    assert copies == ["--from=builder /opt/sipwatch /opt/sipwatch"]


def test_dockerfile_runtime_contract() -> None:
    _, final = _final_stage()
    by_kw: dict[str, list[str]] = {}
    for ins in final.instructions:
        by_kw.setdefault(ins.keyword, []).append(ins.args)
    assert by_kw["USER"] == ["10001:10001"]
    assert by_kw["EXPOSE"] == ["9466"]
    assert by_kw["ENTRYPOINT"] == ['["sipwatch"]']
    assert by_kw["CMD"] == ['["run"]']
    env = " ".join(by_kw["ENV"])
    assert "PYTHONUNBUFFERED=1" in env
    # the image is reached through a published port: it listens on all of its interfaces,
    # and the compose file publishes the port on the host's loopback (DEFAULT_LISTEN's host)
    assert f"SIPWATCH_LISTEN={CONTAINER_LISTEN}" in env
    assert '"/opt/sipwatch/bin:${PATH}"' in env
    (health,) = by_kw["HEALTHCHECK"]
    assert '"/opt/sipwatch/healthcheck.py"' in health and "--interval=" in health
    labels = " ".join(by_kw["LABEL"])
    for key in dockerfile_check.REQUIRED_LABELS:
        assert key in labels
    # the systemd unit runs the same venv layout
    assert "ExecStart=/opt/sipwatch/bin/sipwatch run" in UNIT.read_text()


def test_dockerfile_policy_passes_on_the_shipped_file() -> None:
    assert dockerfile_check.check_text(DOCKERFILE.read_text()) == []


GOOD = DOCKERFILE.read_text()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD.replace("USER 10001:10001", "USER root"), "runs as root (USER root)"),
        (GOOD.replace("USER 10001:10001", "USER 0:0"), "runs as root (USER 0)"),
        (GOOD.replace("USER 10001:10001\n", ""), "no USER"),
        (
            GOOD.replace("FROM python:3.11.14-slim-bookworm AS builder", "FROM python:latest AS b"),
            "moving 'latest' tag",
        ),
        (GOOD.replace("FROM python:3.11.14-slim-bookworm\n", "FROM python\n"), "has no tag"),
        (GOOD.replace("HEALTHCHECK --interval", "# HEALTHCHECK --interval"), "no HEALTHCHECK"),
        (GOOD + "HEALTHCHECK NONE\n", "HEALTHCHECK NONE"),
        (GOOD.replace("COPY . /src", "ADD https://example.org/src.tgz /src"), "ADD of a URL"),
        (
            GOOD.replace("--no-install-recommends gcc", "gcc"),
            "without --no-install-recommends",
        ),
        (
            GOOD.replace("    && rm -rf /var/lib/apt/lists/*\n", "\n"),
            "without removing /var/lib/apt/lists",
        ),
        (
            GOOD.replace(
                "COPY --from=builder",
                "RUN apt-get update && apt-get install -y --no-install-recommends gcc "
                "&& rm -rf /var/lib/apt/lists/*\nCOPY --from=builder",
            ),
            "final stage installs build tools gcc",
        ),
        (GOOD.replace('ENTRYPOINT ["sipwatch"]', "ENTRYPOINT sipwatch"), "shell form"),
        (GOOD + "ENV SIPWATCH_DB_PASSWORD=hunter2\n", "ENV SIPWATCH_DB_PASSWORD bakes a secret"),
        (GOOD.replace('org.opencontainers.image.revision="${VCS_REF}" \\\n', ""), "OCI labels"),
        (
            "FROM python:3.11.14-slim-bookworm\nUSER 10001\nHEALTHCHECK CMD true\n",
            "single-stage build",
        ),
    ],
)
def test_dockerfile_policy_rejects(text: str, expected: str) -> None:
    problems = dockerfile_check.check_text(text)
    assert any(expected in p for p in problems), problems


def test_hadolint_finds_problems_in_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y gcc\n")
    result = subprocess.run(
        [tool("hadolint"), "--no-color", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # latest tag
    assert "DL3015" in result.stdout  # --no-install-recommends


def _dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern also covers what is below it."""
    excluded = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                regex += ".*"
                i += 2
            elif pattern[i] == "*":
                regex += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                regex += "[^/]"
                i += 1
            else:
                regex += re.escape(pattern[i])
                i += 1
        if re.fullmatch(regex + "(?:/.*)?", path):
            excluded = not negate
    return excluded


@pytest.mark.parametrize(
    ("path", "excluded"),
    [
        ("deploy/secrets/sipwatch_db_url", True),
        ("deploy/.env", True),
        ("secrets/anything", True),
        ("deploy/control/remediation.disabled", True),
        (".git/config", True),
        (".venv/bin/python", True),
        (".tools/hadolint-2.15.1/hadolint", True),
        ("tests/test_deploy_files.py", True),
        ("sipwatch/__pycache__/cli.cpython-311.pyc", True),
        ("pyproject.toml", False),
        ("README.md", False),
        ("sipwatch/cli.py", False),
        ("deploy/healthcheck.py", False),
    ],
)
def test_dockerignore(path: str, excluded: bool) -> None:
    assert _dockerignore_excludes(path) is excluded


# ---------------------------------------------------------------------------------------------
# Compose
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def test_compose_structure(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"docker-socket-proxy", "sipwatch"}
    proxy = compose["services"]["docker-socket-proxy"]
    assert proxy["image"].endswith("tecnativa/docker-socket-proxy:0.3.0}")
    env = proxy["environment"]
    assert env["CONTAINERS"] == env["EVENTS"] == env["VERSION"] == "1"
    assert env["POST"] == env["ALLOW_RESTARTS"] == env["EXEC"] == "0"
    assert proxy["networks"] == ["docker-api"] and "ports" not in proxy
    assert compose["networks"]["docker-api"] == {"internal": True}
    assert compose["networks"]["jambonz"] == {
        "external": True,
        "name": "${JAMBONZ_NETWORK:-docker_jambonz}",
    }
    sw = compose["services"]["sipwatch"]
    assert sw["read_only"] is True
    assert sw["cap_drop"] == ["ALL"]
    assert sw["security_opt"] == ["no-new-privileges:true"]
    assert sw["user"] == "10001:10001"
    assert sw["environment"]["DOCKER_HOST"] == "tcp://docker-socket-proxy:2375"
    assert sw["ports"] == ["${SIPWATCH_METRICS_BIND:-127.0.0.1}:9466:9466"]
    assert "./sipwatch.toml:/etc/sipwatch/sipwatch.toml:ro" in sw["volumes"]
    assert sorted(sw["secrets"]) == ["jambonz_encryption_secret", "sipwatch_db_url"]
    assert set(sw["networks"]) == {"jambonz", "docker-api"}


def test_compose_policy_passes_on_the_shipped_file(compose: dict[str, Any]) -> None:
    assert compose_check.check_data(compose) == []


def _mutate(compose: dict[str, Any], change: str) -> dict[str, Any]:
    proxy = compose["services"]["docker-socket-proxy"]
    sw = compose["services"]["sipwatch"]
    if change == "post":
        proxy["environment"]["POST"] = "1"
        proxy["environment"]["ALLOW_RESTARTS"] = "1"
    elif change == "post-via-variable":
        proxy["environment"]["POST"] = "${PROXY_POST:-1}"
    elif change == "exec":
        proxy["environment"]["EXEC"] = "1"
    elif change == "proxy-port":
        proxy["ports"] = ["2375:2375"]
    elif change == "proxy-on-jambonz":
        proxy["networks"] = ["jambonz", "docker-api"]
    elif change == "socket-in-sipwatch":
        sw["volumes"].append("/var/run/docker.sock:/var/run/docker.sock:ro")
    elif change == "writable-root":
        del sw["read_only"]
    elif change == "caps":
        sw["cap_drop"] = ["NET_RAW"]
    elif change == "root-user":
        sw["user"] = "0:0"
    elif change == "password-in-env":
        sw["environment"]["SIPWATCH_DB_URL"] = "mysql://sipwatch:hunter2@mysql:3306/jambones"
    elif change == "secret-in-env":
        sw["environment"]["SIPWATCH_JAMBONZ_ENCRYPTION_SECRET"] = "abc"
    elif change == "undeclared-secret-file":
        sw["environment"]["SIPWATCH__REDIS__URL_FILE"] = "/run/secrets/redis_url"
    elif change == "config-writable":
        sw["volumes"][0] = "./sipwatch.toml:/etc/sipwatch/sipwatch.toml"
    elif change == "docker-host":
        sw["environment"]["DOCKER_HOST"] = "unix:///var/run/docker.sock"
    return compose


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("post", "POST=1 together with CONTAINERS=1"),
        ("post-via-variable", "POST=1 together with CONTAINERS=1"),
        ("exec", "EXEC=1"),
        ("proxy-port", "publishes ports"),
        ("proxy-on-jambonz", "on network 'jambonz', which is not internal"),
        ("socket-in-sipwatch", "sipwatch: mounts the Docker socket"),
        ("writable-root", "read_only is not true"),
        ("caps", "cap_drop does not include ALL"),
        ("root-user", "not a numeric non-root UID"),
        ("password-in-env", "SIPWATCH_DB_URL carries a URL with a password"),
        ("secret-in-env", "SIPWATCH_JAMBONZ_ENCRYPTION_SECRET puts a secret"),
        ("undeclared-secret-file", "not a declared compose secret"),
        ("config-writable", "is mounted read-write"),
        ("docker-host", "does not name the proxy service"),
    ],
)
def test_compose_policy_rejects(compose: dict[str, Any], change: str, expected: str) -> None:
    problems = compose_check.check_data(_mutate(compose, change))
    assert any(expected in p for p in problems), problems


def test_compose_variables_are_expanded_like_compose() -> None:
    env = {"SET": "x"}
    assert compose_check.interpolate("${SET:-d}/${UNSET:-d}/${UNSET}/$$HOME", env) == "x/d//$HOME"


def test_container_config_loads_with_the_compose_environment(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    """The variables the compose file sets are real settings, the secrets land where sipwatch
    reads them, and deploy/sipwatch.toml is valid together with them."""
    sw = compose["services"]["sipwatch"]
    environ = {k: compose_check.interpolate(str(v), {}) for k, v in sw["environment"].items()}
    values = {
        "sipwatch_db_url": "mysql://sipwatch:p%40ss@mysql:3306/jambones",
        "jambonz_encryption_secret": "5a3e38b5-3188-4936-89c9-fb0df3138b5c",
    }
    for name, value in values.items():
        (tmp_path / name).write_text(value + "\n")  # a trailing newline is common
    for key, value in list(environ.items()):
        if value.startswith("/run/secrets/"):
            environ[key] = str(tmp_path / value.removeprefix("/run/secrets/"))
    environ["SIPWATCH_LISTEN"] = CONTAINER_LISTEN  # from the image's ENV
    config = load_config(CONTAINER_TOML, environ=environ)
    assert config.database.url is not None
    assert config.database.url.reveal() == values["sipwatch_db_url"]
    assert config.jambonz.encryption_secret is not None
    assert config.jambonz.encryption_secret.reveal() == values["jambonz_encryption_secret"]
    assert config.redis.url is not None and config.redis.url.reveal() == "redis://redis:6379/0"
    assert config.sources.docker.url == "tcp://docker-socket-proxy:2375"
    assert config.sources.docker.project is None
    assert config.metrics.port == 9466
    assert config.remediation.mode == "off"
    assert config.remediation.actions["restart_registrar"] == "off"
    # the kill switch lives in the directory the compose file mounts read-only
    kill_dir = str(Path(config.remediation.kill_switch_file).parent)
    assert f"./control:{kill_dir}:ro" in sw["volumes"]
    # and the compose secrets are the *_file settings, not the secret values
    assert "p%40ss" not in COMPOSE.read_text()


# ---------------------------------------------------------------------------------------------
# systemd
# ---------------------------------------------------------------------------------------------


def test_unit_has_the_required_directives() -> None:
    assert unit_check.check_text(UNIT.read_text()) == []
    text = UNIT.read_text()
    # documented but inactive: Docker group access is root-equivalent
    assert "#SupplementaryGroups=docker" in text
    assert re.search(r"^SupplementaryGroups=", text, re.M) is None
    # the config path of ExecStart is the one sipwatch reads by default
    assert f"--config {DEFAULT_CONFIG_PATHS[0]}" in text


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("NoNewPrivileges=yes\n", "", "missing NoNewPrivileges=yes"),
        ("CapabilityBoundingSet=\n", "CapabilityBoundingSet=CAP_NET_ADMIN\n", "missing Capab"),
        ("#SupplementaryGroups=docker", "SupplementaryGroups=docker", "docker must not be"),
        ("Type=exec", "Type=notify", "Type=notify must not be active"),
        ("ProtectHome=tmpfs", "ProtectHome=no", "ProtectHome must be one of"),
        ("RestartSec=5s", "RestartSec=0", "RestartSec is missing"),
        ("LimitNOFILE=8192", "LimitNOFILE=1024", "LimitNOFILE is missing"),
        ("LimitNOFILE=8192\n", "", "LimitNOFILE is missing"),
        ("ExecReload=/bin/kill -HUP $MAINPID\n", "", "missing ExecReload"),
        ("MemoryDenyWriteExecute=yes", "MemoryDenyWriteExecute=no", "MemoryDenyWriteExecute"),
    ],
)
def test_unit_check_rejects(old: str, new: str, expected: str) -> None:
    text = UNIT.read_text()
    assert old in text
    problems = unit_check.check_text(text.replace(old, new))
    assert any(expected in p for p in problems), problems


def test_unit_verify_flags_unknown_directives(tmp_path: Path) -> None:
    """What deploy-lint relies on: verify *prints* problems but may still exit 0."""
    unit = tmp_path / "sipwatch.service"
    unit.write_text(
        _unit_with_typos().replace("/opt/sipwatch/bin/sipwatch", "/bin/true"), encoding="utf-8"
    )
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert "Unknown key 'RestartSek'" in result.stderr
    assert "protect system value" in result.stderr


def _env_lines() -> Iterator[tuple[str, str]]:
    for line in ENV_EXAMPLE.read_text().splitlines():
        m = re.match(r"^#?([A-Z][A-Z0-9_]*)=(.*)$", line.strip())
        if m:
            yield m.group(1), m.group(2)


def test_env_example_documents_known_variables_with_valid_values(tmp_path: Path) -> None:
    names = dict(_env_lines())
    known = set(env_aliases()) | {"DOCKER_HOST", "SIPWATCH_CONFIG"}
    assert {"SIPWATCH_DB_URL", "SIPWATCH_JAMBONZ_ENCRYPTION_SECRET", "SIPWATCH_REDIS_URL"} <= set(
        names
    )
    unknown = [n for n in names if n not in known and not n.startswith(GENERIC_ENV_PREFIX)]
    assert unknown == []
    # every documented value (commented or not) is accepted by the loader, together with
    # the VM configuration of the docs
    vm = tmp_path / "sipwatch.toml"
    vm.write_text(block_after(DOCS.read_text(), "config:vm", "toml"))
    config = load_config(vm, environ=names)
    assert config.database.url is not None
    assert config.database.url.reveal() == names["SIPWATCH_DB_URL"]
    assert config.sources.docker.url == names["DOCKER_HOST"]
    assert config.logging.format == "json"


def test_docs_config_examples_are_valid(tmp_path: Path) -> None:
    docs = DOCS.read_text()
    blocks = fenced_blocks(docs, "toml")
    assert blocks, "docs/deployment.md has no toml example"
    for n, block in enumerate(blocks):
        path = tmp_path / f"example{n}.toml"
        path.write_text(block)
        load_config(path, environ={})  # raises ConfigError with every problem
    vm = tmp_path / "vm.toml"
    vm.write_text(block_after(docs, "config:vm", "toml"))
    config = load_config(vm, environ={})
    assert config.sources.docker.enabled is False
    assert {f.path for f in config.sources.files} == {
        "/var/log/drachtio/drachtio.log",
        "/home/admin/.pm2/logs/jambonz-sbc-sip-sidecar.log",
    }
    assert any(f.path.startswith("/home/admin/.pm2/logs/") for f in config.sources.files)
    assert config.metrics.host == "127.0.0.1"
    # the pm2 log directory the VM config reads is the one the unit binds in
    assert "BindReadOnlyPaths=-/home/admin/.pm2/logs" in UNIT.read_text()


# ---------------------------------------------------------------------------------------------
# Health check script
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "url"),
    [
        ({}, "http://127.0.0.1:9466/healthz"),
        ({"SIPWATCH_LISTEN": "0.0.0.0:9000"}, "http://127.0.0.1:9000/healthz"),
        ({"SIPWATCH_LISTEN": ":9001"}, "http://127.0.0.1:9001/healthz"),
        ({"SIPWATCH_LISTEN": "[::]:9002"}, "http://[::1]:9002/healthz"),
        ({"SIPWATCH_LISTEN": "[fd00::5]:9003"}, "http://[fd00::5]:9003/healthz"),
        ({"SIPWATCH_LISTEN": "10.0.0.5:9004"}, "http://10.0.0.5:9004/healthz"),
        (
            {"SIPWATCH_LISTEN": "10.0.0.5:9004", "SIPWATCH_HEALTHCHECK_URL": "http://x:1/healthz"},
            "http://x:1/healthz",
        ),
    ],
)
def test_healthcheck_url(environ: dict[str, str], url: str) -> None:
    assert healthcheck.health_url(environ) == url


def test_healthcheck_rejects_a_listen_without_port() -> None:
    with pytest.raises(ValueError, match="cannot read a port"):
        healthcheck.health_url({"SIPWATCH_LISTEN": "localhost"})


async def _run_healthcheck(listen: str) -> tuple[int, str]:
    env = {"PATH": os.environ.get("PATH", ""), "SIPWATCH_LISTEN": listen}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-I",
        str(HEALTHCHECK),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


@pytest.fixture
async def sipwatch_http() -> AsyncIterator[int]:
    metrics = SipwatchMetrics()
    app = make_app(metrics, FailureTracker(), metrics.source_status)
    runner = await start_http(app, "127.0.0.1", 0)
    try:
        port = runner.addresses[0][1]
        yield int(port)
    finally:
        await runner.cleanup()


async def test_healthcheck_passes_against_sipwatch_http(sipwatch_http: int) -> None:
    rc, out = await _run_healthcheck(f"0.0.0.0:{sipwatch_http}")
    assert rc == 0, out
    assert f"http://127.0.0.1:{sipwatch_http}/healthz answered 200" in out


async def test_healthcheck_fails_on_error_status_and_on_nothing_listening() -> None:
    async def unhealthy(request: web.Request) -> web.Response:
        return web.Response(status=503, text="no\n")

    app = web.Application()
    app.router.add_get("/healthz", unhealthy)
    runner = await start_http(app, "127.0.0.1", 0)
    port = int(runner.addresses[0][1])
    try:
        rc, out = await _run_healthcheck(f"127.0.0.1:{port}")
        assert rc == 1 and "answered 503" in out
    finally:
        await runner.cleanup()
    # the same port, now closed
    rc, out = await _run_healthcheck(f"127.0.0.1:{port}")
    assert rc == 1 and "unreachable" in out


# ---------------------------------------------------------------------------------------------
# MySQL grants of docs/deployment.md, on the real MariaDB
# ---------------------------------------------------------------------------------------------

DB_HOST = "127.0.0.1"
DB_PORT = 3306
NO_GRANT = 1142  # ER_TABLEACCESS_DENIED_ERROR


def _statements(sql: str) -> list[str]:
    return [s.strip() for s in sql.split(";") if s.strip()]


async def _root_exec(statements: list[str]) -> None:
    conn = await asyncmy.connect(host=DB_HOST, port=DB_PORT, user="root", autocommit=True)
    try:
        async with conn.cursor() as cur:
            for statement in statements:
                await cur.execute(statement)
    finally:
        conn.close()


async def _denied(cur: Any, sql: str) -> int:
    with pytest.raises((OperationalError, ProgrammingError)) as info:
        await cur.execute(sql)
    code: int = info.value.args[0]
    return code


async def test_documented_grants_are_least_privilege_on_mariadb() -> None:
    docs = DOCS.read_text()
    read_only = block_after(docs, "grants:read-only", "sql")
    remediation = block_after(docs, "grants:remediation", "sql")
    for table in ("accounts", "clients", "webhooks", "service_providers", "schema_version"):
        assert f"GRANT SELECT ON jambones.{table} TO 'sipwatch'@'%'" in read_only
    assert "DELETE" not in read_only + remediation

    suffix = secrets.token_hex(4)
    db, user, password = f"sw_deploy_{suffix}", f"sw_deploy_{suffix}", secrets.token_hex(12)

    def adapt(sql: str) -> list[str]:
        sql = sql.replace("jambones.", f"{db}.").replace("'sipwatch'@", f"'{user}'@")
        return _statements(sql.replace("CHANGE-ME", password))

    await _root_exec(
        [
            f"CREATE DATABASE {db}",
            f"CREATE TABLE {db}.accounts (account_sid CHAR(36) PRIMARY KEY, sip_realm VARCHAR(132))",
            f"CREATE TABLE {db}.clients (client_sid CHAR(36) PRIMARY KEY, password VARCHAR(1024))",
            f"CREATE TABLE {db}.webhooks (webhook_sid CHAR(36) PRIMARY KEY, url VARCHAR(1024))",
            f"CREATE TABLE {db}.service_providers (service_provider_sid CHAR(36) PRIMARY KEY)",
            f"CREATE TABLE {db}.schema_version (version VARCHAR(16))",
            f"CREATE TABLE {db}.voip_carriers (voip_carrier_sid CHAR(36) PRIMARY KEY)",
            f"INSERT INTO {db}.clients VALUES ('c1', 'plaintext')",
            f"INSERT INTO {db}.schema_version VALUES ('0.9.6')",
        ]
    )
    try:
        await _root_exec(adapt(read_only))

        async def as_user() -> Any:
            return await asyncmy.connect(
                host=DB_HOST, port=DB_PORT, user=user, password=password, db=db, autocommit=True
            )

        conn = await as_user()
        try:
            async with conn.cursor() as cur:
                for table in ("accounts", "clients", "webhooks", "service_providers"):
                    await cur.execute(f"SELECT COUNT(*) FROM {table}")
                await cur.execute("SELECT version FROM schema_version")
                assert await cur.fetchone() == ("0.9.6",)
                # the leader lock needs no grant
                await cur.execute("SELECT GET_LOCK(%s, 0)", (f"sipwatch-test-{suffix}",))
                assert await cur.fetchone() == (1,)
                await cur.execute("SELECT RELEASE_LOCK(%s)", (f"sipwatch-test-{suffix}",))
                # read-only: no writes, no other tables
                assert await _denied(cur, "UPDATE clients SET password = 'x'") == NO_GRANT
                assert await _denied(cur, "SELECT * FROM voip_carriers") == NO_GRANT
                assert await _denied(cur, "CREATE TABLE sipwatch_audit (id INT)") == NO_GRANT
        finally:
            conn.close()

        await _root_exec(adapt(remediation))
        conn = await as_user()
        try:
            async with conn.cursor() as cur:
                await cur.execute(
                    "UPDATE clients SET password = %s WHERE client_sid = 'c1'", ("e",)
                )
                await cur.execute("CREATE TABLE IF NOT EXISTS sipwatch_audit (id INT, what TEXT)")
                await cur.execute("INSERT INTO sipwatch_audit VALUES (1, 'applied')")
                await cur.execute("SELECT COUNT(*) FROM sipwatch_audit")
                assert await cur.fetchone() == (1,)
                # still no deletes and no other tables
                assert await _denied(cur, "DELETE FROM clients") == NO_GRANT
                assert await _denied(cur, "DROP TABLE sipwatch_audit") == NO_GRANT
                assert await _denied(cur, "UPDATE webhooks SET url = 'x'") == NO_GRANT
        finally:
            conn.close()
    finally:
        await _root_exec([f"DROP USER IF EXISTS '{user}'@'%'", f"DROP DATABASE IF EXISTS {db}"])


# ---------------------------------------------------------------------------------------------
# Kubernetes manifests (deploy/kubernetes, mode C)
# ---------------------------------------------------------------------------------------------


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """Render with Debian's kubectl (.ci/kubectl.sh), as CI does."""
    kubectl = subprocess.run(
        ["bash", str(ROOT / ".ci" / "kubectl.sh")],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    ).stdout.strip()
    out = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    return kustomize(K8S)


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_kubernetes_base_renders_every_object_in_one_namespace(
    rendered: list[dict[str, Any]],
) -> None:
    kinds = sorted(d["kind"] for d in rendered)
    assert kinds == [
        "ConfigMap",
        "ConfigMap",
        "Deployment",
        "PrometheusRule",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
    ]
    assert {d["metadata"]["namespace"] for d in rendered} == {"jambonz"}
    assert k8s_check.schema_problems(rendered) == []
    assert k8s_check.policy_problems(rendered) == []


def test_rbac_is_exactly_pods_get_list_watch_and_pods_log_get(
    rendered: list[dict[str, Any]],
) -> None:
    (role,) = by_kind(rendered, "Role")
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert granted == {
        ("", "pods", "get"),
        ("", "pods", "list"),
        ("", "pods", "watch"),
        ("", "pods/log", "get"),
    }
    assert all(set(rule) == {"apiGroups", "resources", "verbs"} for rule in role["rules"])
    (binding,) = by_kind(rendered, "RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "sipwatch", "namespace": "jambonz"}
    ]
    assert k8s_check.rbac_problems(rendered) == []
    (deployment,) = by_kind(rendered, "Deployment")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "sipwatch"


def _mutated(docs: list[dict[str, Any]], kind: str, change: Any) -> list[dict[str, Any]]:
    import copy

    out = copy.deepcopy(docs)
    change(next(d for d in out if d["kind"] == kind))
    return out


def _pod(d: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = d["spec"]["template"]["spec"]
    return spec


def _container(d: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = _pod(d)["containers"][0]
    return container


@pytest.mark.parametrize(
    ("kind", "change", "check", "expected"),
    [
        (
            "Role",
            lambda d: d["rules"][0]["verbs"].append("delete"),
            "rbac",
            "extra {('', 'pods'): ['delete']}",
        ),
        (
            "Role",
            lambda d: d["rules"].append(
                {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}
            ),
            "rbac",
            "('', 'secrets')",
        ),
        (
            "Role",
            lambda d: d["rules"][1]["verbs"].remove("get"),
            "rbac",
            "missing {('', 'pods/log'): ['get']}",
        ),
        ("Role", lambda d: d.update(kind="ClusterRole"), "rbac", "expected exactly one Role"),
        (
            "RoleBinding",
            lambda d: d["subjects"][0].update(name="default"),
            "rbac",
            "not bound to the sipwatch",
        ),
        (
            "Deployment",
            lambda d: _container(d)["securityContext"].update(readOnlyRootFilesystem=False),
            "policy",
            "readOnlyRootFilesystem",
        ),
        (
            "Deployment",
            lambda d: _pod(d)["securityContext"].pop("runAsNonRoot"),
            "policy",
            "non-root UID",
        ),
        (
            "Deployment",
            lambda d: _container(d)["securityContext"]["capabilities"].update(drop=[]),
            "policy",
            "drop ALL",
        ),
        (
            "Deployment",
            lambda d: _container(d).pop("readinessProbe"),
            "policy",
            "readinessProbe must GET /readyz",
        ),
        (
            "Deployment",
            lambda d: _container(d)["livenessProbe"]["httpGet"].update(path="/metrics"),
            "policy",
            "livenessProbe must GET /healthz",
        ),
        (
            "Deployment",
            lambda d: _container(d)["resources"].pop("limits"),
            "policy",
            "memory request and limit",
        ),
        (
            "Deployment",
            lambda d: _container(d).update(image="sipwatch:latest"),
            "policy",
            "fixed tag",
        ),
        (
            "Deployment",
            lambda d: _container(d)["env"].append(
                {"name": "SIPWATCH_DB_URL", "value": "mysql://u:p@h/j"}
            ),
            "policy",
            "must come from a Secret",
        ),
        ("Service", lambda d: d["metadata"].update(namespace="other"), "policy", "one namespace"),
        (
            "Deployment",
            lambda d: _container(d)["securityContext"].update(readOnlyRootFilesytem=True),
            "schema",
            "'readOnlyRootFilesytem' was unexpected",
        ),
        (
            "ServiceMonitor",
            lambda d: d["spec"]["endpoints"][0].update(intervall="30s"),
            "schema",
            "'intervall' was unexpected",
        ),
        (
            "PrometheusRule",
            lambda d: d["spec"]["groups"][0]["rules"][0].update(fro="5m"),
            "schema",
            "'fro' was unexpected",
        ),
        (
            "PrometheusRule",
            lambda d: d["spec"]["groups"][0]["rules"][0].update(**{"for": "5 minutes"}),
            "schema",
            "does not match",
        ),
    ],
)
def test_k8s_check_rejects(
    rendered: list[dict[str, Any]], kind: str, change: Any, check: str, expected: str
) -> None:
    docs = _mutated(rendered, kind, change)
    problems = {
        "rbac": k8s_check.rbac_problems,
        "policy": k8s_check.policy_problems,
        "schema": k8s_check.schema_problems,
    }[check](docs)
    assert any(expected in p for p in problems), problems


def test_deploy_lint_fails_on_broken_kubernetes_manifests(tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "k8s"
    shutil.copytree(K8S, broken)
    rbac = broken / "rbac.yaml"
    rbac.write_text(rbac.read_text().replace('verbs: ["get", "list", "watch"]', 'verbs: ["*"]'))
    result = run_lint(SIPWATCH_LINT_K8S=str(broken))
    assert result.returncode == 1, result.stdout + result.stderr
    assert failed_checks(result) == ["k8s_check.py"]
    assert "RBAC is not minimal" in result.stderr


def test_namespace_of_an_overlay_moves_the_role_binding_subject(tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    kust = copy / "kustomization.yaml"
    kust.write_text(kust.read_text().replace("namespace: jambonz", "namespace: voip"))
    docs = kustomize(copy)
    assert {d["metadata"]["namespace"] for d in docs} == {"voip"}
    (binding,) = by_kind(docs, "RoleBinding")
    assert binding["subjects"][0]["namespace"] == "voip"


def test_prometheus_rule_and_dashboards_are_the_shipped_files(
    rendered: list[dict[str, Any]],
) -> None:
    """One truth: the wrappers carry the plain files unchanged."""
    (rule,) = by_kind(rendered, "PrometheusRule")
    shipped = yaml.safe_load((ROOT / "prometheus" / "sipwatch-alerts.yml").read_text())
    assert rule["spec"] == {"groups": shipped["groups"]}
    maps = {d["metadata"]["name"]: d for d in by_kind(rendered, "ConfigMap")}
    files = sorted((ROOT / "dashboards").glob("*.json"))
    assert sorted(maps) == sorted(f"{f.stem}-dashboard" for f in files)
    for f in files:
        cm = maps[f"{f.stem}-dashboard"]
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"  # kube-prometheus-stack
        assert cm["data"] == {f.name: f.read_text().rstrip("\n") + "\n"}


def test_generated_manifests_are_fresh_and_staleness_is_detected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tools import k8s_manifests

    assert k8s_manifests.main(["--check"]) == 0
    rules = tmp_path / "alerts.yml"
    rules.write_text(
        k8s_manifests.RULES.read_text().replace("SipwatchHigh403Rate", "SipwatchRenamed")
    )
    monkeypatch.setattr(k8s_manifests, "RULES", rules)
    assert k8s_manifests.main(["--check"]) == 1
    assert "SipwatchRenamed" in k8s_manifests.prometheus_rule()


def test_deployment_secret_keys_are_sipwatch_settings(rendered: list[dict[str, Any]]) -> None:
    """The Secret's keys feed real settings, and docs/deployment.md creates those keys."""
    (deployment,) = by_kind(rendered, "Deployment")
    env = _container(deployment)["env"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env if "valueFrom" in e}
    assert set(refs) <= set(env_aliases())
    assert {r["name"] for r in refs.values()} == {"sipwatch-secrets"}
    assert all(r["optional"] is True for r in refs.values())
    docs = DOCS.read_text()
    create = block_after(docs, "k8s:secret", "sh")
    assert "kubectl -n jambonz create secret generic sipwatch-secrets" in create
    for ref in refs.values():
        assert f"--from-file={ref['key']}=" in create
