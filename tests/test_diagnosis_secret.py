"""A wrong jambonz secret is sipwatch's configuration problem, never a client fault (issue 10,
item 2): in a diagnosis, on ``/readyz``, as a metric, and reported once by the daemon.

Each test owns a database (``fresh_database``): which client passwords exist decides the
secret proof, so no other test's rows may be in it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from sipwatch.config import load_config
from sipwatch.daemon.stages import DaemonSink, alert_for, make_diagnoser, readiness_details
from sipwatch.diagnosis.crypto import encrypt
from sipwatch.diagnosis.db import Database, DbSettings
from sipwatch.diagnosis.engine import Diagnosis, DiagnosisEngine
from sipwatch.diagnosis.jambonz import JambonzDb
from sipwatch.diagnosis.rules import default_rules_dir, load_rules
from sipwatch.diagnosis.secret_proof import (
    SECRET_FIX,
    SECRET_MISMATCH_CAUSE,
    SECRET_VARIABLE,
    SecretState,
    judge_secret,
)
from sipwatch.diagnosis.symptom import Symptom
from sipwatch.metrics import SipwatchMetrics
from sipwatch.pipeline.failures import FailureRecord, FailureTracker
from sipwatch.web.app import make_app
from sipwatch.web.server import start_http
from tests.cli_support import sipwatch
from tests.daemon_runner import clean_env
from tests.jambonz_db import (
    TEST_SECRET,
    Seeder,
    db_url,
    unique_realm,
)

WRONG = "not-the-jambonz-secret-9d1e"
OTHER = "an-older-jambonz-secret-77aa"
CREDS_403 = {"status": 403, "x_reason": "Invalid credentials", "challenged": True}
RULES = load_rules(default_rules_dir())


def ids(d: Diagnosis) -> list[str]:
    return [c.id for c in d.causes]


async def _diagnose(settings: DbSettings, secret: str, symptom: Symptom) -> Diagnosis:
    """Diagnose ``symptom`` against the database with sipwatch holding ``secret``."""
    db = Database(settings)
    try:
        engine = DiagnosisEngine(RULES, db=JambonzDb(db), redis=None, secret=secret)
        return await engine.diagnose(symptom)
    finally:
        await db.close()


async def _healthy(seeder: Seeder, others: dict[str, int]) -> str:
    """A healthy client 'alice' (jambonz's secret) plus other clients per secret."""
    realm = unique_realm()
    acct = await seeder.account(realm)
    await seeder.client(acct, "alice", password="alice-device-pw")
    for secret, count in others.items():
        for i in range(count):
            stored = encrypt(f"other-pw-{i}", secret)
            await seeder.client(acct, f"u{i}-{secret[:4]}", stored=stored)
    return realm


def test_the_proof_judges_zero_some_and_all_rows() -> None:
    def rows(secret: str, n: int) -> list[dict[str, str]]:
        return [
            {"client_sid": f"{secret[:3]}-{i}", "password": encrypt("pw", secret)} for i in range(n)
        ]

    assert judge_secret(rows(TEST_SECRET, 3), WRONG).state is SecretState.MISMATCH
    some = judge_secret(rows(TEST_SECRET, 3) + rows(OTHER, 2), TEST_SECRET)
    assert (some.state, some.sampled, some.decrypted) == (SecretState.PARTIAL, 5, 3)
    assert sorted(some.failing) == ["an--0", "an--1"] and "an--0" in some.describe()
    assert judge_secret(rows(TEST_SECRET, 3), TEST_SECRET).state is SecretState.PROVEN
    plain = [{"client_sid": "p", "password": "plaintext-pw"}]
    assert judge_secret(plain, TEST_SECRET).state is SecretState.UNPROVEN
    assert judge_secret(rows(TEST_SECRET, 1), None).state is SecretState.NOT_CONFIGURED
    for status in (judge_secret(rows(TEST_SECRET, 2), WRONG), some):
        text = status.describe() + str(status.to_dict())
        assert WRONG not in text and TEST_SECRET not in text and OTHER not in text


async def test_wrong_secret_is_reported_as_sipwatchs_problem_not_the_clients(
    fresh_seeder: Seeder, fresh_db_settings: DbSettings
) -> None:
    # zero rows decrypt with sipwatch's secret (alice's and three others, all jambonz's)
    realm = await _healthy(fresh_seeder, {TEST_SECRET: 3})
    d = await _diagnose(fresh_db_settings, WRONG, Symptom("alice", realm, **CREDS_403))
    assert ids(d) == [SECRET_MISMATCH_CAUSE, "credentials_mismatch"]
    assert "client_password_undecryptable" not in ids(d)
    mismatch = d.causes[0]
    assert mismatch.severity == "critical" and mismatch.confidence == "confirmed"
    assert "decrypts none of the 4 encrypted client passwords sampled" in mismatch.summary
    assert SECRET_VARIABLE in mismatch.summary and "not a fault of 'alice@" in mismatch.summary
    assert any(SECRET_FIX[:40].lower() in step.lower() for step in mismatch.fix_steps)
    assert WRONG not in str(d.to_dict()) and TEST_SECRET not in str(d.to_dict())
    assert any("sipwatch's secret decrypts no stored password" in u for u in d.unknown)


async def test_some_rows_decrypt_the_secret_is_proven_and_the_odd_row_is_named(
    fresh_seeder: Seeder, fresh_db_settings: DbSettings
) -> None:
    # sipwatch has jambonz's secret; alice's row was written with an older one
    realm = unique_realm()
    acct = await fresh_seeder.account(realm)
    await fresh_seeder.client(acct, "alice", stored=encrypt("alice-device-pw", OTHER))
    for i in range(3):
        await fresh_seeder.client(acct, f"ok{i}", password=f"fine-pw-{i}")
    d = await _diagnose(
        fresh_db_settings, TEST_SECRET, Symptom("alice", realm, status=500, challenged=True)
    )
    assert ids(d) == ["client_password_undecryptable"]
    cause = d.causes[0]
    assert cause.confidence == "confirmed"
    assert cause.evidence["other_clients_decrypting"] == "3/3"


async def test_all_rows_decrypt_a_healthy_client_gets_no_password_blame(
    fresh_seeder: Seeder, fresh_db_settings: DbSettings
) -> None:
    realm = await _healthy(fresh_seeder, {TEST_SECRET: 3})
    d = await _diagnose(fresh_db_settings, TEST_SECRET, Symptom("alice", realm, **CREDS_403))
    assert ids(d) == ["credentials_mismatch"]
    assert d.causes[0].confidence == "confirmed"


async def test_a_lone_row_that_does_not_decrypt_is_not_blamed_either(
    fresh_seeder: Seeder, fresh_db_settings: DbSettings
) -> None:
    # nothing else to compare with: a wrong row and a wrong secret look the same
    realm = unique_realm()
    acct = await fresh_seeder.account(realm)
    await fresh_seeder.client(acct, "alice", stored=encrypt("alice-device-pw", OTHER))
    d = await _diagnose(fresh_db_settings, TEST_SECRET, Symptom("alice", realm, **CREDS_403))
    assert "client_password_undecryptable" not in ids(d)
    assert any("no other encrypted password exists" in u for u in d.unknown)


async def test_diagnose_command_names_the_variable_and_never_a_secret(
    fresh_seeder: Seeder, fresh_database: str, cli_env_for: Any
) -> None:
    realm = await _healthy(fresh_seeder, {TEST_SECRET: 2})
    env = cli_env_for(fresh_database, SIPWATCH_JAMBONZ_ENCRYPTION_SECRET=WRONG)
    r = await sipwatch(
        env, "diagnose", "--user", "alice", "--domain", realm, "--status", "403",
        "--x-reason", "Invalid credentials", "--challenged",
    )  # fmt: skip
    assert r.rc == 0, r.all
    assert f"1. [CRITICAL] {SECRET_MISMATCH_CAUSE}" in r.out
    assert "client_password_undecryptable" not in r.out
    assert SECRET_VARIABLE in r.out and "ENCRYPTION_SECRET (or JWT_SECRET" in r.out
    assert WRONG not in r.all and TEST_SECRET not in r.all


# ------------------------------------------------------------------------------ daemon


def _config(tmp_path: Path, database: str, secret: str) -> Any:
    path = tmp_path / "sipwatch.toml"
    path.write_text(
        f'[database]\nurl = "{db_url(database)}"\n[jambonz]\nencryption_secret = "{secret}"\n'
    )
    env = clean_env()
    return load_config(str(path), environ=env)


async def test_readyz_detail_and_metric_report_the_secret_once(
    fresh_seeder: Seeder, fresh_database: str, tmp_path: Path
) -> None:
    realm = await _healthy(fresh_seeder, {TEST_SECRET: 2})
    config = _config(tmp_path, fresh_database, WRONG)
    metrics = SipwatchMetrics(process_metrics=False)
    diagnoser = make_diagnoser(config, metrics)
    assert diagnoser is not None
    app = make_app(
        metrics,
        FailureTracker(),
        lambda: {"drachtio": True},
        details=lambda: readiness_details(diagnoser),
    )
    runner = await start_http(app, "127.0.0.1", 0)
    host, port = runner.addresses[0][:2]
    try:
        async with asyncio.timeout(20):
            while diagnoser.secret_status() is None:  # the daemon proves it at start
                await asyncio.sleep(0.05)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://{host}:{port}/readyz") as resp:
                assert resp.status == 200  # a wrong secret does not stop the log pipeline
                body = await resp.json()
            async with session.get(f"http://{host}:{port}/metrics") as resp:
                exposition = await resp.text()
        secret = body["details"]["jambonz_secret"]
        assert (secret["state"], secret["sampled"], secret["decrypted"]) == ("mismatch", 3, 0)
        assert SECRET_VARIABLE in secret["detail"] and WRONG not in str(body)
        [family] = [
            f
            for f in text_string_to_metric_families(exposition)
            if f.name == "sipwatch_jambonz_secret_state"
        ]
        values = {s.labels["state"]: s.value for s in family.samples}
        assert values == {s.value: float(s is SecretState.MISMATCH) for s in SecretState}

        # a reload builds a new diagnoser: the metric follows it, registered only once
        again = make_diagnoser(config, metrics)
        assert again is not None
        await again.aclose()

        # the daemon reports the problem once, and alerts each device on its own cause
        sink = DaemonSink(config, metrics)
        records = []
        with capture_logs() as logs:
            for user in ("alice", "alice"):
                d = await diagnoser.diagnose(Symptom(user, realm, **CREDS_403))
                record = FailureRecord(
                    "inbound", user, realm, "203.0.113.9", 403, "Invalid credentials",
                    3, 1.0, 2.0, True, "",
                )  # fmt: skip
                records.append(alert_for(record, d))
                await sink.on_diagnosis(record, d)
        await sink.aclose()
        reported = [e for e in logs if e["event"] == "sipwatch configuration problem"]
        assert len(reported) == 1 and reported[0]["cause"] == SECRET_MISMATCH_CAUSE
        assert {a.cause_id for a in records} == {"credentials_mismatch"}
    finally:
        await runner.cleanup()
        await diagnoser.aclose()
