"""Before any write that encrypts, sipwatch proves its secret is the registrar's (issue 10,
item 1): against the real MariaDB with the jambonz tables, through the actions, ``sipwatch
fix`` and the daemon's auto mode, with jambonz's own scheme (Node) reading what was written.

Each test owns a database: the proof samples every encrypted client password in it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from sipwatch.config import Secret
from sipwatch.diagnosis.crypto import encrypt
from sipwatch.diagnosis.db import Database, DbSettings
from sipwatch.diagnosis.engine import DiagnosisEngine
from sipwatch.diagnosis.jambonz import JambonzDb
from sipwatch.diagnosis.rules import default_rules_dir, load_rules
from sipwatch.diagnosis.secret_proof import SECRET_VARIABLE
from sipwatch.diagnosis.symptom import Symptom
from sipwatch.remediation.actions import (
    SECRET_MISMATCH,
    SECRET_UNPROVEN,
    Backends,
    PlanState,
    Target,
    generate_password,
    get_action,
)
from sipwatch.remediation.auto import AutoRemediator
from sipwatch.remediation.writer import DbWriter
from tests.cli_support import audit_lines, sipwatch
from tests.jambonz_db import TEST_SECRET, Seeder, unique_realm
from tests.node_crypto import node
from tests.remediation_support import bounded, rem_config, rows

WRONG = "not-the-jambonz-secret-9d1e"
OLDER = "an-older-jambonz-secret-77aa"
PLAIN = "plain-device-pw-1"
LEGACY_JAMBONZ = "the-jambonz-secret-of-a-legacy-install"


async def raw_password(database: str, username: str) -> tuple[Any, str]:
    """The stored value and its bytes in hex, read past every layer of sipwatch."""
    [row] = await rows(
        database,
        "SELECT password, HEX(password) AS hex FROM clients WHERE username = %s",
        (username,),
    )
    return row["password"], row["hex"]


async def seed(seeder: Seeder, others: dict[str, int], stored: Sequence[str] = ()) -> str:
    """An account with a plaintext client 'pt' and other clients encrypted per secret (and
    clients with the ``stored`` values as they are)."""
    realm = unique_realm()
    acct = await seeder.account(realm)
    await seeder.client(acct, "pt", stored=PLAIN)
    for secret, count in others.items():
        for i in range(count):
            await seeder.client(acct, f"o{i}{secret[:3]}", stored=encrypt(f"pw-{i}", secret))
    for i, value in enumerate(stored):
        await seeder.client(acct, f"s{i}", stored=value)
    return realm


def node_decrypts(stored: str, secret: str) -> str:
    res = node("decrypt", secret, stored)
    assert res.returncode == 0, res.stderr
    return res.stdout


# ------------------------------------------------------------------------------ actions


@bounded(30)
async def test_no_other_row_decrypts_refuses_and_leaves_the_row_byte_identical(
    fresh_seeder: Seeder, fresh_writer: DbWriter, fresh_database: str
) -> None:
    realm = await seed(fresh_seeder, {TEST_SECRET: 3})
    before = await raw_password(fresh_database, "pt")
    b = Backends(db=fresh_writer, secret=Secret(WRONG))
    for action, target in (
        ("reencrypt_password", Target("pt", realm)),
        ("create_client", Target("newbie", realm)),
    ):
        out = await get_action(action).apply(b, target, password=generate_password())
        assert not out.applied
        assert (out.change.state, out.change.reason) == (PlanState.REFUSED, SECRET_MISMATCH)
        assert SECRET_VARIABLE in out.change.summary and "none of the 3" in out.change.summary
        assert WRONG not in str(out.change.to_dict()) and TEST_SECRET not in str(
            out.change.to_dict()
        )
    assert await raw_password(fresh_database, "pt") == before
    assert await rows(fresh_database, "SELECT 1 FROM clients WHERE username = 'newbie'") == []


@bounded(30)
async def test_some_rows_decrypt_the_key_is_proven_and_the_others_are_reported(
    fresh_seeder: Seeder, fresh_writer: DbWriter, fresh_database: str
) -> None:
    realm = await seed(fresh_seeder, {TEST_SECRET: 2, OLDER: 1})
    odd = await rows(fresh_database, "SELECT client_sid FROM clients WHERE username = 'o0an-'")
    b = Backends(db=fresh_writer, secret=Secret(TEST_SECRET))
    action = get_action("reencrypt_password")
    plan = await action.plan(b, Target("pt", realm))
    assert plan.state is PlanState.CHANGE
    [note] = plan.notes
    assert "2 of the 3 encrypted client passwords sampled decrypt" in note
    assert odd[0]["client_sid"] in note and "set their passwords again" in note
    out = await action.apply(b, Target("pt", realm))
    assert out.applied and out.verified, out.detail
    stored, _ = await raw_password(fresh_database, "pt")
    assert node_decrypts(stored, TEST_SECRET) == PLAIN  # jambonz's own scheme reads it


@bounded(30)
async def test_all_rows_decrypt_create_client_writes_a_row_node_decrypts(
    fresh_seeder: Seeder, fresh_writer: DbWriter, fresh_database: str
) -> None:
    realm = await seed(fresh_seeder, {TEST_SECRET: 2})
    b = Backends(db=fresh_writer, secret=Secret(TEST_SECRET))
    password = generate_password()
    plan = await get_action("create_client").plan(b, Target("newbie", realm), password=password)
    assert "2 of the 2 encrypted client passwords sampled decrypt" in plan.notes[0]
    out = await get_action("create_client").apply(b, Target("newbie", realm), password=password)
    assert out.applied and out.verified, out.detail
    stored, _ = await raw_password(fresh_database, "newbie")
    assert node_decrypts(stored, TEST_SECRET) == password.reveal()


@bounded(30)
async def test_nothing_to_prove_with_needs_the_operators_trust(
    fresh_seeder: Seeder, fresh_writer: DbWriter, fresh_database: str
) -> None:
    realm = await seed(fresh_seeder, {})  # a fresh install: no encrypted password yet
    before = await raw_password(fresh_database, "pt")
    b = Backends(db=fresh_writer, secret=Secret(TEST_SECRET))
    out = await get_action("reencrypt_password").apply(b, Target("pt", realm))
    assert (out.applied, out.change.reason) == (False, SECRET_UNPROVEN)
    assert "--trust-secret" in out.change.summary
    assert await raw_password(fresh_database, "pt") == before
    out = await get_action("reencrypt_password").apply(b, Target("pt", realm, trust_secret=True))
    assert out.applied and out.verified
    assert "--trust-secret" in out.change.notes[0]


@bounded(30)
async def test_legacy_crypto_a_wrong_secret_that_decrypts_one_row_by_chance_writes_nothing(
    fresh_seeder: Seeder, fresh_writer: DbWriter, fresh_database: str
) -> None:
    # A LEGACY_CRYPTO (AES-CTR) jambonz with fifty 8-character passwords; sipwatch has the
    # wrong secret, and one row (fixed IV 870) happens to decrypt to printable text with it.
    # "1 of 50 decrypt" once judged "partial", which allowed encryption: the password would
    # have been written with a secret the registrar does not have.
    legacy = [
        encrypt(f"pw{iv:06d}", LEGACY_JAMBONZ, legacy_ctr=True, iv=iv.to_bytes(16, "big"))
        for iv in range(850, 900)
    ]
    realm = await seed(fresh_seeder, {}, legacy)
    before = await raw_password(fresh_database, "pt")
    b = Backends(db=fresh_writer, secret=Secret(TEST_SECRET), legacy_crypto=True)
    out = await get_action("reencrypt_password").apply(b, Target("pt", realm))
    assert (out.applied, out.change.reason) == (False, SECRET_UNPROVEN), out.change.summary
    assert "1 of the 50 encrypted client passwords sampled decrypt" in out.change.summary
    assert "--trust-secret" in out.change.summary
    assert await raw_password(fresh_database, "pt") == before
    # with jambonz's own secret every row decrypts: proven, and the write goes ahead
    b = Backends(db=fresh_writer, secret=Secret(LEGACY_JAMBONZ), legacy_crypto=True)
    out = await get_action("reencrypt_password").apply(b, Target("pt", realm))
    assert out.applied and out.verified, out.detail
    stored, _ = await raw_password(fresh_database, "pt")
    assert node("decrypt", LEGACY_JAMBONZ, stored, True).stdout == PLAIN


# ------------------------------------------------------------------------- sipwatch fix


@bounded(90)
async def test_fix_with_the_wrong_secret_refuses_exits_refused_and_audits(
    fresh_seeder: Seeder, fresh_database: str, cli_env_for: Any
) -> None:
    realm = await seed(fresh_seeder, {TEST_SECRET: 2})
    before = await raw_password(fresh_database, "pt")
    env = cli_env_for(fresh_database, SIPWATCH_JAMBONZ_ENCRYPTION_SECRET=WRONG)
    r = await sipwatch(
        env, "fix", "--user", "pt", "--domain", realm, "--action", "reencrypt_password", "--yes"
    )
    assert r.rc == 5, r.all  # ExitCode.REFUSED
    assert "Applied" not in r.out
    assert f"sipwatch's secret ({SECRET_VARIABLE}) is not the one jambonz uses" in r.out
    assert WRONG not in r.all and TEST_SECRET not in r.all and PLAIN not in r.all
    assert await raw_password(fresh_database, "pt") == before
    [line] = audit_lines(r.err)
    assert (line["result"], line["reason"]) == ("refused", SECRET_MISMATCH)
    table = await rows(fresh_database, "SELECT result, reason, action FROM sipwatch_audit")
    assert [(a["result"], a["reason"], a["action"]) for a in table] == [
        ("refused", SECRET_MISMATCH, "reencrypt_password")
    ]


@bounded(90)
async def test_fix_on_a_database_without_encrypted_passwords_asks_for_trust_secret(
    fresh_seeder: Seeder, fresh_database: str, cli_env_for: Any
) -> None:
    realm = await seed(fresh_seeder, {})
    env = cli_env_for(fresh_database)
    args = ["fix", "--user", "pt", "--domain", realm, "--yes"]
    r = await sipwatch(env, *args)
    assert r.rc == 5 and "--trust-secret" in r.out, r.all
    assert (await raw_password(fresh_database, "pt"))[0] == PLAIN
    r = await sipwatch(env, *args, "--trust-secret")
    assert r.rc == 0 and "Applied and verified" in r.out, r.all
    stored, _ = await raw_password(fresh_database, "pt")
    assert node_decrypts(stored, TEST_SECRET) == PLAIN


@bounded(90)
async def test_a_row_written_by_fix_decrypts_with_jambonz_own_scheme(
    fresh_seeder: Seeder, fresh_database: str, cli_env_for: Any
) -> None:
    realm = await seed(fresh_seeder, {TEST_SECRET: 1, OLDER: 1})
    r = await sipwatch(
        cli_env_for(fresh_database), "fix", "--user", "pt", "--domain", realm, "--yes"
    )
    assert r.rc == 0, r.all
    assert "1 of the 2 encrypted client passwords sampled decrypt" in r.out
    stored, _ = await raw_password(fresh_database, "pt")
    assert node_decrypts(stored, TEST_SECRET) == PLAIN
    assert node("decrypt", WRONG, stored).returncode != 0  # bad decrypt with any other key


# ----------------------------------------------------------------------------- auto mode


@pytest.mark.parametrize(
    ("others", "secret", "reason"),
    [({TEST_SECRET: 2}, WRONG, SECRET_MISMATCH), ({}, TEST_SECRET, SECRET_UNPROVEN)],
    ids=["disproven", "unproven"],
)
@bounded(60)
async def test_auto_mode_never_encrypts_with_an_unproven_secret(
    fresh_seeder: Seeder,
    fresh_db_settings: DbSettings,
    fresh_database: str,
    others: dict[str, int],
    secret: str,
    reason: str,
) -> None:
    realm = await seed(fresh_seeder, others)
    db = Database(fresh_db_settings)
    engine = DiagnosisEngine(
        load_rules(default_rules_dir()), db=JambonzDb(db), redis=None, secret=secret
    )
    try:
        diagnosis = await engine.diagnose(Symptom("pt", realm, status=500, challenged=True))
    finally:
        await db.close()
    auto = AutoRemediator(rem_config(), db=fresh_db_settings, secret=secret, instance="auto")
    await auto.start()
    try:
        decision = await auto.consider(diagnosis, user="pt", domain=realm, source_ip=None)
    finally:
        await auto.close()
    assert decision.action == "reencrypt_password"
    assert (decision.result, decision.reason) == ("refused", reason), decision
    assert (await raw_password(fresh_database, "pt"))[0] == PLAIN
    table = await rows(fresh_database, "SELECT result, reason FROM sipwatch_audit")
    assert [(a["result"], a["reason"]) for a in table] == [("refused", reason)]


def test_the_remediation_doc_states_the_proof_and_what_is_never_automatic() -> None:
    from pathlib import Path

    from sipwatch.remediation import actions

    doc = (Path(__file__).resolve().parents[1] / "docs" / "remediation.md").read_text()
    proof = doc.split("## Before anything is encrypted: the secret proof", 1)[1].split("\n## ")[0]
    for verdict in ("proven", "partial", "mismatch", "unproven"):
        assert f"| {verdict} |" in proof
    assert SECRET_VARIABLE in proof and "--trust-secret" in proof
    never = doc.split("## What is never done automatically, and why", 1)[1].split("\n## ")[0]
    for reason in (
        actions.SECRET_MISMATCH,
        actions.SECRET_UNPROVEN,
        actions.DEACTIVATED_ON_PURPOSE,
        actions.IMPLICIT_TARGET,
    ):
        assert f"`{reason}`" in never
