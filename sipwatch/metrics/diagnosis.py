"""Metrics of what sipwatch concluded and did: diagnosed root causes, checks that could not
run, alert notifications and remediation actions.  Fed by the daemon's later stages through
``observe_root_cause``, ``observe_diagnosis_error``, ``observe_alert`` and
``observe_remediation``; a replay only counts root causes."""

from __future__ import annotations

from sipwatch.metrics import names
from sipwatch.metrics.families import CounterVec, VecCollector
from sipwatch.metrics.labels import (
    ALERT_RESULTS,
    DIAGNOSIS_ERROR_KINDS,
    REMEDIATION_RESULTS,
    SEVERITIES,
    CappedLabel,
    fixed,
)

# How many distinct values of these code- or config-defined labels are kept (then "other").
CAUSE_LABELS = 256
TARGET_LABELS = 32
ACTION_LABELS = 32
DIAGNOSIS_KIND_LABELS = 32


class DiagnosisCollector(VecCollector):
    """A prometheus-client collector for diagnosis, alerting and remediation."""

    def __init__(self) -> None:
        self._cause = CappedLabel(CAUSE_LABELS)
        self._diag_kind = CappedLabel(DIAGNOSIS_KIND_LABELS, DIAGNOSIS_ERROR_KINDS)
        self._target = CappedLabel(TARGET_LABELS)
        self._action = CappedLabel(ACTION_LABELS)
        self.root_causes = CounterVec(
            names.ROOT_CAUSES, "Diagnosed root causes.", ["cause", "severity"]
        )
        self.errors = CounterVec(
            names.DIAGNOSIS_ERRORS, "Diagnosis checks that could not run.", ["kind"]
        )
        for kind in DIAGNOSIS_ERROR_KINDS:
            self.errors.touch((kind,))
        self.alerts = CounterVec(
            names.ALERTS, "Alert notifications by target and result.", ["target", "result"]
        )
        self.remediations = CounterVec(
            names.REMEDIATIONS, "Remediation actions by result.", ["action", "result"]
        )

    def observe_root_cause(self, cause_id: str, severity: str) -> None:
        self.root_causes.inc((self._cause(cause_id), fixed(severity, SEVERITIES)))

    def observe_diagnosis_error(self, kind: str) -> None:
        self.errors.inc((self._diag_kind(kind),))

    def observe_alert(self, target: str, result: str) -> None:
        self.alerts.inc((self._target(target), fixed(result, ALERT_RESULTS)))

    def observe_remediation(self, action: str, result: str) -> None:
        self.remediations.inc((self._action(action), fixed(result, REMEDIATION_RESULTS)))

    def _families(self) -> tuple[CounterVec, ...]:
        return (self.root_causes, self.errors, self.alerts, self.remediations)
