"""Root causes for a replay's failure groups.

Without a database only the rules that need nothing but the log run (X-Reason, challenged
or not, IP used as domain, 503, scanner pattern); with ``SIPWATCH_DB_URL`` (or ``--db-url``)
the same rules are confirmed or refined against the jambonz database.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from typing import Any

from sipwatch.config import Config
from sipwatch.diagnosis.db import DbError
from sipwatch.diagnosis.error_kinds import DATABASE_ERRORS
from sipwatch.diagnosis.settings import DiagnosisSettings, build_runtime, settings_from_config
from sipwatch.replay.driver import ReplayResult
from sipwatch.replay.report import CauseMap, record_key

MAX_DIAGNOSED = 500  # failure groups diagnosed per replay, most frequent first


def diagnose_replay(
    res: ReplayResult, *, config: Config, db_url: str | None, redis_url: str | None
) -> tuple[CauseMap, str | None]:
    """Causes of the replay's failure groups, and a problem to report (a database that could
    not be used) or None."""
    settings = settings_from_config(
        config, cli={"db_url": db_url, "redis_url": redis_url}, env=os.environ
    )
    if settings.registrar_flavour == "auto" and res.pipeline.context.flavour_hint:
        settings = dataclasses.replace(settings, registrar_flavour="sidecar")
    return asyncio.run(_diagnose_all(res, settings))


async def _diagnose_all(
    res: ReplayResult, settings: DiagnosisSettings
) -> tuple[CauseMap, str | None]:
    runtime = build_runtime(settings)
    out: CauseMap = {}
    problem: str | None = None
    try:
        if runtime.database is not None:
            try:
                await runtime.database.ping()
            except DbError as exc:
                problem = f"cannot use the jambonz database: {exc}"
        for record in res.failure_records()[:MAX_DIAGNOSED]:
            if record.side != "inbound":
                continue  # jambonz registering to a carrier: not a device misconfiguration
            symptom = res.pipeline.symptom(record)
            diagnosis = await runtime.engine.diagnose(symptom)
            causes: list[dict[str, Any]] = [c.to_dict() for c in diagnosis.causes]
            out[record_key(record)] = causes
            if problem is None and DATABASE_ERRORS & set(diagnosis.errors):
                problem = "the jambonz database stopped answering or lacks its tables"
    finally:
        await runtime.close()
    return out, problem
