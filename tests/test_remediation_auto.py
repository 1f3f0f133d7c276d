"""The daemon's AutoRemediator end to end: the real rules and diagnosis engine over seeded
jambonz rows in MariaDB and registrations in Redis, then consider() in dry-run and on mode,
with the audit table, metrics and guardrails checked in the database itself."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from sipwatch.config import RemediationConfig
from sipwatch.diagnosis.db import Database, DbSettings
from sipwatch.diagnosis.engine import Diagnosis, DiagnosisEngine
from sipwatch.diagnosis.jambonz import JambonzDb
from sipwatch.diagnosis.redis_store import RegistrationStore
from sipwatch.diagnosis.rules import default_rules_dir, load_rules
from sipwatch.diagnosis.symptom import Symptom
from sipwatch.metrics import REMEDIATIONS, SipwatchMetrics
from sipwatch.remediation.auto import AutoRemediator
from sipwatch.remediation.registrar import RegistrarTarget
from tests.fake_docker import FakeDockerEngine, format_ts
from tests.jambonz_db import (
    TEST_SECRET,
    RedisSeeder,
    Seeder,
    unique_realm,
)
from tests.remediation_support import (
    bounded,
    count_clients,
    jambonz_decrypt,
    rem_config,
    rows,
    short_socket,
)

CREDS_403 = {"status": 403, "x_reason": "Invalid credentials", "challenged": True}


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def observe_remediation(self, action: str, result: str) -> None:
        self.calls.append((action, result))


@pytest.fixture
def engine(database: Database) -> DiagnosisEngine:
    return DiagnosisEngine(
        load_rules(default_rules_dir()),
        db=JambonzDb(database),
        redis=None,
        secret=TEST_SECRET,
        cache_ttl=0.0,
    )


@pytest.fixture
async def make(db_settings: DbSettings, redis_client: aioredis.Redis) -> AsyncIterator[Any]:
    made: list[AutoRemediator] = []

    async def factory(config: RemediationConfig, **kw: Any) -> AutoRemediator:
        options: dict[str, Any] = {
            "db": db_settings,
            "redis": redis_client,
            "secret": TEST_SECRET,
            "metrics": Recorder(),
            "leader_check_interval": 0.2,
            "leader_retry_interval": 0.2,
        }
        options.update(kw)
        auto = AutoRemediator(config, **options)
        await auto.start()
        made.append(auto)
        return auto

    try:
        yield factory
    finally:
        for auto in made:
            await auto.close()


async def audit_rows(database: str, user: str) -> list[dict[str, Any]]:
    return await rows(
        database,
        "SELECT * FROM sipwatch_audit WHERE sip_user = %s ORDER BY id",
        (user,),
    )


# --------------------------------------------------------------------------- dry-run


@bounded(30)
async def test_dry_run_changes_nothing_and_audits_what_it_would_do(
    seeder: Seeder, engine: DiagnosisEngine, make: Any, jambonz_database: str
) -> None:
    realm = unique_realm()
    acct = await seeder.account(realm, active=False)  # no reason: a slip, not a decision
    await seeder.client(acct, "dry1", stored="plain-dry-pass")
    auto = await make(rem_config(mode="dry-run"))
    with capture_logs() as logs:
        d1 = await engine.diagnose(Symptom("dry1", realm, status=403, challenged=False))
        dec1 = await auto.consider(d1, user="dry1", domain=realm, source_ip="198.51.100.4")
    assert dec1.action == "activate_account" and dec1.result == "dry_run", dec1
    assert dec1.change is not None and dec1.change.statements
    [acc] = await rows(
        jambonz_database, "SELECT is_active FROM accounts WHERE account_sid = %s", (acct,)
    )
    assert acc["is_active"] == 0  # nothing changed
    [row] = await audit_rows(jambonz_database, "dry1")
    assert (row["action"], row["result"], row["cause"]) == (
        "activate_account",
        "dry_run",
        "account_inactive",
    )
    assert row["actor"].startswith("sipwatch-auto@")
    assert "UPDATE accounts SET is_active = 1" in row["statements"]
    assert json.loads(row["before_state"])["account"]["is_active"] == 0
    audit_lines = [e for e in logs if e["event"] == "remediation_audit"]
    assert audit_lines and audit_lines[0]["result"] == "dry_run"
    assert auto.metrics.calls == [("activate_account", "dry_run")]  # type: ignore[union-attr]
    assert auto.leader is not None and not auto.leader.is_leader  # dry-run does not campaign

    # A plaintext password in dry-run: the audit never holds the password.
    realm2 = unique_realm()
    await seeder.client(await seeder.account(realm2), "dry2", stored="plain-dry-2")
    d2 = await engine.diagnose(Symptom("dry2", realm2))
    dec2 = await auto.consider(d2, user="dry2", domain=realm2, source_ip=None)
    assert dec2.result == "dry_run" and dec2.action == "reencrypt_password"
    [row2] = await audit_rows(jambonz_database, "dry2")
    assert "plain-dry-2" not in json.dumps(row2, default=str)
    stored = await rows(
        jambonz_database, "SELECT password FROM clients WHERE username = %s", ("dry2",)
    )
    assert stored[0]["password"] == "plain-dry-2"


# ------------------------------------------------------------------------------ on


@bounded(30)
async def test_on_reencrypts_audits_and_confirms_with_a_later_200(
    seeder: Seeder, engine: DiagnosisEngine, make: Any, jambonz_database: str
) -> None:
    realm = unique_realm()
    acct = await seeder.account(realm)
    await seeder.client(acct, "on1", stored="plain-on-pass")
    metrics = SipwatchMetrics(process_metrics=False)
    auto = await make(rem_config(), metrics=metrics)
    diag = await engine.diagnose(Symptom("on1", realm, status=500, challenged=True))
    assert diag.top is not None and diag.top.id == "client_password_plaintext"
    dec = await auto.consider(diag, user="on1", domain=realm, source_ip="198.51.100.5")
    assert dec.result == "applied" and dec.verified, dec
    [row] = await rows(
        jambonz_database, "SELECT password FROM clients WHERE account_sid = %s", (acct,)
    )
    assert jambonz_decrypt(str(row["password"]), TEST_SECRET) == "plain-on-pass"
    assert (
        metrics.registry.get_sample_value(
            REMEDIATIONS, {"action": "reencrypt_password", "result": "applied"}
        )
        == 1.0
    )
    # the diagnosis no longer finds the cause, and a second consider() does nothing
    again = await engine.diagnose(Symptom("on1", realm, status=500, challenged=True))
    assert "client_password_plaintext" not in [c.id for c in again.causes]
    assert await auto.on_registered("other", realm) is None
    verified = await auto.on_registered("on1", realm.upper())
    assert verified is not None and verified.verified
    audit = await audit_rows(jambonz_database, "on1")
    assert [r["result"] for r in audit] == ["applied", "verified"]
    assert audit[0]["source_ip"] == "198.51.100.5"
    text = json.dumps(audit, default=str)
    assert "plain-on-pass" not in text and TEST_SECRET not in text
    assert json.loads(audit[0]["after_state"])["client"]["password"].startswith("encrypted")


@bounded(30)
async def test_on_create_client_hands_the_password_over_in_a_0600_file(
    seeder: Seeder, engine: DiagnosisEngine, make: Any, jambonz_database: str, tmp_path: Path
) -> None:
    realm = unique_realm()
    acct = await seeder.account(realm)
    diag = await engine.diagnose(Symptom("newdev", realm, **CREDS_403))  # type: ignore[arg-type]
    assert diag.top is not None and diag.top.id == "client_missing"

    no_dir = await make(rem_config())
    dec = await no_dir.consider(diag, user="newdev", domain=realm, source_ip=None)
    assert dec.result == "refused" and dec.reason == "no_password_delivery"
    await no_dir.close()
    assert await count_clients(jambonz_database, acct) == 0

    auto = await make(rem_config(), password_dir=tmp_path)
    with capture_logs() as logs:
        dec = await auto.consider(diag, user="newdev", domain=realm, source_ip=None)
    assert dec.result == "applied", dec
    [pw_file] = list(tmp_path.iterdir())
    assert stat.S_IMODE(os.stat(pw_file).st_mode) == 0o600
    password = pw_file.read_text().strip()
    assert len(password) >= 24
    [row] = await rows(
        jambonz_database,
        "SELECT password FROM clients WHERE account_sid = %s AND username = %s",
        (acct, "newdev"),
    )
    assert jambonz_decrypt(str(row["password"]), TEST_SECRET) == password
    assert password not in json.dumps(logs, default=str)
    assert password not in json.dumps(await audit_rows(jambonz_database, "newdev"), default=str)
    assert password not in dec.detail and password not in repr(dec)


@bounded(30)
async def test_on_flush_and_restart_through_the_daemon_path(
    seeder: Seeder,
    redis_seeder: RedisSeeder,
    redis_client: aioredis.Redis,
    registration_store: RegistrationStore,
    database: Database,
    engine: DiagnosisEngine,
    make: Any,
    tmp_path: Path,
) -> None:
    async with FakeDockerEngine(short_socket(tmp_path)) as docker:
        reg = docker.add_container("sbc-sip-sidecar", image="jambonz/sbc-sip-sidecar:0.9.6")
        reg.started_at = format_ts(time.time_ns() - 7200 * 1_000_000_000)
        auto = await make(
            rem_config(),
            docker=RegistrarTarget(url=docker.url, project="jambonz", grace=1, api_timeout=5),
        )
        realm = unique_realm()
        diag = await engine.diagnose(Symptom("dev503", realm, status=503))
        dec = await auto.consider(diag, user="dev503", domain=realm, source_ip=None)
        assert (dec.action, dec.result) == ("restart_registrar", "applied"), dec
        assert [e["Action"] for e in docker.events if e["id"] == reg.id][-1] == "restart"
        # registrar cool-down: another user's 503 does not restart it again
        dec2 = await auto.consider(diag, user="dev503b", domain=realm, source_ip=None)
        assert (dec2.result, dec2.reason) == ("noop", "nothing_to_do"), dec2
        assert sum(1 for e in docker.events if e["Action"] == "restart") == 1

    # A cached registration that the database now refuses is flushed.
    realm2 = unique_realm()
    acct2 = await seeder.account(realm2)
    await seeder.client(acct2, "cached", active=False)
    await redis_seeder.register(f"cached@{realm2}")
    eng = DiagnosisEngine(
        engine.rules,
        db=JambonzDb(database),
        redis=registration_store,
        secret=TEST_SECRET,
        cache_ttl=0.0,
    )
    diag2 = await eng.diagnose(Symptom("cached", realm2))
    ids = [c.id for c in diag2.causes]
    assert "stale_cached_registration" in ids, ids
    auto2 = await make(rem_config())
    # The daemon acts on the most likely remediable cause only (here: activate_client);
    # keep just the cache cause to exercise the flush through the same path.
    flush_only = dataclasses.replace(
        diag2, causes=[c for c in diag2.causes if c.id == "stale_cached_registration"]
    )
    dec3 = await auto2.consider(flush_only, user="cached", domain=realm2, source_ip=None)
    assert (dec3.action, dec3.result) == ("flush_cached_registration", "applied"), dec3
    assert await redis_client.exists(f"user:cached@{realm2}") == 0


# ------------------------------------------------------------------------ guardrails


def _as_user(template: Diagnosis, user: str) -> Diagnosis:
    causes = [
        dataclasses.replace(c, evidence={**c.evidence, "lookup_username": user})
        for c in template.causes
    ]
    return dataclasses.replace(template, user=user, causes=causes)


@bounded(120)
async def test_scanner_flood_of_1000_usernames_creates_zero_rows(
    seeder: Seeder, engine: DiagnosisEngine, make: Any, jambonz_database: str, tmp_path: Path
) -> None:
    realm = unique_realm()
    acct = await seeder.account(realm)
    # The most permissive policy possible: everything allow-listed, generous budgets.
    auto = await make(
        rem_config(
            allow_users=("*",),
            allow_realms=("*",),
            max_changes_per_hour=10_000,
            max_changes_per_action_per_hour=10_000,
        ),
        password_dir=tmp_path,
    )
    results: dict[tuple[str, str], int] = {}
    scanner_diag: Diagnosis | None = None
    for i in range(1000):
        user = f"scan{i:04d}"
        symptom = Symptom(
            user,
            realm,
            source_ip="203.0.113.66",
            user_agent="friendly-scanner",
            distinct_users_from_ip=i + 1,
            **CREDS_403,  # type: ignore[arg-type]
        )
        diag = await engine.diagnose(symptom)
        assert diag.attack, [c.id for c in diag.causes]
        scanner_diag = diag
        dec = await auto.consider(diag, user=user, domain=realm, source_ip="203.0.113.66")
        results[(dec.result, dec.reason)] = results.get((dec.result, dec.reason), 0) + 1
    # The scanner rule suppresses client_missing, so there is not even a candidate action.
    assert results == {("skipped", "attack"): 1000}
    assert await count_clients(jambonz_database, acct) == 0

    # Even if a scanner's diagnosis carried a remediable cause, the guard refuses it.
    assert scanner_diag is not None
    template = await engine.diagnose(Symptom("probe", realm, **CREDS_403))  # type: ignore[arg-type]
    assert template.top is not None and template.top.remediation == "create_client"
    results.clear()
    for i in range(1000):
        user = f"scan{i:04d}"
        doctored = dataclasses.replace(
            _as_user(template, user), causes=[*scanner_diag.causes, *template.causes]
        )
        assert doctored.attack
        dec = await auto.consider(doctored, user=user, domain=realm, source_ip="203.0.113.66")
        results[(dec.result, dec.reason)] = results.get((dec.result, dec.reason), 0) + 1
    assert results == {("refused", "attack"): 1000}
    assert await count_clients(jambonz_database, acct) == 0
    assert list(tmp_path.iterdir()) == []
    # the audit trail holds the attack once, not a thousand times
    audit = await rows(
        jambonz_database,
        "SELECT result, reason FROM sipwatch_audit WHERE realm = %s",
        (realm,),
    )
    assert audit == [{"result": "refused", "reason": "attack"}]
    calls = auto.metrics.calls
    assert len(calls) == 1000 and set(calls) == {("create_client", "refused")}


@bounded(120)
async def test_flood_without_scanner_signal_is_held_by_allow_list_and_budgets(
    seeder: Seeder, engine: DiagnosisEngine, make: Any, jambonz_database: str, tmp_path: Path
) -> None:
    realm = unique_realm()
    acct = await seeder.account(realm)
    template = await engine.diagnose(Symptom("probe", realm, **CREDS_403))  # type: ignore[arg-type]
    assert template.top is not None and template.top.id == "client_missing"
    assert not template.attack

    # 1) not allow-listed: nothing at all
    strict = await make(
        rem_config(allow_realms=(), allow_users=("100?@" + realm,)), password_dir=tmp_path
    )
    for i in range(1000):
        user = f"guess{i}"
        dec = await strict.consider(
            _as_user(template, user), user=user, domain=realm, source_ip="192.0.2.1"
        )
        assert dec.result == "refused" and dec.reason == "not_allowed"
    assert await count_clients(jambonz_database, acct) == 0
    refusals = await rows(
        jambonz_database,
        "SELECT COUNT(*) AS n FROM sipwatch_audit WHERE realm = %s AND reason = 'not_allowed'",
        (realm,),
    )
    assert refusals[0]["n"] <= 100  # the audit refusal budget
    assert strict.audit.suppressed >= 900
    await strict.close()

    # 2) allow-listed but budgets: at most max_changes_per_action_per_hour clients
    budgeted = await make(
        rem_config(max_changes_per_action_per_hour=3, max_changes_per_hour=10),
        password_dir=tmp_path,
    )
    outcome: dict[str, int] = {}
    for i in range(200):
        user = f"dev{i}"
        dec = await budgeted.consider(
            _as_user(template, user), user=user, domain=realm, source_ip="192.0.2.1"
        )
        outcome[dec.reason] = outcome.get(dec.reason, 0) + 1
    assert outcome == {"ok": 3, "action_rate_limit": 197}
    assert await count_clients(jambonz_database, acct) == 3


@bounded(30)
async def test_kill_switch_mode_off_and_cooldown(
    seeder: Seeder, engine: DiagnosisEngine, make: Any, jambonz_database: str, tmp_path: Path
) -> None:
    realm = unique_realm()
    acct = await seeder.account(realm)
    await seeder.client(acct, "ks", active=False)
    diag = await engine.diagnose(Symptom("ks", realm, **CREDS_403))  # type: ignore[arg-type]
    assert diag.top is not None and diag.top.remediation == "activate_client"

    off = await make(rem_config(mode="off"))
    dec = await off.consider(diag, user="ks", domain=realm, source_ip=None)
    assert dec.result == "skipped" and dec.reason == "mode_off"
    assert off.leader is not None and not off.leader.is_leader
    per_action_off = await make(rem_config(actions=MappingProxyType({"activate_client": "off"})))
    dec = await per_action_off.consider(diag, user="ks", domain=realm, source_ip=None)
    assert dec.result == "skipped"

    switch = tmp_path / "remediation.disabled"
    switch.touch()
    auto = await make(rem_config(kill_switch_file=str(switch), user_cooldown_seconds=3600.0))
    dec = await auto.consider(diag, user="ks", domain=realm, source_ip=None)
    assert dec.result == "refused" and dec.reason == "kill_switch"
    [row] = await rows(
        jambonz_database, "SELECT is_active FROM clients WHERE account_sid = %s", (acct,)
    )
    assert row["is_active"] == 0
    switch.unlink()
    dec = await auto.consider(diag, user="ks", domain=realm, source_ip=None)
    assert dec.result == "applied"
    dec = await auto.consider(diag, user="ks", domain=realm, source_ip=None)
    assert dec.result == "refused" and dec.reason == "cooldown"
    audit = await audit_rows(jambonz_database, "ks")
    assert [(r["result"], r["reason"]) for r in audit] == [
        ("refused", "kill_switch"),
        ("applied", "ok"),
        ("refused", "cooldown"),
    ]


# ------------------------------------------------------------------------ two daemons


@bounded(40)
async def test_two_daemons_only_the_leader_remediates(
    seeder: Seeder, engine: DiagnosisEngine, make: Any, jambonz_database: str
) -> None:
    realm = unique_realm()
    acct = await seeder.account(realm)
    for name in ("ld1", "ld2", "ld3"):
        await seeder.client(acct, name, active=False)
    config = rem_config()  # both daemons share the lock name
    first = await make(config, instance="sbc-a")
    assert first.leader is not None
    assert await first.leader.try_acquire()
    second = await make(config, instance="sbc-b")

    diag1 = await engine.diagnose(Symptom("ld1", realm, **CREDS_403))  # type: ignore[arg-type]
    dec = await second.consider(diag1, user="ld1", domain=realm, source_ip=None)
    assert dec.result == "refused" and dec.reason == "not_leader"
    dec = await first.consider(diag1, user="ld1", domain=realm, source_ip=None)
    assert dec.result == "applied"

    # The leader exits: its lock is released and the other instance takes over.
    await first.close()
    diag2 = await engine.diagnose(Symptom("ld2", realm, **CREDS_403))  # type: ignore[arg-type]
    dec = await second.consider(diag2, user="ld2", domain=realm, source_ip=None)
    assert dec.result == "applied", dec
    assert second.leader is not None and second.leader.is_leader
    active = await rows(
        jambonz_database,
        "SELECT username, is_active FROM clients WHERE account_sid = %s ORDER BY username",
        (acct,),
    )
    assert [(r["username"], r["is_active"]) for r in active] == [
        ("ld1", 1),
        ("ld2", 1),
        ("ld3", 0),
    ]
    instances = await rows(
        jambonz_database,
        "SELECT sip_user, instance, result FROM sipwatch_audit WHERE realm = %s ORDER BY id",
        (realm,),
    )
    assert [(r["sip_user"], r["instance"], r["result"]) for r in instances] == [
        ("ld1", "sbc-b", "refused"),
        ("ld1", "sbc-a", "applied"),
        ("ld2", "sbc-b", "applied"),
    ]


@bounded(30)
async def test_from_config_builds_a_working_remediator(
    seeder: Seeder, engine: DiagnosisEngine, jambonz_database: str, tmp_path: Path
) -> None:
    from sipwatch.config import parse_config
    from tests.jambonz_db import db_url

    realm = unique_realm()
    acct = await seeder.account(realm)
    await seeder.client(acct, "cfg1", active=False)
    config = parse_config(
        f"""
        [database]
        url = "{db_url(jambonz_database)}"
        [redis]
        url = "redis://127.0.0.1:6379/13"
        [jambonz]
        encryption_secret = "{TEST_SECRET}"
        [remediation]
        mode = "on"
        allow_realms = ["{realm}"]
        kill_switch_file = "{tmp_path / "off"}"
        leader_lock_name = "sipwatch-test-{os.getpid()}-{time.time_ns()}"
        """
    )
    metrics = Recorder()
    auto = AutoRemediator.from_config(config, metrics=metrics)
    await auto.start()
    try:
        diag = await engine.diagnose(Symptom("cfg1", realm, **CREDS_403))  # type: ignore[arg-type]
        dec = await auto.consider(diag, user="cfg1", domain=realm, source_ip=None)
        assert (dec.action, dec.result) == ("activate_client", "applied"), dec
        assert auto.status()["leader"] is True
        assert auto.status()["changes_last_hour"] == {"activate_client": 1}
    finally:
        await auto.close()
    assert metrics.calls == [("activate_client", "applied")]
    [row] = await rows(
        jambonz_database, "SELECT is_active FROM clients WHERE account_sid = %s", (acct,)
    )
    assert row["is_active"] == 1


def _diag(user: str, domain: str, *remediations: str | None) -> Diagnosis:
    from sipwatch.diagnosis.engine import Cause

    causes = [
        Cause(
            id=f"cause{i}",
            severity="error",
            confidence="confirmed",
            title="t",
            summary="s",
            evidence={},
            fix_steps=(),
            fix_command=None,
            remediation=r,
            priority=i,
        )
        for i, r in enumerate(remediations)
    ]
    return Diagnosis(user=user, domain=domain, causes=causes, unknown=[])


@bounded(20)
async def test_missing_backends_unknown_actions_and_no_cause(make: Any) -> None:
    realm = unique_realm()
    auto = await make(rem_config(), redis=None)
    dec = await auto.consider(
        _diag("nr", realm, "flush_cached_registration"), user="nr", domain=realm, source_ip=None
    )
    assert (dec.result, dec.reason) == ("refused", "not_configured"), dec
    dec = await auto.consider(
        _diag("nr", realm, "rm_rf", "activate_client"), user="nr", domain=realm, source_ip=None
    )
    assert (dec.result, dec.reason) == ("skipped", "unknown_action")
    dec = await auto.consider(_diag("nr", realm, None), user="nr", domain=realm, source_ip=None)
    assert (dec.result, dec.reason) == ("skipped", "no_remediation")
    assert auto.metrics.calls == [("flush_cached_registration", "refused")]
