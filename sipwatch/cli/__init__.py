"""The ``sipwatch`` command line: ``main`` parses arguments; one module per command."""

from sipwatch.cli.main import main

__all__ = ["main"]
