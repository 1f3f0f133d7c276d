"""The least-privilege MySQL grants documented in docs/remediation.md, run as written against
MariaDB: the read-only (+ audit) account can diagnose and dry-run but every write is refused;
the remediation account can run every database action and nothing beyond them."""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from sipwatch.config import Secret
from sipwatch.diagnosis.db import Database, DbError, DbSettings
from sipwatch.diagnosis.engine import DiagnosisEngine
from sipwatch.diagnosis.jambonz import JambonzDb
from sipwatch.diagnosis.rules import default_rules_dir, load_rules
from sipwatch.diagnosis.symptom import Symptom
from sipwatch.remediation.actions import Backends, PlanState, Target, generate_password, get_action
from sipwatch.remediation.audit import AuditRecord, AuditTrail
from sipwatch.remediation.auto import AutoRemediator
from sipwatch.remediation.leader import LeaderLock
from sipwatch.remediation.writer import DbWriter
from tests.jambonz_db import (
    TEST_SECRET,
    Seeder,
    admin_connect,
    create_database,
    drop_database,
    unique_name,
    unique_realm,
)
from tests.remediation_support import bounded, jambonz_decrypt, rem_config, rows

DOC = Path(__file__).resolve().parents[1] / "docs" / "remediation.md"


def doc_block(title: str) -> list[str]:
    """The SQL statements of the code block headed ``-- sipwatch grants: <title>``."""
    text = DOC.read_text(encoding="utf-8")
    m = re.search(r"```sql\n-- sipwatch grants: " + re.escape(title) + r"\n(.*?)```", text, re.S)
    assert m, f"no '{title}' grants block in {DOC}"
    return [s.strip() for s in m.group(1).split(";") if s.strip()]


@dataclass
class Account:
    user: str
    password: str
    settings: DbSettings


async def run_as_root(database: str, statements: list[str]) -> None:
    conn = await admin_connect(database)
    try:
        async with conn.cursor() as cur:
            for stmt in statements:
                await cur.execute(stmt)
    finally:
        conn.close()


def adapt(statements: list[str], database: str, user: str, password: str) -> list[str]:
    out = []
    for stmt in statements:
        stmt = stmt.replace("jambones.", f"{database}.")
        stmt = stmt.replace("'sipwatch'@'%'", f"'{user}'@'127.0.0.1'")
        out.append(stmt.replace("'change-me'", f"'{password}'"))
    return out


@pytest.fixture(scope="module")
def grants_db() -> str:
    return unique_name()


@pytest.fixture
async def accounts(grants_db: str) -> AsyncIterator[tuple[str, Account, Account]]:
    await create_database(grants_db)
    made: list[str] = []
    try:
        result = []
        for role, blocks in (
            ("dry", ("read-only", "audit table")),
            ("rw", ("read-only", "audit table", "remediation on")),
        ):
            user = f"swt_{role}_{secrets.token_hex(5)}"
            password = secrets.token_urlsafe(12)
            statements = [s for b in blocks for s in doc_block(b)]
            made.append(user)
            await run_as_root(grants_db, adapt(statements, grants_db, user, password))
            settings = DbSettings(
                user=user,
                password=password,
                database=grants_db,
                readonly=False,
                connect_timeout=2,
                read_timeout=3,
                query_timeout=4,
            )
            result.append(Account(user, password, settings))
        yield grants_db, result[0], result[1]
    finally:
        conn = await admin_connect()
        try:
            async with conn.cursor() as cur:
                for user in made:
                    await cur.execute(f"DROP USER IF EXISTS '{user}'@'127.0.0.1'")
        finally:
            conn.close()
        await drop_database(grants_db)


async def seed(database: str) -> tuple[str, str, str]:
    conn = await admin_connect(database)
    try:
        s = Seeder(conn)
        realm = unique_realm()
        acct = await s.account(realm)
        await s.client(acct, "plain", stored="grant-plain-pw")
        await s.client(acct, "off", active=False)
        off_realm = unique_realm()
        await s.account(off_realm, active=False)
        return realm, acct, off_realm
    finally:
        conn.close()


