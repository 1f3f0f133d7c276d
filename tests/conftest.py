"""Fixtures shared by every test module (pytest loads this file itself; no test module
imports fixtures from another).

The fixtures live in helper modules by subject: ``tests.jambonz_db`` (the jambonz database,
Redis and webhook servers), ``tests.remediation_support`` (write-side backends) and
``tests.fake_kube`` (a fake kube-apiserver).  Importing
them here makes them available everywhere; the fixtures below are the ones several modules
need that belong to no single subject.
"""

from __future__ import annotations

import secrets
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from sipwatch.diagnosis.db import DbSettings
from sipwatch.ingest import transactions
from sipwatch.remediation.writer import DbWriter
from tests.alert_receivers import HttpReceiver, SmtpReceiver
from tests.daemon_runner import clean_env
from tests.fake_docker import FakeDockerEngine
from tests.fake_kube import FakeKubeApiServer, TlsFiles, make_tls, write_kubeconfig
from tests.jambonz_db import (  # noqa: F401 - fixtures
    REDIS_TEST_DB,
    REDIS_URL_BASE,
    TEST_SECRET,
    Seeder,
    create_database,
    database,
    db_settings,
    db_settings_for,
    db_url,
    drop_database,
    jambonz_database,
    jambonz_db,
    redis_seeder,
    registration_store,
    seeder,
    seeder_for,
    silent_server,
    unique_name,
    webhook_server,
)
from tests.remediation_support import backends, redis_client, writer  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
async def fresh_database() -> AsyncIterator[str]:
    """A database of its own (jambonz schema, no rows at all) for tests that need to know
    every row in it, e.g. which client passwords exist to prove a secret."""
    name = unique_name()
    await create_database(name)
    try:
        yield name
    finally:
        await drop_database(name)


@pytest.fixture
async def fresh_seeder(fresh_database: str) -> AsyncIterator[Seeder]:
    async with seeder_for(fresh_database) as s:
        yield s


CliEnv = Callable[..., dict[str, str]]


@pytest.fixture
def cli_env_for(tmp_path: Path) -> CliEnv:
    """Environment for running ``python -m sipwatch`` against a database: a config file of
    its own (kill switch under tmp_path), the test Redis and the test secret.  Keyword
    arguments override variables (``None`` removes one)."""

    def make(db_name: str, **override: str | None) -> dict[str, str]:
        config = tmp_path / "sipwatch.toml"
        if not config.exists():
            config.write_text(
                "[remediation]\n"
                f'kill_switch_file = "{tmp_path / "remediation.disabled"}"\n'
                'allow_users = ["allowed*"]\n'
            )
        env = clean_env()
        env.update(
            PYTHONPATH=str(ROOT),
            SIPWATCH_CONFIG=str(config),
            SIPWATCH_DB_URL=db_url(db_name),
            SIPWATCH_REDIS_URL=f"{REDIS_URL_BASE}/{REDIS_TEST_DB}",
            SIPWATCH_JAMBONZ_ENCRYPTION_SECRET=TEST_SECRET,
            USER="oncall",
            LOGNAME="oncall",
        )
        for key, value in override.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    return make


@pytest.fixture
def fresh_db_settings(fresh_database: str) -> DbSettings:
    return db_settings_for(fresh_database, readonly=False)


@pytest.fixture
def fresh_writer(fresh_db_settings: DbSettings) -> DbWriter:
    return DbWriter(fresh_db_settings)


# --------------------------------------------------------------- fake kube-apiserver


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


# --------------------------------------------------------------- Prometheus tools

REPO = Path(__file__).resolve().parent.parent


def _ci_tool(script: str) -> str:
    """Run a ``.ci/`` script that fetches a tool into ``.tools/`` and prints its path."""
    proc = subprocess.run(
        [str(REPO / ".ci" / script)], capture_output=True, text=True, timeout=900, check=False
    )
    assert proc.returncode == 0, proc.stderr
    path = proc.stdout.strip().splitlines()[-1]
    assert Path(path).is_file(), path
    return path


@pytest.fixture(scope="session")
def promtool() -> str:
    """promtool from Debian's ``prometheus`` package (``.ci/promtool.sh``)."""
    return _ci_tool("promtool.sh")


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    """The Prometheus server from the same package (``.ci/prometheus.sh``)."""
    return _ci_tool("prometheus.sh")


# --------------------------------------------------------------- implementations


@pytest.fixture(params=sorted(transactions.IMPLEMENTATIONS))
def tracker_implementation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each REGISTER tracker this build has (the compiled one and the reference) in turn, as
    the one ``new_tracker`` builds: a test using it runs once per implementation."""
    name: str = request.param
    monkeypatch.setattr(transactions, "TRACKER", transactions.IMPLEMENTATIONS[name])
    return name


# --------------------------------------------------------------- alert receivers


@pytest.fixture
async def http() -> AsyncIterator[HttpReceiver]:
    """A local JSON webhook (apprise ``json://``) that records what it receives."""
    async with HttpReceiver() as receiver:
        yield receiver


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpReceiver]:
    """A local SMTP server (apprise ``mailto://``) that collects messages."""
    async with SmtpReceiver() as receiver:
        yield receiver


# --------------------------------------------------------------- fake Docker Engine


@pytest.fixture
async def docker_engine(tmp_path: Path) -> AsyncIterator[FakeDockerEngine]:
    """A fake Docker Engine on a unix socket (short path: sockets are limited to ~108 bytes)."""
    path = tmp_path / "d.sock"
    if len(str(path)) > 100:
        path = Path(tempfile.mkdtemp(prefix="fdk")) / "d.sock"
    async with FakeDockerEngine(path) as engine:
        yield engine
