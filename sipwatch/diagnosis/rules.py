"""Root-cause rules: declarative YAML files, loaded and validated with file:line errors.

A rule file holds one rule (a mapping) or a list of rules::

    id: client_inactive              # stable snake_case id, unique across files
    title: The client is deactivated
    severity: error                  # critical | error | warning | info
    priority: 41                     # lower = listed first (most likely)
    flavours: [sidecar]              # registrars it applies to (default: both)
    match:                           # symptom alternatives (OR); fields in one are AND
      - status: [403]                #   final SIP status (0 = timeout)
        x_reason: ["Invalid credentials"]   # case-insensitive prefixes; "" = no X-Reason
        challenged: true             #   a 401/407 came first
        registrar_events: [decrypt_error]   # any of these registrar log events
    symptom_required: false          # true: the log must show the match (not just the DB)
    checks:                          # named checks (checks.py) and the value they must have
      client_found: true
      client_active: false
    unknown_ok: []                   # checks allowed to be unknown (cause is "suspected")
    suspect_when: []                 # match alternatives that alone justify "suspected"
    fallback: false                  # only listed when no other cause fired
    suppresses: []                   # ids hidden when this rule fires
    summary: "Client '{lookup_username}' is deactivated"   # placeholders, display-escaped
    summary_suspected: "..."         # optional: said instead when only the log supports it
    fix:
      steps: ["Activate it in the portal"]
      command: sipwatch fix --user {lookup_username} --domain {domain} --action activate_client
    remediation: activate_client     # remediation action id, or omitted
    max_confidence: suspected        # optional: the evidence is indirect, never "confirmed"
    examples:                        # golden cases, run by tests/test_rule_examples.py
      - symptom: {status: 403, x_reason: Invalid credentials, challenged: true}
        facts: {account_found: true, client_found: true, client_active: false}
        flavour: sidecar             # optional (default sidecar)
        expect: [client_inactive]    # every cause, most likely first ([] = none)

Evaluation is tri-state because half the inputs can be unknown (no database, no X-Reason in
the log, ``sipwatch diagnose`` without ``--status``).  A rule fires when nothing contradicts
it (the log does not rule out every match alternative; no check has the wrong value) *and*
something positively supports it (a matching symptom field or a passing check).  A check that
could not run blocks the rule unless it is in ``unknown_ok`` or a ``suspect_when``
alternative fully matches the log; either way the cause is then "suspected".  A rule whose
evidence is indirect by nature (a SIP 500 that several things cause) sets ``max_confidence:
suspected`` and says in its text what would confirm it.

``examples`` are the rule's golden cases, as fail2ban ships a sample log with each filter: a
symptom and stubbed check values, and the causes the whole rule set must give for them, most
likely first.  The loader validates them (known symptom fields, registered checks, existing
rule ids); the tests run every one against the engine, so a rule change that alters an
answer shows up as a failing example of the rule it affects.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from sipwatch.diagnosis.checks import CHECKS
from sipwatch.diagnosis.symptom import Symptom
from sipwatch.remediation.catalog import ACTION_IDS

SEVERITIES = ("critical", "error", "warning", "info")
FLAVOURS = ("sidecar", "legacy")
CONFIDENCES = ("confirmed", "suspected")
# The remediation action ids, declared once in sipwatch.remediation.catalog.
KNOWN_ACTIONS = frozenset(ACTION_IDS)
# Placeholders usable in summary/steps (display-escaped) and in fix.command (shell-quoted).
TEXT_PLACEHOLDERS = frozenset(
    {
        "user",
        "domain",
        "source_ip",
        "auth_username",
        "lookup_username",
        "user_agent",
        "status",
        "x_reason",
        "account_sid",
        "account_name",
        "matched_realm",
        "similar_realms",
        "other_realms",
        "deactivated_reason",
        "client_sid",
        "client_rows",
        "registration_webhook",
        "webhook_http_status",
        "webhook_probe",
        "webhook_probe_detail",
        "cached_proxy",
        "secret_check",
        "secret_sampled",
        "distinct_users_from_ip",
        "scanner_reasons",
        "flavour",
        "registrar_service",
        "decrypt_result",
        "other_clients_decrypting",
        "password_form",
        "db_reject_reason",
    }
)
COMMAND_PLACEHOLDERS = frozenset(
    {
        "user",
        "domain",
        "source_ip",
        "auth_username",
        "lookup_username",
        "account_sid",
        "matched_realm",
        "client_sid",
        "registrar_service",
    }
)
_ID_RE = re.compile(r"^[a-z][a-z0-9_]{1,63}$")
_RULE_KEYS = frozenset(
    {
        "id",
        "title",
        "severity",
        "priority",
        "flavours",
        "match",
        "symptom_required",
        "checks",
        "unknown_ok",
        "suspect_when",
        "fallback",
        "suppresses",
        "summary",
        "summary_suspected",
        "fix",
        "remediation",
        "max_confidence",
        "examples",
    }
)
_REQUIRED = ("id", "title", "severity", "summary", "fix")
_MATCH_KEYS = frozenset({"status", "x_reason", "challenged", "registrar_events"})
_EXAMPLE_KEYS = frozenset({"symptom", "facts", "flavour", "expect"})
# Symptom fields an example may set, and the Python types they take.
_EXAMPLE_SYMPTOM: Mapping[str, tuple[type, ...]] = {
    "user": (str,),
    "domain": (str,),
    "source_ip": (str,),
    "status": (int,),
    "x_reason": (str,),
    "challenged": (bool,),
    "request_uri_host": (str,),
    "auth_username": (str,),
    "user_agent": (str,),
    "registrar_events": (list,),
    "distinct_users_from_ip": (int,),
    "failures_from_ip": (int,),
}
EXAMPLE_USER = "alice"
EXAMPLE_DOMAIN = "pbx.example.com"


class RuleError(ValueError):
    """A rule file is invalid; the message starts with ``file:line:``."""


class MatchState(IntEnum):
    """Result of matching a symptom pattern, ordered from worst to best."""

    NO = 0
    UNKNOWN = 1  # nothing contradicts, nothing supports
    PARTIAL = 2  # something supports, some parts unknown
    YES = 3


@dataclass(frozen=True)
class SymptomPattern:
    """One alternative of a ``match``: every given field must hold."""

    status: frozenset[int] | None = None
    x_reason: tuple[str, ...] | None = None  # lower-case prefixes; "" = no X-Reason
    challenged: bool | None = None
    registrar_events: frozenset[str] | None = None

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(k for k in sorted(_MATCH_KEYS) if getattr(self, k) is not None)

    def evaluate(self, s: Symptom) -> MatchState:
        """NO when a given field contradicts ``s``; YES when every one holds; PARTIAL when one
        holds and the others are unknown; UNKNOWN when all are unknown (or none is given).

        One pass that stops at the first contradiction: every rule asks this of every
        failure group the daemon diagnoses."""
        holds = unknown = 0
        if self.status is not None:
            if s.status is None:
                unknown += 1
            elif s.status in self.status:
                holds += 1
            else:
                return MatchState.NO
        if self.x_reason is not None:
            if s.x_reason is None:
                unknown += 1
            elif self._x_reason_matches(s.x_reason):
                holds += 1
            else:
                return MatchState.NO
        if self.challenged is not None:
            if s.challenged is None:
                unknown += 1
            elif s.challenged == self.challenged:
                holds += 1
            else:
                return MatchState.NO
        if self.registrar_events is not None:
            # Absence of a registrar event is not evidence: most REGISTER outcomes log nothing.
            if self.registrar_events & s.registrar_events:
                holds += 1
            else:
                unknown += 1
        if holds:
            return MatchState.PARTIAL if unknown else MatchState.YES
        return MatchState.UNKNOWN

    def _x_reason_matches(self, x_reason: str) -> bool:
        """The X-Reason starts with one of the prefixes ("" matches only no X-Reason)."""
        got = x_reason.strip().lower()
        prefixes = self.x_reason or ()
        return any((p == "" and got == "") or (p != "" and got.startswith(p)) for p in prefixes)


def evaluate_patterns(patterns: Sequence[SymptomPattern], s: Symptom) -> MatchState:
    """OR over alternatives: the best state wins (the first YES ends the search)."""
    best = MatchState.UNKNOWN if not patterns else MatchState.NO
    for pattern in patterns:
        state = pattern.evaluate(s)
        if state > best:
            best = state
            if best is MatchState.YES:
                break
    return best


@dataclass(frozen=True)
class RuleExample:
    """A golden case: this symptom with these check values gives these causes, in order."""

    symptom: Symptom
    facts: Mapping[str, bool | None]
    flavour: str
    expect: tuple[str, ...]
    source: str  # "file:line"


@dataclass(frozen=True)
class Rule:
    id: str
    title: str
    severity: str
    priority: int
    flavours: frozenset[str]
    match: tuple[SymptomPattern, ...]
    symptom_required: bool
    checks: Mapping[str, bool]
    unknown_ok: frozenset[str]
    suspect_when: tuple[SymptomPattern, ...]
    fallback: bool
    suppresses: frozenset[str]
    summary: str
    fix_steps: tuple[str, ...]
    fix_command: str | None
    remediation: str | None
    source: str  # "file:line" of the rule, for messages
    # said instead of ``summary`` when only the log supports the cause (no database facts)
    summary_suspected: str | None = None
    max_confidence: str = "confirmed"
    examples: tuple[RuleExample, ...] = ()

    @property
    def match_fields(self) -> tuple[str, ...]:
        seen: list[str] = []
        for p in (*self.match, *self.suspect_when):
            for f in p.fields:
                if f not in seen:
                    seen.append(f)
        return tuple(seen)


# --------------------------------------------------------------------------- YAML with lines


class _LineDict(dict[Any, Any]):
    line: int = 0
    key_lines: dict[Any, int]


#: libyaml's parser when PyYAML was built with it (Debian's and the wheels are): the rules are
#: read by every replay and every daemon start, and the pure-Python parser took 60 ms of it.
#: The constructor (below) is Python either way, so the results and the lines are the same.
if TYPE_CHECKING:
    _SafeLoader = yaml.SafeLoader
else:
    _SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _LineLoader(_SafeLoader):
    """SafeLoader that remembers the line of every mapping and key, and refuses dup keys."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> _LineDict:
    loader.flatten_mapping(node)
    result = _LineDict()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            duplicate = key in result
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "mapping keys must be scalars", key_node.start_mark
            ) from None
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = line
    return result


_LineLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


class _Ctx:
    """Where we are in a file, for messages."""

    def __init__(self, path: str) -> None:
        self.path = path

    def err(self, line: int, rule_id: str | None, msg: str) -> RuleError:
        who = f"rule {rule_id!r}: " if rule_id else ""
        return RuleError(f"{self.path}:{line}: {who}{msg}")

    def refuse_unknown(
        self,
        raw: Mapping[Any, Any],
        allowed: AbstractSet[str],
        line: int,
        rule_id: str | None,
        where: str = "",
        noun: str = "key",
    ) -> None:
        """A key the format does not know is an error at its own line (a typo is never
        silently ignored)."""
        unknown = sorted(map(str, set(raw) - allowed))
        if unknown:
            raise self.err(
                _line_of(raw, unknown[0], line),
                rule_id,
                f"{where}unknown {noun} {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})",
            )


def _line_of(obj: Any, key: Any, default: int) -> int:
    if isinstance(obj, _LineDict):
        return obj.key_lines.get(key, obj.line)
    return default


def _validate_template(
    ctx: _Ctx, line: int, rid: str, where: str, text: Any, allowed: frozenset[str]
) -> str:
    if not isinstance(text, str) or not text.strip():
        raise ctx.err(line, rid, f"{where} must be a non-empty string")
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ctx.err(line, rid, f"{where}: bad placeholder syntax ({exc})") from None
    for _, field_name, spec, conversion in parsed:
        if field_name is None:
            continue
        if field_name not in allowed:
            raise ctx.err(
                line,
                rid,
                f"{where}: unknown placeholder {{{field_name}}} "
                f"(allowed: {', '.join(sorted(allowed))})",
            )
        if spec or conversion:
            raise ctx.err(line, rid, f"{where}: placeholders take no format spec or conversion")
    return text