@bounded(60)
async def test_documented_grants(accounts: tuple[str, Account, Account]) -> None:
    database, dry, rw = accounts
    realm, acct, off_realm = await seed(database)
    secret = Secret(TEST_SECRET)

    # --- the read-only (+ audit) account: diagnosis works -----------------------------
    ro_db = Database(replace(dry.settings, readonly=True))
    try:
        engine = DiagnosisEngine(
            load_rules(default_rules_dir()), db=JambonzDb(ro_db), redis=None, secret=TEST_SECRET
        )
        diag = await engine.diagnose(Symptom("plain", realm))
        assert diag.errors == () and [c.id for c in diag.causes] == ["client_password_plaintext"]
    finally:
        await ro_db.close()
    # ... plans work, every write is refused and nothing changes
    dry_b = Backends(db=DbWriter(dry.settings), secret=secret)
    assert (await get_action("reencrypt_password").plan(dry_b, Target("plain", realm))).state is (
        PlanState.CHANGE
    )
    for action, target in (
        ("reencrypt_password", Target("plain", realm)),
        ("activate_client", Target("off", realm)),
        ("activate_account", Target("x", off_realm)),
        ("create_client", Target("newbie", realm)),
    ):
        with pytest.raises(DbError):
            await get_action(action).apply(dry_b, target, password=generate_password())
    found = await rows(
        database,
        "SELECT username, password, is_active FROM clients WHERE account_sid = %s"
        " ORDER BY username",
        (acct,),
    )
    assert [(r["username"], r["is_active"]) for r in found] == [("off", 0), ("plain", 1)]
    assert found[1]["password"] == "grant-plain-pw"
    # ... and a dry-run daemon runs fully: audit table created and written
    auto = AutoRemediator(
        rem_config(mode="dry-run"), db=dry.settings, secret=TEST_SECRET, instance="dry"
    )
    await auto.start()
    try:
        dec = await auto.consider(diag, user="plain", domain=realm, source_ip=None)
    finally:
        await auto.close()
    assert dec.result == "dry_run", dec
    audit = await rows(database, "SELECT result FROM sipwatch_audit WHERE instance = 'dry'")
    assert [a["result"] for a in audit] == ["dry_run"]

    # --- the remediation account: every database action works --------------------------
    rw_b = Backends(db=DbWriter(rw.settings), secret=secret)
    pw = generate_password()
    for action, target, password in (
        ("reencrypt_password", Target("plain", realm), None),
        ("activate_client", Target("off", realm), None),
        ("activate_account", Target("x", off_realm), None),
        ("create_client", Target("newbie", realm), pw),
    ):
        out = await get_action(action).apply(rw_b, target, password=password)
        assert out.applied and out.verified, (action, out.detail)
    conn = await admin_connect(database)
    try:
        realmless = await Seeder(conn).account(None)
    finally:
        conn.close()
    new_realm = unique_realm()
    out = await get_action("set_account_realm").apply(
        rw_b, Target("y", new_realm, account_sid=realmless)
    )
    assert out.applied and out.verified, out.detail
    [newbie] = await rows(database, "SELECT password FROM clients WHERE username = %s", ("newbie",))
    assert jambonz_decrypt(str(newbie["password"]), TEST_SECRET) == pw.reveal()
    trail = AuditTrail(writer=DbWriter(rw.settings), table=True, instance="rw")
    await trail.record(AuditRecord("create_client", "applied", "test", "ok"))
    assert len(await rows(database, "SELECT id FROM sipwatch_audit WHERE instance = 'rw'")) == 1
    lock = LeaderLock(rw.settings, f"sipwatch-test-{secrets.token_hex(6)}")
    try:
        assert await lock.try_acquire()
    finally:
        await lock.release()

    # ... and nothing beyond those columns
    writer = DbWriter(rw.settings)
    for sql, params in (
        ("UPDATE accounts SET name = %s WHERE account_sid = %s", ("renamed", acct)),
        ("UPDATE accounts SET webhook_secret = %s WHERE account_sid = %s", ("x", acct)),
        ("UPDATE clients SET username = %s WHERE account_sid = %s", ("mallory", acct)),
        ("DELETE FROM clients WHERE account_sid = %s", (acct,)),
        ("INSERT INTO webhooks (webhook_sid, url) VALUES (%s, %s)", ("w" * 36, "http://x")),
        ("DROP TABLE clients", ()),
    ):
        with pytest.raises(DbError):
            async with writer.transaction() as tx:
                await tx.execute(sql, params)
    names = await rows(database, "SELECT name FROM accounts WHERE account_sid = %s", (acct,))
    assert names[0]["name"] != "renamed"
    left = await rows(database, "SELECT client_sid FROM clients WHERE account_sid = %s", (acct,))
    assert len(left) == 3
