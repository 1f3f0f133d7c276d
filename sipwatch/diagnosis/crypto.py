"""jambonz client-password encryption, both directions, byte-compatible with Node.

jambonz-api-server and @jambonz/digest-utils store ``clients.password`` as
``{"iv":"<32 hex>","content":"<hex>"}``: AES-256 with a key made of the first 32 characters
of base64(sha256(ENCRYPTION_SECRET || JWT_SECRET)), used as 32 ASCII bytes.  CBC with PKCS#7
padding by default, CTR (no padding) when ``LEGACY_CRYPTO`` is set.

sipwatch decrypts to tell "stored in plaintext" and "encrypted with another secret" apart
from "the device sends the wrong password", and encrypts so remediation can write a row the
registrar accepts.  Plaintexts never leave this module except as the return value of
:func:`decrypt`; callers compare and drop them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from enum import StrEnum

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

_IV_BYTES = 16


class StoredForm(StrEnum):
    """What a ``clients.password`` value looks like before any key is tried."""

    ENCRYPTED = "encrypted"  # {"iv": hex16, "content": hex}
    PLAINTEXT = "plaintext"  # anything JSON.parse rejects or that has no iv/content
    EMPTY = "empty"  # NULL or ""
    MALFORMED = "malformed"  # JSON object with iv/content that Node cannot use


class DecryptError(Exception):
    """The stored value could not be turned back into a password with this secret."""


class NotEncryptedError(DecryptError):
    """The stored value is not in jambonz's encrypted form (plaintext, empty, malformed)."""

    def __init__(self, form: StoredForm) -> None:
        super().__init__(f"stored password is {form.value}, not jambonz's encrypted form")
        self.form = form


class WrongSecretError(DecryptError):
    """Decryption failed or produced non-text bytes: the secret is not the one used to encrypt."""


def derive_key(secret: str) -> bytes:
    """The 32-byte AES key jambonz derives from ENCRYPTION_SECRET (or JWT_SECRET)."""
    digest = hashlib.sha256(secret.encode("utf-8")).digest()
    return base64.b64encode(digest)[:32]


def classify_stored_password(stored: str | None) -> StoredForm:
    """Classify a stored password the way digest-utils' ``JSON.parse`` path would see it."""
    if stored is None or stored == "":
        return StoredForm.EMPTY
    try:
        parsed = json.loads(stored)
    except (ValueError, RecursionError):
        return StoredForm.PLAINTEXT
    if not isinstance(parsed, dict) or "iv" not in parsed or "content" not in parsed:
        # '12345' parses as a number; Buffer.from(undefined) then throws: same as plaintext.
        return StoredForm.PLAINTEXT
    iv, content = parsed["iv"], parsed["content"]
    if not isinstance(iv, str) or not isinstance(content, str):
        return StoredForm.MALFORMED
    try:
        iv_bytes = bytes.fromhex(iv)
        bytes.fromhex(content)
    except ValueError:
        return StoredForm.MALFORMED
    if len(iv_bytes) != _IV_BYTES or not content:
        return StoredForm.MALFORMED
    return StoredForm.ENCRYPTED


def _cipher(key: bytes, iv: bytes, legacy_ctr: bool) -> Cipher[modes.CBC] | Cipher[modes.CTR]:
    if legacy_ctr:
        # Node's aes-256-ctr treats the whole 16-byte IV as a big-endian counter, as here.
        return Cipher(algorithms.AES(key), modes.CTR(iv))
    return Cipher(algorithms.AES(key), modes.CBC(iv))


def encrypt(
    plaintext: str, secret: str, *, legacy_ctr: bool = False, iv: bytes | None = None
) -> str:
    """Encrypt like jambonz-api-server ``encrypt()``; returns the JSON to store."""
    if iv is None:
        iv = os.urandom(_IV_BYTES)
    if len(iv) != _IV_BYTES:
        raise ValueError("iv must be 16 bytes")
    data = plaintext.encode("utf-8")
    if not legacy_ctr:
        padder = padding.PKCS7(128).padder()
        data = padder.update(data) + padder.finalize()
    enc = _cipher(derive_key(secret), iv, legacy_ctr).encryptor()
    content = enc.update(data) + enc.finalize()
    # JSON.stringify output: no spaces, iv first.
    return json.dumps({"iv": iv.hex(), "content": content.hex()}, separators=(",", ":"))


def has_control_characters(text: str) -> bool:
    """C0 controls or DEL: never in a password jambonz stores (the portal refuses them), so
    their presence marks a failed decrypt, and a new password may not carry them."""
    return any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text)


def _looks_like_text(raw: bytes) -> str | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if has_control_characters(text):
        return None
    return text


def decrypt(stored: str | None, secret: str, *, legacy_ctr: bool = False) -> str:
    """Decrypt a stored password; raise :class:`DecryptError` subclasses on failure.

    A wrong CBC key fails padding about 255 times in 256 ("bad decrypt" in Node); the
    remaining cases, and every wrong CTR key, yield garbage.  Garbage that is not printable
    UTF-8 is reported as :class:`WrongSecretError` too, because no device password contains
    control bytes.
    """
    form = classify_stored_password(stored)
    if form is not StoredForm.ENCRYPTED:
        raise NotEncryptedError(form)
    assert stored is not None
    parsed = json.loads(stored)
    iv = bytes.fromhex(parsed["iv"])
    content = bytes.fromhex(parsed["content"])
    dec = _cipher(derive_key(secret), iv, legacy_ctr).decryptor()
    try:
        raw = dec.update(content) + dec.finalize()
        if not legacy_ctr:
            unpadder = padding.PKCS7(128).unpadder()
            raw = unpadder.update(raw) + unpadder.finalize()
    except ValueError as exc:  # wrong block length or bad padding
        raise WrongSecretError("bad decrypt") from exc
    text = _looks_like_text(raw)
    if text is None:
        raise WrongSecretError("decrypted bytes are not text")
    return text