def _str_list(ctx: _Ctx, line: int, rid: str, key: str, value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ctx.err(line, rid, f"{key} must be a string or a list of strings")
    return list(value)


def _pattern(ctx: _Ctx, rid: str, raw: Any, line: int, key: str) -> SymptomPattern:
    if not isinstance(raw, dict) or not raw:
        raise ctx.err(line, rid, f"each {key} entry must be a non-empty mapping")
    ctx.refuse_unknown(raw, _MATCH_KEYS, line, rid, f"{key}: ", "field")
    status = x_reason = events = None
    challenged = None
    if "status" in raw:
        v = raw["status"]
        v = [v] if isinstance(v, int) and not isinstance(v, bool) else v
        if (
            not isinstance(v, list)
            or not v
            or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i <= 699 for i in v)
        ):
            raise ctx.err(
                _line_of(raw, "status", line),
                rid,
                f"{key}.status must be SIP status codes (0 = timeout)",
            )
        status = frozenset(v)
    if "x_reason" in raw:
        vals = _str_list(
            ctx, _line_of(raw, "x_reason", line), rid, f"{key}.x_reason", raw["x_reason"]
        )
        x_reason = tuple(v.strip().lower() for v in vals)
    if "challenged" in raw:
        if not isinstance(raw["challenged"], bool):
            raise ctx.err(
                _line_of(raw, "challenged", line), rid, f"{key}.challenged must be true or false"
            )
        challenged = raw["challenged"]
    if "registrar_events" in raw:
        vals = _str_list(
            ctx,
            _line_of(raw, "registrar_events", line),
            rid,
            f"{key}.registrar_events",
            raw["registrar_events"],
        )
        if not vals:
            raise ctx.err(
                _line_of(raw, "registrar_events", line),
                rid,
                f"{key}.registrar_events must not be empty",
            )
        events = frozenset(vals)
    return SymptomPattern(status, x_reason, challenged, events)


