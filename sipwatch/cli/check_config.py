"""``sipwatch check-config``: validate the configuration as ``sipwatch run`` would and print it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, TextIO

from sipwatch.cli.exit_codes import ExitCode, help_epilog
from sipwatch.config import ConfigError, load_config

if TYPE_CHECKING:
    from sipwatch.cli.main import SubParsers


def register(sub: SubParsers) -> None:
    p = sub.add_parser(
        "check-config",
        help="validate a sipwatch.toml (and environment overrides) and print the result",
        description="Validate the configuration file and SIPWATCH_* environment overrides.",
        epilog="examples:\n  sipwatch check-config examples/sipwatch.toml\n"
        "  SIPWATCH_DB_URL=mysql://u:p@db/jambones sipwatch check-config\n\n"
        + help_epilog("check-config"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", nargs="?", default=None, help="config file (default: none = defaults)")

    p.set_defaults(handler=lambda args: check_config_main(args.config))


def check_config_main(
    path: str | None,
    *,
    environ: Mapping[str, str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> ExitCode:
    """Validate the configuration as ``sipwatch run`` would.

    Prints "config OK: ..." and every effective setting (secrets masked) to stdout and
    returns 0, or prints each problem to stderr and returns 2.
    """
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    try:
        config = load_config(path, environ=environ)
    except ConfigError as exc:
        count = len(exc.problems)
        print(f"config invalid: {count} problem{'s' if count != 1 else ''}", file=err)
        for problem in exc.problems:
            print(f"  {problem}", file=err)
        return ExitCode.USAGE
    for warning in config.meta.warnings:
        print(f"warning: {warning}", file=err)
    source = config.meta.source or "no config file, built-in defaults"
    summary = [
        f"listening on {config.metrics.listen}",
        f"database {'configured' if config.database.url else 'not configured'}",
        f"redis {'configured' if config.redis.url else 'not configured'}",
        f"{len(config.alerts.targets)} alert target(s)",
        f"remediation {config.remediation.mode}",
    ]
    print(f"config OK: {source} ({', '.join(summary)})", file=out)
    print(config.describe(), file=out)
    return ExitCode.OK
