"""The remediation actions: each one plans a change, applies it, and proves it worked.

Every action has the same shape, so the fix command and the daemon treat them alike:

* ``plan(backends, target)`` reads the current state and returns a :class:`Change`: either
  the exact statements it would run (secrets masked) with the state before and after, or
  "nothing to do" (already fixed), or "blocked" with the reason it must not act.
* ``apply(backends, target)`` repeats that decision *under lock* inside one transaction
  (``SELECT ... FOR UPDATE`` / Redis ``MULTI``), runs the statements with compare-and-set
  ``WHERE`` clauses, commits, then verifies from a fresh read.  Re-running it finds nothing to
  do, so a retry, a second sipwatch instance or an operator racing us can never apply a
  change twice.

Actions declare themselves: each class is registered with ``@implements(<spec>)``, where the
spec is its declaration in :mod:`sipwatch.remediation.catalog` (the one list of action ids,
light enough for the config schema and ``--help``).  Importing this module fails when the
two disagree.

Passwords: a client password is written only in jambonz's encrypted form (see
``sipwatch.diagnosis.crypto``), and only after sipwatch's secret was proven to be jambonz's
by decrypting the other encrypted passwords of the database
(:mod:`sipwatch.diagnosis.secret_proof`): the only encryption helper here takes that proof as
an argument, so no action can skip it.  The encryption is also checked by decrypting it
again, before the write and from the database after the commit.  Plaintexts live in
:class:`Secret` objects and never reach a :class:`Change`, a log line, the audit trail or an
exception message.  All SQL uses bound parameters; the rendered SQL in a :class:`Change` is
for people.

Safety refusals (:attr:`PlanState.REFUSED`, with a stable ``reason``) are decisions no flag
of the daemon can override: an unproven or wrong secret, an account deactivated on purpose,
an account that was not named.  Only an operator at ``sipwatch fix`` can, where the refusal
says how.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets as _secrets
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from sipwatch.config import Secret
from sipwatch.diagnosis.crypto import (
    DecryptError,
    StoredForm,
    classify_stored_password,
    decrypt,
    encrypt,
    has_control_characters,
)
from sipwatch.diagnosis.jambonz import REALM_MAX, USERNAME_MAX, db_text, parent_domain
from sipwatch.diagnosis.redis_store import ACTIVE_SET, registration_key
from sipwatch.diagnosis.secret_proof import (
    SECRET_FIX,
    SECRET_VARIABLE,
    SecretState,
    SecretStatus,
    prove_secret,
)
from sipwatch.diagnosis.symptom import host_is_ip
from sipwatch.remediation import catalog
from sipwatch.remediation.catalog import ActionSpec
from sipwatch.remediation.registrar import RegistrarContainer, RegistrarControl, RegistrarTarget
from sipwatch.remediation.writer import DbWriter, Transaction
from sipwatch.sources.docker import DockerSourceError

MASK = "****"
ENCRYPTED_FORM = "encrypted (jambonz AES-256-CBC {iv, content})"
ENCRYPTED_FORM_CTR = "encrypted (jambonz AES-256-CTR {iv, content})"
GENERATED_PASSWORD_BYTES = 18  # token_urlsafe(18): 24 characters, 144 bits
PASSWORD_MIN = 8
PASSWORD_MAX = 128
# Conservative SIP user part for *new* clients: what every device and the portal accept.
_NEW_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~+-]{0,63}$")
_REALM = re.compile(
    r"^(?=.{1,132}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]$"
)


class RemediationError(Exception):
    """An action could not run or could not prove its result; the message is secret-free."""

    kind = "failed"


class BackendMissing(RemediationError):
    """The action needs a database, Redis or Docker connection that is not configured."""

    kind = "not_configured"


class PlanState(StrEnum):
    CHANGE = "change"  # the statements below would fix it
    NOOP = "noop"  # already in the wanted state: nothing to do
    BLOCKED = "blocked"  # this action cannot act here (nothing to act on, a person must decide)
    REFUSED = "refused"  # a safety check says no; ``Change.reason`` says which


# Stable reasons of REFUSED plans (audit trail, metrics, tests).
SECRET_MISMATCH = "secret_mismatch"  # noqa: S105 - a reason id
SECRET_UNPROVEN = "secret_unproven"  # noqa: S105 - a reason id
DEACTIVATED_ON_PURPOSE = "deactivated_on_purpose"
IMPLICIT_TARGET = "implicit_target"


@dataclass(frozen=True)
class Change:
    """What an action would do (or did), fit for a terminal, a log line and the audit table.

    ``statements`` are rendered SQL / Redis / Docker API calls with secrets replaced by
    ``****``; ``before`` and ``after`` describe the touched rows with passwords reduced to
    their form ("plaintext", "encrypted").
    """

    action: str
    state: PlanState
    summary: str
    target: str = ""
    statements: tuple[str, ...] = ()
    before: Mapping[str, Any] = field(default_factory=dict)
    after: Mapping[str, Any] = field(default_factory=dict)
    reason: str = ""  # stable id of a REFUSED (or BLOCKED) plan
    notes: tuple[str, ...] = ()  # what else the operator should know (e.g. the secret proof)

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "state": self.state.value,
            "summary": self.summary,
            "target": self.target,
            "statements": list(self.statements),
            "before": dict(self.before),
            "after": dict(self.after),
            "reason": self.reason,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class Outcome:
    """The result of ``apply``: the change as decided under lock, and its verification."""

    change: Change
    applied: bool  # statements ran and committed
    verified: bool  # a fresh read shows the wanted state
    detail: str


@dataclass(frozen=True)
class Target:
    """Who or what to fix.

    ``user``/``domain`` are the device's To user and host (the AOR jambonz registers);
    ``username`` is the ``clients.username`` jambonz matches (the Authorization username,
    which can differ from the To user).  ``account_sid`` and ``replace_realm`` are operator
    choices for ``set_account_realm``; ``since`` (epoch seconds) is when the failure was seen,
    so a registrar restarted after it is not restarted again.

    Two operator consents exist only at ``sipwatch fix`` (the daemon never sets them):
    ``trust_secret`` encrypts with a secret no stored password could prove (a database
    without any encrypted password), and ``confirmed_reason`` is the deactivation reason the
    operator read and confirmed before re-activating an account deactivated on purpose.
    """

    user: str
    domain: str
    username: str | None = None
    account_sid: str | None = None
    replace_realm: bool = False
    since: float | None = None
    source_ip: str | None = None  # where the failing REGISTER came from (audit only)
    trust_secret: bool = False
    confirmed_reason: str | None = None

    @property
    def client_username(self) -> str:
        return self.username or self.user

    @property
    def aor(self) -> str:
        return f"{self.user}@{self.domain}"


@dataclass
class Backends:
    """The connections actions may use; any may be missing (the action then says so)."""

    db: DbWriter | None = None
    redis: aioredis.Redis | None = None
    docker: RegistrarTarget | None = None
    secret: Secret | None = None  # jambonz ENCRYPTION_SECRET (or JWT_SECRET)
    legacy_crypto: bool = False  # jambonz LEGACY_CRYPTO: AES-256-CTR
    redis_timeout: float = 5.0

    def require_db(self) -> DbWriter:
        if self.db is None:
            raise BackendMissing("no jambonz database configured (database.url)")
        return self.db

    def require_redis(self) -> aioredis.Redis:
        if self.redis is None:
            raise BackendMissing("no jambonz Redis configured (redis.url)")
        return self.redis

    def require_docker(self) -> RegistrarTarget:
        if self.docker is None:
            raise BackendMissing("no Docker Engine configured for the registrar")
        return self.docker


# --------------------------------------------------------------------------- passwords


def generate_password() -> Secret:
    """A strong password made of characters every SIP device accepts (A-Z a-z 0-9 - _)."""
    return Secret(_secrets.token_urlsafe(GENERATED_PASSWORD_BYTES))


def check_password(password: str) -> str | None:
    """Why ``password`` cannot be used for a new client, or None when it can."""
    if len(password) < PASSWORD_MIN:
        return f"the password must have at least {PASSWORD_MIN} characters"
    if len(password) > PASSWORD_MAX:
        return f"the password must have at most {PASSWORD_MAX} characters"
    if has_control_characters(password):
        return "the password must not contain control characters"
    return None


@dataclass(frozen=True)
class ProvenSecret:
    """sipwatch's secret, once the database proved it is jambonz's (or the operator trusted
    it where nothing could prove it).  Only :class:`SecretGate` makes one."""

    secret: Secret = field(repr=False)
    legacy_crypto: bool
    status: SecretStatus
    trusted: bool = False  # unproven, encrypted on the operator's --trust-secret

    def note(self) -> str:
        if self.trusted:
            return f"{self.status.describe()}; encrypting anyway because you passed --trust-secret"
        return self.status.describe()


class SecretGate:
    """The secret proof of one decision, made at most once, inside the decision's transaction.

    Every encrypting action passes through :meth:`check` right before it encrypts: it
    answers either a :class:`ProvenSecret` (the only way to get one) or the plan that
    refuses, so an action cannot write a password the registrar might not decrypt.
    """

    def __init__(self, tx: Transaction, b: Backends, exclude_client_sid: str = "") -> None:
        self._tx = tx
        self._b = b
        self._exclude = exclude_client_sid
        self._status: SecretStatus | None = None

    async def status(self) -> SecretStatus:
        if self._status is None:
            secret = self._b.secret.reveal() if self._b.secret is not None else None
            self._status = await prove_secret(
                self._tx,
                secret,
                legacy_crypto=self._b.legacy_crypto,
                exclude_client_sid=self._exclude,
            )
        return self._status

    async def check(
        self, action: Action, t: Target, *, target: str, before: Mapping[str, Any]
    ) -> ProvenSecret | _Decision:
        status = await self.status()
        secret = self._b.secret
        if status.state is SecretState.NOT_CONFIGURED or secret is None:
            return _Decision(
                action._change(
                    PlanState.BLOCKED,
                    f"the jambonz encryption secret is not configured ({SECRET_VARIABLE}): "
                    "the password could not be stored in the form the registrar reads",
                    target=target,
                    before=before,
                    reason="not_configured",
                )
            )
        if status.state is SecretState.MISMATCH:
            return _Decision(
                action._change(
                    PlanState.REFUSED,
                    f"{status.describe()}. Writing would store a password the registrar "
                    f"cannot decrypt, so nothing was written: {SECRET_FIX}",
                    target=target,
                    before=before,
                    reason=SECRET_MISMATCH,
                )
            )
        if status.state is SecretState.UNPROVEN and not t.trust_secret:
            return _Decision(
                action._change(
                    PlanState.REFUSED,
                    f"{status.describe()}, so a password encrypted with it might be one the "
                    "registrar cannot decrypt. If you are sure the secret is right, run "
                    "sipwatch fix again with --trust-secret (never done automatically)",
                    target=target,
                    before=before,
                    reason=SECRET_UNPROVEN,
                )
            )
        return ProvenSecret(
            secret,
            self._b.legacy_crypto,
            status,
            trusted=status.state is SecretState.UNPROVEN,
        )


def _encrypt_checked(plain: str, proven: ProvenSecret) -> str:
    """Encrypt like jambonz-api-server with a proven secret and check it decrypts back."""
    secret, legacy = proven.secret.reveal(), proven.legacy_crypto
    stored = encrypt(plain, secret, legacy_ctr=legacy)
    try:
        ok = decrypt(stored, secret, legacy_ctr=legacy) == plain
    except DecryptError:
        ok = False
    if not ok or classify_stored_password(stored) is not StoredForm.ENCRYPTED:
        raise RemediationError("encryption round-trip failed; nothing was written")
    return stored


def password_form(stored: str | None) -> str:
    """How a stored password looks, never what it is."""
    form = classify_stored_password(stored)
    return {
        StoredForm.ENCRYPTED: "encrypted",
        StoredForm.PLAINTEXT: "plaintext (the registrar cannot read it)",
        StoredForm.EMPTY: "empty",
        StoredForm.MALFORMED: "malformed {iv, content}",
    }[form]


# --------------------------------------------------------------------------- SQL display


class _Hidden:
    """A bound parameter that is shown as ``****``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return MASK


