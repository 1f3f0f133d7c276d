"""``sipwatch diagnose``: one-shot root-cause diagnosis for the on-call engineer.

Exit codes (``sipwatch.cli.exit_codes``): 0 diagnosis printed; 2 bad arguments, configuration
or rules; 3 the database could not be reached, timed out or lacks the jambonz tables; the
log-only part of the diagnosis is still printed then.  Errors are one line on stderr, never a
traceback and never a secret.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from sipwatch.cli.arg_types import add_device_arguments, symptom_from_args
from sipwatch.cli.exit_codes import ExitCode, help_epilog
from sipwatch.diagnosis.error_kinds import DATABASE_ERRORS, DiagnosisErrorKind

if TYPE_CHECKING:
    from sipwatch.cli.main import SubParsers

# The engine, asyncmy, redis and aiohttp are imported when the command runs, not when
# ``sipwatch --help`` builds its parsers.


def register(sub: SubParsers) -> None:
    p = sub.add_parser(
        "diagnose",
        help="explain why a device fails to register, from the jambonz database and Redis",
        description=(
            "Explain why USER@DOMAIN fails to register. Connection settings come from "
            "--db-url/--redis-url, SIPWATCH_DB_URL/SIPWATCH_REDIS_URL, or the sipwatch config "
            "file ([database], [redis], [jambonz], [diagnosis]). The jambonz secret for "
            "password checks is read from SIPWATCH_JAMBONZ_ENCRYPTION_SECRET or the config "
            "file, never from arguments."
        ),
        epilog=(
            "examples:\n"
            "  sipwatch diagnose --user 1001 --domain acme.sip.example.com --status 403\n"
            "  SIPWATCH_DB_URL=mysql://sipwatch:pw@127.0.0.1/jambones \\\n"
            "    sipwatch diagnose --user 1001 --domain acme.sip.example.com --format json\n"
            "\n" + help_epilog("diagnose")
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_device_arguments(p)
    challenge = p.add_mutually_exclusive_group()
    challenge.add_argument(
        "--challenged",
        dest="challenged",
        action="store_true",
        default=None,
        help="a 401 challenge came before the final answer",
    )
    challenge.add_argument(
        "--not-challenged",
        dest="challenged",
        action="store_false",
        help="the final answer came without a 401 challenge",
    )
    p.add_argument("--user-agent", help="the device's User-Agent")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--db-url", help="mysql://user:password@host:port/jambones")
    p.add_argument("--redis-url", help="redis://host:port/0")
    p.add_argument(
        "--config",
        help="sipwatch config file (default: $SIPWATCH_CONFIG or the standard locations)",
    )
    p.add_argument(
        "--rules-dir", type=Path, help="directory of rule files (default: the shipped rules)"
    )
    p.add_argument(
        "--flavour",
        choices=("auto", "sidecar", "legacy"),
        help="which registrar runs (default: auto)",
    )
    probes = p.add_mutually_exclusive_group()
    probes.add_argument(
        "--webhook-probe",
        dest="webhook_probes",
        action="store_true",
        default=None,
        help="call the account's registration webhook once, with dummy credentials",
    )
    probes.add_argument(
        "--no-webhook-probe",
        dest="webhook_probes",
        action="store_false",
        help="do not call registration webhooks (default: [diagnosis] webhook_probes)",
    )
    p.add_argument("--db-timeout", type=float, help="seconds to wait for each database call")
    p.set_defaults(handler=_handler)


def _handler(args: argparse.Namespace) -> int:
    import asyncio  # not at module level: every command's parser is built at start-up

    return asyncio.run(run_diagnose(args))


def _err(msg: str, secrets: list[str]) -> None:
    from sipwatch.diagnosis.render import scrub

    print(f"sipwatch diagnose: {scrub(msg, secrets)}", file=sys.stderr)


async def run_diagnose(args: argparse.Namespace) -> ExitCode:
    from sipwatch.config import ConfigError, load_config
    from sipwatch.diagnosis.db import DbError
    from sipwatch.diagnosis.render import render_json, render_text
    from sipwatch.diagnosis.rules import RuleError
    from sipwatch.diagnosis.settings import SettingsError, build_runtime, settings_from_config

    secrets: list[str] = []
    try:
        config = load_config(args.config)
        settings = settings_from_config(
            config,
            cli={
                "db_url": args.db_url,
                "redis_url": args.redis_url,
                "registrar_flavour": args.flavour,
                "webhook_probes": args.webhook_probes,
                "rules_dir": args.rules_dir,
                "db_timeout": args.db_timeout,
            },
            env=os.environ,
        )
        secrets = settings.secrets()
        runtime = build_runtime(settings)
    except ConfigError as exc:
        _err(str(exc), secrets)
        return ExitCode.USAGE
    except (SettingsError, RuleError) as exc:
        _err(str(exc), secrets)
        return ExitCode.USAGE

    symptom = symptom_from_args(args, challenged=args.challenged, user_agent=args.user_agent)
    code = ExitCode.OK
    try:
        if runtime.database is not None:
            try:
                await runtime.database.ping()
            except DbError as exc:
                code = ExitCode.UNAVAILABLE
                _err(f"cannot use the jambonz database: {exc}", secrets)
        else:
            _err(
                "no database configured (SIPWATCH_DB_URL or --db-url): log-only diagnosis", secrets
            )
        diagnosis = await runtime.engine.diagnose(symptom)
    finally:
        await runtime.close()
    if code == ExitCode.OK:
        if DiagnosisErrorKind.MISSING_TABLE in diagnosis.errors:
            code = ExitCode.UNAVAILABLE
            _err(
                "the jambonz database lacks tables sipwatch needs (see 'Could not check')", secrets
            )
        elif DATABASE_ERRORS & set(diagnosis.errors):
            code = ExitCode.UNAVAILABLE
            _err("the jambonz database stopped answering (see 'Could not check')", secrets)
    out = (
        render_json(diagnosis, secrets)
        if args.format == "json"
        else render_text(diagnosis, secrets)
    )
    sys.stdout.write(out if out.endswith("\n") else out + "\n")
    return code
