"""Run the rules against the facts of one symptom and order the causes found.

The engine is the only place that knows how rules and facts meet: it evaluates each rule
(tri-state, see ``rules.py``), fills the rule's texts with escaped values and its command with
shell-quoted ones, applies ``suppresses`` and ``fallback``, and sorts most likely first.
Database, Redis and webhook trouble never raises out of :meth:`DiagnosisEngine.diagnose`; it
becomes ``unknown`` lines and a metric, so the log pipeline is never held up by diagnosis.
"""

from __future__ import annotations

import functools
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from sipwatch.diagnosis.checks import CHECKS, MATCH_EVIDENCE
from sipwatch.diagnosis.facts import FactCollector, Facts
from sipwatch.diagnosis.jambonz import JambonzDb
from sipwatch.diagnosis.redis_store import RegistrationStore
from sipwatch.diagnosis.rules import SEVERITIES, MatchState, Rule, evaluate_patterns
from sipwatch.diagnosis.symptom import Symptom
from sipwatch.diagnosis.text import display_text, shell_arg

Confidence = Literal["confirmed", "suspected"]
SCANNER_CAUSE = "scanner"


class DiagnosisMetrics(Protocol):
    def observe_root_cause(self, cause_id: str, severity: str) -> None: ...

    def observe_diagnosis_error(self, kind: str) -> None: ...


@dataclass(frozen=True)
class Cause:
    id: str
    severity: str
    confidence: Confidence
    title: str
    summary: str
    evidence: Mapping[str, Any]
    fix_steps: tuple[str, ...]
    fix_command: str | None
    remediation: str | None
    priority: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "severity": self.severity,
            "confidence": self.confidence,
            "title": self.title,
            "summary": self.summary,
            "evidence": dict(self.evidence),
            "fix": {"steps": list(self.fix_steps), "command": self.fix_command},
            "remediation": self.remediation,
        }


@dataclass(frozen=True)
class Diagnosis:
    user: str
    domain: str
    causes: list[Cause]
    unknown: list[str]  # checks that could not run, and why
    errors: tuple[str, ...] = ()  # db_unavailable | timeout | missing_table | redis_unavailable
    flavour: str = "sidecar"
    flavour_source: str = ""
    registered_now: bool | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def attack(self) -> bool:
        """The request looks like a scanner: remediation must not act on it."""
        return any(c.id == SCANNER_CAUSE for c in self.causes)

    @property
    def top(self) -> Cause | None:
        return self.causes[0] if self.causes else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "domain": self.domain,
            "registrar": {"flavour": self.flavour, "source": self.flavour_source},
            "registered_now": self.registered_now,
            "attack": self.attack,
            "causes": [c.to_dict() for c in self.causes],
            "unknown": list(self.unknown),
        }


_EVIDENCE_TEXT_MAX = 512


def _bounded(value: Any) -> Any:
    """Evidence carries attacker text; keep each value bounded."""
    if isinstance(value, str) and len(value) > _EVIDENCE_TEXT_MAX:
        return f"{value[:_EVIDENCE_TEXT_MAX]}...({len(value)} chars)"
    if isinstance(value, list):
        return [_bounded(v) for v in value[:20]]
    return value


def _format_value(value: Any) -> str:
    if value is None:
        return "(unknown)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(display_text(v, 80) for v in value[:10]) or "none"
    return display_text(value, 120)


@functools.lru_cache(maxsize=1024)
def _template_parts(template: str) -> tuple[tuple[str, str | None], ...]:
    """``template`` as (literal, field name or None) pairs, parsed once: the templates are the
    rule files' few hundred texts, filled for every cause of every diagnosis."""
    return tuple((literal, name) for literal, name, _, _ in string.Formatter().parse(template))


def _fill_text(template: str, values: Mapping[str, Any]) -> str:
    """Substitute ``{name}`` once, without ``str.format`` (values are never re-parsed)."""
    out: list[str] = []
    for literal, name in _template_parts(template):
        out.append(literal)
        if name is not None:
            out.append(_format_value(values.get(name)))
    return "".join(out)


def _fill_command(template: str, values: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """Fill a command with shell-quoted values; (None, why) when a value is unsafe/missing."""
    out: list[str] = []
    for literal, name in _template_parts(template):
        out.append(literal)
        if name is None:
            continue
        raw = values.get(name)
        if raw is None or raw == "":
            return None, f"no command: {name} is unknown"
        quoted = shell_arg(str(raw))
        if quoted is None:
            return None, f"no command: the {name} cannot be passed safely on a command line"
        out.append(quoted)
    return "".join(out), None


_SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}


