"""Arguments shared by the commands that describe a device (``diagnose``, ``fix``).

argparse turns a ``ArgumentTypeError`` into a usage error (exit 2) that names the option, so a
value that cannot be what the option says is refused before anything runs, instead of being
carried into a diagnosis or an audit record.
"""

from __future__ import annotations

import argparse
import ipaddress
from typing import Any

from sipwatch.diagnosis.symptom import Symptom


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


def add_device_arguments(p: argparse.ArgumentParser) -> None:
    """The device and the answer it got, as ``diagnose`` explains it and ``fix`` diagnoses
    it first: one definition of the options, so the two commands take them alike."""
    p.add_argument("--user", required=True, help="the device's SIP user (To user, AOR user)")
    p.add_argument("--domain", required=True, help="the device's SIP domain (To host, realm)")
    p.add_argument("--source-ip", type=ip_address, help="the device's public IP address")
    p.add_argument(
        "--status", type=sip_status, help="the final SIP status the device got (e.g. 403)"
    )
    p.add_argument("--x-reason", help="the X-Reason header of that response, if any")
    p.add_argument(
        "--auth-username",
        help="the Authorization username, if the device authenticates as another name",
    )


def symptom_from_args(args: argparse.Namespace, **known: Any) -> Symptom:
    """The :class:`Symptom` the options of :func:`add_device_arguments` describe; ``known``
    adds (or overrides) what the command knows besides."""
    fields: dict[str, Any] = {
        "user": args.user,
        "domain": args.domain,
        "source_ip": args.source_ip,
        "status": args.status,
        "x_reason": args.x_reason,
        "auth_username": args.auth_username,
    }
    return Symptom(**(fields | known))