HIDDEN = _Hidden()


@dataclass(frozen=True)
class _Unknown:
    """A value only known when the change is applied, shown as ``<what>`` (not a literal)."""

    what: str


NEW_CLIENT_SID = _Unknown("<new client_sid>")


def _literal(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, _Hidden):
        return f"'{MASK}'"
    if isinstance(value, _Unknown):
        return value.what
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace("'", "''")
    return f"'{text}'"


def render_sql(sql: str, shown: Sequence[object]) -> str:
    """The statement with its parameters inlined for reading (never executed)."""
    parts = sql.split("%s")
    if len(parts) != len(shown) + 1:
        raise ValueError("placeholder count does not match the parameters")
    out = [parts[0]]
    for value, rest in zip(shown, parts[1:], strict=True):
        out.append(_literal(value))
        out.append(rest)
    return "".join(out)


@dataclass(frozen=True)
class _Step:
    sql: str
    params: tuple[object, ...] = field(repr=False)
    shown: tuple[object, ...]
    rows: int = 1  # rows it must change, else the transaction is rolled back

    def render(self) -> str:
        return render_sql(self.sql, self.shown)


@dataclass(frozen=True)
class _Decision:
    change: Change
    steps: tuple[_Step, ...] = ()
    facts: Mapping[str, Any] = field(default_factory=dict, repr=False)


