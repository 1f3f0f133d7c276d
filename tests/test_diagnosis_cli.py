"""``sipwatch diagnose`` as a real subprocess against the real MariaDB and Redis."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from sipwatch.diagnosis.crypto import encrypt
from tests.jambonz_db import (
    REDIS_TEST_DB,
    REDIS_URL_BASE,
    TEST_SECRET,
    Seeder,
    WebhookServer,
    closed_port,
    create_database,
    db_url,
    drop_database,
    schema_statements,
    unique_name,
    unique_realm,
)


async def run_cli(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a subprocess without blocking the loop (the webhook server lives here)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SIPWATCH_")}
    full_env.update(env or {})
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sipwatch",
        "diagnose",
        *args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=full_env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return subprocess.CompletedProcess(args, proc.returncode, out.decode(), err.decode())


def env_for(database: str, **extra: str) -> dict[str, str]:
    return {
        "SIPWATCH_DB_URL": db_url(database),
        "SIPWATCH_REDIS_URL": f"{REDIS_URL_BASE}/{REDIS_TEST_DB}",
        "SIPWATCH_JAMBONZ_ENCRYPTION_SECRET": TEST_SECRET,
        **extra,
    }


async def test_json_output_for_an_inactive_client(seeder: Seeder, jambonz_database: str) -> None:
    realm = unique_realm()
    acct = await seeder.account(realm)
    await seeder.client(acct, "alice", active=False)
    res = await run_cli(
        "--user",
        "alice",
        "--domain",
        realm,
        "--status",
        "403",
        "--format",
        "json",
        env=env_for(jambonz_database),
    )
    assert res.returncode == 0, res.stderr
    doc: dict[str, Any] = json.loads(res.stdout)
    assert doc["user"] == "alice" and doc["domain"] == realm
    top = doc["causes"][0]
    assert set(top) >= {"id", "severity", "summary", "evidence", "fix"}
    assert top["id"] == "client_inactive" and top["severity"] == "error"
    assert top["evidence"]["client_active"] is False
    assert top["fix"]["command"] == (
        f"sipwatch fix --user alice --domain {realm} --action activate_client"
    )
    assert isinstance(top["fix"]["steps"], list) and top["fix"]["steps"]
    assert doc["registered_now"] is False
    assert res.stderr == ""


async def test_text_output_is_readable(seeder: Seeder, jambonz_database: str) -> None:
    realm = unique_realm()
    await seeder.account(realm, active=False, deactivated_reason="unpaid invoice")
    res = await run_cli("--user", "bob", "--domain", realm, env=env_for(jambonz_database))
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"Diagnosis for bob@{realm}\n")
    assert "1. [ERROR] account_inactive - The account is deactivated" in res.stdout
    assert "deactivated_reason: unpaid invoice" in res.stdout
    assert f"$ sipwatch fix --user bob --domain {realm} --action activate_account" in res.stdout


async def test_healthy_user(seeder: Seeder, jambonz_database: str) -> None:
    realm = unique_realm()
    await seeder.client(await seeder.account(realm), "carol")
    res = await run_cli("--user", "carol", "--domain", realm, env=env_for(jambonz_database))
    assert res.returncode == 0
    assert "No cause found" in res.stdout


async def test_unreachable_database_exits_nonzero_without_traceback_or_password() -> None:
    url = f"mysql://jambones:t0p-s3cret-pw@127.0.0.1:{closed_port()}/jambones"
    res = await run_cli(
        "--user",
        "alice",
        "--domain",
        "acme.example.com",
        "--status",
        "403",
        "--challenged",
        "--x-reason",
        "Invalid credentials",
        "--db-url",
        url,
    )
    assert res.returncode == 3
    assert "Traceback" not in res.stderr + res.stdout
    assert "t0p-s3cret-pw" not in res.stderr + res.stdout
    assert res.stderr.startswith("sipwatch diagnose: cannot use the jambonz database: ")
    assert "mysql://jambones:***@127.0.0.1" in res.stderr
    # The log-only part still explains what it can.
    assert "credentials_rejected" in res.stdout


async def test_schema_without_clients_still_diagnoses_realms() -> None:
    name = unique_name()
    await create_database(name, [s for s in schema_statements() if "clients" not in s])
    try:
        res = await run_cli(
            "--user",
            "a",
            "--domain",
            unique_realm(),
            "--status",
            "403",
            env={"SIPWATCH_DB_URL": db_url(name)},
        )
        # The realm has no account, so clients is never read: a complete diagnosis.
        assert res.returncode == 0, res.stderr
        assert "realm_unknown" in res.stdout
    finally:
        await drop_database(name)


async def test_missing_clients_table_exit_code(jambonz_database: str) -> None:
    name = unique_name()
    await create_database(name, [s for s in schema_statements() if "clients" not in s])
    try:
        from tests.jambonz_db import Seeder as _Seeder
        from tests.jambonz_db import admin_connect

        conn = await admin_connect(name)
        realm = unique_realm()
        await _Seeder(conn).account(realm)
        conn.close()
        res = await run_cli(
            "--user",
            "a",
            "--domain",
            realm,
            "--status",
            "403",
            env={"SIPWATCH_DB_URL": db_url(name)},
        )
        assert res.returncode == 3
        assert "Traceback" not in res.stderr
        assert "lacks tables" in res.stderr
    finally:
        await drop_database(name)


async def test_secrets_never_printed(
    seeder: Seeder, jambonz_database: str, webhook_server: WebhookServer
) -> None:
    realm_a, realm_b = unique_realm(), unique_realm()
    a = await seeder.account(realm_a)
    await seeder.client(a, "frank", stored="frank-plain-pw")
    await seeder.client(a, "gina", stored=encrypt("gina-real-pw", TEST_SECRET))
    hook = await seeder.webhook(
        webhook_server.url("notfound").replace("http://", "http://hu:url-pw-77@"),
        username="hu",
        password="hook-pw-77",
    )
    await seeder.account(realm_b, hook_sid=hook)
    env = env_for(jambonz_database)
    outputs = []
    for user, realm in (("frank", realm_a), ("gina", realm_a), ("x", realm_b)):
        for fmt in ("text", "json"):
            res = await run_cli(
                "--user",
                user,
                "--domain",
                realm,
                "--status",
                "403",
                "--format",
                fmt,
                "--webhook-probe",
                env=env,
            )
            assert res.returncode == 0, res.stderr
            outputs.append(res.stdout + res.stderr)
    blob = "\n".join(outputs)
    for secret in (
        "frank-plain-pw",
        "gina-real-pw",
        "hook-pw-77",
        "url-pw-77",
        TEST_SECRET,
        "wh-secret-0123456789",
    ):
        assert secret not in blob
    assert "client_password_plaintext" in blob and "webhook_http_error" in blob


async def test_terminal_escapes_in_attacker_input_are_neutralised(jambonz_database: str) -> None:
    res = await run_cli(
        "--user",
        "evil\x1b[2J\u202euser",
        "--domain",
        "acme.example.com",
        "--status",
        "403",
        env=env_for(jambonz_database),
    )
    assert res.returncode == 0, res.stderr
    assert "\x1b" not in res.stdout and "\u202e" not in res.stdout
    assert "evil\\x1b[2J\\u202euser" in res.stdout


async def test_config_file_and_bad_settings(
    seeder: Seeder, jambonz_database: str, tmp_path: Path
) -> None:
    realm = unique_realm()
    await seeder.client(await seeder.account(realm), "hal", active=False)
    cfg = tmp_path / "sipwatch.toml"
    cfg.write_text(f'[database]\nurl = "{db_url(jambonz_database)}"\n')
    res = await run_cli(
        "--user", "hal", "--domain", realm, "--config", str(cfg), "--format", "json"
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["causes"][0]["id"] == "client_inactive"
    res = await run_cli(
        "--user", "hal", "--domain", realm, "--db-url", "postgres://u:pg-secret-1@h/db"
    )
    assert res.returncode == 2
    assert "must start with mysql://" in res.stderr and "pg-secret-1" not in res.stderr
    cfg.write_text('[database]\nurl = "postgres://u:pg-secret-2@h/db"\n[diagnosis]\nbogus = 1\n')
    res = await run_cli("--user", "hal", "--domain", realm, "--config", str(cfg))
    assert res.returncode == 2 and "configuration problem" in res.stderr
    assert "pg-secret-2" not in res.stderr and "Traceback" not in res.stderr
    bad_rules = tmp_path / "rules"
    bad_rules.mkdir()
    (bad_rules / "x.yaml").write_text("id: x1\ntitle: t\nseverity: loud\nsummary: s\nfix: {}\n")
    res = await run_cli("--user", "hal", "--domain", realm, "--rules-dir", str(bad_rules))
    assert res.returncode == 2
    assert f"{bad_rules / 'x.yaml'}:3:" in res.stderr and "Traceback" not in res.stderr


async def test_without_database_runs_log_only() -> None:
    res = await run_cli(
        "--user",
        "alice",
        "--domain",
        "198.51.100.4",
        "--status",
        "403",
        "--not-challenged",
        "--format",
        "json",
    )
    assert res.returncode == 0
    doc = json.loads(res.stdout)
    assert [c["id"] for c in doc["causes"]] == ["realm_is_ip"]
    assert "log-only" in res.stderr
