"""Benchmark: peak memory of `sipwatch replay` and `sipwatch run` under a username spray.

    python bench/bench_flood.py [--names 100000 300000] [--keep]

One source IP tries N distinct usernames (each REGISTER answered 403) and, at 90% of the
spray, five real devices fail with a wrong password (``tools.synth.scanner_flood``).  For
each N this reports the peak RSS of

* **replay**: ``sipwatch replay --format json`` of the log (its own VmHWM), and
* **run**: the daemon following the same file (``follow = false``) until its ``/metrics``
  shows every SIP message, then its ``VmHWM``; it also says whether the five real devices
  reached ``/api/failures``.

Memory must not grow with N (every table is bounded); the test
``tests/test_flood_memory.py`` pins the replay at 100k/200k names; this also measures the daemon.
Not a test: the numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sipwatch.metrics.names import SIP_MESSAGES  # noqa: E402
from tests.daemon_runner import free_port, http_get, metric_total, popen_run, write_config  # noqa: E402
from tools.peak_rss import sipwatch_peak_rss  # noqa: E402
from tools.synth import FLOOD_REAL_USERS, write_scanner_flood  # noqa: E402


def replay_peak(log: Path) -> float:
    """Peak RSS (MiB) of one replay: its own VmHWM."""
    _out, peak = sipwatch_peak_rss("replay", "--no-diagnose", "--format", "json", str(log))
    return peak


def daemon_peak(log: Path, messages: int, workdir: Path) -> tuple[float, float, list[str]]:
    """(seconds to read the log, peak RSS MiB, real users listed) of `sipwatch run`."""
    port = free_port()
    config = (
        f'[sources.docker]\nenabled = false\n[[sources.files]]\npath = "{log}"\nfollow = false\n'
        "[diagnosis]\nenabled = false\n"
    )
    cfg = write_config(workdir / "flood.toml", config, port)
    proc = popen_run(cfg, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    start = time.monotonic()
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit("the daemon exited")
            try:
                if metric_total(http_get(base + "/metrics")[1], SIP_MESSAGES) >= messages:
                    break
            except OSError:
                pass
            if time.monotonic() - start > 600:
                raise SystemExit("the daemon did not read the log within 600 s")
            time.sleep(0.2)
        took = time.monotonic() - start
        failures = json.loads(http_get(base + "/api/failures?limit=1000")[1])
        rows = failures["failures"] if isinstance(failures, dict) else failures
        users = sorted({r["user"] for r in rows if r["user"] in FLOOD_REAL_USERS})
        hwm = 0.0
        for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
        return took, hwm, users
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--names", type=int, nargs="+", default=[100_000, 300_000])
    ap.add_argument("--keep", action="store_true", help="keep the generated logs")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="sipwatch-flood-"))
    print("| names | SIP messages | replay peak RSS | run peak RSS | real users found by run |")
    print("|---|---|---|---|---|")
    for names in args.names:
        log = workdir / f"flood-{names}.log"
        messages = write_scanner_flood(log, names)
        replay_rss = replay_peak(log)
        _took, run_rss, users = daemon_peak(log, messages, workdir)
        print(
            f"| {names:,} | {messages:,} | {replay_rss:.0f} MiB | {run_rss:.0f} MiB "
            f"| {len(users)} of {len(FLOOD_REAL_USERS)} |"
        )
        if not args.keep:
            log.unlink()
    if args.keep:
        print(f"logs kept in {workdir}")


if __name__ == "__main__":
    main()
