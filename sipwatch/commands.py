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
        return asyncio.run(run_diagnose(args))

    p.set_defaults(handler=handler)


def registrars() -> Iterator[Callable[[SubParsers], None]]:
    try:  # TEMP until the diagnosis package lands
        import sipwatch.diagnosis.cli  # noqa: F401

        yield _diagnose
    except ImportError:
        pass
    yield _check_config
