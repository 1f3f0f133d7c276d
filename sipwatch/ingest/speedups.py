"""Which implementation of the ingest hot path runs: the compiled extension or pure Python.

The one definition of the implementation's name: ``sipwatch --version`` prints it and
``sipwatch_build_info`` carries it as a label.  The compiled module
(``sipwatch/ingest/_speedups.pyx``, built by ``setup.py`` when a C compiler is there) is a
drop-in for the log scanner's regex walk, for ``sip.build_sip_message`` and for the walk that
frames a channel's records into events (``framing.HotPath``); its sibling
(``sipwatch/ingest/_transactions.pyx``) for the REGISTER tracker
(``transactions.RegisterTracker``).  The two are built and loaded together: "compiled" means
both run.  The pure-Python code is the reference, the fallback and what
``SIPWATCH_NO_EXTENSIONS=1`` forces (the variable aiohttp, yarl and multidict read as
``*_NO_EXTENSIONS``).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

COMPILED = "compiled"
PYTHON = "python"
NO_EXTENSIONS_ENV = "SIPWATCH_NO_EXTENSIONS"

#: True when the environment asks for the pure-Python implementation.
DISABLED = os.environ.get(NO_EXTENSIONS_ENV, "") not in ("", "0")

compiled: ModuleType | None = None
compiled_tracker: ModuleType | None = None
if not DISABLED:
    try:
        compiled = importlib.import_module("sipwatch.ingest._speedups")
        compiled_tracker = importlib.import_module("sipwatch.ingest._transactions")
    except ImportError:  # built without a C compiler: the pure-Python package
        compiled = compiled_tracker = None

#: The implementation this process runs: "compiled" or "python".
IMPLEMENTATION = COMPILED if compiled is not None else PYTHON


def fallback_notice() -> str | None:
    """The one line a command prints at start when the extension is missing (not when
    ``SIPWATCH_NO_EXTENSIONS`` turned it off: then the user asked for it)."""
    if compiled is not None or DISABLED:
        return None
    return (
        "sipwatch: the compiled parser is not installed (built without a C compiler?); "
        f"using the pure-Python implementation: same results, slower. Set {NO_EXTENSIONS_ENV}=1 "
        "to silence this."
    )
