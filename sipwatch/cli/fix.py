"""``sipwatch fix``: its arguments here; the flow (``sipwatch.remediation.fix_flow``) is
imported when the command runs, because it pulls in the database, Redis and Docker layers."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from sipwatch.cli.arg_types import add_device_arguments
from sipwatch.cli.exit_codes import help_epilog
from sipwatch.remediation.catalog import ACTION_IDS

if TYPE_CHECKING:
    from sipwatch.cli.main import SubParsers


def register(sub: SubParsers) -> None:
    p = sub.add_parser(
        "fix",
        help="diagnose a device, show the exact change, confirm and apply it",
        description=(
            "Diagnose USER@DOMAIN, show the change that fixes it (SQL with secrets masked), "
            "ask for confirmation, apply it in one transaction and verify it. Connection "
            "settings come from the config file and SIPWATCH_DB_URL / SIPWATCH_REDIS_URL; the "
            "jambonz secret from SIPWATCH_JAMBONZ_ENCRYPTION_SECRET (never from arguments). "
            "The database account needs write grants (see docs/remediation.md)."
        ),
        epilog=(
            "examples:\n"
            "  sipwatch fix --user alice --domain acme.sip.example.com --dry-run\n"
            "  sipwatch fix --user alice --domain acme.sip.example.com "
            "--action create_client --generate --password-out alice.pw\n"
            "  sipwatch fix --user 1001 --domain pbx.example.com --yes --wait 120\n\n"
            + help_epilog("fix")
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_device_arguments(p)
    p.add_argument(
        "--action",
        choices=ACTION_IDS,
        help="the action to run (default: the one the most likely cause names)",
    )
    pw = p.add_mutually_exclusive_group()
    pw.add_argument(
        "--generate", action="store_true", help="create_client: generate a strong password"
    )
    pw.add_argument(
        "--password-file",
        type=Path,
        help="create_client: read the password from this file (first line)",
    )
    p.add_argument(
        "--password-out",
        type=Path,
        help="write the generated password to this new file (mode 0600) instead of the terminal",
    )
    p.add_argument("--account", help="set_account_realm: the account_sid to give the realm")
    p.add_argument(
        "--replace-realm",
        action="store_true",
        help="set_account_realm: replace the account's existing realm",
    )
    p.add_argument(
        "--trust-secret",
        action="store_true",
        help="create_client/reencrypt_password: encrypt even though no encrypted password in "
        "the database can prove the jambonz secret is right (a database without any); a "
        "secret the database disproves is refused whatever you pass",
    )
    p.add_argument("--dry-run", action="store_true", help="show the change, change nothing")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument(
        "--wait",
        type=float,
        metavar="SECONDS",
        help="after applying, wait this long for the device to register (200 OK)",
    )
    p.add_argument("--config", help="config file (default: $SIPWATCH_CONFIG or /etc/sipwatch)")
    p.add_argument("--db-url", help="mysql://user:password@host:port/jambones")
    p.add_argument("--redis-url", help="redis://host:port/0")
    p.add_argument("--docker-url", help="Docker Engine, e.g. unix:///var/run/docker.sock")
    p.add_argument("--project", help="compose project of the registrar container")
    p.add_argument(
        "--registrar-service",
        action="append",
        help="compose service of the registrar (repeatable; default from the config)",
    )
    p.set_defaults(handler=_handler)


def _handler(args: argparse.Namespace) -> int:
    import asyncio  # not at module level: every command's parser is built at start-up

    from sipwatch.remediation.fix_flow import run_fix

    return asyncio.run(run_fix(args))
