"""The exit-code table is true (issue 10, item 7): one definition (``sipwatch.cli.exit_codes``),
the README renders it, every ``--help`` lists the command's codes, and each command is driven
into each code it lists, as a real subprocess.  A code no scenario can reach must not be in
the table."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sipwatch.cli.exit_codes import COMMAND_EXIT_CODES, ExitCode, help_epilog, markdown_table
from sipwatch.cli.main import COMMAND_MODULES
from tests.cli_support import ROOT, Result, sipwatch
from tests.jambonz_db import admin_connect, db_url, unique_realm
from tests.remediation_support import bounded

README = ROOT / "README.md"
BEGIN, END = "<!-- exit-codes:begin -->", "<!-- exit-codes:end -->"
EXAMPLE = str(ROOT / "examples" / "drachtio-sbc.log")


def test_readme_table_is_rendered_from_the_one_definition() -> None:
    text = README.read_text(encoding="utf-8")
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    table = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert table == markdown_table()
    for code in ExitCode:
        assert f"| {int(code)} | {code.meaning} |" in table


def test_every_command_has_a_row_and_its_help_lists_exactly_its_codes() -> None:
    commands = {m.replace("_", "-") for m in COMMAND_MODULES}
    assert set(COMMAND_EXIT_CODES) == commands
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIPWATCH")}
    for command in sorted(commands):
        res = subprocess.run(
            [sys.executable, "-m", "sipwatch", command, "--help"],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=60,
            check=False,
        )
        assert res.returncode == ExitCode.OK
        listed = res.stdout.split("exit codes:\n", 1)[1]
        assert listed.strip() == help_epilog(command).split("\n", 1)[1].strip(), command
        assert len(listed.strip().splitlines()) == len(COMMAND_EXIT_CODES[command])


# ----------------------------------------------------------------------------- scenarios


@dataclass
class Ctx:
    env: dict[str, str]
    database: str
    tmp: Path
    seeder: Any


Scenario = Callable[[Ctx], Awaitable[int]]
SCENARIOS: dict[tuple[str, ExitCode], Scenario] = {}


def scenario(command: str, code: ExitCode) -> Callable[[Scenario], Scenario]:
    def register(fn: Scenario) -> Scenario:
        SCENARIOS[(command, code)] = fn
        return fn

    return register


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bad_config(ctx: Ctx) -> str:
    path = ctx.tmp / "bad.toml"
    path.write_text("[remediation]\nmode = 'sometimes'\n")
    return str(path)


async def _rc(ctx: Ctx, *args: str, stdin: bytes = b"", **env: str | None) -> int:
    run_env = dict(ctx.env)
    for key, value in env.items():
        if value is None:
            run_env.pop(key, None)
        else:
            run_env[key] = value
    res: Result = await sipwatch(run_env, *args, stdin=stdin)
    return res.rc


async def _interrupt_when(
    ctx: Ctx, args: list[str], ready: Callable[[asyncio.subprocess.Process], Awaitable[None]]
) -> int:
    """Start ``sipwatch ARGS``, wait until ``ready`` says it is busy, then press Ctrl-C."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sipwatch", *args,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=ctx.env, cwd=str(ROOT),
    )  # fmt: skip
    try:
        async with asyncio.timeout(45):
            await ready(proc)
            proc.send_signal(signal.SIGINT)
            await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode


# replay ------------------------------------------------------------------------------


@scenario("replay", ExitCode.OK)
async def _replay_ok(ctx: Ctx) -> int:
    return await _rc(ctx, "replay", "--no-diagnose", EXAMPLE)


@scenario("replay", ExitCode.USAGE)
async def _replay_usage(ctx: Ctx) -> int:
    return await _rc(ctx, "replay", "--config", _bad_config(ctx), EXAMPLE)


@scenario("replay", ExitCode.UNAVAILABLE)
async def _replay_unavailable(ctx: Ctx) -> int:
    return await _rc(ctx, "replay", str(ctx.tmp / "no-such.log"))


@scenario("replay", ExitCode.INTERRUPTED)
async def _replay_interrupted(ctx: Ctx) -> int:
    async def reading(proc: asyncio.subprocess.Process) -> None:
        # more than a pipe holds: once written, replay is in its read loop
        assert proc.stdin is not None
        proc.stdin.write(b"2026-11-27 08:00:00.000100 Starting drachtio version v0.9.2\n" * 8000)
        await proc.stdin.drain()

    return await _interrupt_when(ctx, ["replay", "-"], reading)