def _patterns(ctx: _Ctx, rid: str, doc: _LineDict, key: str) -> tuple[SymptomPattern, ...]:
    if key not in doc or doc[key] is None:
        return ()
    raw = doc[key]
    line = _line_of(doc, key, doc.line)
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise ctx.err(line, rid, f"{key} must not be empty")
    return tuple(
        _pattern(ctx, rid, item, item.line if isinstance(item, _LineDict) else line, key)
        for item in items
    )


def _example(ctx: _Ctx, rid: str, raw: Any, line: int) -> RuleExample:
    if not isinstance(raw, dict) or not raw:
        raise ctx.err(line, rid, "each example must be a mapping with symptom, facts, expect")
    ctx.refuse_unknown(raw, _EXAMPLE_KEYS, line, rid, "example: ")
    if "expect" not in raw:
        raise ctx.err(line, rid, "example: missing 'expect' (the cause ids, most likely first)")
    symptom_raw: Any = raw.get("symptom") or {}
    if not isinstance(symptom_raw, dict):
        raise ctx.err(_line_of(raw, "symptom", line), rid, "example.symptom must be a mapping")
    fields: dict[str, Any] = {"user": EXAMPLE_USER, "domain": EXAMPLE_DOMAIN}
    for key, value in symptom_raw.items():
        kl = _line_of(symptom_raw, key, line)
        types = _EXAMPLE_SYMPTOM.get(str(key))
        if types is None:
            raise ctx.err(
                kl,
                rid,
                f"example.symptom: unknown field {key!r} "
                f"(allowed: {', '.join(sorted(_EXAMPLE_SYMPTOM))})",
            )
        if value is not None and (
            not isinstance(value, types) or (isinstance(value, bool) and bool not in types)
        ):
            raise ctx.err(kl, rid, f"example.symptom.{key} has the wrong type")
        if key == "registrar_events":
            events: list[Any] = value if isinstance(value, list) else []
            if not all(isinstance(e, str) for e in events):
                raise ctx.err(kl, rid, "example.symptom.registrar_events must be strings")
            fields[str(key)] = frozenset(events)
        else:
            fields[str(key)] = value
    facts_raw: Any = raw.get("facts") or {}
    if not isinstance(facts_raw, dict):
        raise ctx.err(_line_of(raw, "facts", line), rid, "example.facts must be a mapping")
    facts: dict[str, bool | None] = {}
    for name, value in facts_raw.items():
        fl = _line_of(facts_raw, name, line)
        if name not in CHECKS:
            raise ctx.err(fl, rid, f"example.facts: unknown check {name!r}")
        if value is not None and not isinstance(value, bool):
            raise ctx.err(fl, rid, f"example.facts.{name} must be true, false or null")
        facts[str(name)] = value
    flavour = raw.get("flavour", "sidecar")
    if flavour not in FLAVOURS:
        raise ctx.err(
            _line_of(raw, "flavour", line), rid, f"example.flavour must be one of {FLAVOURS}"
        )
    expect = raw["expect"]
    if not isinstance(expect, list) or not all(isinstance(e, str) for e in expect):
        raise ctx.err(
            _line_of(raw, "expect", line), rid, "example.expect must be a list of rule ids"
        )
    return RuleExample(
        symptom=Symptom(**fields),
        facts=facts,
        flavour=flavour,
        expect=tuple(expect),
        source=f"{ctx.path}:{line}",
    )