# --------------------------------------------------------------------------- base classes


class Action(ABC):
    """One remediation action: the implementation of a :class:`~catalog.ActionSpec`."""

    spec: ClassVar[ActionSpec]

    @property
    def id(self) -> str:
        """The rule ``remediation`` value this action answers."""
        return self.spec.id

    @property
    def needs(self) -> str:
        return self.spec.needs

    @property
    def needs_password(self) -> bool:
        return self.spec.needs_password

    @abstractmethod
    async def plan(self, b: Backends, t: Target, *, password: Secret | None = None) -> Change: ...

    @abstractmethod
    async def apply(self, b: Backends, t: Target, *, password: Secret | None = None) -> Outcome: ...

    def _change(self, state: PlanState, summary: str, **kw: Any) -> Change:
        return Change(action=self.id, state=state, summary=summary, **kw)


class DbAction(Action):
    """An action on jambonz tables: decide (optionally under lock), write, verify."""

    @abstractmethod
    async def _decide(
        self, tx: Transaction, b: Backends, t: Target, *, lock: bool, password: Secret | None
    ) -> _Decision: ...

    async def _verify(
        self, b: Backends, t: Target, d: _Decision, password: Secret | None
    ) -> tuple[bool, str]:
        """After the commit: deciding again from a fresh read must find nothing to do."""
        async with b.require_db().transaction(readonly=True) as tx:
            again = await self._decide(tx, b, t, lock=False, password=password)
        if again.change.state is PlanState.NOOP:
            return True, again.change.summary
        return False, f"after the change the database still shows: {again.change.summary}"

    async def plan(self, b: Backends, t: Target, *, password: Secret | None = None) -> Change:
        async with b.require_db().transaction(readonly=True) as tx:
            d = await self._decide(tx, b, t, lock=False, password=password)
        return d.change

    async def apply(self, b: Backends, t: Target, *, password: Secret | None = None) -> Outcome:
        if self.needs_password and password is None:
            raise RemediationError(f"{self.id} needs a password")
        async with b.require_db().transaction() as tx:
            d = await self._decide(tx, b, t, lock=True, password=password)
            if d.change.state is not PlanState.CHANGE:
                return Outcome(
                    d.change,
                    applied=False,
                    verified=d.change.state is PlanState.NOOP,
                    detail=d.change.summary,
                )
            for step in d.steps:
                changed = await tx.execute(step.sql, step.params)
                if changed != step.rows:
                    # Compare-and-set missed: someone changed the row under us.  Raising
                    # rolls the whole transaction back.
                    raise RemediationError(
                        f"{self.id}: a statement changed {changed} rows instead of "
                        f"{step.rows}; rolled back"
                    )
        verified, detail = await self._verify(b, t, d, password)
        return Outcome(d.change, applied=True, verified=verified, detail=detail)


