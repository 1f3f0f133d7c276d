"""Remediation actions are declared once (``remediation/catalog.py``) and implemented with
``@implements``: the ids config, rules and ``--help`` use are the ids that exist."""

from __future__ import annotations

import pytest

from sipwatch.config import REMEDIATION_ACTIONS
from sipwatch.diagnosis.rules import KNOWN_ACTIONS, default_rules_dir, load_rules
from sipwatch.remediation import catalog
from sipwatch.remediation.actions import ACTIONS, Action, implements
from tests.cli_support import modules_loaded_by


def test_every_declared_action_is_implemented_and_nothing_else() -> None:
    assert tuple(ACTIONS) == catalog.ACTION_IDS == REMEDIATION_ACTIONS
    assert set(KNOWN_ACTIONS) == set(catalog.ACTION_IDS)
    for action_id, action in ACTIONS.items():
        spec = catalog.ACTION_SPECS[action_id]
        assert action.spec is spec and action.id == action_id and action.needs == spec.needs
    encrypting = {a for a, s in catalog.ACTION_SPECS.items() if s.encrypts}
    assert encrypting == {"create_client", "reencrypt_password"}
    named = {r.remediation for r in load_rules(default_rules_dir()) if r.remediation}
    assert named <= set(catalog.ACTION_IDS)


def test_an_action_must_be_declared_and_implemented_once() -> None:
    with pytest.raises(ValueError, match="declared twice"):
        catalog.declare("create_client", needs="database", summary="again")
    rogue = catalog.ActionSpec("rogue_action", "database", "not declared")
    with pytest.raises(TypeError, match="not declared"):
        implements(rogue)(type("Rogue", (Action,), {}))
    with pytest.raises(TypeError, match="implemented twice"):
        implements(catalog.CREATE_CLIENT)(type("Again", (Action,), {}))
    assert "rogue_action" not in ACTIONS


def test_the_command_line_gets_the_ids_without_importing_the_actions() -> None:
    code = "from sipwatch.cli.main import build_parser\nbuild_parser()\nimport sipwatch.config"
    heavy = ("sipwatch.remediation.actions", "asyncmy", "redis", "aiohttp")
    assert modules_loaded_by(code, heavy) == []
