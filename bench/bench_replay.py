"""Benchmark: ``sipwatch replay`` against a bare line scan of the same drachtio log.

    python bench/bench_replay.py [--size-mb 100] [--repeat 3] [--keep]

Generates a realistic drachtio log (REGISTER/401/200 flows, rejections, retransmissions,
OPTIONS pings, sofia debug lines), then times, each in its own process pinned to one core:

* **bare scan**: read every line of the file and match the drachtio header regex
  (the floor any log-based tool pays);
* **sipwatch replay**: the real CLI, full parse + transactions + failure table + JSON report
  (``--no-diagnose``: the rules engine is not part of the parser's hot path).

Reports SIP messages/s, CPU seconds, peak RSS and the ratios replay/bare.  Not a test: the
numbers depend on the machine; the ratios are what to compare across changes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools.synth import bench_corpus  # noqa: E402

BARE_SCAN = r"""
import re, sys
HDR = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} (recv|send) (\d+) bytes (from|to) (udp|tcp|tls|ws|wss)/\[([^\]]+)\]:(\d+)")
n = 0
with open(sys.argv[1], encoding="utf-8", errors="replace", newline="") as f:
    for line in f:
        if HDR.match(line):
            n += 1
print(n)
"""


def measure(cmd: list[str]) -> tuple[float, float, int, str]:
    """Run cmd; return (wall s, CPU s, peak RSS KiB, stdout) of that child alone.

    A tiny wrapper process reaps the child with ``os.wait4`` so the rusage is exact for it.
    """
    wrapper = (
        "import os,subprocess,sys,json,time\n"
        "t=time.perf_counter();p=subprocess.Popen(sys.argv[1:],stdout=subprocess.PIPE,text=True)\n"
        "out=p.stdout.read();_,st,ru=os.wait4(p.pid,0);w=time.perf_counter()-t\n"
        "sys.stderr.write(json.dumps([w,ru.ru_utime+ru.ru_stime,ru.ru_maxrss,os.waitstatus_to_exitcode(st)])+'\\n')\n"
        "sys.stdout.write(out)\n"
    )
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    proc = subprocess.run(
        [sys.executable, "-c", wrapper, *pin, *cmd], capture_output=True, text=True, check=True
    )
    wall, cpu, rss, code = json.loads(proc.stderr.strip().splitlines()[-1])
    if code:
        raise SystemExit(f"command failed ({code}): {' '.join(cmd)}")
    return wall, cpu, rss, proc.stdout


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size-mb", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the generated log")
    ap.add_argument("--log", type=Path, default=None, help="use this log instead of generating one")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="sipwatch-bench-"))
    log = args.log or tmp / "drachtio-bench.log"
    if args.log is None:
        t = time.perf_counter()
        with open(log, "w", encoding="utf-8", newline="") as f:
            for chunk in bench_corpus(args.size_mb * 1_000_000):
                f.write(chunk)
        print(f"generated {log.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - t:.1f} s")

    sipwatch = [
        sys.executable,
        "-m",
        "sipwatch",
        "replay",
        "--format",
        "json",
        "--no-diagnose",
        str(log),
    ]
    bare = [sys.executable, "-c", BARE_SCAN, str(log)]
    best: dict[str, tuple[float, float, int]] = {}
    messages = 0
    for _ in range(args.repeat):
        for name, cmd in (("bare", bare), ("replay", sipwatch)):
            wall, cpu, rss, out = measure(cmd)
            if name == "replay":
                messages = json.loads(out)["sip_messages"]
            else:
                bare_count = int(out.strip())
            prev = best.get(name)
            if prev is None or cpu < prev[1]:
                best[name] = (wall, cpu, rss)
    if bare_count != messages:
        print(f"WARNING: bare scan saw {bare_count} header lines, replay {messages} messages")
    _, bc, brss = best["bare"]
    _, rc, rrss = best["replay"]
    size = log.stat().st_size / 1e6
    print(f"log: {size:.1f} MB, {messages:,} SIP messages (best of {args.repeat}, one core)")
    print(
        f"bare scan : {bc:6.2f} s CPU  {bare_count / bc:10,.0f} msg/s  peak RSS {brss / 1024:6.1f} MiB"
    )
    print(
        f"replay    : {rc:6.2f} s CPU  {messages / rc:10,.0f} msg/s  peak RSS {rrss / 1024:6.1f} MiB"
    )
    print(f"ratio     : time x{rc / bc:.2f}   RSS x{rrss / brss:.2f}   ({size / rc:.1f} MB/s)")
    if not args.keep and args.log is None:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