# --------------------------------------------------------------------------- registry

_ActionClass = TypeVar("_ActionClass", bound=type[Action])
#: The implementation of every declared action, by id (filled by ``@implements``).
ACTIONS: dict[str, Action] = {}


def implements(spec: ActionSpec) -> Callable[[_ActionClass], _ActionClass]:
    """Register the decorated class as the implementation of ``spec`` (one per spec)."""

    def register(cls: _ActionClass) -> _ActionClass:
        if catalog.ACTION_SPECS.get(spec.id) is not spec:
            raise TypeError(f"{cls.__name__}: {spec.id!r} is not declared in catalog.py")
        if spec.id in ACTIONS:
            raise TypeError(f"{cls.__name__}: {spec.id!r} is implemented twice")
        cls.spec = spec
        ACTIONS[spec.id] = cls()
        return cls

    return register


# --------------------------------------------------------------------------- DB lookups

_ACCOUNT_BY_REALM = (
    "SELECT account_sid, name, sip_realm, is_active, deactivated_reason, registration_hook_sid"
    " FROM accounts WHERE sip_realm = %s"
)
_ACCOUNT_BY_SID = (
    "SELECT account_sid, name, sip_realm, is_active, deactivated_reason, registration_hook_sid"
    " FROM accounts WHERE account_sid = %s"
)
CANDIDATES_LISTED = 10
_ACCOUNTS_WITHOUT_REALM = (
    "SELECT account_sid, name, sip_realm, is_active, deactivated_reason, registration_hook_sid"
    " FROM accounts WHERE sip_realm IS NULL ORDER BY name, account_sid LIMIT %s"
)
_CLIENTS_BY_NAME = (
    "SELECT client_sid, account_sid, username, password, is_active"
    " FROM clients WHERE account_sid = %s AND username = %s"
)


def _locked(sql: str, lock: bool) -> str:
    """``sql`` as a locking read when deciding inside the write transaction."""
    return sql + " FOR UPDATE" if lock else sql


async def find_account(tx: Transaction, realm: str, *, lock: bool) -> dict[str, Any] | None:
    """The account the registrar maps ``realm`` to (exact, then the parent domain once)."""
    exact = db_text(realm, REALM_MAX)
    if exact is not None:
        row = await tx.fetch_one(_locked(_ACCOUNT_BY_REALM, lock), (exact,))
        if row is not None:
            return row
    parent = parent_domain(realm)
    parent = db_text(parent, REALM_MAX) if parent is not None else None
    if parent is not None:
        rows = await tx.fetch_all(_locked(_ACCOUNT_BY_REALM, lock), (parent,))
        if len(rows) == 1:
            return rows[0]
    return None


async def find_clients(
    tx: Transaction, account_sid: str, username: str, *, lock: bool
) -> list[dict[str, Any]]:
    name = db_text(username, USERNAME_MAX)
    if name is None:
        return []
    return await tx.fetch_all(_locked(_CLIENTS_BY_NAME, lock), (account_sid, name))


def _account_view(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "account_sid": row["account_sid"],
        "name": row["name"],
        "sip_realm": row["sip_realm"],
        "is_active": int(bool(row["is_active"])),
    }


def _client_view(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "client_sid": row["client_sid"],
        "username": row["username"],
        "is_active": int(bool(row["is_active"])),
        "password": password_form(row["password"]),
    }


def _account_name(row: Mapping[str, Any]) -> str:
    return f"account {row['name']} ({row['account_sid']}, realm {row['sip_realm']})"


def _no_account(self: Action, t: Target) -> _Decision:
    return _Decision(
        self._change(
            PlanState.BLOCKED,
            f"no account has '{t.domain}' (or its parent domain) as SIP realm; "
            "fix the realm first (set_account_realm)",
            target=f"realm {t.domain}",
        )
    )


async def _single_client(
    self: Action, tx: Transaction, t: Target, *, lock: bool
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, _Decision | None]:
    """(account, the one client row) or a decision explaining why there is not exactly one."""
    account = await find_account(tx, t.domain, lock=lock)
    if account is None:
        return None, None, _no_account(self, t)
    rows = await find_clients(tx, account["account_sid"], t.client_username, lock=lock)
    where = f"client '{t.client_username}' in {_account_name(account)}"
    if not rows:
        d = _Decision(
            self._change(
                PlanState.BLOCKED,
                f"no {where}; create it first (create_client)",
                target=where,
            )
        )
        return account, None, d
    if len(rows) > 1:
        d = _Decision(
            self._change(
                PlanState.BLOCKED,
                f"{len(rows)} clients are named '{t.client_username}' in this account and "
                "jambonz only checks the first one: remove the duplicates by hand first",
                target=where,
                before={"clients": [_client_view(r) for r in rows]},
            )
        )
        return account, None, d
    return account, rows[0], None


# --------------------------------------------------------------------------- DB actions


