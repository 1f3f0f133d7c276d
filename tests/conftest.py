"""Fixtures shared by several test modules."""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fake_docker import FakeDockerEngine
from tests.fake_kube import FakeKubeApiServer, TlsFiles, make_tls, write_kubeconfig


@pytest.fixture
def kube_tls(tmp_path: Path) -> TlsFiles:
    tls_dir = tmp_path / "kube-tls"
    tls_dir.mkdir()
    return make_tls(tls_dir)


@pytest.fixture
async def kube(kube_tls: TlsFiles) -> AsyncIterator[FakeKubeApiServer]:
    """A fake kube-apiserver on 127.0.0.1 over HTTPS, namespace "jambonz"."""
    async with FakeKubeApiServer(token=secrets.token_urlsafe(24), tls=kube_tls) as server:
        yield server


@pytest.fixture
def kubeconfig(tmp_path: Path, kube: FakeKubeApiServer) -> Path:
    """A kubeconfig file for ``kube`` (CA, token, namespace jambonz)."""
    return write_kubeconfig(tmp_path / "kubeconfig", kube)


@pytest.fixture
async def docker_engine(tmp_path: Path) -> AsyncIterator[FakeDockerEngine]:
    """A fake Docker Engine on a unix socket (short path: sockets are limited to ~108 bytes)."""
    path = tmp_path / "d.sock"
    if len(str(path)) > 100:
        path = Path(tempfile.mkdtemp(prefix="fdk")) / "d.sock"
    async with FakeDockerEngine(path) as engine:
        yield engine
