"""``sipwatch fix``: diagnose one device, show the exact change, confirm, apply, verify.

This is the operator's path, and it replaces fix guides that ``INSERT`` plaintext passwords
(which the current registrar cannot decrypt, so the device gets SIP 500).  The command:

1. diagnoses ``--user``/``--domain`` against the jambonz database and Redis and prints it;
2. picks the action (``--action``, else the one the most likely cause names);
3. plans it and prints the exact statements with secrets masked, and the state before/after;
4. asks for confirmation (``--yes`` skips it, ``--dry-run`` stops before it);
5. applies it in one transaction, verifies it from a fresh read (a new password is decrypted
   back with the jambonz scheme), diagnoses again, and with ``--wait`` waits for the device's
   next successful registration (a new entry in the registrar's Redis store, written when it
   answers 200 OK).

The operator naming the exact user is the explicit human decision, so the allow-lists that
bind the daemon do not stop this command (it says so when they do not cover the user); the
kill switch and the scanner classification still do.  A generated password is shown once on
the terminal, or written to ``--password-out`` (mode 0600); it is never logged, audited or
printed anywhere else, and it is never written to a non-terminal stdout.

Safety refusals (exit ``REFUSED``) end the command with the row untouched and an audit
record: a secret the database does not prove (``--trust-secret`` only where there is no
encrypted password to prove it with), an account that was not named (``--account``), and an
account deactivated on purpose, which is re-activated only when the operator named
``--action activate_account`` and typed the confirmation after reading the reason (``--yes``
does not count: it means nobody read it).

Exit codes: see ``sipwatch.cli.exit_codes`` (``COMMAND_EXIT_CODES["fix"]``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from sipwatch.cli.arg_types import symptom_from_args
from sipwatch.cli.exit_codes import ExitCode
from sipwatch.config import Config, ConfigError, Secret, load_config
from sipwatch.diagnosis.db import DbError, DbSettings
from sipwatch.diagnosis.engine import Diagnosis
from sipwatch.diagnosis.redis_store import registration_key
from sipwatch.diagnosis.render import render_text
from sipwatch.diagnosis.rules import RuleError
from sipwatch.diagnosis.settings import DiagnosisSettings, SettingsError, build_runtime
from sipwatch.diagnosis.symptom import Symptom
from sipwatch.diagnosis.text import display_text
from sipwatch.remediation import audit as au
from sipwatch.remediation.actions import (
    DEACTIVATED_ON_PURPOSE,
    Action,
    BackendMissing,
    Backends,
    Change,
    PlanState,
    RemediationError,
    Target,
    check_password,
    generate_password,
    get_action,
)
from sipwatch.remediation.audit import AuditRecord, AuditTrail, scrub
from sipwatch.remediation.auto import remediable_cause
from sipwatch.remediation.guard import Guard
from sipwatch.remediation.registrar import RegistrarTarget
from sipwatch.remediation.writer import DbWriter

_DB_TIMEOUT = 10.0
_REACTIVATE = "reactivate"


class _Out:
    """Terminal output with every value escaped and every known secret masked."""

    def __init__(self, stream: TextIO, secrets: list[str]) -> None:
        self.stream = stream
        self.secrets = secrets

    def __call__(self, text: str = "") -> None:
        self.stream.write(scrub(text, self.secrets) + "\n")
        self.stream.flush()

    def err(self, text: str) -> None:
        sys.stderr.write(f"sipwatch fix: {scrub(text, self.secrets)}\n")
        sys.stderr.flush()


def _show(value: Any) -> str:
    return display_text(json.dumps(value, ensure_ascii=False, sort_keys=True, default=str), 4000)


def _print_change(out: _Out, change: Change) -> None:
    out(f"Change ({change.action}): {display_text(change.summary, 1000)}")
    if change.target:
        out(f"  Target: {display_text(change.target, 500)}")
    if change.statements:
        out("  Statements (secrets masked):")
        for stmt in change.statements:
            out(f"    {display_text(stmt, 2000)}")
    if change.before:
        out(f"  Before: {_show(change.before)}")
    if change.after:
        out(f"  After:  {_show(change.after)}")
    for note in change.notes:
        out(f"  Note: {display_text(note, 1000)}")


def _actor() -> str:
    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = "unknown"
    return f"operator:{who} via sipwatch fix"


async def _read_line() -> str:
    """One line of stdin without a worker thread: a thread blocked in ``readline`` would keep
    Ctrl-C (and the interpreter's exit) waiting until the operator pressed Enter."""
    loop = asyncio.get_running_loop()
    fd = sys.stdin.fileno()
    ready = asyncio.Event()
    try:
        loop.add_reader(fd, ready.set)
    except (OSError, ValueError, NotImplementedError):  # a regular file: reading cannot block
        return sys.stdin.readline()
    try:
        await ready.wait()
    finally:
        loop.remove_reader(fd)
    return sys.stdin.readline()


async def _confirm(prompt: str, word: str = "y") -> bool:
    sys.stderr.write(prompt)
    sys.stderr.flush()
    answer = (await _read_line()).strip().lower()
    return answer == word or (word == "y" and answer == "yes")


def _read_password_file(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    return text.splitlines()[0] if text else ""


def _write_password_file(path: Path, password: Secret) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(password.reveal() + "\n")


async def _registration(client: aioredis.Redis, aor: str) -> bytes | None:
    async with asyncio.timeout(5.0):
        value = await client.get(registration_key(aor))
    return value if isinstance(value, bytes) else None


async def _wait_registered(
    client: aioredis.Redis, aor: str, baseline: bytes | None, seconds: float, out: _Out
) -> bool:
    """Poll the registrar's Redis entry until it is (re)written: the registrar only writes it
    when it answers a REGISTER with 200 OK."""
    out(f"Waiting up to {seconds:g}s for {display_text(aor, 200)} to register...")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        try:
            now_value = await _registration(client, aor)
        except (RedisError, OSError, TimeoutError):
            now_value = None
        if now_value is not None and now_value != baseline:
            proxy = ""
            with contextlib.suppress(ValueError, AttributeError):
                proxy = str(json.loads(now_value).get("proxy") or "")
            where = f" from {display_text(proxy, 100)}" if proxy else ""
            out(f"Registered: the registrar accepted a REGISTER{where} (200 OK).")
            return True
        if loop.time() >= deadline:
            out("No new registration in time: check the device's settings and its log.")
            return False
        await asyncio.sleep(min(1.0, max(0.05, deadline - loop.time())))


class _Usage(Exception):
    pass


def _settings(args: argparse.Namespace, config: Config) -> DiagnosisSettings:
    secret = config.jambonz.encryption_secret
    db_url = config.database.url.reveal() if config.database.url else None
    redis_url = config.redis.url.reveal() if config.redis.url else None
    return DiagnosisSettings.resolve(
        cli={
            "db_url": args.db_url or db_url,
            "redis_url": args.redis_url or redis_url,
            "encryption_secret": secret.reveal() if secret is not None else None,
            "registrar_flavour": config.jambonz.registrar_flavour,
            "webhook_probes": False,
            "rules_dir": config.diagnosis.rules_dir,
            "cache_ttl": 0.0,
        },
        env=os.environ,
    )


async def _diagnose(settings: DiagnosisSettings, symptom: Symptom) -> Diagnosis:
    runtime = build_runtime(settings)
    try:
        return await runtime.engine.diagnose(symptom)
    finally:
        await runtime.close()


async def run_fix(args: argparse.Namespace) -> int:
    if not structlog.is_configured():
        from sipwatch.logsetup import configure

        # Audit lines are JSON on stderr so they never mix with what the operator reads.
        configure("info", "json", sys.stderr)
    out = _Out(sys.stdout, [])
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        out.err(f"invalid configuration:\n{exc}")
        return ExitCode.USAGE
    try:
        settings = _settings(args, config)
        out.secrets.extend(settings.secrets())
        return await _run(args, config, settings, out)
    except (SettingsError, RuleError, _Usage) as exc:
        out.err(str(exc))
        return ExitCode.USAGE


async def _run(
    args: argparse.Namespace, config: Config, settings: DiagnosisSettings, out: _Out
) -> int:
    if settings.db_url is None and args.action != "restart_registrar":
        raise _Usage("no database configured (set SIPWATCH_DB_URL, database.url or --db-url)")
    if args.wait is not None and (args.wait <= 0 or settings.redis_url is None):
        raise _Usage("--wait needs a positive number of seconds and a Redis URL")
    username = args.auth_username or None
    symptom = symptom_from_args(args, auth_username=username)

    diagnosis = await _diagnose(settings, symptom)
    out(render_text(diagnosis, out.secrets).rstrip())
    out()

    cause = remediable_cause(diagnosis)
    action_id = args.action or (cause.remediation if cause is not None else None)
    if action_id is None:
        out("No cause found that sipwatch can fix by itself; follow the steps above.")
        return ExitCode.PROBLEM
    if args.action and (cause is None or cause.remediation != args.action):
        out(f"Note: the diagnosis does not point at {args.action}; running it as you asked.")
    action = get_action(action_id)
    cause_id = cause.id if cause is not None and cause.remediation == action_id else None

    password: Secret | None = None
    if action.needs_password:
        if args.generate:
            password = generate_password()
            if args.password_out is None and not sys.stdout.isatty():
                raise _Usage(
                    "a generated password is only shown on a terminal: use --password-out FILE"
                )
            if args.password_out is not None and args.password_out.exists():
                raise _Usage(f"{args.password_out} already exists; choose a new file")
        elif args.password_file is not None:
            try:
                text = _read_password_file(args.password_file)
            except (OSError, UnicodeDecodeError) as exc:
                raise _Usage(f"cannot read {args.password_file}: {exc}") from None
            problem = check_password(text)
            if problem:
                raise _Usage(problem)
            password = Secret(text)
        else:
            raise _Usage(f"{action_id} needs --generate or --password-file")
        out.secrets.append(password.reveal())

    db_settings: DbSettings | None = None
    if settings.db_url:
        db_settings = DbSettings.from_url(settings.db_url, readonly=False).with_timeouts(
            _DB_TIMEOUT
        )
    writer = DbWriter(db_settings) if db_settings is not None else None
    redis_client = (
        aioredis.from_url(settings.redis_url, socket_timeout=5.0, socket_connect_timeout=5.0)
        if settings.redis_url
        else None
    )
    dcfg = config.sources.docker
    docker = RegistrarTarget(
        url=args.docker_url or dcfg.url,
        project=args.project or dcfg.project,
        services=tuple(args.registrar_service or dcfg.registrar_services),
    )
    backends = Backends(
        db=writer,
        redis=redis_client,
        docker=docker,
        secret=Secret(settings.encryption_secret) if settings.encryption_secret else None,
        legacy_crypto=settings.legacy_crypto,
    )
    trail = AuditTrail(
        writer=writer, table=config.remediation.audit_table, secrets=lambda: list(out.secrets)
    )
    try:
        return await _fix(
            args, config, settings, out, diagnosis, action_id, cause_id, password, backends, trail
        )
    finally:
        if redis_client is not None:
            with contextlib.suppress(Exception):
                await redis_client.aclose()


async def _confirm_reactivation(
    args: argparse.Namespace,
    out: _Out,
    action: Action,
    backends: Backends,
    target: Target,
    refused: Change,
) -> tuple[Change, Target, bool] | None:
    """An account deactivated on purpose.  Only an operator who named the action and typed
    the confirmation after reading the reason re-activates it.  Returns the plan to go on
    with (still refused unless confirmed), or None when the operator said no."""
    account = refused.before.get("account") or {}
    reason = account.get("deactivated_reason")
    if not isinstance(reason, str):
        return refused, target, False
    if args.action != action.id:
        out(
            "Re-activating an account deactivated on purpose is never a default: name it "
            f"with --action {action.id} and confirm after reading the reason."
        )
        return refused, target, False
    if args.yes or args.dry_run:
        out(
            "--yes and --dry-run cannot confirm a deactivation reason: run the command "
            "without them and confirm after reading the reason."
        )
        return refused, target, False
    out(f"The account was deactivated on purpose. Reason: '{display_text(reason, 255)}'")
    if not await _confirm(f"Type '{_REACTIVATE}' to re-activate it anyway: ", _REACTIVATE):
        return None
    confirmed = dataclasses.replace(target, confirmed_reason=reason)
    change = await action.plan(backends, confirmed)
    _print_change(out, change)
    return change, confirmed, True


async def _fix(
    args: argparse.Namespace,
    config: Config,
    settings: DiagnosisSettings,
    out: _Out,
    diagnosis: Diagnosis,
    action_id: str,
    cause_id: str | None,
    password: Secret | None,
    backends: Backends,
    trail: AuditTrail,
) -> int:
    action = get_action(action_id)
    target = Target(
        user=args.user,
        domain=args.domain,
        username=args.auth_username or None,
        account_sid=args.account,
        replace_realm=args.replace_realm,
        source_ip=args.source_ip,
        trust_secret=args.trust_secret,
    )
    actor = _actor()

    async def audit(result: str, reason: str, change: Change | None, detail: str = "") -> None:
        await trail.record(
            AuditRecord(
                action=action_id,
                result=result,
                actor=actor,
                reason=reason,
                user=args.user,
                realm=args.domain,
                cause=cause_id,
                source_ip=args.source_ip,
                change=change,
                detail=detail,
            )
        )

    guard = Guard(config.remediation)
    names = [(target.user, target.domain), (target.client_username, target.domain)]
    mode = "dry-run" if args.dry_run else "on"
    verdict = guard.check(
        action_id,
        names=names,
        cooldown_key=target.aor,
        attack=diagnosis.attack,
        explicit_users={args.user, target.client_username},
        mode=mode,
    )
    if not verdict.allowed:
        out(f"Refused: {verdict.detail}.")
        await audit(au.REFUSED, verdict.reason, None, verdict.detail)
        return ExitCode.REFUSED
    if not all(config.remediation.allows(u, r) for u, r in names):
        out(
            "Note: this user is not covered by remediation.allow_users / allow_realms; "
            "proceeding because you named it on the command line."
        )

    try:
        change = await action.plan(backends, target, password=password)
    except BackendMissing as exc:
        out.err(str(exc))
        return ExitCode.USAGE
    except (DbError, RemediationError) as exc:
        out.err(f"cannot plan {action_id}: {exc}")
        return ExitCode.UNAVAILABLE
    _print_change(out, change)
    confirmed = False
    if change.state is PlanState.REFUSED and change.reason == DEACTIVATED_ON_PURPOSE:
        answer = await _confirm_reactivation(args, out, action, backends, target, change)
        if answer is None:
            out("Not applied.")
            await audit(au.REFUSED, "operator_declined", change)
            return ExitCode.PROBLEM
        change, target, confirmed = answer
    if change.state is PlanState.NOOP:
        out("Nothing to do.")
        return ExitCode.OK
    if change.state is PlanState.REFUSED:
        out(f"Refused, nothing was changed: {display_text(change.summary, 2000)}")
        await audit(au.REFUSED, change.reason or "refused", change, change.summary)
        return ExitCode.REFUSED
    if change.state is PlanState.BLOCKED:
        out("Not applied: sipwatch will not make this change (see above).")
        await audit(au.REFUSED, change.reason or "blocked", change, change.summary)
        return ExitCode.PROBLEM
    if args.dry_run:
        out("Dry run: nothing was changed.")
        await audit(au.DRY_RUN, "ok", change, "dry-run")
        return ExitCode.OK
    if not confirmed and not args.yes and not await _confirm("Apply this change? [y/N] "):
        out("Not applied.")
        await audit(au.REFUSED, "operator_declined", change)
        return ExitCode.PROBLEM

    baseline: bytes | None = None
    if args.wait is not None and backends.redis is not None:
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            baseline = await _registration(backends.redis, target.aor)

    password_file: Path | None = None
    if password is not None and args.generate and args.password_out is not None:
        try:
            _write_password_file(args.password_out, password)
        except OSError as exc:
            out.err(f"cannot write {args.password_out}: {exc.strerror}")
            return ExitCode.USAGE
        password_file = args.password_out
    try:
        outcome = await action.apply(backends, target, password=password)
    except (DbError, RemediationError) as exc:
        if password_file is not None:
            with contextlib.suppress(OSError):
                password_file.unlink()
        out.err(f"{action_id} failed, nothing was changed: {exc}")
        await audit(au.FAILED, "apply_failed", change, str(exc))
        return ExitCode.FAILED
    if not outcome.applied:
        if password_file is not None:
            with contextlib.suppress(OSError):
                password_file.unlink()
        if outcome.change.state is PlanState.NOOP:
            out(f"Nothing to do: {display_text(outcome.detail, 1000)}")
            return ExitCode.OK
        out(f"Not applied: {display_text(outcome.detail, 1000)}")
        refused = outcome.change.state is PlanState.REFUSED
        await audit(au.REFUSED, outcome.change.reason or "blocked", outcome.change, outcome.detail)
        return ExitCode.REFUSED if refused else ExitCode.PROBLEM
    if not outcome.verified:
        out(f"Applied, but the check afterwards failed: {display_text(outcome.detail, 1000)}")
        await audit(au.FAILED, "not_verified", outcome.change, outcome.detail)
        return ExitCode.FAILED
    await audit(au.APPLIED, "ok", outcome.change, outcome.detail)
    out(f"Applied and verified: {display_text(outcome.detail, 1000)}")
    if password is not None and args.generate:
        if password_file is not None:
            out(f"The new password is in {password_file} (mode 0600).")
        else:
            # The one place a password is shown: a terminal, once (stdout is a TTY here).
            sys.stdout.write(f"New password for the device (shown once): {password.reveal()}\n")
            sys.stdout.flush()

    try:
        again = await _diagnose(
            settings, Symptom(user=args.user, domain=args.domain, auth_username=args.auth_username)
        )
    except (DbError, RemediationError):
        again = None
    if again is not None:
        remaining = [c.id for c in again.causes]
        out(
            "Diagnosis now: "
            + (", ".join(remaining) if remaining else "no configuration problem found")
        )
    if args.wait is not None and backends.redis is not None:
        ok = await _wait_registered(backends.redis, target.aor, baseline, args.wait, out)
        if ok:
            await audit(au.VERIFIED, "registered", None, "the device registered (200 OK)")
        return ExitCode.OK if ok else ExitCode.NOT_REGISTERED
    return ExitCode.OK
