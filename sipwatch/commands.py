"""Registration of the sub-commands implemented outside ``cli.py``.

Each entry adds its parser to the ``sipwatch`` sub-parsers and sets ``handler`` (a callable
taking the parsed args and returning an exit code).  Imports are deferred to the handler so
``sipwatch --help`` stays fast and a broken optional dependency only breaks its own command.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    SubParsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]


def _check_config(sub: SubParsers) -> None:
    p = sub.add_parser(
        "check-config",
        help="validate a sipwatch.toml (and environment overrides) and print the result",
        description="Validate the configuration file and SIPWATCH_* environment overrides.",
        epilog="examples:\n  sipwatch check-config examples/sipwatch.toml\n"
        "  SIPWATCH_DB_URL=mysql://u:p@db/jambones sipwatch check-config",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", nargs="?", default=None, help="config file (default: none = defaults)")

    def handler(args: argparse.Namespace) -> int:
        from sipwatch.config import check_config_main

        return check_config_main(args.config)

    p.set_defaults(handler=handler)


def _diagnose(sub: SubParsers) -> None:
    from sipwatch.diagnosis.cli import add_diagnose_parser, run_diagnose

    p = add_diagnose_parser(sub)

    def handler(args: argparse.Namespace) -> int:
        result: int = asyncio.run(run_diagnose(args))
        return result

    p.set_defaults(handler=handler)


def _run(sub: SubParsers) -> None:
    p = sub.add_parser(
        "run",
        help="run the daemon: follow logs, export metrics, diagnose, alert (and remediate)",
        description=(
            "Follow the drachtio-sbc and registrar logs (Docker Engine API by default, files "
            "and stdin when configured), export Prometheus metrics on SIPWATCH_LISTEN, "
            "diagnose failures against the jambonz database and alert.  With no config file, "
            "follows the Docker daemon at DOCKER_HOST (or the local socket)."
        ),
        epilog="examples:\n  sipwatch run\n  sipwatch run --config /etc/sipwatch/sipwatch.toml\n"
        "  SIPWATCH_DB_URL=mysql://sipwatch:pw@127.0.0.1/jambones sipwatch run\n\n"
        "signals: SIGTERM/SIGINT drain and exit, SIGHUP reloads the config and the rules",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config",
        default=None,
        help="config file (default: $SIPWATCH_CONFIG, "
        "then /etc/sipwatch/sipwatch.toml if present, else built-in defaults)",
    )

    def handler(args: argparse.Namespace) -> int:
        import sys

        from sipwatch.config import ConfigError, load_config
        from sipwatch.daemon import run_daemon
        from sipwatch.logsetup import configure

        try:
            config = load_config(args.config)
        except ConfigError as exc:
            print(f"sipwatch run: invalid configuration:\n{exc}", file=sys.stderr)
            return 2
        configure(config.logging.level, config.logging.format)
        try:
            return asyncio.run(run_daemon(config, config_path=args.config))
        except KeyboardInterrupt:
            return 0

    p.set_defaults(handler=handler)


def _fix(sub: SubParsers) -> None:
    from sipwatch.remediation.fix_args import add_fix_parser

    p = add_fix_parser(sub)

    def handler(args: argparse.Namespace) -> int:
        from sipwatch.remediation.fix_cmd import run_fix

        result: int = asyncio.run(run_fix(args))
        return result

    p.set_defaults(handler=handler)


def registrars() -> Iterator[Callable[[SubParsers], None]]:
    yield _diagnose
    yield _fix
    yield _check_config
    yield _run
