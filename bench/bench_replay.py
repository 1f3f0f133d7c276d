"""Benchmark: ``sipwatch replay`` against a bare line scan and mtail, on the same drachtio log.

    python bench/bench_replay.py [--size-mb 100] [--repeat 3] [--keep] [--log FILE]

Generates a realistic drachtio log (REGISTER/401/200 flows, rejections, retransmissions,
OPTIONS pings, sofia debug lines), then times, each in its own process pinned to one core:

* **bare scan**: read every line of the file and match the drachtio header regex
  (the floor any log-based tool pays);
* **mtail**: Google's log-to-metrics tool with a one-counter program (the dump header regex
  above, no transactions at all), ``-one_shot`` over the file; Debian's ``mtail`` package.
  When it is not installed the row says so;
* **sipwatch replay compiled / pure**: the real CLI, full parse + transactions + failure table
  + JSON report (``--no-diagnose``: the rules engine is not part of the parser's hot path),
  once with the compiled extension and once with ``SIPWATCH_NO_EXTENSIONS=1``;
* **sipwatch replay compiled + diagnosis**: the command as users run it (and as issue 14
  measured it), the root causes of the 500 most frequent failure groups from the log alone.

Prints one table: CPU seconds, SIP messages/s, peak RSS, and each row's CPU as a multiple of
the bare scan's and of mtail's.  Not a test: the numbers depend on the machine, and so do the
ratios: the bare scan spends its time in the regex engine's tight loop, which a CPU runs at
several instructions per cycle, sipwatch in the interpreter and the allocator, which run at
far fewer, and by how much differs between CPUs (the same code measured 2.95x the bare scan
on one machine and 4.7x on another).  ``--instructions`` adds what does not vary: each row run
once under valgrind's callgrind, its instructions counted, and the ratios of those counts
(slow: use it with ``--size-mb 10``).
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import re
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


# mtail's program: one counter, the header regex of BARE_SCAN (RE2 syntax).
MTAIL_PROGRAM = r"""counter sip_messages
/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} (recv|send) (\d+) bytes (from|to) (udp|tcp|tls|ws|wss)\/\[([^\]]+)\]:(\d+)/ {
  sip_messages++
}
"""


def measure(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, int, str]:
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
        [sys.executable, "-c", wrapper, *pin, *cmd],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
    )
    wall, cpu, rss, code = json.loads(proc.stderr.strip().splitlines()[-1])
    if code:
        raise SystemExit(f"command failed ({code}): {' '.join(cmd)}")
    return wall, cpu, rss, proc.stdout


def count_instructions(cmd: list[str], env: dict[str, str] | None = None) -> int | None:
    """Instructions ``cmd`` executes in user space (its main process), counted by callgrind;
    None when valgrind cannot run it (it aborts in the Go runtime of Debian's mtail).

    Deterministic where CPU time is not: the same program on the same input counts the same
    on any x86-64 machine (``PYTHONHASHSEED=0`` fixes the one thing that varies, string hashes).
    """
    proc = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *cmd],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "0", **(env or {})},
    )
    found = re.search(r"Collected : (\d+)", proc.stderr)
    return int(found.group(1)) if proc.returncode == 0 and found else None


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size-mb", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the generated log")
    ap.add_argument("--log", type=Path, default=None, help="use this log instead of generating one")
    ap.add_argument(
        "--instructions",
        action="store_true",
        help="also count each row's instructions with valgrind's callgrind (slow: ~50x)",
    )
    args = ap.parse_args()
    if args.instructions and not shutil.which("valgrind"):
        raise SystemExit("--instructions needs valgrind (apt-get install valgrind)")

    tmp = Path(tempfile.mkdtemp(prefix="sipwatch-bench-"))
    log = args.log or tmp / "drachtio-bench.log"
    if args.log is None:
        t = time.perf_counter()
        with open(log, "w", encoding="utf-8", newline="") as f:
            for chunk in bench_corpus(args.size_mb * 1_000_000):
                f.write(chunk)
        print(f"generated {log.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - t:.1f} s")

    # An installed wheel carries its bytecode (pip compiles it at install); a checkout run with
    # PYTHONDONTWRITEBYTECODE would recompile every module in each timed run instead.
    import sipwatch

    compileall.compile_dir(Path(sipwatch.__file__).parent, quiet=1)
    diagnosing = [sys.executable, "-m", "sipwatch", "replay", "--format", "json"]
    replay = [*diagnosing, "--no-diagnose"]
    mtail = shutil.which("mtail")
    progs = tmp / "mtail"
    progs.mkdir()
    (progs / "sip.mtail").write_text(MTAIL_PROGRAM)
    # name -> (command, environment)
    runs: dict[str, tuple[list[str], dict[str, str]]] = {
        "bare scan": ([sys.executable, "-c", BARE_SCAN, str(log)], {}),
        "sipwatch replay compiled": ([*replay, str(log)], {}),
        "sipwatch replay pure": ([*replay, str(log)], {"SIPWATCH_NO_EXTENSIONS": "1"}),
        "sipwatch replay compiled + diagnosis": ([*diagnosing, str(log)], {}),
    }
    if mtail:
        runs["mtail"] = (
            [
                mtail,
                "-one_shot",
                "-one_shot_format",
                "json",
                "-port",
                "0",
                "-progs",
                str(progs),
                "-logs",
                str(log),
                "-logtostderr=false",
                "-stderrthreshold",
                "FATAL",
            ],
            {},
        )
    best: dict[str, tuple[float, float, int]] = {}
    counts: dict[str, int] = {}
    for _ in range(args.repeat):
        for name, (cmd, env) in runs.items():
            wall, cpu, rss, out = measure(cmd, env)
            if name.startswith("sipwatch"):
                counts[name] = json.loads(out)["sip_messages"]
            elif name == "mtail":
                counts[name] = int(
                    json.loads(out)["sip_messages"][0]["LabelValues"][0]["Value"]["Value"]
                )
            else:
                counts[name] = int(out.strip())
            prev = best.get(name)
            if prev is None or cpu < prev[1]:
                best[name] = (wall, cpu, rss)
    messages = counts["sipwatch replay compiled"]
    if len(set(counts.values())) != 1:
        print(f"WARNING: the rows counted different numbers of SIP messages: {counts}")
    size = log.stat().st_size / 1e6
    print(f"log: {size:.1f} MB, {messages:,} SIP messages (best of {args.repeat}, one core)")
    if not mtail:
        print("mtail: not installed (apt-get install mtail): its row and column are left out")
    bare_cpu = best["bare scan"][1]
    mtail_cpu = best["mtail"][1] if mtail else None
    # the rows of both tables, in the order they are printed
    order = ("bare scan", "mtail", *(n for n in runs if n.startswith("sipwatch")))
    print()
    print("| | CPU s | SIP messages/s | peak RSS MiB | vs bare scan | vs mtail |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in order:
        if name not in best:
            print(f"| {name} | not installed | | | | |")
            continue
        _, cpu, rss = best[name]
        vs_mtail = f"{cpu / mtail_cpu:.2f}x" if mtail_cpu else "-"
        print(
            f"| {name} | {cpu:.2f} | {messages / cpu:,.0f} | {rss / 1024:.1f} "
            f"| {cpu / bare_cpu:.2f}x | {vs_mtail} |"
        )
    if mtail_cpu:
        print(
            f"\nsipwatch replay compiled runs at {mtail_cpu / best['sipwatch replay compiled'][1]:.2f}x "
            f"mtail's speed, pure Python at {mtail_cpu / best['sipwatch replay pure'][1]:.2f}x"
        )
    if args.instructions:
        print_instructions(runs, order)
    if not args.keep and args.log is None:
        shutil.rmtree(tmp)


def print_instructions(
    runs: dict[str, tuple[list[str], dict[str, str]]], order: tuple[str, ...]
) -> None:
    """The table of instruction counts: ratios to the bare scan that do not depend on the
    machine."""
    counted = {name: count_instructions(*runs[name]) for name in order if name in runs}
    bare = counted["bare scan"]
    if bare is None:
        raise SystemExit("callgrind could not run the bare scan")
    print("\ninstructions (callgrind, one run each; the same on any x86-64 machine)\n")
    print("| | instructions | vs bare scan |")
    print("|---|---:|---:|")
    for name, n in counted.items():
        if n is None:
            print(f"| {name} | valgrind cannot run it | |")
        else:
            print(f"| {name} | {n / 1e6:,.0f} M | {n / bare:.2f}x |")


if __name__ == "__main__":
    main()