@implements(catalog.CREATE_CLIENT)
class CreateClient(DbAction):
    """Create the missing ``clients`` row, with an encrypted password jambonz can decrypt.

    The plan shows ``<new client_sid>``: the id is drawn when the row is written (under
    lock), and the applied change and its verification name the real one.
    """

    async def _decide(
        self, tx: Transaction, b: Backends, t: Target, *, lock: bool, password: Secret | None
    ) -> _Decision:
        name = t.client_username
        if not _NEW_USERNAME.match(name):
            return _Decision(
                self._change(
                    PlanState.BLOCKED,
                    "sipwatch only creates usernames of 1-64 letters, digits and . _ ~ + - "
                    "(starting with a letter or digit)",
                    target=f"client username of {len(name)} characters",
                )
            )
        account = await find_account(tx, t.domain, lock=lock)
        if account is None:
            return _no_account(self, t)
        where = f"client '{name}' in {_account_name(account)}"
        if account["registration_hook_sid"]:
            hook = await tx.fetch_one(
                "SELECT url FROM webhooks WHERE webhook_sid = %s",
                (account["registration_hook_sid"],),
            )
            if hook is not None and hook["url"]:
                return _Decision(
                    self._change(
                        PlanState.BLOCKED,
                        "the account authenticates devices through its registration webhook; "
                        "the registrar would never read a clients row",
                        target=where,
                    )
                )
        rows = await find_clients(tx, account["account_sid"], name, lock=lock)
        if rows:
            return _Decision(
                self._change(
                    PlanState.NOOP,
                    f"client '{name}' already exists ({rows[0]['client_sid']})",
                    target=where,
                    before={"clients": [_client_view(r) for r in rows]},
                )
            )
        before: dict[str, Any] = {"account": _account_view(account), "clients": []}
        proven = await SecretGate(tx, b).check(self, t, target=where, before=before)
        if isinstance(proven, _Decision):
            return proven
        client_sid = str(uuid.uuid4()) if lock else None
        stored = (
            _encrypt_checked(password.reveal(), proven) if password is not None and lock else None
        )
        sql = (
            "INSERT INTO clients (client_sid, account_sid, username, password, is_active)"
            " VALUES (%s, %s, %s, %s, %s)"
        )
        shown_sid: object = client_sid if client_sid is not None else NEW_CLIENT_SID
        step = _Step(
            sql,
            (client_sid, account["account_sid"], name, stored, 1),
            (shown_sid, account["account_sid"], name, HIDDEN, 1),
        )
        form = ENCRYPTED_FORM_CTR if b.legacy_crypto else ENCRYPTED_FORM
        change = self._change(
            PlanState.CHANGE,
            f"create {where} with a new encrypted password",
            target=where,
            statements=(step.render(),),
            before=before,
            after={
                "client_sid": client_sid if client_sid is not None else NEW_CLIENT_SID.what,
                "username": name,
                "is_active": 1,
                "password": form,
            },
            notes=(proven.note(),),
        )
        return _Decision(change, (step,), {"client_sid": client_sid})

    async def _verify(
        self, b: Backends, t: Target, d: _Decision, password: Secret | None
    ) -> tuple[bool, str]:
        ok, detail = await super()._verify(b, t, d, password)
        if not ok:
            return ok, detail
        ok, detail = await _verify_password(b, d.facts["client_sid"], password)
        return ok, f"client {d.facts['client_sid']} created; {detail}"


async def _verify_password(
    b: Backends, client_sid: str, expected: Secret | None
) -> tuple[bool, str]:
    """Read the row back and decrypt it with the jambonz scheme, as the registrar will."""
    assert b.secret is not None and expected is not None
    async with b.require_db().transaction(readonly=True) as tx:
        row = await tx.fetch_one(
            "SELECT password, is_active FROM clients WHERE client_sid = %s", (client_sid,)
        )
    if row is None:
        return False, "the client row is not there after the commit"
    try:
        ok = decrypt(row["password"], b.secret.reveal(), legacy_ctr=b.legacy_crypto) == (
            expected.reveal()
        )
    except DecryptError:
        ok = False
    if not ok:
        return False, "the stored password does not decrypt to the intended one"
    return True, "the stored password decrypts with the jambonz secret to the intended one"


@implements(catalog.REENCRYPT_PASSWORD)
class ReencryptPassword(DbAction):
    """Store a plaintext ``clients.password`` in encrypted form (same password, so the
    device keeps working)."""

    async def _decide(
        self, tx: Transaction, b: Backends, t: Target, *, lock: bool, password: Secret | None
    ) -> _Decision:
        account, client, blocked = await _single_client(self, tx, t, lock=lock)
        if blocked is not None:
            return blocked
        assert account is not None and client is not None
        where = f"client '{t.client_username}' ({client['client_sid']}) in {_account_name(account)}"
        stored = client["password"]
        form = classify_stored_password(stored)
        before = {"client": _client_view(client)}
        if form is StoredForm.ENCRYPTED:
            return _Decision(
                self._change(
                    PlanState.NOOP, "the password is already encrypted", target=where, before=before
                )
            )
        if form is not StoredForm.PLAINTEXT:
            return _Decision(
                self._change(
                    PlanState.BLOCKED,
                    f"the stored password is {password_form(stored)}: there is no password to "
                    "encrypt; set a new one in the jambonz portal",
                    target=where,
                    before=before,
                )
            )
        gate = SecretGate(tx, b, exclude_client_sid=str(client["client_sid"]))
        proven = await gate.check(self, t, target=where, before=before)
        if isinstance(proven, _Decision):
            return proven
        new = _encrypt_checked(str(stored), proven)
        step = _Step(
            "UPDATE clients SET password = %s WHERE client_sid = %s AND password = %s",
            (new, client["client_sid"], stored),
            (HIDDEN, client["client_sid"], HIDDEN),
        )
        after = dict(_client_view(client))
        after["password"] = ENCRYPTED_FORM_CTR if b.legacy_crypto else ENCRYPTED_FORM
        change = self._change(
            PlanState.CHANGE,
            f"encrypt the plaintext password of {where} (the password itself is unchanged)",
            target=where,
            statements=(step.render(),),
            before=before,
            after={"client": after},
            notes=(proven.note(),),
        )
        return _Decision(change, (step,), {"client_sid": client["client_sid"]})

    async def _verify(
        self, b: Backends, t: Target, d: _Decision, password: Secret | None
    ) -> tuple[bool, str]:
        ok, detail = await super()._verify(b, t, d, password)
        if not ok:
            return ok, detail
        plain = d.steps[0].params[2]
        return await _verify_password(b, d.facts["client_sid"], Secret(str(plain)))


