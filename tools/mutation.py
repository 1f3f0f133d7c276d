"""Mutation testing of one module against its own tests (mutmut 3).

    pip install -e '.[test,mutation]'
    python tools/mutation.py sipwatch/ingest/sip.py [more modules] [--survivors]

mutmut reads one ``[tool.mutmut]`` table for the whole project, so "each module against its own
tests" needs one run per module: for each module this copies the working tree (tracked and new
files, uncommitted changes included) to ``build/mutation/<module>/``, narrows ``only_mutate``
and the test selection there to the module and the tests ``[tool.sipwatch.mutation]`` in
pyproject.toml lists for it, runs ``mutmut run`` and prints the score: mutants killed (or timed
out) over mutants tried, as ``mutmut badge`` computes it.  ``--survivors`` prints each
surviving mutant's diff; ``docs/mutation.md`` lists the ones that are equivalent and why.
A plain ``mutmut run`` in the repository uses ``[tool.mutmut]`` as is: every ingest module
against every ingest test.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCRATCH = ROOT / "build" / "mutation"


def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def module_tests(pyproject: dict[str, Any], module: str) -> list[str]:
    tests = pyproject.get("tool", {}).get("sipwatch", {}).get("mutation", {}).get(module)
    if not tests:
        raise SystemExit(f"{module}: no tests listed under [tool.sipwatch.mutation] in pyproject")
    return [str(t) for t in tests]


def copy_tree(tree: Path, dest: Path) -> None:
    """Tracked and untracked-but-not-ignored files of ``tree`` (its working copy)."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=tree,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for raw in files:
        if not raw:
            continue
        rel = Path(os.fsdecode(raw))
        src = tree / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def narrow_config(dest: Path, module: str, tests: list[str]) -> None:
    """Rewrite the copy's ``[tool.mutmut]`` to the one module and its tests."""
    text = (dest / "pyproject.toml").read_text()
    head, sep, rest = text.partition("[tool.mutmut]\n")
    if not sep:  # a baseline checkout from before the table existed
        head, sep, rest = text.rstrip("\n") + "\n\n", "[tool.mutmut]\n", ""
    nxt = rest.find("\n[")
    tail = rest[nxt:] if nxt >= 0 else ""
    table = (
        f'source_paths = ["sipwatch"]\n'
        f"only_mutate = {_toml_list([module])}\n"
        f"pytest_add_cli_args_test_selection = {_toml_list(tests)}\n"
        'pytest_add_cli_args = ["-p", "no:cacheprovider"]\n'
        'also_copy = ["tools", "fuzz", "rules", "docs"]\n'
    )
    (dest / "pyproject.toml").write_text(head + sep + table + tail)


def run_module(
    tree: Path, module: str, tests: list[str], *, children: int, survivors: bool
) -> float:
    dest = SCRATCH / module.replace("/", "_").removesuffix(".py")
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    copy_tree(tree, dest)
    narrow_config(dest, module, tests)
    # mutants live in the pure-Python reference: the compiled hot path (built from
    # sipwatch/ingest/_speedups.pyx) would run instead of a mutated scanner or message builder
    env = {**os.environ, "PYTHONPATH": "", "SIPWATCH_NO_EXTENSIONS": "1"}
    mutmut = [sys.executable, "-m", "mutmut"]
    with open(dest / "mutmut-run.log", "w") as log:  # mutmut redraws a progress line per mutant
        subprocess.run(
            [*mutmut, "run", "--max-children", str(children)],
            cwd=dest,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=True,
        )
    subprocess.run([*mutmut, "export-cicd-stats"], cwd=dest, env=env, check=True)
    stats = json.loads((dest / "mutants" / "mutmut-cicd-stats.json").read_text())
    tried = stats["total"] - stats["skipped"]
    score = 100.0 * (stats["killed"] + stats["timeout"]) / tried if tried else 0.0
    print(
        f"{module}: {score:.1f}% killed ({stats['killed']} killed, {stats['timeout']} timeout, "
        f"{stats['survived']} survived, {stats['no_tests']} without tests, of {tried})"
    )
    if survivors:
        listing = subprocess.run(
            [*mutmut, "results"], cwd=dest, env=env, capture_output=True, text=True, check=True
        ).stdout
        for line in listing.splitlines():
            name = line.strip().split(":")[0]
            if name and ("survived" in line or "no tests" in line):
                shown = subprocess.run(
                    [*mutmut, "show", name], cwd=dest, env=env, capture_output=True, text=True
                )
                print(shown.stdout)
    return score


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("modules", nargs="+", help="e.g. sipwatch/ingest/sip.py")
    ap.add_argument(
        "--tests",
        help='pytest arguments instead of the listed tests, e.g. "tests/test_sip.py -k param"',
    )
    ap.add_argument("--tree", type=Path, default=ROOT, help="another checkout (e.g. a baseline)")
    ap.add_argument("--max-children", type=int, default=2)
    ap.add_argument("--survivors", action="store_true", help="print every surviving mutant")
    args = ap.parse_args()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for module in args.modules:
        tests = shlex.split(args.tests) if args.tests else module_tests(pyproject, module)
        run_module(args.tree, module, tests, children=args.max_children, survivors=args.survivors)
    return 0


if __name__ == "__main__":
    sys.exit(main())
