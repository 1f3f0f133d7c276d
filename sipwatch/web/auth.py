"""TLS and basic authentication for the HTTP endpoints, configured the Prometheus way.

``/api/failures`` serves usernames, source IPs and User-Agents, and ``/metrics`` the same
in labels; on a network port that needs protection.  Rather than invent a format, sipwatch
reads the web configuration file of the Prometheus exporter-toolkit (``--web.config.file``
of node_exporter and friends), so operators reuse what they already have:

.. code-block:: yaml

    tls_server_config:
      cert_file: sipwatch.crt          # relative paths are relative to this file
      key_file: sipwatch.key
      client_ca_file: ca.crt           # optional: require client certificates
      client_auth_type: RequireAndVerifyClientCert
      min_version: TLS12
    basic_auth_users:
      prometheus: $2y$10$...           # bcrypt hash (htpasswd -nBC 10 "" | tr -d ':\\n')

``/healthz`` and ``/readyz`` stay open: container and Kubernetes probes cannot send
credentials easily, and they tell only up/down.  Hashes are bcrypt, as in exporter-toolkit;
a verified (user, password) pair is remembered for a minute, because bcrypt is deliberately
slow and Prometheus scrapes every few seconds.  The check runs in a worker thread (it would
stall the event loop for tens of milliseconds), and an unknown user costs the same as a wrong
password, so user names cannot be probed by timing.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml
from aiohttp import web
from aiohttp.typedefs import Middleware

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_CACHE_SECONDS = 60.0


class WebConfigError(ValueError):
    """The web configuration file is unreadable or wrong; the message says where."""


@dataclass(frozen=True)
class WebConfig:
    """What the web configuration file asks for."""

    ssl_context: ssl.SSLContext | None = None
    users: Mapping[str, bytes] = field(default_factory=dict)  # user -> bcrypt hash


def load_web_config(path: str | Path) -> WebConfig:
    """Read and check an exporter-toolkit web configuration file."""
    file = Path(path)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise WebConfigError(f"{file}: cannot read the web configuration: {exc}") from None
    if not isinstance(data, dict):
        raise WebConfigError(f"{file}: expected a mapping at the top level")
    unknown = set(data) - {"tls_server_config", "basic_auth_users", "http_server_config"}
    if unknown:
        raise WebConfigError(f"{file}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    context = _tls(file, data.get("tls_server_config"))
    users = _users(file, data.get("basic_auth_users"))
    return WebConfig(ssl_context=context, users=users)


def _tls(file: Path, tls: Any) -> ssl.SSLContext | None:
    if not tls:
        return None
    if not isinstance(tls, dict):
        raise WebConfigError(f"{file}: tls_server_config must be a mapping")
    base = file.parent

    def path(key: str) -> str:
        value = tls.get(key)
        if not isinstance(value, str) or not value:
            raise WebConfigError(f"{file}: tls_server_config.{key} is required")
        return str(base / value)

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    version = _TLS_VERSIONS.get(str(tls.get("min_version", "TLS12")))
    if version is None:
        raise WebConfigError(f"{file}: tls_server_config.min_version must be TLS12 or TLS13")
    context.minimum_version = version
    try:
        context.load_cert_chain(path("cert_file"), path("key_file"))
    except (OSError, ssl.SSLError) as exc:
        raise WebConfigError(f"{file}: cannot load the certificate or key: {exc}") from None
    auth = str(tls.get("client_auth_type", "NoClientCert"))
    if auth not in _CLIENT_AUTH:
        raise WebConfigError(
            f"{file}: tls_server_config.client_auth_type must be one of {', '.join(_CLIENT_AUTH)}"
        )
    context.verify_mode = _CLIENT_AUTH[auth]
    if context.verify_mode != ssl.CERT_NONE:
        try:
            context.load_verify_locations(path("client_ca_file"))
        except (OSError, ssl.SSLError) as exc:
            raise WebConfigError(f"{file}: cannot load client_ca_file: {exc}") from None
    return context


def _users(file: Path, users: Any) -> dict[str, bytes]:
    if not users:
        return {}
    if not isinstance(users, dict):
        raise WebConfigError(f"{file}: basic_auth_users must map user names to bcrypt hashes")
    out: dict[str, bytes] = {}
    for name, hashed in users.items():
        if (
            not isinstance(name, str)
            or not isinstance(hashed, str)
            or not hashed.startswith(("$2a$", "$2b$", "$2y$"))
        ):
            raise WebConfigError(f"{file}: basic_auth_users.{name}: expected a bcrypt hash")
        out[name] = hashed.encode()
    return out


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def basic_auth_middleware(
    users: Mapping[str, bytes], clock: Callable[[], float] = time.monotonic
) -> Middleware:
    """aiohttp middleware: HTTP basic authentication against bcrypt hashes."""
    verified: dict[bytes, float] = {}  # sha256(user:password) -> until
    cost = next(iter(users.values()), b"$2b$10$").split(b"$")[2] if users else b"10"
    dummy = bcrypt.hashpw(b"unknown user", bcrypt.gensalt(rounds=int(cost)))

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS:
            return await handler(request)
        header = request.headers.get("Authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user = password = ""
            key = hashlib.sha256(f"{user}:{password}".encode()).digest()
            until = verified.get(key)
            now = clock()
            if until is not None and until > now:
                return await handler(request)
            hashed = users.get(user)
            ok = await asyncio.to_thread(
                bcrypt.checkpw, password.encode(), hashed if hashed is not None else dummy
            )
            if ok and hashed is not None:
                if len(verified) > 64:
                    verified.clear()
                verified[key] = now + _CACHE_SECONDS
                return await handler(request)
        return web.Response(
            status=401,
            text="unauthorized\n",
            headers={"WWW-Authenticate": 'Basic realm="sipwatch"'},
        )

    return middleware
