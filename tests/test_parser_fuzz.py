"""Every input the fuzzer ever found to break a target is replayed here (fuzz/README.md).

The targets are plain functions (``fuzz/harnesses.py``): no atheris needed to replay.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fuzz.harnesses import TARGETS
from fuzz.run import write_seeds
from tests.ingest_support import FIXTURES

FOUND = sorted((FIXTURES / "fuzz").glob("*/*"))


@pytest.mark.parametrize("path", FOUND, ids=[f"{p.parent.name}/{p.name[:18]}" for p in FOUND])
def test_found_inputs_no_longer_break_their_target(path: Path) -> None:
    TARGETS[path.parent.name](path.read_bytes())


def test_every_target_has_kept_what_it_found() -> None:
    """The regression inputs sit where run.py writes them, one directory per target."""
    assert {p.parent.name for p in FOUND} <= set(TARGETS)
    assert FOUND, "the fuzzer found inputs once; they must stay"


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_targets_accept_their_seeds(target: str, tmp_path: Path) -> None:
    """The seeds cut from the fixtures run clean: a target that rots fails here, not in CI's
    fuzz step."""
    write_seeds(target, tmp_path)
    seeds = sorted(tmp_path.iterdir())
    assert len(seeds) >= 20
    for seed in seeds:
        TARGETS[target](seed.read_bytes())
