"""Checks register themselves (``@check`` in ``diagnosis/checks.py``): one registry for the
rule loader, the engine and the docs, so a check cannot be half-added."""

from __future__ import annotations

import pytest

from sipwatch.diagnosis.checks import CHECK_SOURCES, CHECKS, Gathered, check, decide_all
from sipwatch.diagnosis.rules import TEXT_PLACEHOLDERS, RuleError, parse_rules
from sipwatch.diagnosis.symptom import Symptom, host_is_ip, host_is_ipv4

RULE = """
id: uses_a_check
title: T
severity: info
checks: {%s: true}
summary: s
fix: {steps: [x]}
"""


def test_a_rule_naming_an_unregistered_check_does_not_load() -> None:
    parse_rules(RULE % "account_found", "ok.yaml")
    with pytest.raises(
        RuleError, match=r"x.yaml:5: rule 'uses_a_check': unknown check 'acount_found'"
    ):
        parse_rules(RULE % "acount_found", "x.yaml")


def test_the_engine_decides_every_registered_check() -> None:
    values = decide_all(Gathered(Symptom("alice", "203.0.113.5")))
    assert list(values) == list(CHECKS)
    assert values["ip_used_as_domain"] is True  # decided from the log alone
    assert values["account_found"] is None  # no database was asked: undecided, not False


def test_registrations_are_complete_and_unique() -> None:
    for name, c in CHECKS.items():
        assert c.name == name and c.source in CHECK_SOURCES and c.meaning and c.evidence
        assert c.needs[0] in ("log", "database", "redis")
    with pytest.raises(ValueError, match="registered twice"):
        check("account_found", source="db", evidence=("x",))(lambda g: None)
    with pytest.raises(ValueError, match="needs a docstring"):
        check("undocumented_check", source="db", evidence=("x",))(lambda g: None)
    with pytest.raises(ValueError, match="source must be one of"):
        check("odd_source", source="ldap", evidence=())  # type: ignore[arg-type]
    assert "undocumented_check" not in CHECKS


def test_placeholders_of_the_secret_rule_are_evidence_the_check_brings() -> None:
    assert {"secret_check", "secret_sampled"} <= TEXT_PLACEHOLDERS
    assert "secret_sampled" in CHECKS["encryption_secret_matches"].evidence


# (host, an IP literal, an IPv4 literal): what ``ipaddress`` answers, which the host checks
# must keep while they skip asking it about text no IPv4 literal could be.
HOSTS = [
    ("203.0.113.5", True, True),
    (" 203.0.113.5 ", True, True),
    ("203.0.113.5:5060", True, True),
    ("[2001:db8::1]:5061", True, False),
    ("[2001:db8::1]", True, False),
    ("2001:db8::1", True, False),
    ("fe80::1%eth0", True, False),
    ("::ffff:203.0.113.5", True, False),
    ("acme.sip.example.com", False, False),
    ("acme.sip.example.com:5060", False, False),
    ("1.2.3", False, False),
    ("1.2.3.4.", False, False),
    ("01.2.3.4", False, False),
    ("256.1.1.1", False, False),
    ("\u0661.\u0662.\u0663.\u0664", False, False),  # Arabic-Indic digits: isdigit() but no IP
    ("1.2.3.4\x00", False, False),
    ("", False, False),
    (".", False, False),
    ("[", False, False),
]


@pytest.mark.parametrize(("host", "is_ip", "is_ipv4"), HOSTS)
def test_host_checks_answer_as_ipaddress_does(host: str, is_ip: bool, is_ipv4: bool) -> None:
    assert host_is_ip(host) is is_ip
    assert host_is_ipv4(host) is is_ipv4
