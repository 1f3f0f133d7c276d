"""A username spray costs `sipwatch replay` a fixed amount of memory, whatever its size.

Log content is attacker-controlled: one source IP can try any number of names.  Every table
behind the replay is bounded (the scanner classifier's per-IP sketch, the failure table, the
transaction tracker, the context's per-device memory of 80,000 entries, the metric label
sets), so once a spray is larger than those bounds the process's peak RSS must stay where
it is: the same for 100,000 and 200,000 names, below 150 MB, and the five real devices
failing amid the spray must still be reported one by one.  The whole process is measured
(its own ``VmHWM``, ``tools/peak_rss.py``), not a tracemalloc view of one table: a leak
anywhere shows.  ``bench/bench_flood.py`` measures
the same for larger sprays and for the daemon.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tools.peak_rss import sipwatch_peak_rss
from tools.synth import FLOOD_REAL_USERS, SCANNER_IP, write_scanner_flood

ROOT = Path(__file__).resolve().parent.parent
PEAK_RSS_LIMIT_MIB = 150
FLAT_MIB = 12  # allocator noise between two runs of different length


def peak_rss_mib(log: Path) -> tuple[dict[str, Any], float]:
    """(JSON report, peak RSS in MiB) of one replay in a child process: its own VmHWM."""
    out, peak = sipwatch_peak_rss("replay", "--no-diagnose", "--format", "json", str(log))
    return json.loads(out), peak


def test_a_username_spray_costs_replay_fixed_memory_and_hides_no_real_device(
    tmp_path: Path,
) -> None:
    for names in (100_000, 200_000):
        assert write_scanner_flood(tmp_path / f"{names}.log", names) == 2 * names + 20
    small_report, small = peak_rss_mib(tmp_path / "100000.log")
    big_report, big = peak_rss_mib(tmp_path / "200000.log")

    assert big < PEAK_RSS_LIMIT_MIB, big
    assert big - small < FLAT_MIB, (small, big)

    for report, names in ((small_report, 100_000), (big_report, 200_000)):
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
