"""Diagnosis output for people (text) and programs (JSON).

Both renderers take the known secrets (DB password, jambonz secret, Redis password) and scrub
any occurrence as a last line of defence; by construction the diagnosis never carries them.
Text output escapes every attacker-controlled value (terminal control sequences, bidi
overrides) and bounds its length; JSON output relies on JSON escaping and keeps values exact
(bounded upstream).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sipwatch.diagnosis.engine import Diagnosis
from sipwatch.diagnosis.text import display_text

_MIN_SECRET = 4


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    for secret in secrets:
        if secret and len(secret) >= _MIN_SECRET:
            text = text.replace(secret, "***")
    return text


def render_json(diagnosis: Diagnosis, secrets: Iterable[str | None] = ()) -> str:
    return scrub(json.dumps(diagnosis.to_dict(), indent=2, ensure_ascii=False), secrets)


def _evidence_value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(display_text(v, 80) for v in value) or "none"
    return display_text(value, 160)


def render_text(diagnosis: Diagnosis, secrets: Iterable[str | None] = ()) -> str:
    lines: list[str] = []
    who = display_text(f"{diagnosis.user}@{diagnosis.domain}", 160)
    lines.append(f"Diagnosis for {who}")
    registrar = "sbc-sip-sidecar" if diagnosis.flavour == "sidecar" else "sbc-registrar (legacy)"
    registered = {True: "yes", False: "no", None: "unknown"}[diagnosis.registered_now]
    lines.append(f"Registrar: {registrar} [{display_text(diagnosis.flavour_source, 80)}]")
    lines.append(f"Registered now: {registered}")
    if diagnosis.attack:
        lines.append("This looks like an attack: remediation is disabled for it.")
    lines.append("")
    if not diagnosis.causes:
        lines.append("No cause found: nothing in the checked configuration explains a failure.")
    for n, cause in enumerate(diagnosis.causes, start=1):
        tag = cause.severity.upper()
        if cause.confidence != "confirmed":
            tag += ", suspected"
        lines.append(f"{n}. [{tag}] {cause.id} - {cause.title}")
        lines.append(f"   {cause.summary}")
        if cause.evidence:
            lines.append("   Evidence:")
            for key, value in cause.evidence.items():
                lines.append(f"     {key}: {_evidence_value(value)}")
        lines.append("   Fix:")
        for step in cause.fix_steps:
            lines.append(f"     - {step}")
        if cause.fix_command:
            lines.append(f"     $ {display_text(cause.fix_command, 1000)}")
        if cause.remediation:
            lines.append(f"   Remediation action: {cause.remediation}")
        lines.append("")
    if diagnosis.unknown:
        lines.append("Could not check:")
        for item in diagnosis.unknown:
            lines.append(f"  - {display_text(item, 300)}")
    return scrub("\n".join(lines).rstrip() + "\n", secrets)
