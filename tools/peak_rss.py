"""Run a sipwatch command line in a fresh interpreter and report its own peak RSS.

Used by ``tests/test_flood_memory.py`` and ``bench/bench_flood.py``.  The figure is the
process's own ``VmHWM`` (read from ``/proc/self/status`` on the way out), not ``wait4``'s
``ru_maxrss``: Linux carries the parent's high-water mark into a child across fork + exec, so
a child of a large pytest process would be measured at least as large as pytest itself.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_MEASURED = """
import atexit, runpy, sys

def _peak() -> None:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                sys.stderr.write(line)

atexit.register(_peak)
sys.argv = ["sipwatch", *sys.argv[1:]]
runpy.run_module("sipwatch", run_name="__main__")
"""


def sipwatch_peak_rss(*args: str, timeout: float = 600) -> tuple[str, float]:
    """(stdout, peak RSS in MiB) of ``sipwatch *args``; raises if it fails."""
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURED, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"sipwatch {args[0]} exited {proc.returncode}: {proc.stderr[-2000:]}")
    [peak] = [line for line in proc.stderr.splitlines() if line.startswith("VmHWM:")]
    return proc.stdout, int(peak.split()[1]) / 1024  # kB
