"""Every repository file that the code, its docstrings and the docs point at exists.

A docstring that names ``docs/x.md`` or ``tests/test_y.py`` is a promise to the reader; after
a move or a rename it points nowhere (issue 11 found several naming research notes that are
not in the repository).  Scanned: the Python of the product and its tools (``sipwatch/``,
``tools/``, ``bench/``, ``fuzz/``) for repository paths and Markdown names, and the links of
``README.md`` and ``docs/``.  A path with a directory (``docs/metrics.md``,
``sipwatch/cli/run.py``) must exist from the repository root, a bare ``name.md`` must be the
name of a tracked file, a Markdown link must reach a file from the page.  Tests are not
scanned: they name the files they create.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CODE = ("sipwatch/", "tools/", "bench/", "fuzz/")
PAGES = ("docs/", "README.md")
_TREES = "sipwatch|tests|tools|docs|bench|fuzz|rules|dashboards|prometheus|deploy|systemd|examples"
REFERENCE = re.compile(rf"(?<![\w./-])((?:{_TREES})/[\w./-]*\w|[\w-]+\.md)\b")
LINK = re.compile(r"\]\((?!https?:|mailto:|#)([^)#\s]+)")


def tracked() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


def dangling(rel: str, text: str, names: set[str]) -> list[str]:
    """The references in ``text`` (the file ``rel``) that point at nothing."""
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if rel.endswith(".md"):
            base = (ROOT / rel).parent
            out += [f"{rel}:{lineno}: {r}" for r in LINK.findall(line) if not (base / r).exists()]
            continue
        for ref in REFERENCE.findall(line):
            if not ((ROOT / ref).exists() if "/" in ref else ref in names):
                out.append(f"{rel}:{lineno}: {ref}")
    return out


def test_every_referenced_repository_file_exists() -> None:
    files = tracked()
    names = {Path(f).name for f in files}
    missing = []
    for rel in files:
        code = rel.startswith(CODE) and rel.endswith((".py", ".pyx", ".pxi"))
        page = rel.startswith(PAGES) and rel.endswith(".md")
        if code or page:
            missing += dangling(rel, (ROOT / rel).read_text(), names)
    assert missing == []


def test_the_scan_finds_what_points_nowhere() -> None:
    names = {"README.md", "architecture.md"}
    code = "# see drachtio-log-format.md and docs/architecture.md\n# sipwatch/nowhere.py\n"
    assert dangling("sipwatch/x.py", code, names) == [
        "sipwatch/x.py:1: drachtio-log-format.md",
        "sipwatch/x.py:2: sipwatch/nowhere.py",
    ]
    page = "[ok](architecture.md) [web](https://x.org/a.md) [gone](gone.md#part)\n"
    assert dangling("docs/x.md", page, names) == ["docs/x.md:1: gone.md"]
