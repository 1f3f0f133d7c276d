"""Container health check: exit 0 when sipwatch's ``/healthz`` answers 200, else 1.

Why a script: the ``python:*-slim`` base image has no curl or wget, and installing one only
for the health check would add a network tool to the runtime image.  This uses the standard
library only and runs with ``python -I`` (isolated: no user site, no PYTHON* variables).

The URL is ``$SIPWATCH_HEALTHCHECK_URL`` when set (for a config file that moves the listener
somewhere the environment does not say), else derived from ``$SIPWATCH_LISTEN`` the same way
sipwatch reads it: "host:port", "[v6]:port" or ":port".  A wildcard host (all interfaces) is
probed on loopback.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping

DEFAULT_LISTEN = "127.0.0.1:9466"
TIMEOUT_SECONDS = 4.0
_WILDCARDS = {"", "0.0.0.0", "*"}  # noqa: S104 - names a wildcard, binds nothing
_V6_WILDCARDS = {"::", "[::]"}


def health_url(environ: Mapping[str, str]) -> str:
    """The /healthz URL for this environment (see the module docstring)."""
    explicit = environ.get("SIPWATCH_HEALTHCHECK_URL", "").strip()
    if explicit:
        return explicit
    listen = environ.get("SIPWATCH_LISTEN", "").strip() or DEFAULT_LISTEN
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"cannot read a port from SIPWATCH_LISTEN={listen!r}")
    if host in _WILDCARDS:
        host = "127.0.0.1"
    elif host in _V6_WILDCARDS:
        host = "[::1]"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}/healthz"


def check(url: str, timeout: float = TIMEOUT_SECONDS) -> tuple[bool, str]:
    """Probe ``url``; (healthy, one-line reason)."""
    if not url.startswith(("http://", "https://")):
        return False, f"refusing non-HTTP URL {url!r}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - scheme checked
            status = int(resp.status)
    except urllib.error.HTTPError as exc:
        return False, f"{url} answered {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return False, f"{url} unreachable: {exc}"
    if status != 200:
        return False, f"{url} answered {status}"
    return True, f"{url} answered 200"


def main() -> int:
    try:
        url = health_url(os.environ)
    except ValueError as exc:
        print(f"healthcheck: {exc}", file=sys.stderr)
        return 1
    healthy, reason = check(url)
    print(f"healthcheck: {reason}", file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
