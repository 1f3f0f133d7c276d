"""Argument types shared by the commands that describe a device (``diagnose``, ``fix``).

argparse turns a ``ArgumentTypeError`` into a usage error (exit 2) that names the option, so a
value that cannot be what the option says is refused before anything runs, instead of being
carried into a diagnosis or an audit record.
"""

from __future__ import annotations

import argparse
import ipaddress


def ip_address(value: str) -> str:
    """An IPv4 or IPv6 address (``--source-ip``), returned in its canonical form."""
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {value[:64]!r}") from None


def sip_status(value: str) -> int:
    """A final SIP status code (``--status``); 0 stands for a timeout."""
    try:
        code = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("status must be a SIP status code") from None
    if not (code == 0 or 100 <= code <= 699):
        raise argparse.ArgumentTypeError("status must be 0 (timeout) or 100-699")
    return code