class DiagnosisEngine:
    """Explain a failing registration: ``await engine.diagnose(symptom)``."""

    def __init__(
        self,
        rules: Sequence[Rule],
        *,
        db: JambonzDb | None,
        redis: RegistrationStore | None,
        secret: str | None,
        registrar_flavour: Literal["sidecar", "legacy", "auto"] = "auto",
        webhook_probes: bool = True,
        cache_ttl: float = 60.0,
        metrics: DiagnosisMetrics | None = None,
        legacy_crypto: bool = False,
        probe_timeout: float = 5.0,
        scanner_min_users: int = 5,
        deadline: float = 15.0,
    ) -> None:
        if registrar_flavour not in ("sidecar", "legacy", "auto"):
            raise ValueError("registrar_flavour must be sidecar, legacy or auto")
        self.rules = list(rules)
        self.metrics = metrics
        self.collector = FactCollector(
            db=db,
            redis=redis,
            secret=secret,
            legacy_crypto=legacy_crypto,
            flavour=registrar_flavour,
            webhook_probes=webhook_probes,
            cache_ttl=cache_ttl,
            probe_timeout=probe_timeout,
            scanner_min_users=scanner_min_users,
            deadline=deadline,
        )

    async def diagnose(self, symptom: Symptom) -> Diagnosis:
        facts = await self.collector.collect(symptom)
        causes = self.evaluate(symptom, facts)
        if self.metrics is not None:
            for kind in facts.errors:
                self.metrics.observe_diagnosis_error(kind)
            for c in causes:
                self.metrics.observe_root_cause(c.id, c.severity)
        return Diagnosis(
            user=symptom.user,
            domain=symptom.domain,
            causes=causes,
            unknown=list(facts.unknown),
            errors=tuple(facts.errors),
            flavour=facts.flavour,
            flavour_source=facts.flavour_source,
            registered_now=facts.evidence.get("registered_now"),
        )

    def evaluate(self, symptom: Symptom, facts: Facts) -> list[Cause]:
        fired: list[tuple[Rule, Cause]] = []
        for rule in self.rules:
            cause = self._evaluate_rule(rule, symptom, facts)
            if cause is not None:
                fired.append((rule, cause))
        suppressed: set[str] = set()
        for rule, _ in fired:
            suppressed |= rule.suppresses
        kept = [(r, c) for r, c in fired if r.id not in suppressed]
        if any(not r.fallback for r, _ in kept):
            kept = [(r, c) for r, c in kept if not r.fallback]
        kept.sort(
            key=lambda rc: (
                rc[1].priority,
                rc[1].confidence != "confirmed",
                _SEVERITY_RANK.get(rc[1].severity, 9),
                rc[1].id,
            )
        )
        return [c for _, c in kept]

    def _evaluate_rule(self, rule: Rule, s: Symptom, facts: Facts) -> Cause | None:
        if facts.flavour not in rule.flavours:
            return None
        match = evaluate_patterns(rule.match, s) if rule.match else MatchState.UNKNOWN
        if match is MatchState.NO:
            return None
        if rule.symptom_required and match < MatchState.PARTIAL:
            return None
        values = facts.values
        unknown: list[str] = []  # checks without a value
        confirmed = False  # a check has the value the rule expects
        for name, expected in rule.checks.items():
            got = values.get(name)
            if got is None:
                unknown.append(name)
            elif got == expected:
                confirmed = True
            else:
                return None  # a check contradicts the rule
        blocking = [n for n in unknown if n not in rule.unknown_ok]
        positive = match >= MatchState.PARTIAL or confirmed
        confidence: Confidence
        if blocking:
            if (
                not rule.suspect_when
                or evaluate_patterns(rule.suspect_when, s) is not MatchState.YES
            ):
                return None
            confidence = "suspected"
        elif not positive:
            return None
        else:
            confidence = "suspected" if unknown else "confirmed"
        if rule.max_confidence == "suspected":
            confidence = "suspected"  # indirect evidence by nature: never more than suspected
        return self._cause(rule, s, facts, confidence)

    def _cause(self, rule: Rule, s: Symptom, facts: Facts, confidence: Confidence) -> Cause:
        keys: list[str] = []
        for name in rule.checks:
            keys.extend(CHECKS[name].evidence)
        for f in rule.match_fields:
            keys.extend(MATCH_EVIDENCE[f])
        evidence: dict[str, Any] = {}
        for k in keys:
            value = facts.evidence.get(k)
            if value is not None and k not in evidence:
                evidence[k] = _bounded(value)
        values = dict(facts.evidence)
        values.setdefault("lookup_username", s.lookup_username)
        steps = [_fill_text(t, values) for t in rule.fix_steps]
        command: str | None = None
        if rule.fix_command is not None:
            command, why = _fill_command(rule.fix_command, values)
            if why is not None:
                steps.append(f"({why})")
        return Cause(
            id=rule.id,
            severity=rule.severity,
            confidence=confidence,
            title=rule.title,
            summary=_fill_text(
                rule.summary_suspected
                if confidence == "suspected" and rule.summary_suspected
                else rule.summary,
                values,
            ),
            evidence=evidence,
            fix_steps=tuple(steps),
            fix_command=command,
            remediation=rule.remediation,
            priority=rule.priority,
        )
