"""The source registry imports a source kind's module only when that kind is enabled.

A daemon that follows files never loads aiodocker, the Kubernetes client or the HEP
listener (memory, start-up time, and less code exposed); discovery still tells whether it
runs in a pod, through the small :mod:`sipwatch.sources.kube_access`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sipwatch.sources import SOURCE_KINDS

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import json, sys
from sipwatch.config import parse_config
from sipwatch.sources import SourceContext, build_sources
config = parse_config(sys.argv[1])
built = build_sources(SourceContext(config=config, on_status=lambda name, up: None))
loaded = sorted(m for m in sys.modules if m.startswith(("aiodocker", "kubernetes_asyncio")))
kinds = sorted(m for m in sys.modules if m.startswith("sipwatch.sources."))
print(json.dumps({"sources": [n for n, _ in built], "libraries": loaded, "modules": kinds}))
"""


def probe(config: str) -> dict[str, list[str]]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, config],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    result: dict[str, list[str]] = json.loads(out.splitlines()[-1])
    return result


def test_a_file_only_daemon_imports_no_other_source_kind(tmp_path: Path) -> None:
    log = tmp_path / "drachtio.log"
    log.write_text("")
    got = probe(f'[[sources.files]]\npath = "{log}"\n[sources.docker]\nenabled = false\n')
    assert got["sources"] == [str(log)]
    assert got["libraries"] == []
    others = {k.module for k in SOURCE_KINDS if k.name != "file"}
    assert others, "the registry lists more than the file kind"
    assert not others & set(got["modules"]), got["modules"]
    assert "sipwatch.sources.kube_access" in got["modules"]  # discovery asked "in a pod?"


def test_an_enabled_kind_is_imported(tmp_path: Path) -> None:
    got = probe("[sources]\nstdin = true\n[sources.docker]\nenabled = false\n")
    assert got["sources"] == ["-"]
    assert "sipwatch.sources.stdin" in got["modules"]
    assert "sipwatch.sources.docker" not in got["modules"]
