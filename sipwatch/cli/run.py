"""``sipwatch run``: the daemon (see ``sipwatch.daemon``)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from sipwatch.cli.exit_codes import ExitCode, help_epilog

if TYPE_CHECKING:
    from sipwatch.cli.main import SubParsers


def register(sub: SubParsers) -> None:
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
        "signals: SIGTERM/SIGINT drain and exit, SIGHUP reloads the config and the rules\n\n"
        + help_epilog("run"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config",
        default=None,
        help="config file (default: $SIPWATCH_CONFIG, "
        "then /etc/sipwatch/sipwatch.toml if present, else built-in defaults)",
    )

    def handler(args: argparse.Namespace) -> int:
        import asyncio  # not at module level: every command's parser is built at start-up
        import sys

        from sipwatch.config import ConfigError, load_config
        from sipwatch.daemon.driver import ListenError, run_daemon
        from sipwatch.logsetup import configure

        try:
            config = load_config(args.config)
        except ConfigError as exc:
            print(f"sipwatch run: invalid configuration:\n{exc}", file=sys.stderr)
            return ExitCode.USAGE
        configure(config.logging.level, config.logging.format)
        try:
            return asyncio.run(run_daemon(config, config_path=args.config))
        except ListenError as exc:
            print(f"sipwatch run: {exc} (set SIPWATCH_LISTEN or metrics.listen)", file=sys.stderr)
            return ExitCode.USAGE
        except KeyboardInterrupt:
            return ExitCode.INTERRUPTED

    p.set_defaults(handler=handler)
