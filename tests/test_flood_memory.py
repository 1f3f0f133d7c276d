"""A username spray costs `sipwatch replay` a fixed amount of memory, whatever its size.

Log content is attacker-controlled: one source IP can try any number of names.  Every table
behind the replay is bounded (the scanner classifier's per-IP sketch, the failure table, the
transaction tracker, the metric label sets), so the process's peak RSS must be the same for
20,000 and 60,000 names, below 150 MB, and the five real devices failing amid the spray
must still be reported one by one.  The whole process is measured (``wait4``), not a
tracemalloc view of one table: a leak anywhere shows.  ``bench/bench_flood.py`` measures
the same for larger sprays and for the daemon.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tools.synth import FLOOD_REAL_USERS, SCANNER_IP, scanner_flood

ROOT = Path(__file__).resolve().parent.parent
PEAK_RSS_LIMIT_MIB = 150
FLAT_MIB = 12  # allocator noise between two runs of different length


def peak_rss_mib(log: Path) -> tuple[dict[str, Any], float]:
    """(JSON report, peak RSS in MiB) of one replay in a child process, reaped with
    ``wait4`` so the figure is that child's own."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sipwatch", "replay", "--no-diagnose", "--format", "json", str(log)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    out = proc.stdout.read()  # drain before reaping, or a full pipe blocks the child
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0
    return json.loads(out), usage.ru_maxrss / 1024


def write_flood(path: Path, usernames: int) -> Path:
    with path.open("w") as f:
        for chunk in scanner_flood(usernames):
            f.write(chunk)
    return path


def test_a_username_spray_costs_replay_fixed_memory_and_hides_no_real_device(
    tmp_path: Path,
) -> None:
    small_report, small = peak_rss_mib(write_flood(tmp_path / "20k.log", 20_000))
    big_report, big = peak_rss_mib(write_flood(tmp_path / "60k.log", 60_000))

    assert big < PEAK_RSS_LIMIT_MIB, big
    assert big - small < FLAT_MIB, (small, big)

    for report, names in ((small_report, 20_000), (big_report, 60_000)):
        scanners = report["scanners"]
        assert isinstance(scanners, list) and len(scanners) == 1
        assert scanners[0]["source_ip"] == SCANNER_IP
        assert scanners[0]["failures"] == names
        # the estimate of distinct names (a 256-register HyperLogLog, standard error 6.5%)
        # is within two standard errors
        assert abs(scanners[0]["usernames"] - names) < names * 0.13
        failures = report["register_failures"]
        assert isinstance(failures, list)
        by_user = {f["user"]: f for f in failures}
        assert by_user["*"]["count"] == names and by_user["*"]["scanner"] is True
        assert sorted(u for u in by_user if u != "*") == sorted(FLOOD_REAL_USERS)
        assert all(by_user[u]["x_reason"] == "Invalid credentials" for u in FLOOD_REAL_USERS)
