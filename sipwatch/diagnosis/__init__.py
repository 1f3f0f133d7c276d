"""Root-cause diagnosis of failing registrations against the jambonz database and Redis.

Public surface: :class:`Symptom` (input), :class:`DiagnosisEngine` and :func:`load_rules`
(the engine), :class:`Diagnosis`/:class:`Cause` (output), and :func:`build_runtime` to wire
it from settings.
"""

from __future__ import annotations

import importlib
from typing import Any

# Imported on first use: the engine pulls in asyncmy, redis and aiohttp, which the CLI must
# not pay for when it only builds its parsers.
_EXPORTS = {
    "Cause": "engine",
    "Diagnosis": "engine",
    "DiagnosisEngine": "engine",
    "DiagnosisMetrics": "engine",
    "Rule": "rules",
    "RuleError": "rules",
    "default_rules_dir": "rules",
    "load_rules": "rules",
    "DiagnosisRuntime": "settings",
    "DiagnosisSettings": "settings",
    "build_runtime": "settings",
    "Symptom": "symptom",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sipwatch.diagnosis' has no attribute {name!r}")
    return getattr(importlib.import_module(f"sipwatch.diagnosis.{module}"), name)


__all__ = [
    "Cause",
    "Diagnosis",
    "DiagnosisEngine",
    "DiagnosisMetrics",
    "DiagnosisRuntime",
    "DiagnosisSettings",
    "Rule",
    "RuleError",
    "Symptom",
    "build_runtime",
    "default_rules_dir",
    "load_rules",
]
