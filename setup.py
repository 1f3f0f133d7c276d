"""Build of the optional compiled hot path (``sipwatch/ingest/_speedups.pyx``, the parser, and
``sipwatch/ingest/_transactions.pyx``, the REGISTER tracker).

Everything else about the package is in ``pyproject.toml``; setuptools only takes
``ext_modules`` from here.  The extension is optional, the aiohttp/yarl pattern: Cython is a
build requirement (``[build-system]``), and a compile that fails (no C compiler, no Python
headers) prints one warning and leaves the pure-Python implementation, which is the reference
and works everywhere.  ``SIPWATCH_NO_EXTENSIONS=1`` skips the build, as it skips the import at
run time (``sipwatch.ingest.speedups``).
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

EXTENSIONS = {
    "sipwatch.ingest._speedups": "sipwatch/ingest/_speedups.pyx",
    "sipwatch.ingest._transactions": "sipwatch/ingest/_transactions.pyx",
}


def _extensions() -> list[Extension]:
    if os.environ.get("SIPWATCH_NO_EXTENSIONS", "") not in ("", "0"):
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        print(
            "sipwatch: Cython is not installed: building the pure-Python package", file=sys.stderr
        )
        return []
    exts = [Extension(name, [pyx]) for name, pyx in EXTENSIONS.items()]
    return list(cythonize(exts, quiet=True))


class OptionalBuildExt(build_ext):
    """build_ext whose failure is a warning: the package works without the extension."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # any compiler or platform failure
            self._skip(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._skip(exc)

    @staticmethod
    def _skip(exc: Exception) -> None:
        print(
            f"sipwatch: WARNING: the compiled extension could not be built ({exc}); "
            "installing the pure-Python implementation (slower, same results)",
            file=sys.stderr,
        )


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