@implements(catalog.ACTIVATE_CLIENT)
class ActivateClient(DbAction):
    """Set ``clients.is_active = 1`` on the one client row with this username."""

    async def _decide(
        self, tx: Transaction, b: Backends, t: Target, *, lock: bool, password: Secret | None
    ) -> _Decision:
        account, client, blocked = await _single_client(self, tx, t, lock=lock)
        if blocked is not None:
            return blocked
        assert account is not None and client is not None
        where = f"client '{t.client_username}' ({client['client_sid']}) in {_account_name(account)}"
        before = {"client": _client_view(client)}
        if client["is_active"]:
            return _Decision(
                self._change(
                    PlanState.NOOP, "the client is already active", target=where, before=before
                )
            )
        step = _Step(
            "UPDATE clients SET is_active = 1 WHERE client_sid = %s AND is_active = 0",
            (client["client_sid"],),
            (client["client_sid"],),
        )
        after = dict(_client_view(client), is_active=1)
        return _Decision(
            self._change(
                PlanState.CHANGE,
                f"activate {where}",
                target=where,
                statements=(step.render(),),
                before=before,
                after={"client": after},
            ),
            (step,),
        )


@implements(catalog.ACTIVATE_ACCOUNT)
class ActivateAccount(DbAction):
    """Set ``accounts.is_active = 1`` (``deactivated_reason`` is kept for the record).

    An account that carries a ``deactivated_reason`` was deactivated on purpose (an unpaid
    invoice, a trial that ended, abuse): re-activating it is a business decision, not a
    repair.  So it is refused unless the operator read the reason and confirmed it
    (``Target.confirmed_reason``, set only by ``sipwatch fix`` after an interactive
    confirmation); the write then also checks the reason is still the one confirmed.
    """

    async def _decide(
        self, tx: Transaction, b: Backends, t: Target, *, lock: bool, password: Secret | None
    ) -> _Decision:
        account = await find_account(tx, t.domain, lock=lock)
        if account is None:
            return _no_account(self, t)
        where = _account_name(account)
        before = {
            "account": dict(
                _account_view(account), deactivated_reason=account["deactivated_reason"]
            )
        }
        if account["is_active"]:
            return _Decision(
                self._change(
                    PlanState.NOOP, "the account is already active", target=where, before=before
                )
            )
        reason = account["deactivated_reason"]
        if reason is not None and reason.strip() and t.confirmed_reason != reason:
            return _Decision(
                self._change(
                    PlanState.REFUSED,
                    f"{where} was deactivated on purpose (deactivated_reason: "
                    f"'{reason[:255]}'); sipwatch re-activates it only when an operator names "
                    "the action (sipwatch fix --action activate_account) and confirms after "
                    "reading the reason, never automatically",
                    target=where,
                    before=before,
                    reason=DEACTIVATED_ON_PURPOSE,
                )
            )
        step = _Step(
            "UPDATE accounts SET is_active = 1"
            " WHERE account_sid = %s AND is_active = 0 AND deactivated_reason <=> %s",
            (account["account_sid"], reason),
            (account["account_sid"], reason),
        )
        after = {"account": dict(before["account"], is_active=1)}
        return _Decision(
            self._change(
                PlanState.CHANGE,
                f"activate {where}: every device of the realm will be accepted again",
                target=where,
                statements=(step.render(),),
                before=before,
                after=after,
            ),
            (step,),
        )


def normalise_realm(domain: str) -> str | None:
    """``domain`` as an account realm (lower case host name), or None if it cannot be one."""
    realm = domain.strip().lower().rstrip(".")
    if host_is_ip(realm) or not _REALM.match(realm):
        return None
    return realm


