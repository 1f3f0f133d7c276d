"""Why a diagnosis check could not run: one vocabulary for the facts, the metrics
(``sipwatch_diagnosis_errors_total{kind}``), the dependency health and the commands' output.

A module of its own (no imports) so that the metrics and the daemon can name the kinds
without importing the database or Redis clients.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class DiagnosisErrorKind(StrEnum):
    DB_UNAVAILABLE = "db_unavailable"
    TIMEOUT = "timeout"  # the diagnosis deadline, which covers the database queries
    MISSING_TABLE = "missing_table"
    REDIS_UNAVAILABLE = "redis_unavailable"


#: The kinds that mean "the jambonz database cannot answer".
DATABASE_ERRORS: Final = frozenset(
    {
        DiagnosisErrorKind.DB_UNAVAILABLE,
        DiagnosisErrorKind.TIMEOUT,
        DiagnosisErrorKind.MISSING_TABLE,
    }
)
