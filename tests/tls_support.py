"""Throw-away TLS material for the tests that serve HTTPS on loopback (the fake Slack
endpoint, the secured /metrics), made with ``cryptography``: one way to make a self-signed
certificate and to write a key as PEM."""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """``key`` as an unencrypted PKCS#8 PEM file."""
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def make_certificate(
    directory: Path, hostname: str, *, cert_name: str = "cert.pem", key_name: str = "key.pem"
) -> tuple[Path, Path]:
    """A self-signed certificate (also its own CA) for ``hostname``: (cert, key) paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / cert_name
    key_path = directory / key_name
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    write_key(key_path, key)
    return cert_path, key_path