@implements(catalog.SET_ACCOUNT_REALM)
class SetAccountRealm(DbAction):
    """Give an account the SIP realm devices use.

    The target account is always the one the operator names (``--account``): sipwatch never
    picks one.  A fresh jambonz install has a seed "default account" without a realm, so
    "the only account without a realm" is a trap, not a choice; without ``--account`` the plan
    is refused and lists the candidates.  The daemon never names an account, so it never
    changes a realm.  An existing realm is replaced only when the operator asks
    (``replace_realm``): every device of the old realm would stop registering.
    """

    async def _decide(
        self, tx: Transaction, b: Backends, t: Target, *, lock: bool, password: Secret | None
    ) -> _Decision:
        realm = normalise_realm(t.domain)
        if realm is None:
            return _Decision(
                self._change(
                    PlanState.BLOCKED,
                    "the domain is not a valid SIP realm (a host name of at most 132 "
                    "characters, not an IP address)",
                    target="realm",
                )
            )
        owner = await find_account(tx, realm, lock=lock)
        if owner is not None:
            if t.account_sid is None or owner["account_sid"] == t.account_sid:
                return _Decision(
                    self._change(
                        PlanState.NOOP,
                        f"realm '{realm}' is already served by {_account_name(owner)}",
                        target=f"realm {realm}",
                        before={"account": _account_view(owner)},
                    )
                )
            return _Decision(
                self._change(
                    PlanState.BLOCKED,
                    f"realm '{realm}' is already served by another account, {_account_name(owner)}",
                    target=f"realm {realm}",
                )
            )
        if t.account_sid is None:
            candidates = await tx.fetch_all(_ACCOUNTS_WITHOUT_REALM, (CANDIDATES_LISTED + 1,))
            listed = [_account_name(c) for c in candidates[:CANDIDATES_LISTED]]
            more = " and more" if len(candidates) > CANDIDATES_LISTED else ""
            which = (
                f"accounts without a SIP realm: {'; '.join(listed)}{more}"
                if listed
                else "no account is without a SIP realm (name one to replace its realm, with "
                "--replace-realm)"
            )
            return _Decision(
                self._change(
                    PlanState.REFUSED,
                    f"sipwatch never picks the account that gets realm '{realm}': name it with "
                    f"sipwatch fix --account ACCOUNT_SID. Candidates - {which}",
                    target=f"realm {realm}",
                    before={"candidates": [_account_view(c) for c in candidates[:10]]},
                    reason=IMPLICIT_TARGET,
                )
            )
        account = await tx.fetch_one(_locked(_ACCOUNT_BY_SID, lock), (t.account_sid,))
        if account is None:
            return _Decision(
                self._change(
                    PlanState.BLOCKED,
                    "no account has that account_sid",
                    target=f"realm {realm}",
                )
            )
        where = _account_name(account)
        old = account["sip_realm"]
        if old is not None and not t.replace_realm:
            return _Decision(
                self._change(
                    PlanState.BLOCKED,
                    f"{where} already has a realm; replacing it would break every device "
                    "registered to it (sipwatch fix --replace-realm to do it anyway)",
                    target=where,
                )
            )
        if old is None:
            sql = "UPDATE accounts SET sip_realm = %s WHERE account_sid = %s AND sip_realm IS NULL"
            params: tuple[object, ...] = (realm, account["account_sid"])
        else:
            sql = "UPDATE accounts SET sip_realm = %s WHERE account_sid = %s AND sip_realm = %s"
            params = (realm, account["account_sid"], old)
        step = _Step(sql, params, params)
        before = {"account": _account_view(account)}
        return _Decision(
            self._change(
                PlanState.CHANGE,
                f"set the SIP realm of {where} to '{realm}'",
                target=where,
                statements=(step.render(),),
                before=before,
                after={"account": dict(before["account"], sip_realm=realm)},
            ),
            (step,),
        )

    async def _verify(
        self, b: Backends, t: Target, d: _Decision, password: Secret | None
    ) -> tuple[bool, str]:
        # Deciding again without the operator's account would be "served by <that account>";
        # check the row the change targeted instead.
        sid = d.steps[0].params[1]
        realm = d.steps[0].params[0]
        async with b.require_db().transaction(readonly=True) as tx:
            owner = await find_account(tx, str(realm), lock=False)
        if owner is not None and owner["account_sid"] == sid:
            return True, f"realm '{realm}' now maps to {_account_name(owner)}"
        return False, f"realm '{realm}' does not map to the account after the change"


# --------------------------------------------------------------------------- Redis


def _registration_view(raw: Any, pttl: Any, score: Any) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if isinstance(raw, bytes | str) and len(raw) <= 65536:
        try:
            parsed = json.loads(raw)
            if isinstance(parsed, dict):
                data = parsed
        except ValueError:
            data = {}
    return {
        "cached": raw is not None,
        "contact": str(data["contact"])[:256] if "contact" in data else None,
        "proxy": str(data["proxy"])[:256] if "proxy" in data else None,
        "ttl_seconds": round(pttl / 1000.0, 1) if isinstance(pttl, int) and pttl >= 0 else None,
        "in_active_set": score is not None,
    }


@implements(catalog.FLUSH_CACHED_REGISTRATION)
class FlushCachedRegistration(Action):
    """Delete the cached registration so the next REGISTER is authenticated from scratch
    (the registrar answers re-REGISTERs from the same IP:port out of this cache)."""

    async def _state(self, client: aioredis.Redis, key: str, limit: float) -> dict[str, Any]:
        try:
            async with asyncio.timeout(limit):
                async with client.pipeline(transaction=False) as pipe:
                    pipe.get(key)
                    pipe.pttl(key)
                    pipe.zscore(ACTIVE_SET, key)
                    raw, pttl, score = await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            raise RemediationError(f"redis: {type(exc).__name__}") from None
        return _registration_view(raw, pttl, score)

    def _statements(self, key: str) -> tuple[str, ...]:
        return ("MULTI", f"DEL {key}", f"ZREM {ACTIVE_SET} {key}", "EXEC")

    async def plan(self, b: Backends, t: Target, *, password: Secret | None = None) -> Change:
        key = registration_key(t.aor)
        state = await self._state(b.require_redis(), key, b.redis_timeout)
        if not state["cached"] and not state["in_active_set"]:
            return self._change(
                PlanState.NOOP,
                f"no cached registration for {t.aor}",
                target=key,
                before={"registration": state},
            )
        return self._change(
            PlanState.CHANGE,
            f"delete the cached registration of {t.aor} so its next REGISTER is authenticated",
            target=key,
            statements=self._statements(key),
            before={"registration": state},
            after={"registration": {"cached": False, "in_active_set": False}},
        )

    async def apply(self, b: Backends, t: Target, *, password: Secret | None = None) -> Outcome:
        client = b.require_redis()
        change = await self.plan(b, t)
        if change.state is not PlanState.CHANGE:
            return Outcome(change, applied=False, verified=True, detail=change.summary)
        key = change.target
        try:
            async with asyncio.timeout(b.redis_timeout):
                async with client.pipeline(transaction=True) as pipe:
                    pipe.delete(key)
                    pipe.zrem(ACTIVE_SET, key)
                    deleted, removed = await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            raise RemediationError(f"redis: {type(exc).__name__}") from None
        after = await self._state(client, key, b.redis_timeout)
        verified = not after["cached"] and not after["in_active_set"]
        applied = bool(deleted) or bool(removed)
        if not applied:  # it expired (or someone flushed it) between plan and EXEC
            noop = self._change(PlanState.NOOP, f"no cached registration for {t.aor}", target=key)
            return Outcome(noop, applied=False, verified=verified, detail=noop.summary)
        detail = (
            "the registration is gone from Redis"
            if verified
            else "a registration is cached again (the device re-registered already)"
        )
        return Outcome(change, applied=True, verified=verified, detail=detail)


