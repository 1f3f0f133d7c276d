"""The wheel must carry every sub-package and the rules (pyproject lists packages by hand)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_subpackage_is_listed_in_pyproject() -> None:
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "sipwatch").rglob("__init__.py")
    }
    assert on_disk <= listed, f"missing from pyproject: {sorted(on_disk - listed)}"
    assert "sipwatch._rules" in listed


def test_default_rules_dir_has_the_shipped_rules() -> None:
    from sipwatch.diagnosis.rules import default_rules_dir, load_rules

    rules = load_rules(default_rules_dir())
    ids = {r.id for r in rules}
    assert {"realm_is_ip", "realm_unknown", "client_missing", "scanner", "registrar_down"} <= ids
