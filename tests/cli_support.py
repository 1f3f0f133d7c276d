"""Running the real ``sipwatch`` command line in a subprocess (asynchronously or not), and
reading what it wrote."""

from __future__ import annotations

import asyncio
import functools
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.daemon_runner import clean_env

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Result:
    rc: int
    out: str
    err: str

    @property
    def all(self) -> str:
        return self.out + self.err


async def sipwatch(
    env: dict[str, str], *args: str, stdin: bytes = b"", timeout: float = 60
) -> Result:
    """``python -m sipwatch ARGS`` with ``stdin``; killed if it outlives ``timeout``."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sipwatch",
        *args,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=str(ROOT),
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate(stdin)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


def run_python(
    *args: str,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    cwd: Path = ROOT,
    timeout: float = 120,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` synchronously (this interpreter), its output captured as text; the
    environment is :func:`~tests.daemon_runner.clean_env` unless ``env`` is given."""
    return subprocess.run(
        [sys.executable, *args],
        input=stdin,
        env=clean_env() if env is None else env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )


#: ``python -m sipwatch ARGS``, as :func:`run_python` runs it (same keywords).
run_cli = functools.partial(run_python, "-m", "sipwatch")


def modules_loaded_by(code: str, modules: tuple[str, ...]) -> list[str]:
    """Which of ``modules`` a fresh interpreter has imported after running ``code`` (what
    ``code`` prints to stdout is ignored): start-up cost and exposure, checked from outside."""
    probe = (
        "import contextlib, io, sys\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        + "".join(f"    {line}\n" for line in code.splitlines())
        + f"print(json.dumps([m for m in {modules!r} if m in sys.modules]))\n"
    )
    res = run_python("-c", "import json\n" + probe, timeout=60)
    assert res.returncode == 0, res.stderr
    loaded: list[str] = json.loads(res.stdout.splitlines()[-1])
    return loaded


def audit_lines(err: str) -> list[dict[str, Any]]:
    """The ``remediation_audit`` JSON lines ``sipwatch fix`` writes to stderr."""
    out = []
    for line in err.splitlines():
        if line.startswith("{"):
            data = json.loads(line)
            if data.get("event") == "remediation_audit":
                out.append(data)
    return out
