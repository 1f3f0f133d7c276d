"""Fixtures shared by the test modules."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

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