# diagnose ----------------------------------------------------------------------------


@scenario("diagnose", ExitCode.OK)
async def _diagnose_ok(ctx: Ctx) -> int:
    return await _rc(ctx, "diagnose", "--user", "a", "--domain", unique_realm())


@scenario("diagnose", ExitCode.USAGE)
async def _diagnose_usage(ctx: Ctx) -> int:
    return await _rc(ctx, "diagnose", "--user", "a", "--domain", "b.example.com",
                     "--rules-dir", str(ctx.tmp / "no-rules"))  # fmt: skip


@scenario("diagnose", ExitCode.UNAVAILABLE)
async def _diagnose_unavailable(ctx: Ctx) -> int:
    url = f"mysql://root@127.0.0.1:{_closed_port()}/jambones"
    return await _rc(ctx, "diagnose", "--user", "a", "--domain", "b.example.com", "--db-url", url)


@scenario("diagnose", ExitCode.INTERRUPTED)
async def _diagnose_interrupted(ctx: Ctx) -> int:
    connected = asyncio.Event()
    writers: list[asyncio.StreamWriter] = []

    async def on_conn(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        writers.append(w)  # a database that accepts and never answers
        connected.set()

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async def waiting(proc: asyncio.subprocess.Process) -> None:
        await connected.wait()

    try:
        return await _interrupt_when(
            ctx,
            ["diagnose", "--user", "a", "--domain", "b.example.com", "--db-timeout", "40",
             "--db-url", f"mysql://root@127.0.0.1:{port}/jambones"],
            waiting,
        )  # fmt: skip
    finally:
        for w in writers:
            w.close()
        server.close()
        await server.wait_closed()


# fix ---------------------------------------------------------------------------------


async def _sleeping_client(ctx: Ctx) -> tuple[str, str]:
    realm = unique_realm()
    user = f"z{secrets.token_hex(3)}"
    await ctx.seeder.client(await ctx.seeder.account(realm), user, active=False)
    return user, realm


@scenario("fix", ExitCode.OK)
async def _fix_ok(ctx: Ctx) -> int:
    user, realm = await _sleeping_client(ctx)
    return await _rc(ctx, "fix", "--user", user, "--domain", realm, "--dry-run")


@scenario("fix", ExitCode.PROBLEM)
async def _fix_problem(ctx: Ctx) -> int:
    user, realm = await _sleeping_client(ctx)
    return await _rc(ctx, "fix", "--user", user, "--domain", realm, stdin=b"n\n")


@scenario("fix", ExitCode.USAGE)
async def _fix_usage(ctx: Ctx) -> int:
    return await _rc(ctx, "fix", "--user", "a", "--domain", "b.example.com", SIPWATCH_DB_URL=None)


@scenario("fix", ExitCode.UNAVAILABLE)
async def _fix_unavailable(ctx: Ctx) -> int:
    url = f"mysql://root@127.0.0.1:{_closed_port()}/jambones"
    return await _rc(ctx, "fix", "--user", "a", "--domain", "b.example.com",
                     "--action", "activate_client", SIPWATCH_DB_URL=url)  # fmt: skip


@scenario("fix", ExitCode.FAILED)
async def _fix_failed(ctx: Ctx) -> int:
    # an account that may read but not write: the plan works, the change fails
    user, realm = await _sleeping_client(ctx)
    name, password = f"swt_ro_{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    conn = await admin_connect(ctx.database)
    try:
        async with conn.cursor() as cur:
            await cur.execute(f"CREATE USER '{name}'@'127.0.0.1' IDENTIFIED BY '{password}'")
            await cur.execute(f"GRANT SELECT ON `{ctx.database}`.* TO '{name}'@'127.0.0.1'")
        url = db_url(ctx.database, user=name, password=password)
        return await _rc(ctx, "fix", "--user", user, "--domain", realm, "--yes",
                         SIPWATCH_DB_URL=url)  # fmt: skip
    finally:
        async with conn.cursor() as cur:
            await cur.execute(f"DROP USER IF EXISTS '{name}'@'127.0.0.1'")
        conn.close()


@scenario("fix", ExitCode.REFUSED)
async def _fix_refused(ctx: Ctx) -> int:
    user, realm = await _sleeping_client(ctx)
    (ctx.tmp / "remediation.disabled").touch()  # the kill switch
    try:
        return await _rc(ctx, "fix", "--user", user, "--domain", realm, "--yes")
    finally:
        (ctx.tmp / "remediation.disabled").unlink()


@scenario("fix", ExitCode.NOT_REGISTERED)
async def _fix_not_registered(ctx: Ctx) -> int:
    user, realm = await _sleeping_client(ctx)
    return await _rc(ctx, "fix", "--user", user, "--domain", realm, "--yes", "--wait", "1")


@scenario("fix", ExitCode.INTERRUPTED)
async def _fix_interrupted(ctx: Ctx) -> int:
    user, realm = await _sleeping_client(ctx)

    async def prompting(proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        seen = b""
        while b"Apply this change? [y/N]" not in seen:
            chunk = await proc.stderr.read(4096)
            assert chunk, "fix ended before asking"
            seen += chunk

    return await _interrupt_when(ctx, ["fix", "--user", user, "--domain", realm], prompting)


# check-config, run ---------------------------------------------------------------------


@scenario("check-config", ExitCode.OK)
async def _check_ok(ctx: Ctx) -> int:
    return await _rc(ctx, "check-config", SIPWATCH_CONFIG=None)


@scenario("check-config", ExitCode.USAGE)
async def _check_usage(ctx: Ctx) -> int:
    return await _rc(ctx, "check-config", _bad_config(ctx))


def _run_config(ctx: Ctx, port: int) -> str:
    path = ctx.tmp / f"run-{port}.toml"
    path.write_text(f'[sources.docker]\nenabled = false\n[metrics]\nlisten = "127.0.0.1:{port}"\n')
    return str(path)


@scenario("run", ExitCode.OK)
async def _run_ok(ctx: Ctx) -> int:
    port = _closed_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sipwatch", "run", "--config", _run_config(ctx, port),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ctx.env, cwd=str(ROOT),
    )  # fmt: skip
    try:
        async with asyncio.timeout(45), aiohttp.ClientSession() as session:
            while True:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            proc.send_signal(signal.SIGTERM)
            return await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@scenario("run", ExitCode.USAGE)
async def _run_usage(ctx: Ctx) -> int:
    bad = await _rc(ctx, "run", "--config", _bad_config(ctx))
    with socket.socket() as taken:  # the listen address is in use: a configuration problem
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        in_use = await _rc(ctx, "run", "--config", _run_config(ctx, port))
    assert bad == in_use
    return in_use


def test_every_listed_code_has_a_scenario_and_no_scenario_is_unlisted() -> None:
    listed = {(cmd, code) for cmd, codes in COMMAND_EXIT_CODES.items() for code in codes}
    assert set(SCENARIOS) == listed


@pytest.fixture
async def ctx(
    seeder: Any, jambonz_database: str, cli_env_for: Any, tmp_path: Path
) -> AsyncIterator[Ctx]:
    yield Ctx(cli_env_for(jambonz_database), jambonz_database, tmp_path, seeder)


@pytest.mark.parametrize(
    ("command", "code"),
    sorted(SCENARIOS, key=lambda k: (k[0], int(k[1]))),
    ids=lambda v: v if isinstance(v, str) else v.name.lower(),
)
@bounded(90)
async def test_command_returns_the_code(ctx: Ctx, command: str, code: ExitCode) -> None:
    assert await SCENARIOS[(command, code)](ctx) == int(code)


@pytest.mark.parametrize(
    "argv",
    [
        ["check-config", "examples/sipwatch.toml"],
        ["replay", "examples/drachtio-sbc.log", "examples/sbc-sip-sidecar.log"],
    ],
)
def test_a_reader_that_leaves_is_not_an_error(argv: list[str]) -> None:
    """``sipwatch ... | head``: the pipe's reader is gone before the first write."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write now fails with EPIPE (Python ignores SIGPIPE)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "sipwatch", *argv],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == ExitCode.OK, proc.stderr
    assert "internal error" not in proc.stderr
    assert "BrokenPipe" not in proc.stderr and "Exception ignored" not in proc.stderr
