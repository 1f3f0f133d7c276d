"""The ``sipwatch`` command line: argument parsing only; each command lives in its own module.

Exit codes (shell-friendly, stable):
  0  success
  1  the command ran and found a problem it was asked to report (e.g. check failed)
  2  usage or configuration error
  3  an input could not be read, or a required service (database) could not be reached
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sipwatch import __version__
from sipwatch.commands import registrars

if TYPE_CHECKING:
    from sipwatch.commands import SubParsers

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3

_EPILOG = """\
examples:
  sipwatch replay examples/drachtio-sbc.log examples/sbc-sip-sidecar.log
  docker logs -t drachtio-sbc 2>&1 | sipwatch replay --format json -
  sipwatch diagnose --user 1001 --domain acme.sip.example.com --db-url mysql://...
  sipwatch check-config sipwatch.toml

docs: README.md (Quick start, configuration, metrics and rules references)
"""


def _add_replay(sub: SubParsers) -> None:
    p = sub.add_parser(
        "replay",
        help="analyse drachtio / registrar log files once and report failing registrations",
        description=(
            "Read drachtio-server logs (plain, docker logs -t, docker compose logs, pm2, "
            "kubectl, pre-2017 format; .gz too) and registrar pino logs, reassemble REGISTER "
            "transactions and report failures with their likely cause."
        ),
        epilog="""\
examples:
  sipwatch replay examples/drachtio-sbc.log examples/sbc-sip-sidecar.log
  sipwatch replay --format json /var/log/drachtio/drachtio.log.1.gz
  docker compose logs drachtio-sbc registrar | sipwatch replay -
  sipwatch replay --format prometheus drachtio.log   # metrics exposition after the replay
""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="log files; - reads stdin")
    p.add_argument(
        "--format",
        choices=("text", "json", "prometheus"),
        default="text",
        help="output format (default: text)",
    )
    p.add_argument(
        "--tz-offset",
        type=float,
        default=0.0,
        metavar="HOURS",
        help="UTC offset of drachtio's timestamps if the container is not on UTC (e.g. 2 or -5.5)",
    )
    p.add_argument(
        "--no-diagnose", action="store_true", help="skip the root-cause rules (faster on huge logs)"
    )
    p.add_argument(
        "--db-url",
        default=None,
        help="jambonz MySQL URL to confirm causes (default: $SIPWATCH_DB_URL; unset = log only)",
    )
    p.add_argument(
        "--redis-url", default=None, help="jambonz Redis URL (default: $SIPWATCH_REDIS_URL)"
    )
    p.add_argument(
        "--config",
        default=None,
        help="sipwatch.toml for database/jambonz settings (default: $SIPWATCH_CONFIG or none)",
    )
    p.add_argument("--limit", type=int, default=50, help="rows in the text table (default 50)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sipwatch",
        description=(
            "sipwatch watches a jambonz SBC's drachtio and registrar logs, explains why SIP "
            "devices fail to register (using the jambonz database), alerts and can fix it."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"sipwatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_replay(sub)
    for register in registrars():
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if args.command == "replay":
        from sipwatch.replay_cmd import run_replay

        return run_replay(args)
    handler = getattr(args, "handler", None)
    if handler is None:  # pragma: no cover - every subparser sets one
        parser.error(f"unknown command {args.command}")
    try:
        result: int = handler(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # A bug, not a user error: one line, no traceback (locals could hold secrets) unless
        # SIPWATCH_DEBUG asks for it.
        if os.environ.get("SIPWATCH_DEBUG"):
            raise
        print(
            f"sipwatch {args.command}: internal error ({type(exc).__name__}); "
            "set SIPWATCH_DEBUG=1 for the traceback",
            file=sys.stderr,
        )
        return EXIT_UNAVAILABLE if isinstance(exc, OSError) else EXIT_PROBLEM
    return result


if __name__ == "__main__":
    sys.exit(main())