# --------------------------------------------------------------------------- Docker


@implements(catalog.RESTART_REGISTRAR)
class RestartRegistrar(Action):
    """Restart the registrar container (drachtio answers 503: no registrar connected).

    Not repeated when the registrar started after the failure was seen or less than
    ``min_uptime`` seconds ago.  A container that is not running is left alone: it exited
    for a reason (a missing ENCRYPTION_SECRET crashes it at start), and its logs say which.
    """

    def __init__(self, wall_clock: Any = time.time) -> None:
        self._now = wall_clock

    async def _decide(
        self, dc: RegistrarControl, cfg: RegistrarTarget, t: Target
    ) -> tuple[Change, list[RegistrarContainer]]:
        containers = await dc.find(cfg.services)
        services = ", ".join(cfg.services)
        if not containers:
            return self._change(
                PlanState.BLOCKED,
                f"no container for the registrar services ({services})",
                target=f"services {services}",
            ), []
        running = [c for c in containers if c.running]
        before = {"containers": [c.describe() for c in containers]}
        service = containers[0].service
        if not running:
            return self._change(
                PlanState.BLOCKED,
                f"the {service} container is not running ({containers[0].state}); check its "
                "logs for why it stopped, then start it",
                target=f"service {service}",
                before=before,
            ), []
        now = self._now()
        fresh = [
            c
            for c in running
            if c.started_at is not None
            and (
                (t.since is not None and c.started_at >= t.since)
                or now - c.started_at < cfg.min_uptime
            )
        ]
        if len(fresh) == len(running):
            return self._change(
                PlanState.NOOP,
                f"{service} started after the failure or less than "
                f"{cfg.min_uptime:g}s ago; not restarting it again",
                target=f"service {service}",
                before=before,
            ), []
        change = self._change(
            PlanState.CHANGE,
            f"restart {service} ({', '.join(c.name for c in running)}); registrations "
            "kept in Redis survive the restart",
            target=f"service {service}",
            statements=tuple(
                f"POST /containers/{c.id[:12]}/restart?t={cfg.grace}" for c in running
            ),
            before=before,
            after={
                "containers": [dict(c.describe(), started_at="(restart time)") for c in running]
            },
        )
        return change, running

    async def plan(self, b: Backends, t: Target, *, password: Secret | None = None) -> Change:
        cfg = b.require_docker()
        try:
            async with RegistrarControl(
                cfg.url, project=cfg.project, api_timeout=cfg.api_timeout
            ) as dc:
                change, _ = await self._decide(dc, cfg, t)
                return change
        except DockerSourceError as exc:
            raise RemediationError(f"docker: {exc}") from None

    async def apply(self, b: Backends, t: Target, *, password: Secret | None = None) -> Outcome:
        cfg = b.require_docker()
        try:
            async with RegistrarControl(
                cfg.url, project=cfg.project, api_timeout=cfg.api_timeout
            ) as dc:
                change, targets = await self._decide(dc, cfg, t)
                if change.state is not PlanState.CHANGE:
                    return Outcome(
                        change,
                        applied=False,
                        verified=change.state is PlanState.NOOP,
                        detail=change.summary,
                    )
                for c in targets:
                    await dc.restart_container(c.id, grace=cfg.grace)
                after = [await dc.refresh(c) for c in targets]
        except DockerSourceError as exc:
            raise RemediationError(f"docker: {exc}") from None
        verified = all(
            a.running
            and a.started_at is not None
            and (b_.started_at is None or a.started_at > b_.started_at)
            for a, b_ in zip(after, targets, strict=True)
        )
        detail = (
            "the registrar is running again with a new start time"
            if verified
            else "the registrar did not come back running after the restart"
        )
        return Outcome(change, applied=True, verified=verified, detail=detail)


# --------------------------------------------------------------------------- completeness

_missing = [a for a in catalog.ACTION_IDS if a not in ACTIONS]
if _missing:  # pragma: no cover - a declared action without implementation is a bug
    raise ImportError(f"remediation actions declared but not implemented: {', '.join(_missing)}")


def get_action(action_id: str) -> Action:
    try:
        return ACTIONS[action_id]
    except KeyError:
        raise ValueError(
            f"unknown remediation action {action_id!r} (known: {', '.join(ACTIONS)})"
        ) from None
