"""KMS keys and aliases in SQLite (``$NITRO_SIM_HOME/kms/keys.db``, mode 0600), shared by every worker.

A :class:`Key` is one key as the handlers see it. ``material`` is the secret: 32 random bytes for
SYMMETRIC_DEFAULT, PKCS#8 DER of the private key for RSA_* and ECC_NIST_*. It never appears in a repr, a
log line, an error message or an audit record.

Durability and sharing follow ``kms.keystores``: WAL journal with ``synchronous=FULL``, one transaction per
change. :meth:`KeyRing.resolve` keeps the rows it read (bounded, :data:`MAX_CACHED_KEYS`), and before each
use asks SQLite whether another connection committed since (``PRAGMA data_version``, one read of the WAL
index: cheaper than the row's query); if one did, every kept row is dropped, and this connection's own
writes drop them too. So a key disabled through one ``kms-sim serve`` worker is disabled for the next
request on any other, as when every read went to the database. Writes read the rows inside their
transaction, never from the cache. The file holds key material: it is created 0600
before SQLite opens it, and SQLite gives its ``-wal`` and ``-shm`` files the database file's mode.

:meth:`KeyRing.resolve` takes a KeyId in every form AWS accepts (key ID, key ARN, alias name
``alias/...``, alias ARN; ``aliases=False`` for the operations whose KeyId takes only the first two) and
returns the key, or NotFoundException / InvalidArnException with AWS's messages. It does not check the
key's state: :func:`check_usable` does, for the cryptographic operations. A key scheduled for deletion is
gone (NotFoundException) once the request time ``at`` reaches its deletion date; the row and its aliases
are removed then.
"""

from __future__ import annotations

import os
import re
import secrets
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from kms.errors import (
    AlreadyExistsException,
    DisabledException,
    InvalidArnException,
    KMSInvalidStateException,
    LimitExceededException,
    NotFoundException,
)
from kms.state import ACCOUNT_ID, DEFAULT_REGION

__all__ = [
    "ALIAS_PREFIX",
    "DISABLED",
    "ENABLED",
    "KEY_SPECS",
    "MAX_ALIASES",
    "MAX_KEYS",
    "PENDING_DELETION",
    "Alias",
    "Key",
    "KeyRing",
    "KeyRingSnapshot",
    "alias_arn",
    "check_usable",
    "default_policy",
    "key_arn",
]

ENABLED = "Enabled"
DISABLED = "Disabled"
PENDING_DELETION = "PendingDeletion"
ORIGIN = "AWS_KMS"
ALIAS_PREFIX = "alias/"

#: KMS quota "KMS keys: 100,000 per account and Region" (KMS developer guide, "Resource quotas").
MAX_KEYS = 100_000
#: KMS quota "Aliases: 50,000 per account and Region" (KMS developer guide, "Resource quotas").
MAX_ALIASES = 50_000
#: The key specs kms-sim makes, with the KeyUsage each allows (KMS developer guide, "Key spec reference");
#: SIGN_VERIFY, HMAC and SM2 keys are not simulated.
KEY_SPECS: dict[str, tuple[str, ...]] = {
    "SYMMETRIC_DEFAULT": ("ENCRYPT_DECRYPT",),
    "RSA_2048": ("ENCRYPT_DECRYPT",),
    "RSA_3072": ("ENCRYPT_DECRYPT",),
    "RSA_4096": ("ENCRYPT_DECRYPT",),
    "ECC_NIST_P256": ("KEY_AGREEMENT",),
    "ECC_NIST_P384": ("KEY_AGREEMENT",),
}
#: Key rows :meth:`KeyRing.resolve` keeps between requests (one entry: a key's row with its material, under
#: 10 KB for an RSA_4096 key): a working set of keys, not the 100,000 a Region may hold.
MAX_CACHED_KEYS = 1024
#: How long a writer waits for another process's transaction.
BUSY_TIMEOUT_S = 10.0
#: Key material of a symmetric encryption key: 256 bits (AES-256-GCM).
SYMMETRIC_KEY_BYTES = 32

