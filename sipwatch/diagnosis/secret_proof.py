"""Is sipwatch's jambonz secret the one the registrar uses?  Prove it against the database.

sipwatch is given the jambonz ``ENCRYPTION_SECRET`` (or ``JWT_SECRET``) separately from
jambonz itself, so it can be wrong.  A wrong secret is dangerous twice over:

* remediation would write a client password the registrar cannot decrypt (the device gets
  500 forever, the portal shows garbage), and its own check could not notice, because it
  decrypts with the same wrong secret;
* diagnosis would blame every healthy client for a password that "does not decrypt".

The only witness sipwatch has is the data jambonz wrote: every encrypted ``clients.password``
was encrypted with jambonz's secret.  So the proof is to decrypt a bounded sample of them.
This module is the one place that proof is made and judged; every encrypting remediation
action, ``sipwatch fix``, the daemon's auto mode and the diagnosis use it.

Verdicts (``SecretStatus.state``):

* ``proven``: every sampled password decrypts;
* ``partial``: some decrypt, some do not: the secret is proven, the others were written with
  another secret (listed, so an operator can reset them);
* ``mismatch``: none decrypts: the secret is not jambonz's.  Nothing may be encrypted with it
  and no client may be blamed for it;
* ``unproven``: there is no encrypted password to prove it with (a fresh install), or, under
  ``LEGACY_CRYPTO``, the rows that decrypt are too few and too short to rule out chance;
* ``not_configured``: sipwatch has no secret.

A wrong key decrypts a stored value only by accident: with AES-CBC it must pass the PKCS#7
padding check (1 in 256) *and* yield printable text (together about 1 in 10**8 for a
one-block password), so one decrypting row proves the secret.  With the legacy AES-CTR only
the text check remains, which a short garbage string passes often: a wrong secret decrypts
one of fifty 8-character passwords by chance about one time in thirteen.  Such a chance
success would make a mismatch look ``partial``, which allows encryption, so under
``LEGACY_CRYPTO`` the proof also bounds the chance that a wrong secret decrypts as many of
the sampled rows (:func:`_chance`); above :data:`CHANCE_MAX` the verdict is ``unproven``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol

from sipwatch.diagnosis.crypto import DecryptError, StoredForm, classify_stored_password, decrypt


def _secret_variable() -> str:
    """The environment variable of ``[jambonz] encryption_secret``, as the schema defines it."""
    from sipwatch.config import JambonzConfig

    [setting] = [f for f in dataclasses.fields(JambonzConfig) if f.name == "encryption_secret"]
    env = setting.metadata["sipwatch"].env
    assert isinstance(env, str)
    return env


#: The variable (and ``[jambonz] encryption_secret``) that holds sipwatch's copy of the secret.
SECRET_VARIABLE = _secret_variable()
#: The rule (rules/encryption_secret.yaml) that reports a disproven secret in a diagnosis.
SECRET_MISMATCH_CAUSE = "encryption_secret_mismatch"  # noqa: S105 - a rule id
SAMPLE_LIMIT = 50
#: Client ids listed in a report of the rows that do not decrypt.
LISTED_MAX = 10
#: Under LEGACY_CRYPTO, the highest chance that a wrong secret decrypts as many sampled rows
#: as the proof saw for the proof to count (see :func:`_chance`).
CHANCE_MAX = 1e-6

# jambonz writes JSON.stringify({iv, content}): the value starts with {"iv":.  The LIKE keeps
# plaintext rows out of the sample on the server; classify_stored_password re-checks each one.
SAMPLE_SQL = (
    "SELECT client_sid, password FROM clients"
    " WHERE password LIKE %s AND client_sid <> %s ORDER BY client_sid LIMIT %s"
)
_ENCRYPTED_PREFIX = '{"iv":%'


class SecretState(StrEnum):
    PROVEN = "proven"
    PARTIAL = "partial"
    MISMATCH = "mismatch"
    UNPROVEN = "unproven"
    NOT_CONFIGURED = "not_configured"


class RowSource(Protocol):
    """Anything that runs a parameterised SELECT: the diagnosis pool or a write transaction."""

    async def fetch_all(self, sql: str, params: Sequence[object] = ...) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class SecretStatus:
    """The outcome of one proof.  Never holds a secret or a password, only counts and ids."""

    state: SecretState
    sampled: int = 0  # encrypted passwords tried
    decrypted: int = 0
    failing: tuple[str, ...] = field(default=())  # client_sids that do not decrypt (bounded)
    checked_at: float = 0.0  # wall clock, epoch seconds
    legacy_crypto: bool = False
    # the chance that a wrong secret decrypts ``decrypted`` of the sampled rows (AES-CTR
    # only: 0.0 under AES-CBC, whose padding check makes it negligible)
    chance: float = 0.0

    @property
    def allows_encryption(self) -> bool:
        """A value encrypted with this secret is one the registrar can read."""
        return self.state in (SecretState.PROVEN, SecretState.PARTIAL)

    @property
    def matches(self) -> bool | None:
        """True: proven; False: sipwatch's secret is not jambonz's; None: cannot tell."""
        if self.allows_encryption:
            return True
        if self.state is SecretState.MISMATCH:
            return False
        return None

    def excluding(self, client_sid: str) -> SecretStatus:
        """The verdict without one row (the client being diagnosed is no witness for itself)."""
        if client_sid not in self.failing:
            return self  # not sampled, or sampled and decrypting: counts stay honest enough
        failing = tuple(c for c in self.failing if c != client_sid)
        # ``chance`` is kept: one row fewer can only make a chance success less likely
        return _judged(replace(self, sampled=self.sampled - 1, failing=failing), self.decrypted)

    def describe(self) -> str:
        """One sentence for people; names the variable, never a secret."""
        if self.state is SecretState.NOT_CONFIGURED:
            return f"no jambonz secret is configured ({SECRET_VARIABLE})"
        if self.state is SecretState.UNPROVEN and self.decrypted:
            return (
                f"{self.decrypted} of the {self.sampled} encrypted client passwords sampled "
                f"decrypt with sipwatch's secret ({SECRET_VARIABLE}), too few and too short to "
                "prove it is the one jambonz uses: with LEGACY_CRYPTO (AES-CTR) a wrong secret "
                "decrypts short passwords by chance"
            )
        if self.state is SecretState.UNPROVEN:
            return (
                "no encrypted client password exists to prove that sipwatch's secret "
                f"({SECRET_VARIABLE}) is the one jambonz uses"
            )
        if self.state is SecretState.MISMATCH:
            return (
                f"sipwatch's secret ({SECRET_VARIABLE}) is not the one jambonz uses: none of "
                f"the {self.sampled} encrypted client passwords sampled decrypts with it"
            )
        text = (
            f"sipwatch's secret is the one jambonz uses: {self.decrypted} of the "
            f"{self.sampled} encrypted client passwords sampled decrypt with it"
        )
        if self.state is SecretState.PARTIAL:
            shown = ", ".join(self.failing[:LISTED_MAX])
            more = len(self.failing) - min(len(self.failing), LISTED_MAX)
            text += (
                f"; {self.sampled - self.decrypted} do not and were written with another "
                f"secret (client_sid {shown}{f' and {more} more' if more > 0 else ''}): "
                "set their passwords again in the jambonz portal"
            )
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "sampled": self.sampled,
            "decrypted": self.decrypted,
            "failing_clients": list(self.failing[:LISTED_MAX]),
            "legacy_crypto": self.legacy_crypto,
            "checked_at": self.checked_at,
            "detail": self.describe(),
        }


#: The fix people need when the secret is wrong, in one place for the rules, fix and docs.
SECRET_FIX = (
    f"set {SECRET_VARIABLE} to the value of ENCRYPTION_SECRET (or JWT_SECRET, as your "
    "jambonz version derives it) of jambonz-api-server and the registrar"
)


def _chance(content_bytes: Sequence[int], decrypted: int) -> float:
    """An upper bound on the chance that a wrong AES-CTR key decrypts ``decrypted`` of rows
    whose ciphertexts are ``content_bytes`` long.

    A wrong CTR key turns an n-byte value into n random bytes, which pass the text check
    (UTF-8 without control characters) with probability below 2**-n: a printable ASCII byte
    is 95 of 256 values and multi-byte characters are rarer still (measured: about 0.44 per
    byte).  The chance that some k of the rows all pass is at most the sum, over every k
    rows, of their product, which is at most ``(sum of the 2**-n) ** k / k!``.
    """
    exposure = math.fsum(2.0**-n for n in content_bytes)
    return exposure**decrypted / math.factorial(decrypted)


def _judged(status: SecretStatus, decrypted: int) -> SecretStatus:
    if status.sampled == 0:
        state = SecretState.UNPROVEN
    elif decrypted == 0:
        state = SecretState.MISMATCH
    elif status.chance > CHANCE_MAX:
        state = SecretState.UNPROVEN  # it decrypts, but so could a wrong secret
    elif decrypted == status.sampled:
        state = SecretState.PROVEN
    else:
        state = SecretState.PARTIAL
    return replace(status, state=state, decrypted=decrypted)


def judge_secret(
    rows: Iterable[Mapping[str, Any]],
    secret: str | None,
    *,
    legacy_crypto: bool = False,
    now: float | None = None,
) -> SecretStatus:
    """Decrypt each sampled ``{client_sid, password}`` row and judge the secret (pure)."""
    at = time.time() if now is None else now
    if not secret:
        return SecretStatus(SecretState.NOT_CONFIGURED, checked_at=at, legacy_crypto=legacy_crypto)
    sampled = decrypted = 0
    failing: list[str] = []
    lengths: list[int] = []  # ciphertext bytes of each sampled row, for _chance
    for row in rows:
        stored = row.get("password")
        if not isinstance(stored, str) or classify_stored_password(stored) is not (
            StoredForm.ENCRYPTED
        ):
            continue
        sampled += 1
        lengths.append(len(json.loads(stored)["content"]) // 2)
        try:
            decrypt(stored, secret, legacy_ctr=legacy_crypto)
        except DecryptError:
            failing.append(str(row.get("client_sid")))
            continue
        decrypted += 1
    base = SecretStatus(
        SecretState.UNPROVEN,
        sampled=sampled,
        failing=tuple(failing),
        checked_at=at,
        legacy_crypto=legacy_crypto,
        chance=_chance(lengths, decrypted) if legacy_crypto else 0.0,
    )
    return _judged(base, decrypted)


async def prove_secret(
    source: RowSource,
    secret: str | None,
    *,
    legacy_crypto: bool = False,
    exclude_client_sid: str = "",
    limit: int = SAMPLE_LIMIT,
) -> SecretStatus:
    """Sample up to ``limit`` encrypted client passwords and judge ``secret`` against them.

    ``exclude_client_sid``: the row being repaired or diagnosed, which cannot vouch for the
    secret.  Database errors propagate (the caller decides what "cannot prove" means there).
    """
    if not secret:
        return judge_secret((), None, legacy_crypto=legacy_crypto)
    rows = await source.fetch_all(SAMPLE_SQL, (_ENCRYPTED_PREFIX, exclude_client_sid, int(limit)))
    return judge_secret(rows, secret, legacy_crypto=legacy_crypto)
