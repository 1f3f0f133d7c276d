"""``sipwatch fix ...`` (``python -m sipwatch fix``) as a real subprocess against the real
MariaDB and Redis (and the fake Docker Engine for the registrar restart)."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import secrets
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from sipwatch.diagnosis.db import DbSettings
from sipwatch.remediation.auto import AutoRemediator
from tests.cli_support import ROOT, Result, audit_lines, sipwatch
from tests.conftest import CliEnv
from tests.fake_docker import FakeDockerEngine, format_ts
from tests.jambonz_db import (
    TEST_SECRET,
    Seeder,
    closed_port,
    unique_realm,
)
from tests.remediation_support import (
    bounded,
    cleanup_registration,
    count_clients,
    jambonz_decrypt,
    rem_config,
    rows,
    short_socket,
)


@pytest.fixture
def cli_env(jambonz_database: str, cli_env_for: CliEnv) -> dict[str, str]:
    return cli_env_for(jambonz_database)


async def fix(env: dict[str, str], *args: str, stdin: bytes = b"", timeout: float = 60) -> Result:
    return await sipwatch(env, "fix", *args, stdin=stdin, timeout=timeout)


async def client(database: str, acct: str, username: str) -> list[dict[str, Any]]:
    return await rows(
        database,
        "SELECT password, is_active FROM clients WHERE account_sid = %s AND username = %s",
        (acct, username),
    )


# ------------------------------------------------------------------------ reencrypt


@bounded(90)
async def test_dry_run_then_fix_a_plaintext_password(
    seeder: Seeder, cli_env: dict[str, str], jambonz_database: str
) -> None:
    realm = unique_realm()
    acct = await seeder.account(realm)
    await seeder.client(acct, "pt-user", stored="my-plain-secret")

    dry = await fix(cli_env, "--user", "pt-user", "--domain", realm, "--dry-run")
    assert dry.rc == 0, dry.all
    assert "client_password_plaintext" in dry.out  # the diagnosis is shown
    assert "Change (reencrypt_password)" in dry.out
    assert "UPDATE clients SET password = '****' WHERE client_sid = " in dry.out
    assert "Dry run: nothing was changed." in dry.out
    assert "my-plain-secret" not in dry.all and TEST_SECRET not in dry.all
    assert (await client(jambonz_database, acct, "pt-user"))[0]["password"] == "my-plain-secret"
    [line] = audit_lines(dry.err)
    assert line["result"] == "dry_run" and line["actor"] == "operator:oncall via sipwatch fix"

    done = await fix(cli_env, "--user", "pt-user", "--domain", realm, "--yes")
    assert done.rc == 0, done.all
    assert "Applied and verified" in done.out
    assert "Diagnosis now: no configuration problem found" in done.out
    assert "my-plain-secret" not in done.all and TEST_SECRET not in done.all
    [row] = await client(jambonz_database, acct, "pt-user")
    assert jambonz_decrypt(str(row["password"]), TEST_SECRET) == "my-plain-secret"
    audit = await rows(
        jambonz_database,
        "SELECT result, actor, cause FROM sipwatch_audit WHERE sip_user = %s ORDER BY id",
        ("pt-user",),
    )
    assert [(a["result"], a["cause"]) for a in audit] == [
        ("dry_run", "client_password_plaintext"),
        ("applied", "client_password_plaintext"),
    ]

    again = await fix(cli_env, "--user", "pt-user", "--domain", realm, "--yes")
    assert again.rc == 1  # nothing left that sipwatch can fix
    assert "No cause found that sipwatch can fix" in again.out
    forced = await fix(
        cli_env, "--user", "pt-user", "--domain", realm, "--action", "reencrypt_password", "--yes"
    )
    assert forced.rc == 0 and "Nothing to do." in forced.out, forced.all
    [row2] = await client(jambonz_database, acct, "pt-user")
    assert row2["password"] == row["password"]


# ----------------------------------------------------------------------- create_client


@bounded(90)
async def test_create_client_with_generated_password_to_a_0600_file(
    seeder: Seeder, cli_env: dict[str, str], jambonz_database: str, tmp_path: Path
) -> None:
    realm = unique_realm()
    acct = await seeder.account(realm)
    pw_file = tmp_path / "device.pw"
    base = ["--user", "newphone", "--domain", realm, "--generate", "--yes"]

    # stdout is not a terminal and no --password-out: refused before anything changes
    r = await fix(cli_env, *base)
    assert r.rc == 2 and "--password-out" in r.err, r.all
    assert await count_clients(jambonz_database, acct) == 0

    r = await fix(cli_env, *base, "--password-out", str(pw_file))
    assert r.rc == 0, r.all
    assert "client_missing" in r.out and "Change (create_client)" in r.out
    assert "'newphone', '****', 1)" in r.out
    assert stat.S_IMODE(pw_file.stat().st_mode) == 0o600
    password = pw_file.read_text().strip()
    assert len(password) >= 24
    assert password not in r.all
    [row] = await client(jambonz_database, acct, "newphone")
    assert row["is_active"] == 1
    assert jambonz_decrypt(str(row["password"]), TEST_SECRET) == password
    audit = await rows(
        jambonz_database,
        "SELECT * FROM sipwatch_audit WHERE sip_user = %s AND realm = %s",
        ("newphone", realm),
    )
    assert [a["result"] for a in audit] == ["applied"]
    assert password not in json.dumps(audit, default=str)

    other = tmp_path / "second.pw"
    r = await fix(cli_env, *base, "--action", "create_client", "--password-out", str(other))
    assert r.rc == 0 and "Nothing to do." in r.out, r.all
    assert not other.exists()
    assert await count_clients(jambonz_database, acct) == 1

    r = await fix(  # never overwrite an existing file
        cli_env, *base, "--action", "create_client", "--password-out", str(pw_file)
    )
    assert r.rc == 2 and "already exists" in r.err


@bounded(60)
async def test_generated_password_is_shown_once_on_a_terminal(
    seeder: Seeder, cli_env: dict[str, str], jambonz_database: str
) -> None:
    realm = unique_realm()
    acct = await seeder.account(realm)
    master, slave = pty.openpty()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sipwatch",
            "fix",
            "--user",
            "ttyphone",
            "--domain",
            realm,
            "--generate",
            "--yes",
            stdin=subprocess.DEVNULL,
            stdout=slave,
            stderr=subprocess.PIPE,
            env=cli_env,
            cwd=str(ROOT),
        )
        os.close(slave)
        slave = -1
        chunks: list[bytes] = []

        def read_all() -> None:
            while True:
                try:
                    data = os.read(master, 4096)
                except OSError:  # EIO once the child closed the terminal
                    return
                if not data:
                    return
                chunks.append(data)

        async with asyncio.timeout(45):
            reader = asyncio.to_thread(read_all)
            _, (_, stderr) = await asyncio.gather(reader, proc.communicate())
        assert proc.returncode == 0, (b"".join(chunks), stderr)
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    terminal = b"".join(chunks).decode()
    marker = "New password for the device (shown once): "
    assert terminal.count(marker) == 1
    password = terminal.split(marker, 1)[1].split()[0]
    assert terminal.count(password) == 1
    [row] = await client(jambonz_database, acct, "ttyphone")
    assert jambonz_decrypt(str(row["password"]), TEST_SECRET) == password
    assert password not in stderr.decode()  # not in the audit line either


@bounded(60)
async def test_password_file_input(
    seeder: Seeder, cli_env: dict[str, str], jambonz_database: str, tmp_path: Path
) -> None:
    realm = unique_realm()
    acct = await seeder.account(realm)
    short = tmp_path / "short.pw"
    short.write_text("abc\n")
    r = await fix(
        cli_env, "--user", "filephone", "--domain", realm, "--password-file", str(short), "--yes"
    )
    assert r.rc == 2 and "at least 8" in r.err
    good = tmp_path / "good.pw"
    good.write_text("Chosen-By-Operator-42\n")
    r = await fix(
        cli_env, "--user", "filephone", "--domain", realm, "--password-file", str(good), "--yes"
    )
    assert r.rc == 0, r.all
    assert "Chosen-By-Operator-42" not in r.all
    [row] = await client(jambonz_database, acct, "filephone")
    assert jambonz_decrypt(str(row["password"]), TEST_SECRET) == "Chosen-By-Operator-42"
    r = await fix(cli_env, "--user", "x1", "--domain", realm, "--action", "create_client")
    assert r.rc == 2 and "--generate or --password-file" in r.err


# ------------------------------------------------------------------ confirmation, policy


@bounded(90)
async def test_confirmation_allow_list_note_and_kill_switch(
    seeder: Seeder, cli_env: dict[str, str], jambonz_database: str, tmp_path: Path
) -> None:
    realm = unique_realm()
    acct = await seeder.account(realm)
    await seeder.client(acct, "sleepy", active=False)
    args = ["--user", "sleepy", "--domain", realm]

    r = await fix(cli_env, *args, stdin=b"n\n")
    assert r.rc == 1 and "Not applied." in r.out, r.all
    assert "Apply this change? [y/N]" in r.err
    assert "UPDATE clients SET is_active = 1 WHERE client_sid = " in r.out
    # the config allow-lists only "allowed*": the explicit name on the command line decides
    assert "not covered by remediation.allow_users" in r.out
    assert (await client(jambonz_database, acct, "sleepy"))[0]["is_active"] == 0

    r = await fix(cli_env, *args, stdin=b"")  # EOF is a no
    assert r.rc == 1
    assert (await client(jambonz_database, acct, "sleepy"))[0]["is_active"] == 0

    (tmp_path / "remediation.disabled").touch()
    r = await fix(cli_env, *args, "--yes")
    assert r.rc == 5 and "kill switch" in r.out, r.all  # ExitCode.REFUSED
    assert (await client(jambonz_database, acct, "sleepy"))[0]["is_active"] == 0
    (tmp_path / "remediation.disabled").unlink()

    r = await fix(cli_env, *args, stdin=b"y\n")
    assert r.rc == 0 and "Applied and verified" in r.out, r.all
    assert (await client(jambonz_database, acct, "sleepy"))[0]["is_active"] == 1
    audit = await rows(
        jambonz_database,
        "SELECT result, reason FROM sipwatch_audit WHERE sip_user = %s ORDER BY id",
        ("sleepy",),
    )
    assert [(a["result"], a["reason"]) for a in audit] == [
        ("refused", "operator_declined"),
        ("refused", "operator_declined"),
        ("refused", "kill_switch"),
        ("applied", "ok"),
    ]


@bounded(60)
async def test_scanner_shaped_username_is_refused(
    seeder: Seeder, cli_env: dict[str, str], jambonz_database: str, tmp_path: Path
) -> None:
    realm = unique_realm()
    acct = await seeder.account(realm)
    # The engine classifies an implausible (SQL-shaped) username as a scanner; even with the
    # operator's --yes and --action, nothing is created for it.
    r = await fix(
        cli_env,
        "--user",
        "bob",
        "--domain",
        realm,
        "--auth-username",
        "' or 1=1--",
        "--action",
        "create_client",
        "--generate",
        "--password-out",
        str(tmp_path / "y.pw"),
        "--yes",
    )
    assert r.rc == 5, r.all  # ExitCode.REFUSED
    assert "Refused: the failure was classified as a scanner/attack" in r.out
    assert not (tmp_path / "y.pw").exists()
    assert await count_clients(jambonz_database, acct) == 0


@bounded(60)
async def test_the_daemon_confirms_a_fix_when_it_sees_the_200(
    seeder: Seeder, cli_env: dict[str, str], jambonz_database: str, db_settings: DbSettings
) -> None:
    realm = unique_realm()
    acct = await seeder.account(realm)
    await seeder.client(acct, "laterok", active=False)
    r = await fix(cli_env, "--user", "laterok", "--domain", realm, "--yes")
    assert r.rc == 0, r.all
    daemon = AutoRemediator(rem_config(mode="dry-run"), db=db_settings, instance="daemon-1")
    try:
        assert await daemon.on_registered("someone-else", realm) is None
        verified = await daemon.on_registered("laterok", realm.upper())
        assert verified is not None and verified.action == "activate_client"
        assert await daemon.on_registered("laterok", realm) is None  # once
    finally:
        await daemon.close()
    audit = await rows(
        jambonz_database,
        "SELECT result, instance, actor FROM sipwatch_audit WHERE sip_user = %s ORDER BY id",
        ("laterok",),
    )
    assert [(a["result"], a["instance"]) for a in audit][1] == ("verified", "daemon-1")
    assert [a["result"] for a in audit] == ["applied", "verified"]
    assert audit[0]["actor"] == "operator:oncall via sipwatch fix"


# ------------------------------------------------------------------------------ --wait


@bounded(90)
async def test_wait_for_the_next_successful_registration(
    seeder: Seeder,
    cli_env: dict[str, str],
    redis_client: aioredis.Redis,
    jambonz_database: str,
) -> None:
    realm = unique_realm()
    acct = await seeder.account(realm, active=False)
    aor = f"waiter@{realm}"
    try:
        task = asyncio.create_task(
            fix(cli_env, "--user", "waiter", "--domain", realm, "--yes", "--wait", "20")
        )
        # the registrar writes user:<aor> when it answers 200 OK
        async with asyncio.timeout(30):
            while True:
                found = await rows(
                    jambonz_database,
                    "SELECT is_active FROM accounts WHERE account_sid = %s",
                    (acct,),
                )
                if found[0]["is_active"]:
                    break
                await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        await redis_client.set(
            f"user:{aor}", json.dumps({"proxy": "sip:198.51.100.20:5060"}), ex=60
        )
        r = await task
        assert r.rc == 0, r.all
        assert "Registered: the registrar accepted a REGISTER from sip:198.51.100.20:5060" in r.out
        audit = await rows(
            jambonz_database,
            "SELECT result FROM sipwatch_audit WHERE sip_user = %s ORDER BY id",
            ("waiter",),
        )
        assert [a["result"] for a in audit] == ["applied", "verified"]

        # nothing registers: exit 5 after the wait
        acct2 = await seeder.account(realm2 := unique_realm(), active=False)
        assert acct2
        r = await fix(cli_env, "--user", "w2", "--domain", realm2, "--yes", "--wait", "1")
        assert r.rc == 6 and "No new registration in time" in r.out, r.all
    finally:
        await cleanup_registration(redis_client, aor)


# ------------------------------------------------------------------- registrar restart


@bounded(90)
async def test_restart_registrar_through_the_fake_engine(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    async with FakeDockerEngine(short_socket(tmp_path)) as engine:
        reg = engine.add_container("sbc-sip-sidecar", image="jambonz/sbc-sip-sidecar:0.9.6")
        reg.started_at = format_ts(time.time_ns() - 3600 * 1_000_000_000)
        r = await fix(
            cli_env,
            "--user",
            "anyone",
            "--domain",
            unique_realm(),
            "--status",
            "503",
            "--docker-url",
            engine.url,
            "--yes",
        )
        assert r.rc == 0, r.all
        assert "registrar_down" in r.out
        assert f"POST /containers/{reg.id[:12]}/restart?t=10" in r.out
        assert [e["Action"] for e in engine.events if e["id"] == reg.id].count("restart") == 1


# ------------------------------------------------------------------------ errors


@bounded(60)
async def test_errors_have_exit_codes_and_no_secrets(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[remediation]\nmode = 'sometimes'\n")
    r = await fix(cli_env, "--user", "a", "--domain", "b.example.com", "--config", str(bad))
    assert r.rc == 2 and "invalid configuration" in r.err

    pw = secrets.token_hex(8)
    env = dict(cli_env, SIPWATCH_DB_URL=f"mysql://root:{pw}@127.0.0.1:{closed_port()}/x")
    r = await fix(env, "--user", "a", "--domain", "b.example.com", "--action", "activate_client")
    assert r.rc == 3, r.all
    assert pw not in r.all

    env = {k: v for k, v in cli_env.items() if k != "SIPWATCH_DB_URL"}
    r = await fix(env, "--user", "a", "--domain", "b.example.com")
    assert r.rc == 2 and "no database configured" in r.err
