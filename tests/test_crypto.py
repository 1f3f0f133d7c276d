"""jambonz password encryption: byte-compatible with Node's crypto in both directions."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipwatch.diagnosis.crypto import (
    NotEncryptedError,
    StoredForm,
    WrongSecretError,
    classify_stored_password,
    decrypt,
    derive_key,
    encrypt,
)
from tests.node_crypto import node


def test_key_is_first_32_chars_of_base64_sha256() -> None:
    expected = base64.b64encode(hashlib.sha256(b"jwt-secret").digest()).decode()[:32]
    assert derive_key("jwt-secret") == expected.encode()
    assert len(derive_key("x")) == 32


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("password", ["pw1", "s3cr3t!pässwörd", "x" * 16, "a" * 100])
def test_node_encrypts_python_decrypts(password: str, legacy: bool) -> None:
    res = node("encrypt", "shared-secret", password, legacy)
    assert res.returncode == 0, res.stderr
    stored = res.stdout
    assert classify_stored_password(stored) is StoredForm.ENCRYPTED
    assert decrypt(stored, "shared-secret", legacy_ctr=legacy) == password


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("password", ["pw1", "s3cr3t!pässwörd", "y" * 32])
def test_python_encrypts_node_decrypts(password: str, legacy: bool) -> None:
    stored = encrypt(password, "shared-secret", legacy_ctr=legacy)
    res = node("decrypt", "shared-secret", stored, legacy)
    assert res.returncode == 0, res.stderr
    assert res.stdout == password


def test_stored_form_is_json_stringify_shape() -> None:
    stored = encrypt("pw", "k", iv=bytes(range(16)))
    assert stored.startswith('{"iv":"000102030405060708090a0b0c0d0e0f","content":"')
    parsed = json.loads(stored)
    assert list(parsed) == ["iv", "content"]
    assert len(parsed["content"]) == 32  # one padded block


def test_wrong_secret_is_reported_not_returned() -> None:
    # Try many IVs: with CBC about 1 in 256 wrong keys passes padding and must still be caught.
    for i in range(300):
        stored = encrypt("correct horse", "right-secret", iv=i.to_bytes(16, "big"))
        with pytest.raises(WrongSecretError):
            decrypt(stored, "wrong-secret")


def test_wrong_secret_with_legacy_ctr_is_caught_as_garbage() -> None:
    stored = encrypt("correct horse battery", "right-secret", legacy_ctr=True)
    with pytest.raises(WrongSecretError):
        decrypt(stored, "wrong-secret", legacy_ctr=True)


@pytest.mark.parametrize(
    ("stored", "form"),
    [
        ("plainpass", StoredForm.PLAINTEXT),
        ("12345", StoredForm.PLAINTEXT),  # JSON number: Node throws on Buffer.from(undefined)
        ('"quoted"', StoredForm.PLAINTEXT),
        ('{"password":"x"}', StoredForm.PLAINTEXT),
        ("", StoredForm.EMPTY),
        (None, StoredForm.EMPTY),
        ('{"iv":"zz","content":"00"}', StoredForm.MALFORMED),
        ('{"iv":"00","content":"00"}', StoredForm.MALFORMED),
        ('{"iv":1,"content":"00"}', StoredForm.MALFORMED),
    ],
)
def test_classify_stored_password(stored: str | None, form: StoredForm) -> None:
    assert classify_stored_password(stored) is form
    with pytest.raises(NotEncryptedError) as info:
        decrypt(stored, "any")
    assert info.value.form is form


def test_plaintext_rejected_by_node_too() -> None:
    res = node("decrypt", "k", "plainpass")
    assert res.returncode != 0
    assert "not valid JSON" in res.stderr


@settings(max_examples=60, deadline=None)
@given(
    password=st.text(
        alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=64
    ),
    secret=st.text(min_size=1, max_size=40),
    legacy=st.booleans(),
)
def test_roundtrip(password: str, secret: str, legacy: bool) -> None:
    assert decrypt(encrypt(password, secret, legacy_ctr=legacy), secret, legacy_ctr=legacy) == (
        password
    )


# --------------------------------------------------------- what the text check accepts


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("bad", ["\x00", "\x01", "\x1f", "\t", "\n", "\x7f"])
def test_a_decrypted_control_character_reads_as_a_wrong_secret(bad: str, legacy: bool) -> None:
    # C0 controls and DEL: what a wrong key's garbage looks like, never in a device password
    stored = encrypt(f"pass{bad}word", "k", legacy_ctr=legacy)
    with pytest.raises(WrongSecretError, match=r"^decrypted bytes are not text$"):
        decrypt(stored, "k", legacy_ctr=legacy)


@pytest.mark.parametrize("edge", [" ", "~", "\x80", "\x85", "\x9f", "\xa0", "é", "\u2028", "😀"])
def test_printable_and_non_ascii_text_decrypts_as_is(edge: str) -> None:
    # exactly what check_password lets a new client have (the same two exclusions), so a
    # password sipwatch writes always decrypts back for its own check
    from sipwatch.remediation.actions import check_password

    password = f"pass{edge}word"
    assert check_password(password) is None
    assert decrypt(encrypt(password, "k"), "k") == password


def test_decrypt_defaults_to_aes_cbc() -> None:
    assert decrypt(encrypt("pw-cbc", "k"), "k") == "pw-cbc"
    # CTR content is no whole number of blocks: CBC says "bad decrypt"
    with pytest.raises(WrongSecretError, match=r"^bad decrypt$"):
        decrypt(encrypt("pw-ctr", "k", legacy_ctr=True), "k")


def test_errors_say_what_failed_and_never_the_password() -> None:
    with pytest.raises(NotEncryptedError) as info:
        decrypt("plain-secret-pw", "k")
    assert str(info.value) == "stored password is plaintext, not jambonz's encrypted form"
    with pytest.raises(WrongSecretError, match=r"^bad decrypt$") as wrong:
        decrypt(encrypt("correct horse", "right", iv=bytes(16)), "wrong")
    assert "correct horse" not in str(wrong.value)
    with pytest.raises(ValueError, match=r"^iv must be 16 bytes$"):
        encrypt("pw", "k", iv=bytes(15))


@pytest.mark.parametrize(
    "stored",
    ['{"iv":"000102030405060708090a0b0c0d0e0f"}', '{"content":"00"}', "{}"],
)
def test_an_object_without_both_iv_and_content_is_plaintext(stored: str) -> None:
    # digest-utils destructures {iv, content}; Buffer.from(undefined) throws, as for plaintext
    assert classify_stored_password(stored) is StoredForm.PLAINTEXT
    with pytest.raises(NotEncryptedError):
        decrypt(stored, "k")
