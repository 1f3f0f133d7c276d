"""Rule files: the shipped set is complete and valid; mistakes are reported with file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipwatch.diagnosis.rules import (
    MatchState,
    RuleError,
    SymptomPattern,
    default_rules_dir,
    load_rules,
    parse_rules,
)
from sipwatch.diagnosis.symptom import Symptom

REQUIRED_CAUSES = {
    "realm_is_ip",
    "realm_unknown",
    "account_inactive",
    "client_missing",
    "client_inactive",
    "client_duplicate",
    "client_password_plaintext",
    "client_password_undecryptable",
    "credentials_mismatch",
    "webhook_missing",
    "webhook_unreachable",
    "webhook_http_error",
    "webhook_denied",
    "webhook_bad_response",
    "registrar_down",
    "scanner",
    "stale_cached_registration",
}

VALID = """\
id: demo_rule
title: Demo
severity: error
checks:
  account_found: false
summary: No account for {domain}
fix:
  steps:
    - Do something about {user}
  command: sipwatch fix --user {user} --domain {domain} --action set_account_realm
remediation: set_account_realm
"""


def test_shipped_rules_cover_every_cause_id() -> None:
    rules = load_rules(default_rules_dir())
    assert {r.id for r in rules} >= REQUIRED_CAUSES
    for r in rules:
        assert r.fix_steps, r.id
        if r.fix_command:
            assert r.fix_command.startswith("sipwatch fix ")


def test_valid_rule_parses() -> None:
    [rule] = parse_rules(VALID, "demo.yaml")
    assert rule.id == "demo_rule" and rule.checks == {"account_found": False}
    assert rule.remediation == "set_account_realm"
    assert rule.source == "demo.yaml:1"


@pytest.mark.parametrize(
    ("mutation", "line", "message"),
    [
        (("severity: error", "severity: fatal"), 3, "severity must be one of"),
        (("  account_found: false", "  acount_found: false"), 5, "unknown check 'acount_found'"),
        (("  account_found: false", "  account_found: maybe"), 5, "must expect true or false"),
        (("summary: No account for {domain}", "summary: No {domian}"), 6, "unknown placeholder"),
        (("summary: No account for {domain}", "summary: No {user.__class__}"), 6, "unknown"),
        (("summary: No account for {domain}", "summary: '{user!r}'"), 6, "no format spec"),
        (("id: demo_rule", "id: Demo-Rule"), 1, "id must be snake_case"),
        (("remediation: set_account_realm", "remediation: reboot_everything"), 11, "remediation"),
        (("title: Demo", "title: Demo\ncolour: red"), 3, "unknown key 'colour'"),
        (("  command: sipwatch fix", "  command: rm -rf / # fix"), 10, "sipwatch command"),
        (("--action set_account_realm", "--action x; reboot"), 10, "no shell syntax"),
        (
            (
                "  command: sipwatch fix --user {user}",
                "  command: sipwatch fix --user {user_agent}",
            ),
            10,
            "unknown placeholder",
        ),
        (
            ("checks:\n  account_found: false\n", "match:\n  - stauts: [403]\n"),
            5,
            "unknown field 'stauts'",
        ),
        (
            ("checks:\n  account_found: false\n", "match:\n  - status: [403, 'x']\n"),
            5,
            "SIP status codes",
        ),
        (("title: Demo", "title: Demo\ntitle: Again"), 3, "duplicate key"),
        (("    - Do something about {user}", "    - [unclosed"), 10, "invalid YAML"),
    ],
)
def test_errors_name_file_and_line(mutation: tuple[str, str], line: int, message: str) -> None:
    old, new = mutation
    assert old in VALID
    text = VALID.replace(old, new, 1)
    with pytest.raises(RuleError) as info:
        parse_rules(text, "rules/demo.yaml")
    msg = str(info.value)
    assert msg.startswith(f"rules/demo.yaml:{line}:"), msg
    assert message in msg


def test_missing_required_key() -> None:
    with pytest.raises(RuleError, match=r"demo.yaml:1: rule 'demo_rule': missing required key"):
        parse_rules(VALID.replace("title: Demo\n", ""), "demo.yaml")


def test_rule_needs_match_or_checks() -> None:
    text = VALID.replace("checks:\n  account_found: false\n", "")
    with pytest.raises(RuleError, match="needs a match section, checks, or both"):
        parse_rules(text, "demo.yaml")


def test_cross_file_errors(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(VALID)
    (tmp_path / "b.yaml").write_text("\n\n" + VALID)
    with pytest.raises(RuleError) as info:
        load_rules(tmp_path)
    assert str(info.value).startswith(f"{tmp_path / 'b.yaml'}:3:")
    assert "duplicate id" in str(info.value) and "a.yaml:1" in str(info.value)
    (tmp_path / "b.yaml").write_text(
        VALID.replace("demo_rule", "other_rule") + "suppresses: [ghost_rule]\n"
    )
    with pytest.raises(RuleError, match="suppresses unknown rule 'ghost_rule'"):
        load_rules(tmp_path)


def test_empty_directory_and_list_files(tmp_path: Path) -> None:
    with pytest.raises(RuleError, match="no rule files"):
        load_rules(tmp_path)
    (tmp_path / "many.yaml").write_text(
        "- "
        + VALID.replace("\n", "\n  ").rstrip()
        + "\n- "
        + VALID.replace("demo_rule", "second_rule").replace("\n", "\n  ").rstrip()
        + "\n"
    )
    assert [r.id for r in load_rules(tmp_path)] == ["demo_rule", "second_rule"]


def test_error_in_second_rule_of_a_list_points_at_its_line(tmp_path: Path) -> None:
    second = VALID.replace("demo_rule", "second_rule").replace("severity: error", "severity: x")
    text = (
        "- "
        + VALID.replace("\n", "\n  ").rstrip()
        + "\n- "
        + second.replace("\n", "\n  ").rstrip()
        + "\n"
    )
    with pytest.raises(RuleError) as info:
        parse_rules(text, "many.yaml")
    assert str(info.value).startswith("many.yaml:14:")


def test_pattern_tristate() -> None:
    p = SymptomPattern(status=frozenset({403}), x_reason=("invalid credentials",), challenged=True)
    full = Symptom("a", "b", status=403, x_reason="Invalid credentials", challenged=True)
    assert p.evaluate(full) is MatchState.YES
    assert p.evaluate(Symptom("a", "b", status=403)) is MatchState.PARTIAL
    assert p.evaluate(Symptom("a", "b")) is MatchState.UNKNOWN
    assert p.evaluate(Symptom("a", "b", status=500)) is MatchState.NO
    assert p.evaluate(Symptom("a", "b", status=403, x_reason="")) is MatchState.NO
    spam = SymptomPattern(x_reason=("detected potential spammer",))
    assert (
        spam.evaluate(Symptom("a", "b", x_reason="detected potential spammer from 1.2.3.4:5060"))
        is MatchState.YES
    )
    empty = SymptomPattern(x_reason=("",))
    assert empty.evaluate(Symptom("a", "b", x_reason="")) is MatchState.YES
    assert empty.evaluate(Symptom("a", "b", x_reason="x")) is MatchState.NO
    events = SymptomPattern(registrar_events=frozenset({"decrypt_error"}))
    assert events.evaluate(Symptom("a", "b")) is MatchState.UNKNOWN
    assert (
        events.evaluate(Symptom("a", "b", registrar_events=frozenset({"decrypt_error"})))
        is MatchState.YES
    )
