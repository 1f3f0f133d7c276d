"""Each remediation action against the real MariaDB (jambonz schema) and Redis: plan shows
masked SQL and before/after, apply changes exactly what it showed in one transaction and
verifies it, re-running finds nothing to do, planning changes nothing."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import pytest
import redis.asyncio as aioredis

from sipwatch.config import Secret
from sipwatch.diagnosis.crypto import encrypt
from sipwatch.diagnosis.db import DbSettings, DbUnavailable
from sipwatch.remediation.actions import (
    ACTIONS,
    Backends,
    PlanState,
    RemediationError,
    Target,
    check_password,
    generate_password,
    get_action,
    render_sql,
)
from sipwatch.remediation.writer import DbWriter
from tests.jambonz_db import (
    TEST_SECRET,
    RedisSeeder,
    Seeder,
    new_sid,
    unique_realm,
)
from tests.remediation_support import (
    bounded,
    count_clients,
    jambonz_decrypt,
    rows,
)


async def client_rows(database: str, account_sid: str, username: str) -> list[dict[str, object]]:
    return await rows(
        database,
        "SELECT client_sid, password, is_active FROM clients"
        " WHERE account_sid = %s AND username = %s",
        (account_sid, username),
    )


# ------------------------------------------------------------------------------ create_client


@bounded(20)
async def test_create_client_encrypted_verified_and_idempotent(
    seeder: Seeder, backends: Backends, jambonz_database: str
) -> None:
    realm = unique_realm()
    acct = await seeder.account(realm)
    password = generate_password()
    action = get_action("create_client")
    t = Target(user="alice", domain=realm)

    change = await action.plan(backends, t)
    assert change.state is PlanState.CHANGE
    assert len(change.statements) == 1
    stmt = change.statements[0]
    assert stmt.startswith("INSERT INTO clients (client_sid, account_sid, username, password")
    assert f"'{acct}', 'alice', '****', 1)" in stmt
    assert change.before["clients"] == []
    assert change.after["password"].startswith("encrypted")
    assert await client_rows(jambonz_database, acct, "alice") == []  # planning wrote nothing

    outcome = await action.apply(backends, t, password=password)
    assert outcome.applied and outcome.verified, outcome.detail
    assert password.reveal() not in json.dumps(outcome.change.to_dict())
    [row] = await client_rows(jambonz_database, acct, "alice")
    assert row["is_active"] == 1
    stored = str(row["password"])
    assert password.reveal() not in stored
    # The registrar's own scheme, written out independently, gives the password back.
    assert jambonz_decrypt(stored, TEST_SECRET) == password.reveal()
    assert set(json.loads(stored)) == {"iv", "content"}
    assert len(json.loads(stored)["iv"]) == 32

    again = await action.apply(backends, t, password=generate_password())
    assert not again.applied and again.change.state is PlanState.NOOP
    assert (await action.plan(backends, t)).state is PlanState.NOOP
    assert await count_clients(jambonz_database, acct) == 1
    # The second (unused) password did not replace the first one.
    [row2] = await client_rows(jambonz_database, acct, "alice")
    assert row2["password"] == stored


@bounded(20)
async def test_create_client_uses_parent_domain_account_and_auth_username(
    seeder: Seeder, backends: Backends, jambonz_database: str
) -> None:
    parent = unique_realm()
    acct = await seeder.account(parent)
    t = Target(user="1001", domain=f"eu.{parent}", username="dev-1001")
    outcome = await get_action("create_client").apply(
        backends, t, password=Secret("a-long-password")
    )
    assert outcome.applied and outcome.verified
    [row] = await client_rows(jambonz_database, acct, "dev-1001")
    assert jambonz_decrypt(str(row["password"]), TEST_SECRET) == "a-long-password"
    assert await client_rows(jambonz_database, acct, "1001") == []


@bounded(30)
async def test_create_client_concurrent_applies_create_one_row(
    seeder: Seeder, backends: Backends, jambonz_database: str
) -> None:
    realm = unique_realm()
    acct = await seeder.account(realm)
    action = get_action("create_client")
    t = Target(user="racer", domain=realm)
    outcomes = await asyncio.gather(
        *(action.apply(backends, t, password=generate_password()) for _ in range(5))
    )
    assert sum(o.applied for o in outcomes) == 1
    assert all(o.applied or o.change.state is PlanState.NOOP for o in outcomes)
    assert await count_clients(jambonz_database, acct) == 1


@bounded(20)
async def test_create_client_blocked_cases_write_nothing(
    seeder: Seeder, backends: Backends, jambonz_database: str
) -> None:
    action = get_action("create_client")
    pw = generate_password()
    # no account for the realm
    c = await action.plan(backends, Target("bob", unique_realm()))
    assert c.state is PlanState.BLOCKED and "no account" in c.summary
    # account authenticating through a registration webhook
    realm = unique_realm()
    hook = await seeder.webhook("https://hooks.example.com/reg")
    acct = await seeder.account(realm, hook_sid=hook)
    c = await action.plan(backends, Target("bob", realm))
    assert c.state is PlanState.BLOCKED and "webhook" in c.summary
    out = await action.apply(backends, Target("bob", realm), password=pw)
    assert not out.applied
    assert await count_clients(jambonz_database, acct) == 0
    # usernames sipwatch refuses to create
    realm2 = unique_realm()
    acct2 = await seeder.account(realm2)
    for bad in ("' OR 1=1 --", "a" * 65, "bob@x", "", "-x", "al ice", "\x1b[31mred"):
        c = await action.plan(backends, Target(bad, realm2))
        assert c.state is PlanState.BLOCKED, bad
    # no encryption secret: never write a password the registrar cannot read
    no_secret = replace(backends, secret=None)
    c = await action.plan(no_secret, Target("carol", realm2))
    assert c.state is PlanState.BLOCKED and "secret" in c.summary
    out = await action.apply(no_secret, Target("carol", realm2), password=pw)
    assert not out.applied
    assert await count_clients(jambonz_database, acct2) == 0


async def test_create_client_without_password_is_refused(backends: Backends) -> None:
    with pytest.raises(RemediationError):
        await get_action("create_client").apply(backends, Target("a", "b.example.com"))


def test_password_rules_and_generation() -> None:
    generated = {generate_password().reveal() for _ in range(50)}
    assert len(generated) == 50
    for pw in generated:
        assert len(pw) >= 24 and check_password(pw) is None
        assert all(ch.isalnum() or ch in "-_" for ch in pw)
    assert check_password("short") is not None
    assert check_password("x" * 129) is not None
    assert check_password("has\nnewline!") is not None
    assert repr(generate_password()) == "Secret('****')"


def test_actions_match_the_config_keys_and_the_rules() -> None:
    from sipwatch.config import REMEDIATION_ACTIONS
    from sipwatch.diagnosis.rules import KNOWN_ACTIONS, default_rules_dir, load_rules

    assert tuple(ACTIONS) == REMEDIATION_ACTIONS
    assert set(ACTIONS) == KNOWN_ACTIONS
    used = {r.remediation for r in load_rules(default_rules_dir()) if r.remediation}
    assert used == set(ACTIONS)  # every action answers a cause, every cause has its action
    with pytest.raises(ValueError, match="unknown remediation action"):
        get_action("drop_everything")


def test_render_sql_masks_and_quotes() -> None:
    from sipwatch.remediation.actions import HIDDEN

    sql = "UPDATE t SET a = %s, b = %s WHERE c = %s AND d = %s"
    text = render_sql(sql, (HIDDEN, "o'brien", None, 1))
    assert text == "UPDATE t SET a = '****', b = 'o''brien' WHERE c = NULL AND d = 1"
    with pytest.raises(ValueError):
        render_sql(sql, (1,))


# ------------------------------------------------------------------------- reencrypt_password


@bounded(20)
async def test_reencrypt_plaintext_password_keeps_the_password(
    seeder: Seeder, backends: Backends, jambonz_database: str
) -> None:
    realm = unique_realm()
    acct = await seeder.account(realm)
    sid = await seeder.client(acct, "dave", stored="plainpass-123")
    action = get_action("reencrypt_password")
    t = Target("dave", realm)

    change = await action.plan(backends, t)
    assert change.state is PlanState.CHANGE
    assert change.statements == (
        f"UPDATE clients SET password = '****' WHERE client_sid = '{sid}' AND password = '****'",
    )
    assert change.before["client"]["password"].startswith("plaintext")
    assert "plainpass-123" not in json.dumps(change.to_dict())
    [before] = await client_rows(jambonz_database, acct, "dave")
    assert before["password"] == "plainpass-123"  # planning changed nothing

    outcome = await action.apply(backends, t)
    assert outcome.applied and outcome.verified, outcome.detail
    assert "plainpass-123" not in json.dumps(outcome.change.to_dict()) + outcome.detail
    [row] = await client_rows(jambonz_database, acct, "dave")
    assert row["client_sid"] == sid
    assert jambonz_decrypt(str(row["password"]), TEST_SECRET) == "plainpass-123"

    again = await action.apply(backends, t)
    assert not again.applied and again.change.state is PlanState.NOOP
    [row2] = await client_rows(jambonz_database, acct, "dave")
    assert row2["password"] == row["password"]


@bounded(20)
async def test_reencrypt_numeric_plaintext_and_blocked_forms(
    seeder: Seeder, backends: Backends, jambonz_database: str
) -> None:
    realm = unique_realm()
    acct = await seeder.account(realm)
    await seeder.client(acct, "num", stored="12345")
    out = await get_action("reencrypt_password").apply(backends, Target("num", realm))
    assert out.applied and out.verified
    [row] = await client_rows(jambonz_database, acct, "num")
    assert jambonz_decrypt(str(row["password"]), TEST_SECRET) == "12345"

    await seeder.client(acct, "empty", password=None)
    await seeder.client(acct, "bad", stored='{"iv":"zz","content":"00"}')
    for name in ("empty", "bad"):
        c = await get_action("reencrypt_password").plan(backends, Target(name, realm))
        assert c.state is PlanState.BLOCKED, name
    # Duplicate usernames: jambonz reads the first row only; sipwatch leaves it to a human.
    await seeder.client(acct, "dup", stored="p1-plaintext")
    await seeder.client(acct, "dup", stored="p2-plaintext")
    c = await get_action("reencrypt_password").plan(backends, Target("dup", realm))
    assert c.state is PlanState.BLOCKED and "2 clients" in c.summary
    dup = await client_rows(jambonz_database, acct, "dup")
    assert sorted(str(r["password"]) for r in dup) == ["p1-plaintext", "p2-plaintext"]


@bounded(20)
async def test_reencrypt_with_legacy_ctr(fresh_seeder: Seeder, fresh_writer: DbWriter) -> None:
    from sipwatch.diagnosis.crypto import decrypt

    seeder, writer = fresh_seeder, fresh_writer
    realm = unique_realm()
    acct = await seeder.account(realm)
    # LEGACY_CRYPTO installs store AES-256-CTR rows: that is what proves the secret there.
    # One row proves it only when it is long enough that a wrong secret would not turn it
    # into text by chance (secret_proof._chance): 23 bytes, under 1 in 10**6
    stored = encrypt("other-device-password-1", TEST_SECRET, legacy_ctr=True)
    await seeder.client(acct, "other", stored=stored)
    await seeder.client(acct, "old", stored="ctr-password")
    b = Backends(db=writer, secret=Secret(TEST_SECRET), legacy_crypto=True)
    out = await get_action("reencrypt_password").apply(b, Target("old", realm))
    assert out.applied and out.verified
    assert "CTR" in out.change.after["client"]["password"]
    [row] = await rows(
        writer.settings.database,
        "SELECT password FROM clients WHERE account_sid = %s AND username = 'old'",
        (acct,),
    )
    assert decrypt(str(row["password"]), TEST_SECRET, legacy_ctr=True) == "ctr-password"


# --------------------------------------------------------------------------- activate_client


@bounded(20)
async def test_activate_client(seeder: Seeder, backends: Backends, jambonz_database: str) -> None:
    realm = unique_realm()
    acct = await seeder.account(realm)
    sid = await seeder.client(acct, "erin", active=False)
    action = get_action("activate_client")
    t = Target("erin", realm)
    change = await action.plan(backends, t)
    assert change.state is PlanState.CHANGE
    assert change.statements == (
        f"UPDATE clients SET is_active = 1 WHERE client_sid = '{sid}' AND is_active = 0",
    )
    assert change.before["client"]["is_active"] == 0 and change.after["client"]["is_active"] == 1
    assert (await client_rows(jambonz_database, acct, "erin"))[0]["is_active"] == 0

    outcomes = await asyncio.gather(action.apply(backends, t), action.apply(backends, t))
    assert sorted(o.applied for o in outcomes) == [False, True]
    assert all(o.verified for o in outcomes)
    assert (await client_rows(jambonz_database, acct, "erin"))[0]["is_active"] == 1
    assert (await action.plan(backends, t)).state is PlanState.NOOP
    # no such client
    c = await action.plan(backends, Target("nobody", realm))
    assert c.state is PlanState.BLOCKED


# -------------------------------------------------------------------------- activate_account


@bounded(20)
async def test_activate_account(seeder: Seeder, backends: Backends, jambonz_database: str) -> None:
    realm = unique_realm()
    acct = await seeder.account(realm, active=False)  # no deactivation reason recorded
    action = get_action("activate_account")
    t = Target("frank", realm)
    change = await action.plan(backends, t)
    assert change.state is PlanState.CHANGE
    assert change.before["account"]["deactivated_reason"] is None
    assert change.statements == (
        f"UPDATE accounts SET is_active = 1 WHERE account_sid = '{acct}' AND is_active = 0"
        " AND deactivated_reason <=> NULL",
    )
    out = await action.apply(backends, t)
    assert out.applied and out.verified
    [row] = await rows(
        jambonz_database, "SELECT is_active FROM accounts WHERE account_sid = %s", (acct,)
    )
    assert row["is_active"] == 1
    assert not (await action.apply(backends, t)).applied


# ------------------------------------------------------------------------- set_account_realm


@bounded(20)
async def test_set_account_realm_only_on_the_named_account(
    seeder: Seeder, backends: Backends, jambonz_database: str
) -> None:
    # Other test modules use their own databases, so this one controls the realm-less set.
    existing = await rows(
        jambonz_database, "SELECT account_sid FROM accounts WHERE sip_realm IS NULL"
    )
    for r in existing:
        await rows(
            jambonz_database,
            "UPDATE accounts SET sip_realm = %s WHERE account_sid = %s",
            (unique_realm("parked"), r["account_sid"]),
        )
    acct = await seeder.account(None)
    realm = unique_realm()
    action = get_action("set_account_realm")
    # the only account without a realm is still not chosen for the operator
    refused = await action.apply(backends, Target("gina", realm))
    assert refused.change.state is PlanState.REFUSED and not refused.applied
    assert refused.change.reason == "implicit_target"
    assert acct in refused.change.summary and "--account" in refused.change.summary
    t = Target("gina", realm.upper(), account_sid=acct)
    change = await action.plan(backends, t)
    assert change.state is PlanState.CHANGE, change.summary
    assert change.statements == (
        f"UPDATE accounts SET sip_realm = '{realm}' WHERE account_sid = '{acct}'"
        " AND sip_realm IS NULL",
    )
    out = await action.apply(backends, t)
    assert out.applied and out.verified, out.detail
    [row] = await rows(
        jambonz_database, "SELECT sip_realm FROM accounts WHERE account_sid = %s", (acct,)
    )
    assert row["sip_realm"] == realm
    assert (await action.plan(backends, t)).state is PlanState.NOOP

    # Two realm-less accounts: both listed, the operator names one.
    a1 = await seeder.account(None)
    a2 = await seeder.account(None)
    realm2 = unique_realm()
    c = await action.plan(backends, Target("h", realm2))
    assert c.state is PlanState.REFUSED and a1 in c.summary and a2 in c.summary
    out = await action.apply(backends, Target("h", realm2, account_sid=a2))
    assert out.applied and out.verified
    got = await rows(
        jambonz_database,
        "SELECT account_sid, sip_realm FROM accounts WHERE account_sid IN (%s, %s)",
        (a1, a2),
    )
    assert {r["account_sid"]: r["sip_realm"] for r in got} == {a1: None, a2: realm2}


@bounded(20)
async def test_set_account_realm_refuses_to_break_or_steal(
    seeder: Seeder, backends: Backends, jambonz_database: str
) -> None:
    action = get_action("set_account_realm")
    old = unique_realm()
    acct = await seeder.account(old)
    other = await seeder.account(unique_realm())
    new = unique_realm()
    c = await action.plan(backends, Target("i", new, account_sid=acct))
    assert c.state is PlanState.BLOCKED and "replace" in c.summary
    # taken by another account
    taken = await rows(
        jambonz_database, "SELECT sip_realm FROM accounts WHERE account_sid = %s", (other,)
    )
    c = await action.plan(backends, Target("i", str(taken[0]["sip_realm"]), account_sid=acct))
    assert c.state is PlanState.BLOCKED and "another account" in c.summary
    for bad in ("203.0.113.9", "not a realm", "x" * 140 + ".example.com", "-bad.example.com"):
        assert (await action.plan(backends, Target("i", bad, account_sid=acct))).state is (
            PlanState.BLOCKED
        )
    # explicit replacement
    out = await action.apply(backends, Target("i", new, account_sid=acct, replace_realm=True))
    assert out.applied and out.verified
    assert out.change.statements[0].endswith(f"AND sip_realm = '{old}'")
    [row] = await rows(
        jambonz_database, "SELECT sip_realm FROM accounts WHERE account_sid = %s", (acct,)
    )
    assert row["sip_realm"] == new


# --------------------------------------------------------------------- flush_cached_registration


@bounded(20)
async def test_flush_cached_registration(
    redis_seeder: RedisSeeder, redis_client: aioredis.Redis, backends: Backends
) -> None:
    realm = unique_realm()
    aor = f"kate@{realm}"
    await redis_seeder.register(aor, proxy="sip:198.51.100.9:5062")
    action = get_action("flush_cached_registration")
    t = Target("kate", realm)
    change = await action.plan(backends, t)
    assert change.state is PlanState.CHANGE
    assert change.statements == (
        "MULTI",
        f"DEL user:{aor}",
        f"ZREM active-user user:{aor}",
        "EXEC",
    )
    reg = change.before["registration"]
    assert reg["cached"] and reg["in_active_set"] and reg["proxy"] == "sip:198.51.100.9:5062"
    assert await redis_client.exists(f"user:{aor}") == 1  # planning kept it

    out = await action.apply(backends, t)
    assert out.applied and out.verified
    assert await redis_client.exists(f"user:{aor}") == 0
    assert await redis_client.zscore("active-user", f"user:{aor}") is None
    again = await action.apply(backends, t)
    assert not again.applied and again.change.state is PlanState.NOOP


@bounded(20)
async def test_flush_removes_a_stale_set_member_alone(
    redis_client: aioredis.Redis, backends: Backends
) -> None:
    aor = f"leo@{unique_realm()}"
    await redis_client.zadd("active-user", {f"user:{aor}": 1})
    try:
        out = await get_action("flush_cached_registration").apply(backends, Target(*aor.split("@")))
        assert out.applied and out.verified
        assert await redis_client.zscore("active-user", f"user:{aor}") is None
    finally:
        await redis_client.zrem("active-user", f"user:{aor}")


@bounded(20)
async def test_unreachable_backends_fail_cleanly(writer: DbWriter) -> None:
    from tests.jambonz_db import closed_port

    dead = aioredis.from_url(f"redis://127.0.0.1:{closed_port()}/0", socket_connect_timeout=1)
    try:
        with pytest.raises(RemediationError):
            await get_action("flush_cached_registration").plan(
                Backends(redis=dead), Target("a", "b.example.com")
            )
    finally:
        await dead.aclose()
    bad_db = DbWriter(
        DbSettings(port=closed_port(), database="nope", connect_timeout=1, read_timeout=1)
    )
    with pytest.raises(DbUnavailable):
        await get_action("activate_client").plan(
            Backends(db=bad_db, secret=Secret(TEST_SECRET)), Target("a", "b.example.com")
        )
    from sipwatch.remediation.actions import BackendMissing

    for action_id in ACTIONS:
        with pytest.raises(BackendMissing):
            await get_action(action_id).plan(Backends(), Target("a", "b.example.com"))


@bounded(20)
async def test_writer_rolls_back_on_error(
    writer: DbWriter, seeder: Seeder, jambonz_database: str
) -> None:
    realm = unique_realm()
    acct = await seeder.account(realm)
    with pytest.raises(RuntimeError):
        async with writer.transaction() as tx:
            await tx.execute(
                "INSERT INTO clients (client_sid, account_sid, username, password)"
                " VALUES (%s, %s, %s, %s)",
                (new_sid(), acct, "ghost", encrypt("x", TEST_SECRET)),
            )
            raise RuntimeError("boom")
    assert await count_clients(jambonz_database, acct) == 0
    # a read-only transaction is refused by the server itself
    from sipwatch.diagnosis.db import DbError

    with pytest.raises(DbError):
        async with writer.transaction(readonly=True) as tx:
            await tx.execute("UPDATE accounts SET is_active = 1 WHERE account_sid = %s", (acct,))