def _examples(ctx: _Ctx, rid: str, doc: _LineDict) -> tuple[RuleExample, ...]:
    raw = doc.get("examples")
    if raw is None:
        return ()
    line = _line_of(doc, "examples", doc.line)
    if not isinstance(raw, list) or not raw:
        raise ctx.err(line, rid, "examples must be a non-empty list")
    return tuple(
        _example(ctx, rid, item, item.line if isinstance(item, _LineDict) else line) for item in raw
    )


def _rule(ctx: _Ctx, doc: Any, default_line: int) -> Rule:
    if not isinstance(doc, _LineDict):
        raise ctx.err(default_line, None, "a rule must be a mapping")
    line = doc.line
    rid_raw = doc.get("id")
    rid = rid_raw if isinstance(rid_raw, str) else None
    for key in _REQUIRED:
        if key not in doc:
            raise ctx.err(line, rid, f"missing required key {key!r}")
    ctx.refuse_unknown(doc, _RULE_KEYS, line, rid)
    if rid is None or not _ID_RE.match(rid):
        raise ctx.err(
            _line_of(doc, "id", line),
            None,
            "id must be snake_case: a lower-case letter then [a-z0-9_], 2-64 chars",
        )
    title = doc["title"]
    if not isinstance(title, str) or not title.strip():
        raise ctx.err(_line_of(doc, "title", line), rid, "title must be a non-empty string")
    severity = doc["severity"]
    if severity not in SEVERITIES:
        raise ctx.err(
            _line_of(doc, "severity", line), rid, f"severity must be one of {', '.join(SEVERITIES)}"
        )
    priority = doc.get("priority", 100)
    if not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= 1000:
        raise ctx.err(
            _line_of(doc, "priority", line),
            rid,
            "priority must be an integer 0-1000 (lower = listed first)",
        )
    flavours_raw = doc.get("flavours", list(FLAVOURS))
    flavours = _str_list(ctx, _line_of(doc, "flavours", line), rid, "flavours", flavours_raw)
    bad_fl = [f for f in flavours if f not in FLAVOURS]
    if bad_fl or not flavours:
        raise ctx.err(
            _line_of(doc, "flavours", line),
            rid,
            f"flavours must be a non-empty subset of {', '.join(FLAVOURS)}",
        )
    checks_raw = doc.get("checks") or {}
    if not isinstance(checks_raw, dict):
        raise ctx.err(
            _line_of(doc, "checks", line),
            rid,
            "checks must be a mapping of check name to true/false",
        )
    checks: dict[str, bool] = {}
    for name, expected in checks_raw.items():
        cl = _line_of(checks_raw, name, line)
        if name not in CHECKS:
            raise ctx.err(cl, rid, f"unknown check {name!r} (known: {', '.join(sorted(CHECKS))})")
        if not isinstance(expected, bool):
            raise ctx.err(cl, rid, f"check {name!r} must expect true or false")
        checks[name] = expected
    match = _patterns(ctx, rid, doc, "match")
    suspect_when = _patterns(ctx, rid, doc, "suspect_when")
    if not match and not checks:
        raise ctx.err(line, rid, "a rule needs a match section, checks, or both")
    symptom_required = doc.get("symptom_required", False)
    if not isinstance(symptom_required, bool):
        raise ctx.err(
            _line_of(doc, "symptom_required", line), rid, "symptom_required must be true or false"
        )
    if symptom_required and not match:
        raise ctx.err(
            _line_of(doc, "symptom_required", line), rid, "symptom_required needs a match section"
        )
    unknown_ok_raw = doc.get("unknown_ok", [])
    unknown_ok = _str_list(
        ctx, _line_of(doc, "unknown_ok", line), rid, "unknown_ok", unknown_ok_raw
    )
    for name in unknown_ok:
        if name not in checks:
            raise ctx.err(
                _line_of(doc, "unknown_ok", line),
                rid,
                f"unknown_ok names {name!r}, which is not in this rule's checks",
            )
    fallback = doc.get("fallback", False)
    if not isinstance(fallback, bool):
        raise ctx.err(_line_of(doc, "fallback", line), rid, "fallback must be true or false")
    suppresses = _str_list(
        ctx, _line_of(doc, "suppresses", line), rid, "suppresses", doc.get("suppresses", [])
    )
    summary = _validate_template(
        ctx, _line_of(doc, "summary", line), rid, "summary", doc["summary"], TEXT_PLACEHOLDERS
    )
    summary_suspected = doc.get("summary_suspected")
    if summary_suspected is not None:
        summary_suspected = _validate_template(
            ctx,
            _line_of(doc, "summary_suspected", line),
            rid,
            "summary_suspected",
            summary_suspected,
            TEXT_PLACEHOLDERS,
        ).strip()
    fix = doc["fix"]
    fix_line = _line_of(doc, "fix", line)
    if not isinstance(fix, dict):
        raise ctx.err(fix_line, rid, "fix must be a mapping with steps and command")
    ctx.refuse_unknown(fix, {"steps", "command"}, fix_line, rid, "fix: ")
    steps_raw = fix.get("steps")
    steps_line = _line_of(fix, "steps", fix_line)
    if not isinstance(steps_raw, list) or not steps_raw:
        raise ctx.err(steps_line, rid, "fix.steps must be a non-empty list of strings")
    steps = tuple(
        _validate_template(ctx, steps_line, rid, "fix.steps", s, TEXT_PLACEHOLDERS)
        for s in steps_raw
    )
    command = fix.get("command")
    if command is not None:
        cmd_line = _line_of(fix, "command", fix_line)
        command = _validate_template(
            ctx, cmd_line, rid, "fix.command", command, COMMAND_PLACEHOLDERS
        )
        if not command.startswith("sipwatch "):
            raise ctx.err(cmd_line, rid, "fix.command must be a sipwatch command")
        if any(ch in command for ch in ";|&`$<>\n"):
            raise ctx.err(cmd_line, rid, "fix.command must be one plain command (no shell syntax)")
    max_confidence = doc.get("max_confidence", "confirmed")
    if max_confidence not in CONFIDENCES:
        raise ctx.err(
            _line_of(doc, "max_confidence", line),
            rid,
            f"max_confidence must be one of {', '.join(CONFIDENCES)}",
        )
    remediation = doc.get("remediation")
    if remediation is not None and remediation not in KNOWN_ACTIONS:
        raise ctx.err(
            _line_of(doc, "remediation", line),
            rid,
            f"unknown remediation {remediation!r} (known: {', '.join(sorted(KNOWN_ACTIONS))})",
        )
    return Rule(
        id=rid,
        title=title.strip(),
        severity=severity,
        priority=priority,
        flavours=frozenset(flavours),
        match=match,
        symptom_required=symptom_required,
        checks=checks,
        unknown_ok=frozenset(unknown_ok),
        suspect_when=suspect_when,
        fallback=fallback,
        suppresses=frozenset(suppresses),
        summary=summary.strip(),
        fix_steps=tuple(s.strip() for s in steps),
        fix_command=command.strip() if command else None,
        remediation=remediation,
        source=f"{ctx.path}:{line}",
        summary_suspected=summary_suspected,
        max_confidence=max_confidence,
        examples=_examples(ctx, rid, doc),
    )


