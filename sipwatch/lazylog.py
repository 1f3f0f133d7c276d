"""A structlog logger for modules on ``sipwatch replay``'s path, importing structlog on first use.

Why: replay never logs through structlog (it prints a report), yet importing structlog - and
the console renderer and rich it pulls in - cost every replay 60 ms, a tenth of a bare scan
of a 100 MB log.  The daemon configures structlog (``sipwatch.logsetup``) before anything
logs, so binding late changes nothing there.
"""

from __future__ import annotations

from typing import Any


class LazyLogger:
    """``structlog.get_logger(name)``, bound the first time a method is looked up."""

    __slots__ = ("_logger", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._logger: Any = None

    def __getattr__(self, attr: str) -> Any:
        if self._logger is None:
            import structlog

            self._logger = structlog.get_logger(self._name)
        return getattr(self._logger, attr)


def get_logger(name: str) -> LazyLogger:
    return LazyLogger(name)
