"""The secret proof itself (``sipwatch.diagnosis.secret_proof``): exact verdicts, counts,
sentences and the sample the database gives it.

The remediation and diagnosis tests (test_remediation_secret.py, test_diagnosis_secret.py)
show what each verdict makes sipwatch do; these pin the verdict: which rows are sampled (in
``client_sid`` order, up to the limit, the repaired row left out), that a row the proof cannot
use does not end the sample, that ``LEGACY_CRYPTO`` reaches the decryption, and the exact
words an operator reads.  Each database test owns a database: the proof samples every
encrypted client password in it.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import replace

import pytest

from sipwatch.diagnosis.crypto import encrypt
from sipwatch.diagnosis.secret_proof import (
    CHANCE_MAX,
    LISTED_MAX,
    SAMPLE_LIMIT,
    SECRET_VARIABLE,
    SecretState,
    SecretStatus,
    _chance,
    _judged,
    _secret_variable,
    judge_secret,
    prove_secret,
)
from sipwatch.remediation.writer import DbWriter
from tests.jambonz_db import TEST_SECRET, Seeder, unique_realm
from tests.remediation_support import bounded

OTHER = "an-older-jambonz-secret-77aa"
VAR = "SIPWATCH_JAMBONZ_ENCRYPTION_SECRET"


def sid(n: int) -> str:
    """A client_sid that sorts by ``n`` (the proof samples in client_sid order)."""
    return f"00000000-0000-4000-8000-{n:012d}"


def test_the_variable_is_the_schemas_env_name_of_encryption_secret() -> None:
    # SECRET_VARIABLE is computed at import; call the function too, so a change to how it
    # reads the schema is seen by a test
    assert _secret_variable() == VAR
    assert SECRET_VARIABLE == VAR


# ------------------------------------------------------------------------ the sentences


def status(
    state: SecretState, sampled: int = 0, decrypted: int = 0, failing: int = 0
) -> SecretStatus:
    return SecretStatus(
        state,
        sampled=sampled,
        decrypted=decrypted,
        failing=tuple(f"c{i:02d}" for i in range(failing)),
    )


def test_describe_says_each_verdict_in_full_and_names_only_the_variable() -> None:
    assert status(SecretState.NOT_CONFIGURED).describe() == (
        f"no jambonz secret is configured ({VAR})"
    )
    assert status(SecretState.UNPROVEN).describe() == (
        "no encrypted client password exists to prove that sipwatch's secret "
        f"({VAR}) is the one jambonz uses"
    )
    assert status(SecretState.MISMATCH, 7, 0, 7).describe() == (
        f"sipwatch's secret ({VAR}) is not the one jambonz uses: none of the 7 encrypted "
        "client passwords sampled decrypts with it"
    )
    assert status(SecretState.PROVEN, 4, 4).describe() == (
        "sipwatch's secret is the one jambonz uses: 4 of the 4 encrypted client passwords "
        "sampled decrypt with it"
    )
    assert status(SecretState.PARTIAL, 5, 3, 2).describe() == (
        "sipwatch's secret is the one jambonz uses: 3 of the 5 encrypted client passwords "
        "sampled decrypt with it; 2 do not and were written with another secret "
        "(client_sid c00, c01): set their passwords again in the jambonz portal"
    )


def test_describe_lists_at_most_listed_max_rows_and_counts_the_rest() -> None:
    assert LISTED_MAX == 10
    exactly = status(SecretState.PARTIAL, 11, 1, 10).describe()
    listed = ", ".join(f"c{i:02d}" for i in range(10))
    assert exactly.endswith(
        f"10 do not and were written with another secret (client_sid {listed}): "
        "set their passwords again in the jambonz portal"
    )
    more = status(SecretState.PARTIAL, 13, 1, 12).describe()
    assert more.endswith(
        f"12 do not and were written with another secret (client_sid {listed} and 2 more): "
        "set their passwords again in the jambonz portal"
    )
    assert "c10" not in more and "c11" not in more
    one_more = status(SecretState.PARTIAL, 12, 1, 11).describe()
    assert f"(client_sid {listed} and 1 more)" in one_more


def test_to_dict_holds_counts_ids_and_the_sentence_only() -> None:
    s = SecretStatus(
        SecretState.PARTIAL,
        sampled=14,
        decrypted=2,
        failing=tuple(f"c{i:02d}" for i in range(12)),
        checked_at=1234.5,
        legacy_crypto=True,
    )
    assert s.to_dict() == {
        "state": "partial",
        "sampled": 14,
        "decrypted": 2,
        "failing_clients": [f"c{i:02d}" for i in range(10)],
        "legacy_crypto": True,
        "checked_at": 1234.5,
        "detail": s.describe(),
    }


# ------------------------------------------------------------------------ excluding a row


def test_excluding_the_diagnosed_row_rejudges_without_it() -> None:
    s = SecretStatus(
        SecretState.PARTIAL, sampled=4, decrypted=1, failing=("a", "b", "c"), checked_at=9.0
    )
    assert s.excluding("b") == SecretStatus(
        SecretState.PARTIAL, sampled=3, decrypted=1, failing=("a", "c"), checked_at=9.0
    )
    # the only row that did not decrypt was the diagnosed one: the others prove the secret
    lone = SecretStatus(SecretState.PARTIAL, sampled=3, decrypted=2, failing=("x",))
    assert lone.excluding("x") == SecretStatus(
        SecretState.PROVEN, sampled=2, decrypted=2, failing=()
    )
    # no other row at all: nothing is proven either way
    only = SecretStatus(SecretState.MISMATCH, sampled=1, decrypted=0, failing=("x",))
    assert only.excluding("x") == SecretStatus(SecretState.UNPROVEN, sampled=0, failing=())
    assert only.excluding("x").matches is None
    # a row that decrypted, or was not sampled, leaves the verdict as it was
    assert s.excluding("zzz") is s


# ------------------------------------------------------------------------ the pure judge


def rows_of(secret: str, n: int, *, legacy: bool = False, first: int = 0) -> list[dict[str, str]]:
    return [
        {
            "client_sid": sid(first + i),
            "password": encrypt(f"device-pw-{i}", secret, legacy_ctr=legacy),
        }
        for i in range(n)
    ]


def test_a_row_that_is_not_encrypted_is_skipped_not_the_end_of_the_sample() -> None:
    unusable: list[dict[str, object]] = [
        {"client_sid": "plain", "password": "plaintext-pw"},
        {"client_sid": "malformed", "password": '{"iv":"zz","content":"00"}'},
        {"client_sid": "null", "password": None},
        {"client_sid": "number", "password": 12345},
    ]
    got = judge_secret(
        [*unusable, *rows_of(TEST_SECRET, 2), *rows_of(OTHER, 1, first=2)], TEST_SECRET, now=5.0
    )
    assert got == SecretStatus(
        SecretState.PARTIAL, sampled=3, decrypted=2, failing=(sid(2),), checked_at=5.0
    )


def test_legacy_crypto_rows_are_judged_with_aes_ctr() -> None:
    legacy_rows = rows_of(TEST_SECRET, 3, legacy=True)
    got = judge_secret(legacy_rows, TEST_SECRET, legacy_crypto=True, now=1.0)
    assert got == SecretStatus(
        SecretState.PROVEN,
        sampled=3,
        decrypted=3,
        checked_at=1.0,
        legacy_crypto=True,
        chance=_chance([11, 11, 11], 3),  # three 11-byte rows: about 6 in 10**10
    )
    # CTR content read as CBC: not whole blocks ("bad decrypt"), so not proven
    got = judge_secret(legacy_rows, TEST_SECRET, now=1.0)
    assert (got.state, got.decrypted, got.legacy_crypto) == (SecretState.MISMATCH, 0, False)


def test_checked_at_is_the_given_time_or_now() -> None:
    assert judge_secret(rows_of(TEST_SECRET, 1), TEST_SECRET, now=42.0).checked_at == 42.0
    assert judge_secret((), None, now=43.0, legacy_crypto=True) == SecretStatus(
        SecretState.NOT_CONFIGURED, checked_at=43.0, legacy_crypto=True
    )
    before = time.time()
    for secret in (TEST_SECRET, None):
        at = judge_secret(rows_of(TEST_SECRET, 1), secret).checked_at
        assert before <= at <= time.time()


# ------------------------------------------------------------------------ against MariaDB


async def seed_clients(seeder: Seeder, rows: dict[int, str | None]) -> None:
    """One client per ``sid(n)`` with the stored value as given."""
    acct = await seeder.account(unique_realm())
    for n, stored in rows.items():
        if stored is None:
            await seeder.client(acct, f"u{n}", password=None, sid=sid(n))
        else:
            await seeder.client(acct, f"u{n}", stored=stored, sid=sid(n))


@bounded(30)
async def test_prove_samples_encrypted_rows_in_client_sid_order(
    fresh_seeder: Seeder, fresh_writer: DbWriter
) -> None:
    await seed_clients(
        fresh_seeder,
        {
            0: '{"iv":"zz","content":"00"}',  # looks encrypted to LIKE; not usable
            1: encrypt("old-1", OTHER),
            2: encrypt("old-2", OTHER),
            3: encrypt("old-3", OTHER),
            4: encrypt("good-4", TEST_SECRET),
            5: encrypt("good-5", TEST_SECRET),
            6: "plaintext-pw",
            7: None,
        },
    )
    async with fresh_writer.transaction(readonly=True) as tx:
        everything = await prove_secret(tx, TEST_SECRET)
        first_four = await prove_secret(tx, TEST_SECRET, limit=4)
        without_1 = await prove_secret(tx, TEST_SECRET, exclude_client_sid=sid(1))
        wrong = await prove_secret(tx, "not-the-jambonz-secret")
    assert everything.state is SecretState.PARTIAL
    assert (everything.sampled, everything.decrypted, everything.failing) == (
        5,
        2,
        (sid(1), sid(2), sid(3)),
    )
    assert everything.legacy_crypto is False
    # the limit counts rows the server returns: the unusable sid(0) takes one of the four
    assert (first_four.state, first_four.sampled, first_four.failing) == (
        SecretState.MISMATCH,
        3,
        (sid(1), sid(2), sid(3)),
    )
    assert (without_1.sampled, without_1.decrypted, without_1.failing) == (4, 2, (sid(2), sid(3)))
    assert (wrong.state, wrong.sampled, wrong.decrypted) == (SecretState.MISMATCH, 5, 0)


@bounded(30)
async def test_prove_samples_at_most_sample_limit_rows(
    fresh_seeder: Seeder, fresh_writer: DbWriter
) -> None:
    assert SAMPLE_LIMIT == 50
    await seed_clients(fresh_seeder, {n: encrypt(f"pw-{n}", TEST_SECRET) for n in range(51)})
    async with fresh_writer.transaction(readonly=True) as tx:
        got = await prove_secret(tx, TEST_SECRET)
    assert (got.state, got.sampled, got.decrypted) == (SecretState.PROVEN, 50, 50)


@bounded(30)
async def test_prove_passes_legacy_crypto_on_and_needs_a_secret(
    fresh_seeder: Seeder, fresh_writer: DbWriter
) -> None:
    await seed_clients(
        fresh_seeder, {n: encrypt(f"device-pw-{n}", TEST_SECRET, legacy_ctr=True) for n in range(3)}
    )
    async with fresh_writer.transaction(readonly=True) as tx:
        legacy = await prove_secret(tx, TEST_SECRET, legacy_crypto=True)
        as_cbc = await prove_secret(tx, TEST_SECRET)
        for missing in (None, ""):
            none = await prove_secret(tx, missing, legacy_crypto=True)
            assert (none.state, none.sampled, none.legacy_crypto) == (
                SecretState.NOT_CONFIGURED,
                0,
                True,
            )
            assert none.matches is None and not none.allows_encryption
    assert (legacy.state, legacy.sampled, legacy.legacy_crypto) == (SecretState.PROVEN, 3, True)
    assert (as_cbc.state, as_cbc.sampled, as_cbc.legacy_crypto) == (
        SecretState.MISMATCH,
        3,
        False,
    )


@pytest.mark.parametrize("state", list(SecretState))
def test_only_proven_and_partial_allow_encryption(state: SecretState) -> None:
    s = SecretStatus(state)
    allowed = state in (SecretState.PROVEN, SecretState.PARTIAL)
    assert s.allows_encryption is allowed
    expected = True if allowed else (False if state is SecretState.MISMATCH else None)
    assert s.matches is expected


# ------------------------------------------- LEGACY_CRYPTO: a chance decrypt proves nothing

JAMBONZ_LEGACY = "the-jambonz-secret-of-a-legacy-install"


def legacy_rows(first_iv: int, n: int) -> list[dict[str, str]]:
    """``n`` clients with 8-character passwords, written by a LEGACY_CRYPTO jambonz with its
    own secret; the IVs are fixed so the test is the same every run."""
    return [
        {
            "client_sid": sid(iv),
            "password": encrypt(
                f"pw{iv:06d}", JAMBONZ_LEGACY, legacy_ctr=True, iv=iv.to_bytes(16, "big")
            ),
        }
        for iv in range(first_iv, first_iv + n)
    ]


def chance_decrypts(rows: list[dict[str, str]], secret: str) -> list[str]:
    from sipwatch.diagnosis.crypto import DecryptError, decrypt

    found = []
    for row in rows:
        with contextlib.suppress(DecryptError):
            decrypt(row["password"], secret, legacy_ctr=True)
            found.append(row["client_sid"])
    return found


def test_a_wrong_secret_that_decrypts_one_short_ctr_password_by_chance_is_not_proven() -> None:
    # sipwatch has the wrong secret; one of the fifty AES-CTR rows happens to turn into
    # printable text with it (a 1-in-13 event for fifty 8-character passwords)
    rows = legacy_rows(850, 50)
    assert len(chance_decrypts(rows, TEST_SECRET)) == 1
    got = judge_secret(rows, TEST_SECRET, legacy_crypto=True, now=1.0)
    assert (got.state, got.sampled, got.decrypted) == (SecretState.UNPROVEN, 50, 1)
    assert got.chance == 50 / 256
    assert not got.allows_encryption and got.matches is None
    assert got.describe() == (
        f"1 of the 50 encrypted client passwords sampled decrypt with sipwatch's secret ({VAR}), "
        "too few and too short to prove it is the one jambonz uses: with LEGACY_CRYPTO "
        "(AES-CTR) a wrong secret decrypts short passwords by chance"
    )
    # jambonz's own secret decrypts every row, which no wrong secret does by chance
    right = judge_secret(rows, JAMBONZ_LEGACY, legacy_crypto=True)
    assert (right.state, right.decrypted) == (SecretState.PROVEN, 50)
    assert right.chance == (50 / 256) ** 50 / math.factorial(50)


def test_under_aes_cbc_one_decrypting_row_is_proof() -> None:
    # the padding check makes a chance success negligible: no chance is computed
    got = judge_secret(rows_of(TEST_SECRET, 1), TEST_SECRET)
    assert (got.state, got.chance) == (SecretState.PROVEN, 0.0)


def test_the_chance_bound_and_its_threshold() -> None:
    assert CHANCE_MAX == 1e-6
    assert _chance([8] * 50, 1) == 50 / 256
    assert _chance([8, 8, 8], 3) == (3 / 256) ** 3 / 6
    assert _chance([20], 1) == 2.0**-20
    at_max = SecretStatus(SecretState.UNPROVEN, sampled=2, chance=CHANCE_MAX)
    assert _judged(at_max, 2).state is SecretState.PROVEN
    assert _judged(at_max, 1).state is SecretState.PARTIAL
    above = replace(at_max, chance=CHANCE_MAX * 1.01)
    assert _judged(above, 2).state is SecretState.UNPROVEN
    assert _judged(above, 0).state is SecretState.MISMATCH
    # three 8-character rows that decrypt are proof; one 7-character row is not
    three = legacy_rows(0, 3)
    assert judge_secret(three, JAMBONZ_LEGACY, legacy_crypto=True).state is SecretState.PROVEN
    short = [{"client_sid": "i", "password": encrypt("ivan-pw", JAMBONZ_LEGACY, legacy_ctr=True)}]
    assert judge_secret(short, JAMBONZ_LEGACY, legacy_crypto=True).state is SecretState.UNPROVEN


def test_excluding_a_row_keeps_the_chance_of_the_proof() -> None:
    rows = legacy_rows(850, 50)
    got = judge_secret(rows, TEST_SECRET, legacy_crypto=True)
    without = got.excluding(got.failing[0])
    assert (without.state, without.sampled, without.chance) == (
        SecretState.UNPROVEN,
        49,
        got.chance,
    )
