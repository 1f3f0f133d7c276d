"""Benchmark: CPU of ``sipwatch run`` per 1,000 SIP messages/s of live traffic.

    python bench/bench_run.py [--rate 1000] [--seconds 20] [--implementation both]

Starts the real daemon (``python -m sipwatch run``, configured as the end-to-end tests'
``tests.daemon_runner.FileDaemon``) following a drachtio log file, as an operator runs it next
to a drachtio container writing to a file, and appends a drachtio log
(``tools.synth.bench_corpus``: REGISTER flows, rejections, OPTIONS, sofia debug lines) to that
file at a fixed rate of SIP messages per second, in 10 batches a second, for ``--seconds``.
The daemon's CPU time (user + system, from ``/proc/<pid>/stat``) is read when the traffic
starts and once the daemon has counted every message; its CPU while idle for the same time
is measured before, and subtracted.  Printed per 1,000 messages/s: CPU seconds per second, as
a percentage of one core.

Both implementations (compiled, ``SIPWATCH_NO_EXTENSIONS=1``) by default, one after the other.
Not a test: the numbers depend on the machine.  Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.daemon_runner import FileDaemon, clean_env, popen_run  # noqa: E402
from tools.synth import bench_corpus  # noqa: E402

_TICK = os.sysconf("SC_CLK_TCK")
_RECORD = re.compile(r"^(?=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} )", re.M)
_SIP = re.compile(r"^\S+ \S+ (?:recv|send) \d+ bytes ")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14, 15)


def sip_count(base: str) -> float:
    with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
        body = r.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line.startswith("sipwatch_sip_messages_total{")
    )


def batches(rate: int, seconds: int) -> list[tuple[str, int]]:
    """``10 * seconds`` pieces of log text, each holding ``rate / 10`` SIP messages."""
    per = max(1, rate // 10)
    need = per * 10 * seconds
    out: list[tuple[str, int]] = []
    piece: list[str] = []
    n = 0
    for chunk in bench_corpus(max(2_000_000, need * 700)):
        for rec in _RECORD.split(chunk):
            if not rec:
                continue
            piece.append(rec)
            if _SIP.match(rec):
                n += 1
                if n == per:
                    out.append(("".join(piece), n))
                    piece, n = [], 0
                    if len(out) == 10 * seconds:
                        return out
    raise SystemExit("corpus too small")


def run_one(implementation: str, rate: int, seconds: int, work: list[tuple[str, int]]) -> float:
    tmp = Path(tempfile.mkdtemp(prefix="sipwatch-bench-run-"))
    daemon = FileDaemon(tmp, level="warning")  # the end-to-end tests' configuration, written
    log = daemon.drachtio
    base = daemon.base
    cfg = daemon.cfg
    env = clean_env(SIPWATCH_NO_EXTENSIONS="1") if implementation == "pure" else clean_env()
    proc = popen_run(cfg, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                sip_count(base)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("the daemon did not start") from None
                time.sleep(0.2)
        time.sleep(2)  # startup settles
        idle0 = cpu_seconds(proc.pid)
        time.sleep(seconds)
        idle = (cpu_seconds(proc.pid) - idle0) / seconds

        total = sum(n for _, n in work)
        cpu0 = cpu_seconds(proc.pid)
        start = time.monotonic()
        with open(log, "a", encoding="utf-8") as f:
            for i, (text, _) in enumerate(work):
                f.write(text)
                f.flush()
                delay = start + (i + 1) / 10 - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        deadline = time.monotonic() + 60
        while sip_count(base) < total:
            if time.monotonic() > deadline:
                raise SystemExit("the daemon did not count every message")
            time.sleep(0.1)
        busy = (cpu_seconds(proc.pid) - cpu0) / seconds
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(tmp)
    per_k = (busy - idle) / (rate / 1000)
    print(
        f"| {implementation} | {rate:,} | {busy * 100:.1f}% | {idle * 100:.1f}% | {per_k * 100:.1f}% |"
    )
    return per_k


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rate", type=int, default=1000, help="SIP messages per second")
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--implementation", choices=("both", "compiled", "pure"), default="both")
    args = ap.parse_args()
    work = batches(args.rate, args.seconds)
    print(
        f"{args.rate:,} SIP messages/s for {args.seconds} s "
        f"({sum(len(t) for t, _ in work) / args.seconds / 1e6:.2f} MB/s of log), one file source"
    )
    print()
    print("| implementation | messages/s | CPU busy | CPU idle | CPU per 1k msg/s (busy - idle) |")
    print("|---|---:|---:|---:|---:|")
    chosen = ("compiled", "pure") if args.implementation == "both" else (args.implementation,)
    for implementation in chosen:
        run_one(implementation, args.rate, args.seconds, work)


if __name__ == "__main__":
    main()
