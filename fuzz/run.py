"""Run one fuzz target under atheris (coverage-guided, libFuzzer underneath).

    python fuzz/run.py framer [libFuzzer options...]     # e.g. -max_total_time=600
    python fuzz/run.py --ci                             # every target, a fixed number of runs

Seeds come from ``tests/fixtures`` (cut to what each target takes) and from the inputs found
before (``tests/fixtures/fuzz/<target>/``, replayed by ``tests/test_parser_fuzz.py``).  A new
crasher is written there too: keep it, it becomes a regression test.  ``--ci`` is what
``.ci/run`` runs: each target for ``CI_RUNS`` inputs from a fixed seed, bounded in time by the
number of runs, never by the clock.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
CRASHERS = FIXTURES / "fuzz"
CI_RUNS = {"framer": 3000, "compiled": 5000, "sip": 20000, "registrar": 20000}
MAX_LEN = {"framer": 16384, "compiled": 16384, "sip": 4096, "registrar": 4096}

_DUMP = re.compile(
    r"^\S+ \S+ (?:recv|send) \d+ bytes[^\n]*\n((?:(?!\d{4}-\d\d-\d\d )[^\n]*\n)*)", re.M
)


def write_seeds(target: str, directory: Path) -> None:
    """Seed inputs for ``target`` from the hand-written fixtures."""
    logs = sorted(p for p in FIXTURES.rglob("*.log"))
    n = 0
    for log in logs:
        data = log.read_bytes()
        text = data.decode()
        if target == "framer":
            for flags in (0, 1, 6):  # text, stderr with idle signals, stdout
                pieces = [data[i : i + 8000] for i in range(0, len(data), 8000)]
                for piece in pieces:
                    n += 1
                    (directory / f"seed-{n}").write_bytes(bytes([flags, 200]) + piece)
        elif target == "compiled":
            for i in range(0, len(data), 2000):
                n += 1
                (directory / f"seed-{n}").write_bytes(data[i : i + 2000])
        elif target == "sip":
            for m in _DUMP.finditer(text):
                n += 1
                (directory / f"seed-{n}").write_bytes(m.group(1).encode())
        else:
            for line in text.splitlines():
                if line.startswith("{") or " " in line[:40]:
                    n += 1
                    (directory / f"seed-{n}").write_bytes(line.split(" ", 2)[-1].encode())


def fuzz(target: str, options: list[str]) -> int:
    """Run ``target`` in this process under atheris; returns only when libFuzzer stops."""
    import atheris

    atheris.enabled_hooks.add("str")
    with atheris.instrument_imports(include=["sipwatch"]):
        sys.path.insert(0, str(ROOT))
        from fuzz.harnesses import TARGETS

    target_fn = TARGETS[target]
    crashers = CRASHERS / target
    crashers.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"sipwatch-fuzz-{target}-") as tmp:
        corpus = Path(tmp) / "corpus"
        corpus.mkdir()
        write_seeds(target, corpus)
        argv = [
            sys.argv[0],
            f"-artifact_prefix={crashers}/",
            f"-max_len={MAX_LEN[target]}",
            "-print_final_stats=1",
            *options,
            str(corpus),
            str(crashers),
        ]
        atheris.Setup(argv, target_fn)
        atheris.Fuzz()
    return 0


def main() -> int:
    args = sys.argv[1:]
    if args[:1] == ["--ci"]:
        failed = []
        for target, runs in CI_RUNS.items():
            print(f"fuzz {target}: {runs} runs", flush=True)
            rc = subprocess.call(
                [sys.executable, __file__, target, f"-runs={runs}", "-seed=1", *args[1:]]
            )
            if rc:
                failed.append(target)
        if failed:
            print(f"fuzz: crashers found by {', '.join(failed)} (see {CRASHERS})")
        return 1 if failed else 0
    if not args or args[0] not in CI_RUNS:
        print(__doc__)
        return 2
    return fuzz(args[0], args[1:])


if __name__ == "__main__":
    sys.exit(main())