def parse_rules(text: str, path: str) -> list[Rule]:
    """Parse one rule file: a single rule mapping, or a list of them."""
    ctx = _Ctx(path)
    try:
        doc = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise RuleError(f"{path}:{line}: invalid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise RuleError(f"{path}:1: invalid YAML: {exc}") from None
    if doc is None:
        raise RuleError(f"{path}:1: empty rule file")
    docs = doc if isinstance(doc, list) else [doc]
    return [_rule(ctx, d, 1) for d in docs]


def validate_rule_set(rules: Iterable[Rule]) -> list[Rule]:
    """Cross-rule checks: unique ids, suppresses naming existing rules."""
    by_id: dict[str, Rule] = {}
    out = list(rules)
    for r in out:
        if r.id in by_id:
            raise RuleError(
                f"{r.source}: rule {r.id!r}: duplicate id (also at {by_id[r.id].source})"
            )
        by_id[r.id] = r
    for r in out:
        for target in sorted(r.suppresses):
            if target not in by_id:
                raise RuleError(f"{r.source}: rule {r.id!r}: suppresses unknown rule {target!r}")
        for ex in r.examples:
            for cause in ex.expect:
                if cause not in by_id:
                    raise RuleError(
                        f"{ex.source}: rule {r.id!r}: example expects unknown rule {cause!r}"
                    )
    return out


def load_rules(directory: Path) -> list[Rule]:
    """Load every ``*.yaml``/``*.yml`` file in ``directory`` (sorted), validated."""
    if not directory.is_dir():
        raise RuleError(f"{directory}: rules directory not found")
    rules: list[Rule] = []
    files = sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])
    if not files:
        raise RuleError(f"{directory}: no rule files (*.yaml)")
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RuleError(f"{path}:1: cannot read: {exc}") from None
        rules.extend(parse_rules(text, str(path)))
    return validate_rule_set(rules)


def default_rules_dir() -> Path:
    """The rules shipped with sipwatch: ``rules/`` of the repository, installed as the package
    data ``sipwatch._rules`` (see pyproject.toml), so checkouts and wheels find the same files."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("sipwatch._rules")
    except ModuleNotFoundError:
        spec = None
    # a directory of YAML files without __init__.py: a namespace package, found by location
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location)
        if path.is_dir() and any(path.glob("*.yaml")):
            return path
    return Path(__file__).resolve().parents[2] / "rules"
