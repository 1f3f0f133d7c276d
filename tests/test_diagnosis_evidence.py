""" "Confirmed" only with direct evidence (issue 10, item 5), against the real MariaDB with the
jambonz tables and a real HTTP server playing the registration webhook."""

from __future__ import annotations

from typing import Any

from sipwatch.diagnosis.engine import Diagnosis, DiagnosisEngine
from sipwatch.diagnosis.jambonz import JambonzDb
from sipwatch.diagnosis.rules import default_rules_dir, load_rules
from sipwatch.diagnosis.symptom import Symptom
from tests.cli_support import sipwatch
from tests.jambonz_db import (
    TEST_SECRET,
    Seeder,
    WebhookServer,
    unique_realm,
)

RULES = load_rules(default_rules_dir())
AFTER_CHALLENGE_500 = {"status": 500, "challenged": True}
CREDS_403 = {"status": 403, "x_reason": "Invalid credentials", "challenged": True}


def engine(jambonz_db: JambonzDb, *, probes: bool) -> DiagnosisEngine:
    return DiagnosisEngine(
        RULES, db=jambonz_db, redis=None, secret=TEST_SECRET, webhook_probes=probes
    )


def ids(d: Diagnosis) -> list[str]:
    return [c.id for c in d.causes]


async def test_500_on_a_webhook_account_without_a_probe_is_only_suspected(
    seeder: Seeder, jambonz_db: JambonzDb, webhook_server: WebhookServer
) -> None:
    realm = unique_realm()
    hook = await seeder.webhook(webhook_server.url("empty"))  # answers {} -> SIP 500
    await seeder.account(realm, hook_sid=hook)
    d = await engine(jambonz_db, probes=False).diagnose(
        Symptom("bob", realm, **AFTER_CHALLENGE_500)
    )
    assert ids(d) == ["webhook_failed_unprobed"]
    cause = d.causes[0]
    assert cause.confidence == "suspected"
    assert "--webhook-probe" in cause.summary + " ".join(cause.fix_steps)
    # the webhook path never reads the clients table: no word about stored passwords
    text = (cause.summary + " ".join(cause.fix_steps)).lower()
    assert "plaintext" not in text and "unencrypted" not in text
    assert webhook_server.requests == []  # and nobody called the webhook

    # with the probe, the cause is known and confirmed
    d = await engine(jambonz_db, probes=True).diagnose(Symptom("bob", realm, **AFTER_CHALLENGE_500))
    assert ids(d) == ["webhook_bad_response"]
    assert d.causes[0].confidence == "confirmed"


async def test_log_only_500_is_suspected_and_says_what_confirms_it() -> None:
    d = await DiagnosisEngine(RULES, db=None, redis=None, secret=None).diagnose(
        Symptom("bob", "acme.example.com", **AFTER_CHALLENGE_500)
    )
    assert ids(d) == ["registrar_internal_error"]
    cause = d.causes[0]
    assert cause.confidence == "suspected"
    assert "SIPWATCH_DB_URL" in " ".join(cause.fix_steps)
    assert "--webhook-probe" in " ".join(cause.fix_steps)


async def test_a_webhook_that_accepts_any_credentials_is_a_critical_finding(
    seeder: Seeder, jambonz_db: JambonzDb, webhook_server: WebhookServer
) -> None:
    realm = unique_realm()
    hook = await seeder.webhook(webhook_server.url("ok"))  # "ok" to anything
    await seeder.account(realm, hook_sid=hook)
    d = await engine(jambonz_db, probes=True).diagnose(Symptom("carol", realm, **CREDS_403))
    assert ids(d) == ["webhook_accepts_any_credentials"]
    cause = d.causes[0]
    assert (cause.severity, cause.confidence) == ("critical", "confirmed")
    assert "webhook_denied" not in ids(d)  # a 403 next to it is not "the hook said fail"
    # the probe sent a made-up user and an all-zero digest, never a device's credentials
    [probe] = webhook_server.requests
    assert (
        '"username":"sipwatch-probe"' in probe["body"]
        and '"response":"' + "0" * 32 in (probe["body"])
    )

    # a healthy webhook (answers "fail" to the probe) does explain the 403
    realm2 = unique_realm()
    await seeder.account(realm2, hook_sid=await seeder.webhook(webhook_server.url("fail")))
    d = await engine(jambonz_db, probes=True).diagnose(Symptom("carol", realm2, **CREDS_403))
    assert ids(d) == ["webhook_denied"] and d.causes[0].confidence == "confirmed"


async def test_diagnose_without_probe_prints_suspected(
    seeder: Seeder, jambonz_database: str, webhook_server: WebhookServer, cli_env_for: Any
) -> None:
    realm = unique_realm()
    await seeder.account(realm, hook_sid=await seeder.webhook(webhook_server.url("empty")))
    r = await sipwatch(
        cli_env_for(jambonz_database), "diagnose", "--user", "bob", "--domain", realm,
        "--status", "500", "--challenged", "--no-webhook-probe",
    )  # fmt: skip
    assert r.rc == 0, r.all
    assert "1. [ERROR, suspected] webhook_failed_unprobed" in r.out
    assert "registrar_internal_error" not in r.out
