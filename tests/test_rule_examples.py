"""Every rule's golden cases (``examples:`` in rules/*.yaml), one test per rule.

Like fail2ban's sample log per filter: each example is a symptom plus stubbed check values,
and the causes the whole shipped rule set must give for it, most likely first.  No database,
Redis or webhook is involved, so log-only rules are tested exactly as ``replay`` runs them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sipwatch.diagnosis.engine import DiagnosisEngine
from sipwatch.diagnosis.facts import Facts
from sipwatch.diagnosis.rules import Rule, RuleError, default_rules_dir, load_rules, parse_rules

RULES = load_rules(default_rules_dir())
ENGINE = DiagnosisEngine(RULES, db=None, redis=None, secret=None)


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.id)
def test_golden_cases(rule: Rule) -> None:
    assert rule.examples, f"{rule.source}: rule {rule.id!r} has no examples"
    assert any(rule.id in ex.expect for ex in rule.examples), (
        f"{rule.source}: no example of {rule.id!r} expects the rule itself"
    )
    for ex in rule.examples:
        facts = Facts(values=dict(ex.facts), flavour=ex.flavour)  # type: ignore[arg-type]
        got = [c.id for c in ENGINE.evaluate(ex.symptom, facts)]
        assert got == list(ex.expect), f"{ex.source}: expected {list(ex.expect)}, got {got}"


def test_examples_are_validated_when_the_rules_load(tmp_path: Path) -> None:
    base = """
id: probe_rule
title: T
severity: info
checks: {account_found: true}
summary: s
fix: {steps: [x]}
examples:
"""
    bad = {
        "  - {symptom: {colour: red}, expect: []}": "unknown field 'colour'",
        "  - {symptom: {status: '403'}, expect: []}": "status has the wrong type",
        "  - {facts: {acount_found: true}, expect: []}": "unknown check 'acount_found'",
        "  - {facts: {account_found: maybe}, expect: []}": "must be true, false or null",
        "  - {facts: {account_found: true}}": "missing 'expect'",
        "  - {facts: {}, expect: probe_rule}": "must be a list of rule ids",
        "  - {flavour: kamailio, expect: []}": "flavour must be one of",
    }
    for line, message in bad.items():
        with pytest.raises(RuleError, match=message):
            parse_rules(base + line + "\n", "x.yaml")
    (tmp_path / "r.yaml").write_text(base + "  - {expect: [no_such_rule]}\n")
    with pytest.raises(RuleError, match="example expects unknown rule 'no_such_rule'"):
        load_rules(tmp_path)