_KEY_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
#: ``arn:<partition>:kms:<region>:<account>:<key/ID | alias/name>``
_ARN = re.compile(r"arn:(aws[a-z-]*):kms:([a-z0-9-]+):(\d{12}):(key/.+|alias/.+)")

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS keys (
        id TEXT PRIMARY KEY,
        spec TEXT NOT NULL,
        usage TEXT NOT NULL,
        state TEXT NOT NULL,
        created REAL NOT NULL,
        deletion_date REAL,
        pending_window INTEGER,
        description TEXT NOT NULL,
        policy TEXT NOT NULL,
        origin TEXT NOT NULL,
        material_id TEXT NOT NULL,
        material BLOB NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS aliases (
        name TEXT PRIMARY KEY,
        key_id TEXT NOT NULL REFERENCES keys (id),
        created REAL NOT NULL,
        updated REAL NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS aliases_by_key ON aliases (key_id)",
)
_COLUMNS = (
    "id, spec, usage, state, created, deletion_date, pending_window, description, policy, origin, "
    "material_id, material"
)


def key_arn(key_id: str) -> str:
    return f"arn:aws:kms:{DEFAULT_REGION}:{ACCOUNT_ID}:key/{key_id}"


def alias_arn(name: str) -> str:
    return f"arn:aws:kms:{DEFAULT_REGION}:{ACCOUNT_ID}:{name}"


def default_policy() -> str:
    """AWS's default key policy for a key made by the API (KMS developer guide, "Default key policy"),
    laid out as GetKeyPolicy returns it."""
    root = f"arn:aws:iam::{ACCOUNT_ID}:root"
    return (
        '{\n  "Version" : "2012-10-17",\n  "Id" : "key-default-1",\n  "Statement" : [ {\n'
        '    "Sid" : "Enable IAM User Permissions",\n    "Effect" : "Allow",\n'
        f'    "Principal" : {{\n      "AWS" : "{root}"\n    }},\n'
        '    "Action" : "kms:*",\n    "Resource" : "*"\n  } ]\n}'
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Key:
    id: str  # a UUID, "1234abcd-12ab-34cd-56ef-1234567890ab"
    arn: str  # arn:aws:kms:<region>:111122223333:key/<id>
    spec: str  # KeySpec: SYMMETRIC_DEFAULT | RSA_2048 | RSA_3072 | RSA_4096 | ECC_NIST_P256 | ECC_NIST_P384
    usage: str  # KeyUsage: ENCRYPT_DECRYPT | KEY_AGREEMENT
    state: str  # ENABLED | DISABLED | PENDING_DELETION
    created: float  # epoch seconds
    deletion_date: float | None
    description: str
    policy: str  # the key policy, JSON text
    material_id: str  # KeyMaterialId: 64 lower-case hex characters
    material: bytes = field(repr=False)
    origin: str = ORIGIN
    #: PendingDeletionWindowInDays of a key pending deletion.
    pending_window_days: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Alias:
    """One alias as ListAliases shows it."""

    name: str  # "alias/..."
    key_id: str
    created: float
    updated: float

    @property
    def arn(self) -> str:
        return alias_arn(self.name)


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyRingSnapshot:
    """Every key row (material included, hence no repr) and alias row at one moment, as
    :meth:`KeyRing.snapshot` read them, for :meth:`KeyRing.restore`."""

    keys: tuple[tuple[object, ...], ...] = field(repr=False)  # rows in ``_COLUMNS`` order
    aliases: tuple[tuple[object, ...], ...] = field(repr=False)  # (name, key_id, created, updated)

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(str(row[0]) for row in self.keys)


def _material(spec: str) -> bytes:
    if spec == "SYMMETRIC_DEFAULT":
        return secrets.token_bytes(SYMMETRIC_KEY_BYTES)
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if spec.startswith("RSA_"):
        private = rsa.generate_private_key(public_exponent=65537, key_size=int(spec[4:]))
    elif spec == "ECC_NIST_P256":
        private = ec.generate_private_key(ec.SECP256R1())
    elif spec == "ECC_NIST_P384":
        private = ec.generate_private_key(ec.SECP384R1())
    else:
        raise ValueError(f"kms-sim does not make {spec} keys")
    return private.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _open_private(path: Path) -> None:
    """Create the database file (and make an existing one) owner-only before SQLite opens it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm"):
        sibling = path.with_name(path.name + suffix)
        if sibling.exists():
            sibling.chmod(0o600)


class KeyRing:
    """The keys and aliases tables; one connection per process (open it after any fork)."""

    def __init__(self, path: Path) -> None:
        _open_private(path)
        self._db = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        #: Rows resolve read, by key ID, valid while ``PRAGMA data_version`` reads ``_version``.
        self._cache: dict[str, Key] = {}
        self._version: int | None = None
        with self._transaction():
            for statement in _SCHEMA:
                self._db.execute(statement)

    def close(self) -> None:
        self._cache.clear()
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction, taken up front (no lost update between workers); rolled back on error.

        Kept rows are dropped however it ends: ``data_version`` does not count this connection's commits.
        """
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        finally:
            self._cache.clear()
        self._db.execute("COMMIT")

    # -- reading -------------------------------------------------------------------------------------

    def _keys(self, where: str = "", args: tuple[object, ...] = ()) -> list[Key]:
        cursor = self._db.execute(f"SELECT {_COLUMNS} FROM keys {where} ORDER BY created, id", args)  # noqa: S608
        return [
            Key(
                id=r[0],
                arn=key_arn(r[0]),
                spec=r[1],
                usage=r[2],
                state=r[3],
                created=r[4],
                deletion_date=r[5],
                pending_window_days=r[6],
                description=r[7],
                policy=r[8],
                origin=r[9],
                material_id=r[10],
                material=r[11],
            )
            for r in cursor.fetchall()
        ]

    def _purge(self, at: datetime) -> None:
        """Delete the keys whose deletion date ``at`` has reached, and their aliases."""
        with self._transaction():
            self._db.execute(
                "DELETE FROM aliases WHERE key_id IN "
                "(SELECT id FROM keys WHERE state = ? AND deletion_date <= ?)",
                (PENDING_DELETION, at.timestamp()),
            )
            self._db.execute(
                "DELETE FROM keys WHERE state = ? AND deletion_date <= ?", (PENDING_DELETION, at.timestamp())
            )

    def _live(self, key: Key, at: datetime | None) -> bool:
        """False for a key whose deletion date ``at`` has reached (deleted then, outside a transaction)."""
        if at is None or key.deletion_date is None or key.deletion_date > at.timestamp():
            return True
        if not self._db.in_transaction:
            self._purge(at)
        return False

    def _by_id(self, key_id: str, at: datetime | None) -> Key:
        rows = self._keys("WHERE id = ?", (key_id,))
        if not rows or not self._live(rows[0], at):
            raise NotFoundException(f"Key '{key_arn(key_id)}' does not exist")
        return rows[0]

    def _kept(self, key_id: str, at: datetime | None) -> Key:
        """``_by_id`` for a read outside a transaction, from the kept row while no other connection has
        committed since it was read (see the module docstring)."""
        (version,) = self._db.execute("PRAGMA data_version").fetchone()
        if version != self._version:
            self._cache.clear()
            self._version = version
        key = self._cache.get(key_id)
        if key is None:
            key = self._by_id(key_id, None)
            if len(self._cache) >= MAX_CACHED_KEYS:
                del self._cache[next(iter(self._cache))]
            self._cache[key_id] = key
        if not self._live(key, at):
            raise NotFoundException(f"Key '{key_arn(key_id)}' does not exist")
        return key

    def resolve(self, key_id: str, *, aliases: bool = True, at: datetime | None = None) -> Key:
        """The key ``key_id`` names: key ID, key ARN, and (if ``aliases``) alias name or alias ARN.

        ``at`` is the request time: a key whose deletion date it has reached does not exist any more.
        """
        if key_id.startswith("arn:"):
            match = _ARN.fullmatch(key_id)
            if match is None:
                raise InvalidArnException(f"ARN {key_id} is not a valid KMS key or alias ARN")
            resource = match.group(4)
            if match.group(2) != DEFAULT_REGION or match.group(3) != ACCOUNT_ID:
                if resource.startswith(ALIAS_PREFIX):
                    raise NotFoundException(f"Alias '{key_id}' is not found.")
                raise NotFoundException(f"Key '{key_id}' does not exist")
            key_id = resource
        if key_id.startswith(ALIAS_PREFIX):
            if not aliases:
                raise NotFoundException(f"Invalid keyId {key_id}")
            alias = self.alias(key_id, at=at)
            return self._read(alias.key_id, at)
        if key_id.startswith("key/"):
            key_id = key_id[4:]
        if _KEY_ID.fullmatch(key_id) is None:
            raise NotFoundException(f"Invalid keyId {key_id}")
        return self._read(key_id, at)

    def _read(self, key_id: str, at: datetime | None) -> Key:
        # Inside a caller's transaction the row is read there (what the transaction sees).
        return self._by_id(key_id, at) if self._db.in_transaction else self._kept(key_id, at)

    def _sweep(self, at: datetime) -> None:
        """Delete the keys (and aliases) whose deletion date ``at`` has reached, if there are any."""
        expired = self._db.execute(
            "SELECT 1 FROM keys WHERE state = ? AND deletion_date <= ? LIMIT 1",
            (PENDING_DELETION, at.timestamp()),
        ).fetchone()
        if expired is not None:
            self._purge(at)

    def list_keys(self, *, at: datetime | None = None) -> list[Key]:
        """Every key that exists at ``at``, oldest first."""
        if at is not None:
            self._sweep(at)
        return self._keys()

    def key_ids(self, *, at: datetime | None = None) -> list[str]:
        """The IDs of every key that exists at ``at``, oldest first (ListKeys: no material read)."""
        if at is not None:
            self._sweep(at)
        return [r[0] for r in self._db.execute("SELECT id FROM keys ORDER BY created, id").fetchall()]

    def alias(self, name: str, *, at: datetime | None = None) -> Alias:
        """The alias ``name`` (``alias/...``); NotFoundException if none."""
        found = self.aliases(name=name, at=at)
        if not found:
            raise NotFoundException(f"Alias '{alias_arn(name)}' is not found.")
        return found[0]

    def aliases(
        self, *, key_id: str | None = None, name: str | None = None, at: datetime | None = None
    ) -> list[Alias]:
        """Every alias, or those of one key, or the one of this name; by name."""
        if at is not None:
            self._sweep(at)
        where: str = ""
        args: tuple[str, ...] = ()
        if key_id is not None:
            where, args = "WHERE key_id = ?", (key_id,)
        elif name is not None:
            where, args = "WHERE name = ?", (name,)
        cursor = self._db.execute(
            f"SELECT name, key_id, created, updated FROM aliases {where} ORDER BY name",  # noqa: S608
            args,
        )
        return [Alias(name=r[0], key_id=r[1], created=r[2], updated=r[3]) for r in cursor.fetchall()]

    def data_version(self) -> int:
        """A number that changes when another connection commits a change (SQLite's ``PRAGMA
        data_version``); this connection's own commits leave it as it was."""
        (version,) = self._db.execute("PRAGMA data_version").fetchone()
        return int(version)

    def snapshot(self) -> KeyRingSnapshot:
        """Every key and alias as they are now, read in one transaction (a consistent pair)."""
        self._db.execute("BEGIN")
        try:
            keys = self._db.execute(f"SELECT {_COLUMNS} FROM keys ORDER BY created, id").fetchall()  # noqa: S608
            aliases = self._db.execute("SELECT name, key_id, created, updated FROM aliases").fetchall()
        finally:
            self._db.execute("COMMIT")
        return KeyRingSnapshot(keys=tuple(keys), aliases=tuple(aliases))

    # -- writing -------------------------------------------------------------------------------------

    def restore(self, snapshot: KeyRingSnapshot) -> None:
        """Every key and alias back to ``snapshot``, in one transaction: those made since are gone, those
        changed or deleted since are as they were. Every connection's kept rows are dropped (its
        ``data_version`` moves; this one's by :meth:`_transaction`)."""
        placeholders = ", ".join("?" * len(_COLUMNS.split(",")))
        with self._transaction():
            self._db.execute("DELETE FROM aliases")
            self._db.execute("DELETE FROM keys")
            self._db.executemany(f"INSERT INTO keys ({_COLUMNS}) VALUES ({placeholders})", snapshot.keys)  # noqa: S608
            self._db.executemany(
                "INSERT INTO aliases (name, key_id, created, updated) VALUES (?, ?, ?, ?)", snapshot.aliases
            )

    def create(
        self, *, spec: str, usage: str, description: str = "", policy: str | None = None, at: datetime
    ) -> Key:
        """A new enabled key with fresh material; LimitExceededException past :data:`MAX_KEYS`."""
        if usage not in KEY_SPECS.get(spec, ()):
            raise ValueError(f"kms-sim does not make {spec} keys for {usage}")
        material = _material(spec)
        key = Key(
            id=str(uuid.uuid4()),
            arn="",
            spec=spec,
            usage=usage,
            state=ENABLED,
            created=at.timestamp(),
            deletion_date=None,
            description=description,
            policy=default_policy() if policy is None else policy,
            material_id=secrets.token_hex(32),
            material=material,
        )
        with self._transaction():
            (count,) = self._db.execute("SELECT COUNT(*) FROM keys").fetchone()
            if count >= MAX_KEYS:
                raise LimitExceededException(f"The request would exceed the limit of {MAX_KEYS} KMS keys.")
            self._db.execute(
                f"INSERT INTO keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, NULL, NULL, ?, ?, ?, ?, ?)",  # noqa: S608
                (
                    key.id,
                    spec,
                    usage,
                    ENABLED,
                    key.created,
                    description,
                    key.policy,
                    ORIGIN,
                    key.material_id,
                    material,
                ),
            )
        return self._by_id(key.id, None)

    def _update(self, key_id: str, assignments: str, args: tuple[object, ...]) -> None:
        self._db.execute(f"UPDATE keys SET {assignments} WHERE id = ?", (*args, key_id))  # noqa: S608

    def set_enabled(self, key_id: str, enabled: bool, *, at: datetime) -> None:
        """EnableKey / DisableKey: KMSInvalidStateException for a key pending deletion."""
        with self._transaction():
            key = self._by_id(key_id, at)
            if key.state == PENDING_DELETION:
                raise KMSInvalidStateException(f"{key.arn} is pending deletion.")
            self._update(key_id, "state = ?", (ENABLED if enabled else DISABLED,))

    def schedule_deletion(self, key_id: str, days: int, *, at: datetime) -> Key:
        """PendingDeletion with the deletion date ``days`` after ``at``; the key as it now is."""
        with self._transaction():
            key = self._by_id(key_id, at)
            if key.state == PENDING_DELETION:
                raise KMSInvalidStateException(f"{key.arn} is pending deletion.")
            deletion = (at + timedelta(days=days)).timestamp()
            self._update(
                key_id, "state = ?, deletion_date = ?, pending_window = ?", (PENDING_DELETION, deletion, days)
            )
        return self._by_id(key_id, None)

    def cancel_deletion(self, key_id: str, *, at: datetime) -> None:
        """Back to Disabled, as AWS does; KMSInvalidStateException if the key is not pending deletion."""
        with self._transaction():
            key = self._by_id(key_id, at)
            if key.state != PENDING_DELETION:
                raise KMSInvalidStateException(f"{key.arn} is not pending deletion.")
            self._update(key_id, "state = ?, deletion_date = NULL, pending_window = NULL", (DISABLED,))

    def put_policy(self, key_id: str, policy: str, *, at: datetime) -> None:
        with self._transaction():
            self._by_id(key_id, at)
            self._update(key_id, "policy = ?", (policy,))

    def set_description(self, key_id: str, description: str, *, at: datetime) -> None:
        with self._transaction():
            self._by_id(key_id, at)
            self._update(key_id, "description = ?", (description,))

    def create_alias(self, name: str, key_id: str, *, at: datetime) -> None:
        """A new alias; AlreadyExistsException for a taken name, LimitExceededException past the bound."""
        with self._transaction():
            self._by_id(key_id, at)
            if self._db.execute("SELECT 1 FROM aliases WHERE name = ?", (name,)).fetchone():
                raise AlreadyExistsException(f"An alias with the name {alias_arn(name)} already exists")
            (count,) = self._db.execute("SELECT COUNT(*) FROM aliases").fetchone()
            if count >= MAX_ALIASES:
                raise LimitExceededException(f"The request would exceed the limit of {MAX_ALIASES} aliases.")
            self._db.execute(
                "INSERT INTO aliases (name, key_id, created, updated) VALUES (?, ?, ?, ?)",
                (name, key_id, at.timestamp(), at.timestamp()),
            )

    def update_alias(self, name: str, key_id: str, *, at: datetime) -> None:
        with self._transaction():
            self._by_id(key_id, at)
            cursor = self._db.execute(
                "UPDATE aliases SET key_id = ?, updated = ? WHERE name = ?", (key_id, at.timestamp(), name)
            )
            if cursor.rowcount == 0:
                raise NotFoundException(f"Alias '{alias_arn(name)}' is not found.")

    def delete_alias(self, name: str) -> None:
        with self._transaction():
            cursor = self._db.execute("DELETE FROM aliases WHERE name = ?", (name,))
            if cursor.rowcount == 0:
                raise NotFoundException(f"Alias '{alias_arn(name)}' is not found.")


def check_usable(key: Key) -> None:
    """DisabledException for a disabled key, KMSInvalidStateException for one pending deletion."""
    if key.state == ENABLED:
        return
    if key.state == DISABLED:
        raise DisabledException(f"{key.arn} is disabled.")
    raise KMSInvalidStateException(f"{key.arn} is pending deletion.")
