"""Remediation never acts on a decision a person made, nor on a target nobody named (issue 10,
items 3, 4 and 7): ``sipwatch fix`` and the daemon against the real MariaDB."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sipwatch.diagnosis.db import DbSettings
from sipwatch.diagnosis.engine import Cause, Diagnosis
from sipwatch.remediation.actions import DEACTIVATED_ON_PURPOSE, IMPLICIT_TARGET
from sipwatch.remediation.auto import AutoRemediator
from tests.cli_support import audit_lines, sipwatch
from tests.jambonz_db import TEST_SECRET, Seeder, unique_realm
from tests.remediation_support import bounded, rem_config, rows

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


async def account_row(database: str, sid: str) -> dict[str, Any]:
    [row] = await rows(
        database,
        "SELECT is_active, deactivated_reason, sip_realm FROM accounts WHERE account_sid = %s",
        (sid,),
    )
    return row


def diagnosis_naming(action: str, cause_id: str, user: str, domain: str) -> Diagnosis:
    """What the engine says for these failures; the daemon acts on the top cause."""
    cause = Cause(
        cause_id, "error", "confirmed", "t", "s", {}, (), None, action, 30
    )  # fmt: skip
    return Diagnosis(user=user, domain=domain, causes=[cause], unknown=[])


# ------------------------------------------------------------- item 3: deactivated on purpose


@bounded(120)
async def test_an_account_deactivated_with_a_reason_needs_a_named_and_confirmed_action(
    seeder: Seeder, jambonz_database: str, cli_env_for: Any
) -> None:
    realm = unique_realm()
    acct = await seeder.account(realm, active=False, deactivated_reason="unpaid invoice")
    env = cli_env_for(jambonz_database)
    base = ["fix", "--user", "1001", "--domain", realm]

    # the default action (from the diagnosis), even with --yes: refused
    r = await sipwatch(env, *base, "--yes")
    assert r.rc == 5, r.all
    assert "account_inactive" in r.out and "deactivated on purpose" in r.out
    assert "unpaid invoice" in r.out and "--action activate_account" in r.out
    assert (await account_row(jambonz_database, acct))["is_active"] == 0
    [line] = audit_lines(r.err)
    assert (line["result"], line["reason"]) == ("refused", DEACTIVATED_ON_PURPOSE)

    # named, but --yes means nobody read the reason: refused
    named = [*base, "--action", "activate_account"]
    r = await sipwatch(env, *named, "--yes")
    assert r.rc == 5 and "cannot confirm a deactivation reason" in r.out, r.all
    # named, the operator reads the reason and answers a plain "y": not confirmed
    r = await sipwatch(env, *named, stdin=b"y\n")
    assert r.rc == 1 and "Not applied." in r.out, r.all
    assert "Reason: 'unpaid invoice'" in r.out
    assert "Type 'reactivate'" in r.err
    assert (await account_row(jambonz_database, acct))["is_active"] == 0

    # named and confirmed after reading the reason
    r = await sipwatch(env, *named, stdin=b"reactivate\n")
    assert r.rc == 0 and "Applied and verified" in r.out, r.all
    row = await account_row(jambonz_database, acct)
    assert (row["is_active"], row["deactivated_reason"]) == (1, "unpaid invoice")
    assert "deactivated_reason <=> 'unpaid invoice'" in r.out  # the confirmed reason is checked


@bounded(60)
async def test_auto_mode_never_reactivates_an_account_deactivated_on_purpose(
    seeder: Seeder, db_settings: DbSettings, jambonz_database: str
) -> None:
    realm = unique_realm()
    acct = await seeder.account(realm, active=False, deactivated_reason="abuse report #12")
    diagnosis = diagnosis_naming("activate_account", "account_inactive", "2002", realm)
    for mode in ("dry-run", "on"):
        auto = AutoRemediator(rem_config(mode=mode), db=db_settings, secret=TEST_SECRET)
        await auto.start()
        try:
            decision = await auto.consider(diagnosis, user="2002", domain=realm, source_ip=None)
        finally:
            await auto.close()
        assert (decision.result, decision.reason) == ("refused", DEACTIVATED_ON_PURPOSE), mode
        assert "abuse report #12" in decision.detail
    assert (await account_row(jambonz_database, acct))["is_active"] == 0


# --------------------------------------------------------------------- item 4: no implicit target


@bounded(120)
async def test_set_account_realm_never_picks_the_account(
    fresh_seeder: Seeder, fresh_database: str, cli_env_for: Any
) -> None:
    # a fresh jambonz install: the seed "default account" has no realm
    default = await fresh_seeder.account(None)
    realm = unique_realm("newco")
    env = cli_env_for(fresh_database, SIPWATCH_REDIS_URL=None)
    r = await sipwatch(env, "fix", "--user", "3003", "--domain", realm, "--yes")
    assert r.rc == 5, r.all
    assert "realm_unknown" in r.out and "never picks the account" in r.out
    assert default in r.out  # the candidates are listed
    assert (await account_row(fresh_database, default))["sip_realm"] is None
    [line] = audit_lines(r.err)
    assert (line["result"], line["reason"]) == ("refused", IMPLICIT_TARGET)

    r = await sipwatch(
        env, "fix", "--user", "3003", "--domain", realm, "--account", default, "--yes"
    )
    assert r.rc == 0, r.all
    assert (await account_row(fresh_database, default))["sip_realm"] == realm


@bounded(60)
async def test_auto_mode_refuses_to_give_a_realm_to_any_account(
    fresh_seeder: Seeder, fresh_db_settings: DbSettings, fresh_database: str
) -> None:
    default = await fresh_seeder.account(None)
    realm = unique_realm("newco")
    diagnosis = diagnosis_naming("set_account_realm", "realm_unknown", "3003", realm)
    auto = AutoRemediator(rem_config(), db=fresh_db_settings, secret=TEST_SECRET)
    await auto.start()
    try:
        decision = await auto.consider(diagnosis, user="3003", domain=realm, source_ip=None)
    finally:
        await auto.close()
    assert (decision.result, decision.reason) == ("refused", IMPLICIT_TARGET)
    assert (await account_row(fresh_database, default))["sip_realm"] is None


# ------------------------------------------------------------------------ item 7: small truths


@bounded(120)
async def test_create_client_preview_shows_no_made_up_client_sid(
    seeder: Seeder, jambonz_database: str, cli_env_for: Any, tmp_path: Path
) -> None:
    realm = unique_realm()
    acct = await seeder.account(realm)
    env = cli_env_for(jambonz_database)
    base = ["fix", "--user", "newphone", "--domain", realm, "--action", "create_client"]
    dry = await sipwatch(
        env, *base, "--generate", "--password-out", str(tmp_path / "a"), "--dry-run"
    )
    assert dry.rc == 0, dry.all
    [insert] = [ln for ln in dry.out.splitlines() if "INSERT INTO clients" in ln]
    assert "VALUES (<new client_sid>, " in insert
    assert not UUID.search(insert.split("VALUES", 1)[1].split(",", 1)[0])

    done = await sipwatch(env, *base, "--generate", "--password-out", str(tmp_path / "b"), "--yes")
    assert done.rc == 0, done.all
    [row] = await rows(
        jambonz_database,
        "SELECT client_sid FROM clients WHERE username = %s AND account_sid = %s",
        ("newphone", acct),
    )
    assert f"Applied and verified: client {row['client_sid']} created" in done.out


@bounded(60)
async def test_activating_an_active_client_says_nothing_to_do(
    seeder: Seeder, jambonz_database: str, cli_env_for: Any
) -> None:
    realm = unique_realm()
    await seeder.client(await seeder.account(realm), "awake")
    r = await sipwatch(
        cli_env_for(jambonz_database),
        "fix", "--user", "awake", "--domain", realm, "--action", "activate_client", "--yes",
    )  # fmt: skip
    assert r.rc == 0, r.all
    assert "Nothing to do." in r.out and "Applied" not in r.out
    assert audit_lines(r.err) == []


async def test_source_ip_must_be_an_ip_address(cli_env_for: Any, jambonz_database: str) -> None:
    env = cli_env_for(jambonz_database)
    for command in ("fix", "diagnose"):
        r = await sipwatch(
            env, command, "--user", "a", "--domain", "b.example.com", "--source-ip", "evil.example"
        )
        assert r.rc == 2, (command, r.all)
        assert "--source-ip: not an IP address: 'evil.example'" in r.err
