"""From a diagnosed failure group to the alert (sipwatch.daemon.stages.alert_for): which cause is
reported, which incident it is, and that its numbers and words match the diagnosis."""

from __future__ import annotations

from typing import Any

from sipwatch.alerts.model import incident_key
from sipwatch.daemon.stages import alert_for, reported_cause
from sipwatch.diagnosis.engine import Cause, Diagnosis
from sipwatch.pipeline.failures import SCANNER_USER
from tests.samples import failure_record

T0 = 1_790_000_000.0


def _cause(cause_id: str, severity: str = "warning", **evidence: Any) -> Cause:
    return Cause(
        id=cause_id,
        severity=severity,
        confidence="confirmed",
        title=cause_id,
        summary=f"{cause_id} summary",
        evidence=evidence,
        fix_steps=("do it",),
        fix_command=None,
        remediation=None,
        priority=0,
    )


def _diagnosis(*causes: Cause) -> Diagnosis:
    return Diagnosis(user="alice", domain="acme.example.com", causes=list(causes), unknown=[])


def test_an_outage_from_a_former_scanner_address_is_the_outage() -> None:
    """Issue 12.9: 503s folded into a scanner's record (the office NAT that sprayed 50
    usernames) are reported as registrar_down - a system incident - not as a scanner."""
    record = failure_record(user=SCANNER_USER, domain=SCANNER_USER, status=503, scanner=True)
    diagnosis = _diagnosis(
        _cause("scanner", distinct_users_from_ip=50),
        _cause("registrar_down", "critical"),
    )
    assert diagnosis.top is not None and diagnosis.top.id == "scanner"
    alert = alert_for(record, diagnosis)
    assert alert.cause_id == "registrar_down" and alert.kind == "system"
    assert alert.ends_when == "registrar" and alert.severity == "critical"
    assert incident_key(alert) == ("system", "registrar_down", "")
    assert reported_cause(failure_record(status="timeout"), diagnosis).id == "registrar_down"
    only_scanner = _diagnosis(_cause("scanner"))
    assert alert_for(record, only_scanner) is None  # an outage is never a scanner alert


def test_a_rejection_from_a_scanner_is_a_security_incident_of_its_address() -> None:
    record = failure_record(
        user=SCANNER_USER, domain=SCANNER_USER, count=1200, scanner=True, distinct_users=1180
    )
    cause = _cause(
        "scanner",
        distinct_users_from_ip=1187,
        scanner_reasons=["1187 different usernames failed from this IP"],
        registrar_events=None,
    )
    alert = alert_for(record, _diagnosis(cause))
    assert alert.kind == "security" and alert.user == "" and alert.domain == ""
    assert incident_key(alert) == ("security", "scanner", record.source_ip)
    # the text's count is the evidence's count (the same diagnosis), not the record's
    assert alert.distinct_users == 1187
    assert alert.evidence["distinct_users_from_ip"] == "1187"
    assert alert.evidence["scanner_reasons"] == "1187 different usernames failed from this IP"
    assert "registrar_events" not in alert.evidence  # unknown values are left out
    assert alert.count == 1200


def test_a_device_cause_is_a_registration_incident_of_that_device() -> None:
    cause = _cause("realm_is_ip", "error", tried_realms=["127.0.0.1"], account_found=False)
    record = failure_record(domain="127.0.0.1", count=7, first_seen=T0, last_seen=T0 + 60)
    alert = alert_for(record, _diagnosis(cause))
    assert alert.kind == "registration" and alert.severity == "error"
    assert incident_key(alert) == ("registration", "realm_is_ip", "inbound", "alice", "127.0.0.1")
    assert alert.evidence == {"tried_realms": "127.0.0.1", "account_found": "no"}
    assert alert.count == 7 and alert.first_seen == T0 and alert.last_seen == T0 + 60


def test_no_cause_no_alert() -> None:
    assert alert_for(failure_record(), _diagnosis()) is None
