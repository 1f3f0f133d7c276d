"""Fuzzing of the HEP receive path: a short bounded atheris run, and every kept regression
input replayed (see tests/hep_fuzz.py for the target and for longer campaigns)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.hep_fuzz import check, seeds

ROOT = Path(__file__).resolve().parent.parent
REGRESSIONS = Path(__file__).resolve().parent / "hep_fuzz_regressions"


def test_a_short_coverage_guided_run_finds_nothing(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.hep_fuzz",
            "-runs=5000",
            "-seed=1",
            "-rss_limit_mb=1024",
            f"-artifact_prefix={artifacts}/",
            str(corpus),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done 5000 runs" in result.stderr
    assert list(artifacts.iterdir()) == []
    # the corpus grew from the seeds: the fuzzer got past the header checks
    assert len(list(corpus.iterdir())) > len(seeds())


@pytest.mark.parametrize("path", sorted(REGRESSIONS.iterdir()), ids=lambda p: p.name)
def test_regression_inputs(path: Path) -> None:
    check(path.read_bytes())


def test_seeds_are_valid_packets() -> None:
    from sipwatch.sources.hep.decode import decode_hep

    for seed in seeds():
        decode_hep(seed)
        check(seed)
