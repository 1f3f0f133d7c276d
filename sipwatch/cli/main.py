"""``sipwatch``: the top-level parser and the guard around every command.

Each command is one module of this package with a ``register(subparsers)`` function that adds
its parser and sets ``handler`` (parsed args -> ``ExitCode``).  Heavy imports (asyncmy, redis,
apprise, aiohttp) happen inside the handlers, so ``sipwatch --help`` stays fast and a broken
optional dependency only breaks its own command.
"""

from __future__ import annotations

import argparse
import errno
import gc
import importlib
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeAlias

from sipwatch import __version__
from sipwatch.cli.exit_codes import ExitCode
from sipwatch.ingest import speedups

if TYPE_CHECKING:
    SubParsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

#: The command modules, in the order ``--help`` lists them.
COMMAND_MODULES = ("replay", "diagnose", "fix", "check_config", "run")

_EPILOG = """\
examples:
  sipwatch replay examples/drachtio-sbc.log examples/sbc-sip-sidecar.log
  docker logs -t drachtio-sbc 2>&1 | sipwatch replay --format json -
  sipwatch diagnose --user 1001 --domain acme.sip.example.com --db-url mysql://...
  sipwatch check-config sipwatch.toml

docs: README.md (Quick start, configuration, metrics and rules references)
"""


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
    parser.add_argument(
        "--version",
        action="version",
        version=f"sipwatch {__version__} ({speedups.IMPLEMENTATION} parser)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"sipwatch.cli.{name}").register(sub)
    return parser


# The cyclic garbage collector's youngest-generation threshold for sipwatch's commands
# (CPython's default: 700).  The pipeline allocates a few dozen objects per SIP message, nearly
# none of them in cycles, and holds a chunk's messages while it dispatches them: at 700 most
# collections walk objects that are still alive and promote them, to be walked again later.
# Measured on the replay bench: 5-7% of a replay's CPU; memory is unchanged (reference
# counting frees everything but cycles, and 10,000 objects is well under a megabyte).
GC_YOUNG_THRESHOLD = 10_000


def _tune_gc() -> None:
    """Collect less often, and never walk what startup built (modules, classes, the
    configuration): ``gc.freeze``, as CPython's documentation suggests for long-lived
    processes."""
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return ExitCode.USAGE
    _tune_gc()
    notice = speedups.fallback_notice()
    if notice:  # built without a C compiler: say it once, then run (slower, same results)
        print(notice, file=sys.stderr)
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        # ``sipwatch ... | head``: the reader left; not an error of ours.  Point stdout at
        # devnull so the interpreter's final flush does not raise again.
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), sys.stdout.fileno())
        return ExitCode.OK
    except Exception as exc:
        # A bug, not a user error: one line, no traceback (locals could hold secrets) unless
        # SIPWATCH_DEBUG asks for it.
        if os.environ.get("SIPWATCH_DEBUG"):
            raise
        if isinstance(exc, OSError) and exc.errno == errno.EPIPE:
            return ExitCode.OK
        print(
            f"sipwatch {args.command}: internal error ({type(exc).__name__}); "
            "set SIPWATCH_DEBUG=1 for the traceback",
            file=sys.stderr,
        )
        return ExitCode.UNAVAILABLE if isinstance(exc, OSError) else ExitCode.PROBLEM


if __name__ == "__main__":
    sys.exit(main())
