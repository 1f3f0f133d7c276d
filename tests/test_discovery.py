"""Zero configuration: a pod, a Docker host, a jambonz VM and nothing at all, each described
in ``tmp_path`` (service-account files, a real unix socket, pm2 log files)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from sipwatch.config import Config, load_config, parse_config
from sipwatch.sources import SourceContext, build_sources
from sipwatch.sources.discovery import (
    Environment,
    Mode,
    detect,
    explicit_sources,
    resolve_sources,
)
from sipwatch.sources.file import FileSource
from sipwatch.sources.kubernetes import KubernetesLogSource
from tests.fake_kube import FakeKubeApiServer, TlsFiles
from tools.synth import Device, Scenario


def service_account(root: Path, token: str = "t0ken", namespace: str = "jambonz") -> Path:
    sa = root / "serviceaccount"
    sa.mkdir(parents=True)
    (sa / "token").write_text(token)
    (sa / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    (sa / "namespace").write_text(namespace + "\n")
    return sa


def nothing_here(tmp_path: Path, **kw: object) -> Environment:
    """A machine with none of the three: every path points into an empty tmp dir."""
    values: dict[str, object] = {
        "environ": {},
        "service_account_dir": tmp_path / "no-sa",
        "docker_sockets": (tmp_path / "no-docker.sock",),
        "drachtio_logs": (str(tmp_path / "no-drachtio.log"),),
        "pm2_log_dirs": (str(tmp_path / "home/*/.pm2/logs"),),
    }
    values.update(kw)
    return Environment(**values)  # type: ignore[arg-type]


POD_ENV = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}


@pytest.fixture
def docker_socket(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "docker.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        yield path


def vm_layout(tmp_path: Path) -> tuple[Path, Path, Path]:
    drachtio = tmp_path / "var/log/drachtio/drachtio.log"
    drachtio.parent.mkdir(parents=True)
    drachtio.write_text("")
    logs = tmp_path / "home/admin/.pm2/logs"
    logs.mkdir(parents=True)
    sidecar = logs / "jambonz-sbc-sip-sidecar.log"
    sidecar_err = logs / "jambonz-sbc-sip-sidecar-error.log"
    for name in (
        sidecar.name,
        sidecar_err.name,
        "jambonz-sbc-sip-sidecar__2026-01-01_00-00-00.log",  # a pm2-logrotate archive
        "jambonz-sbc-sip-sidecar.log.1.gz",
        "jambonz-feature-server.log",  # another app
    ):
        (logs / name).write_text("")
    return drachtio, sidecar, sidecar_err


def vm_env(tmp_path: Path, drachtio: Path) -> Environment:
    return nothing_here(
        tmp_path,
        drachtio_logs=(str(drachtio),),
        pm2_log_dirs=(str(tmp_path / "home/*/.pm2/logs"), str(tmp_path / "root/.pm2/logs")),
    )


def test_in_a_pod_the_jambonz_pods_of_its_namespace_are_followed(tmp_path: Path) -> None:
    sa = service_account(tmp_path)
    env = nothing_here(tmp_path, environ=POD_ENV, service_account_dir=sa)
    config, detection = resolve_sources(Config(), env)
    assert detection.mode is Mode.KUBERNETES
    assert detection.follows == (
        "pods app=jambonz-sbc-sip container drachtio in jambonz",
        "pods app=sbc-register container sbc-registrar in jambonz",
    )
    assert config.sources.kubernetes.enabled is True
    assert config.sources.kubernetes.namespace == "jambonz"
    assert config.sources.docker.enabled is False
    # SIPWATCH_K8S_NAMESPACE wins over the pod's own namespace
    other = load_config(None, environ={"SIPWATCH_K8S_NAMESPACE": "voip"}, search_paths=())
    config, detection = resolve_sources(other, env)
    assert config.sources.kubernetes.namespace == "voip"
    assert "in voip" in detection.follows[0]
    # env without the token, or a token without the env, is not a pod
    assert detect(Config(), nothing_here(tmp_path, environ=POD_ENV)).mode is Mode.NONE
    assert detect(Config(), nothing_here(tmp_path, service_account_dir=sa)).mode is Mode.NONE


def test_docker_host_and_docker_socket(tmp_path: Path, docker_socket: Path) -> None:
    env = nothing_here(tmp_path, environ={"DOCKER_HOST": "tcp://proxy:2375"})
    config, detection = resolve_sources(Config(), env)
    assert detection.mode is Mode.DOCKER
    assert detection.follows == ("docker compose services at tcp://proxy:2375",)
    assert config.sources.docker.enabled is True
    assert config.sources.kubernetes.enabled is False
    env = nothing_here(tmp_path, docker_sockets=(tmp_path / "missing.sock", docker_socket))
    assert detect(Config(), env).follows == (f"docker compose services at unix://{docker_socket}",)
    # a plain file where the socket would be is not an engine
    fake = tmp_path / "not-a.sock"
    fake.write_text("")
    assert detect(Config(), nothing_here(tmp_path, docker_sockets=(fake,))).mode is Mode.NONE


def test_docker_wins_over_vm_logs_and_pod_wins_over_docker(
    tmp_path: Path, docker_socket: Path
) -> None:
    drachtio, _, _ = vm_layout(tmp_path)
    env = vm_env(tmp_path, drachtio)
    assert detect(Config(), env).mode is Mode.VM
    with_docker = Environment(**{**env.__dict__, "docker_sockets": (docker_socket,)})
    assert detect(Config(), with_docker).mode is Mode.DOCKER
    sa = service_account(tmp_path)
    in_pod = Environment(**{**with_docker.__dict__, "environ": POD_ENV, "service_account_dir": sa})
    assert detect(Config(), in_pod).mode is Mode.KUBERNETES


def test_on_a_vm_the_existing_log_files_are_followed(tmp_path: Path) -> None:
    drachtio, sidecar, sidecar_err = vm_layout(tmp_path)
    config, detection = resolve_sources(Config(), vm_env(tmp_path, drachtio))
    assert detection.mode is Mode.VM
    assert detection.files == (str(drachtio), str(sidecar_err), str(sidecar))
    assert [f.path for f in config.sources.files] == list(detection.files)
    assert all(f.follow and f.format == "auto" for f in config.sources.files)
    assert config.sources.docker.enabled is False
    # only the files that exist: no drachtio log on this one
    drachtio.unlink()
    assert detect(Config(), vm_env(tmp_path, drachtio)).files == (str(sidecar_err), str(sidecar))


def test_nothing_found_keeps_docker_and_says_so(tmp_path: Path) -> None:
    config, detection = resolve_sources(Config(), nothing_here(tmp_path))
    assert detection.mode is Mode.NONE
    assert "nothing found" in detection.follows[0]
    assert config.sources.docker.enabled is True


@pytest.mark.parametrize(
    "toml",
    [
        '[[sources.files]]\npath = "/var/log/x.log"\n',
        "[sources]\nstdin = true\n",
        "[sources.docker]\nenabled = true\n",
        "[sources.kubernetes]\nenabled = false\n",
        "[sources.kubernetes]\nenabled = true\n",
    ],
)
def test_an_explicit_configuration_is_not_second_guessed(tmp_path: Path, toml: str) -> None:
    sa = service_account(tmp_path)
    config = parse_config(toml)
    assert explicit_sources(config)
    env = nothing_here(tmp_path, environ=POD_ENV, service_account_dir=sa)
    resolved, detection = resolve_sources(config, env)
    assert detection.mode is Mode.CONFIGURED
    if "kubernetes]\nenabled = true" in toml:  # a Kubernetes deployment: no Docker
        assert resolved.sources.docker.enabled is False
        assert resolved.sources.kubernetes == config.sources.kubernetes
    else:
        assert resolved is config


def test_kubernetes_true_keeps_a_configured_docker() -> None:
    config = parse_config(
        "[sources.kubernetes]\nenabled = true\n[sources.docker]\nenabled = true\n"
    )
    resolved, detection = resolve_sources(config)
    assert resolved.sources.docker.enabled is True
    assert detection.follows[0].startswith("docker compose services")
    assert detection.follows[1].startswith("pods app=jambonz-sbc-sip container drachtio")


def test_resolving_twice_changes_nothing(tmp_path: Path) -> None:
    drachtio, _, _ = vm_layout(tmp_path)
    once, _ = resolve_sources(Config(), vm_env(tmp_path, drachtio))
    assert explicit_sources(once)
    twice, detection = resolve_sources(once, nothing_here(tmp_path))
    assert twice is once and detection.mode is Mode.CONFIGURED
    assert not explicit_sources(parse_config("[sources.docker]\nproject = 'x'\n"))


def _ctx(config: Config, env: Environment) -> SourceContext:
    return SourceContext(config=config, on_status=lambda name, up: None, environment=env)


def test_build_sources_logs_one_line_and_builds_the_detected_sources(tmp_path: Path) -> None:
    drachtio, sidecar, sidecar_err = vm_layout(tmp_path)
    with capture_logs() as logs:
        built = build_sources(_ctx(Config(), vm_env(tmp_path, drachtio)))
    assert [name for name, _ in built] == [str(drachtio), str(sidecar_err), str(sidecar)]
    assert all(isinstance(src, FileSource) and src.follow for _, src in built)
    lines = [e for e in logs if e["event"] == "log sources"]
    assert lines == [
        {
            "event": "log sources",
            "log_level": "info",
            "mode": "vm",
            "follows": [f"file {drachtio}", f"file {sidecar_err}", f"file {sidecar}"],
        }
    ]
    sa = service_account(tmp_path / "pod")
    env = nothing_here(tmp_path, environ=POD_ENV, service_account_dir=sa)
    with capture_logs() as logs:
        built = build_sources(_ctx(Config(), env))
    assert [name for name, _ in built] == ["kubernetes"]
    assert isinstance(built[0][1], KubernetesLogSource)
    assert [e["mode"] for e in logs if e["event"] == "log sources"] == ["kubernetes"]


async def test_zero_config_in_a_pod_follows_the_jambonz_pods(
    kube: FakeKubeApiServer, kube_tls: TlsFiles, tmp_path: Path
) -> None:
    """The whole zero-config path in a pod: discovery, the service account, the Helm chart's
    labels and containers, exact SIP message counts."""
    sa = service_account(tmp_path, token=kube.token)
    (sa / "ca.crt").write_bytes(kube_tls.ca.read_bytes())
    env = nothing_here(
        tmp_path,
        environ={"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(kube.port)},
        service_account_dir=sa,
    )
    sbc = kube.add_pod("jambonz-sbc-sip-4xk2p", {"app": "jambonz-sbc-sip"}, ["drachtio", "smpp"])
    kube.add_pod("sbc-register-7c9-qq", {"app": "sbc-register"}, ["sbc-registrar"])
    config = parse_config(
        "[sources]\nidle_flush_seconds = 0.2\n[sources.kubernetes]\ntail = 'all'\n"
    )
    ((name, source),) = build_sources(_ctx(config, env))
    sc = Scenario(1772366400.0)
    for i in range(4):
        sc.register_ok(Device(str(2000 + i), "acme.example.com", f"198.51.100.{i + 1}"))
    text = "".join(sc.drachtio)
    expected = text.count(" bytes from ") + text.count(" bytes to ")
    kube.log(sbc, "drachtio", text)
    got = ""
    async with asyncio.timeout(20), contextlib.aclosing(source.chunks()) as chunks:
        async for chunk in chunks:
            got += chunk.text
            assert chunk.source == sbc.name and chunk.node == "sbc-node-1"
            if got.count(" bytes from ") + got.count(" bytes to ") >= expected:
                break
    assert name == "kubernetes"
    assert got == text


def test_a_caller_that_resolved_first_gets_its_detection_reported(tmp_path: Path) -> None:
    """The daemon's way: resolve once, keep the config, hand the detection to build_sources."""
    drachtio, sidecar, sidecar_err = vm_layout(tmp_path)
    config, detection = resolve_sources(Config(), vm_env(tmp_path, drachtio))
    ctx = SourceContext(config=config, on_status=lambda n, up: None, detection=detection)
    with capture_logs() as logs:
        built = build_sources(ctx)
    assert [name for name, _ in built] == [str(drachtio), str(sidecar_err), str(sidecar)]
    assert [e["mode"] for e in logs if e["event"] == "log sources"] == ["vm"]
