"""Custom key stores in SQLite: durable across ``kill -9``, shared by every worker process.

Durability: WAL journal with ``synchronous=FULL`` and one transaction per change, so a store that
CreateCustomKeyStore answered for is on disk before the response leaves. Every read goes to the database
(no cache), so several workers and the ``kms-sim keystore`` admin command see one truth. For the pytest
plugin's reset between tests, :meth:`KeyStores.snapshot` reads every row, :meth:`KeyStores.restore` puts
them back in one transaction, and :meth:`KeyStores.data_version` says (one read, no query) whether another
connection committed since.

Simulation: CloudHSM clusters are simulated; a well-formed cluster ID always names an active cluster.
ConnectCustomKeyStore connects at once (real KMS takes minutes via CONNECTING). Failures are set by the
operator: ``kms-sim keystore set --id … --state FAILED`` or ``--hsm-timeout on`` (DependencyTimeoutException).
State rules quote the KMS API reference (CustomKeyStoreInvalidStateException).
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from kms.errors import (
    CloudHsmClusterInUseException,
    CustomKeyStoreInvalidStateException,
    CustomKeyStoreNameInUseException,
    CustomKeyStoreNotFoundException,
    LimitExceededException,
)

__all__ = ["CONNECTION_ERROR_CODES", "MAX_KEY_STORES", "STATES", "KeyStore", "KeyStores", "KeyStoresSnapshot"]

#: KMS quota: custom key stores per account and Region (KMS developer guide, "Resource quotas").
MAX_KEY_STORES = 10
#: How long a writer waits for another process's transaction.
BUSY_TIMEOUT_S = 10.0
CLOUDHSM = "AWS_CLOUDHSM"
EXTERNAL = "EXTERNAL_KEY_STORE"
STATES = ("CONNECTED", "CONNECTING", "FAILED", "DISCONNECTED", "DISCONNECTING")
#: ConnectionErrorCode values a FAILED key store can report (botocore kms service-2.json,
#: ``ConnectionErrorCodeType``); ``kms-sim keystore set --error-code`` takes only these.
CONNECTION_ERROR_CODES = (
    "INVALID_CREDENTIALS",
    "CLUSTER_NOT_FOUND",
    "NETWORK_ERRORS",
    "INTERNAL_ERROR",
    "INSUFFICIENT_CLOUDHSM_HSMS",
    "USER_LOCKED_OUT",
    "USER_NOT_FOUND",
    "USER_LOGGED_IN",
    "SUBNET_NOT_FOUND",
    "INSUFFICIENT_FREE_ADDRESSES_IN_SUBNET",
    "XKS_PROXY_ACCESS_DENIED",
    "XKS_PROXY_NOT_REACHABLE",
    "XKS_VPC_ENDPOINT_SERVICE_NOT_FOUND",
    "XKS_PROXY_INVALID_RESPONSE",
    "XKS_PROXY_INVALID_CONFIGURATION",
    "XKS_VPC_ENDPOINT_SERVICE_INVALID_CONFIGURATION",
    "XKS_PROXY_TIMED_OUT",
    "XKS_PROXY_INVALID_TLS_CONFIGURATION",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS key_stores (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    cluster_id TEXT,
    trust_anchor TEXT,
    xks TEXT,
    state TEXT NOT NULL,
    error_code TEXT,
    created REAL NOT NULL,
    hsm_timeout INTEGER NOT NULL DEFAULT 0
)
"""
_COLUMNS = "id, name, type, cluster_id, trust_anchor, xks, state, error_code, created, hsm_timeout"


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyStore:
    """One row: a custom key store as DescribeCustomKeyStores shows it, plus simulation flags."""

    id: str
    name: str
    type: str
    cluster_id: str | None
    trust_anchor: str | None
    xks: str | None  # JSON of the XksProxyConfiguration entry (never the secret)
    state: str
    error_code: str | None
    created: float
    hsm_timeout: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyStoresSnapshot:
    """Every key-store row at one moment, as :meth:`KeyStores.snapshot` read them, for
    :meth:`KeyStores.restore`."""

    rows: tuple[tuple[object, ...], ...] = field(repr=False)  # in ``_COLUMNS`` order

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(str(row[0]) for row in self.rows)


class KeyStores:
    """The key-store table; one connection per process (open it after any fork)."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction, taken up front (no lost update between workers); rolled back on error."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _rows(self, where: str = "", args: tuple[object, ...] = ()) -> list[KeyStore]:
        cursor = self._db.execute(f"SELECT {_COLUMNS} FROM key_stores {where} ORDER BY created, id", args)  # noqa: S608
        return [
            KeyStore(
                id=r[0],
                name=r[1],
                type=r[2],
                cluster_id=r[3],
                trust_anchor=r[4],
                xks=r[5],
                state=r[6],
                error_code=r[7],
                created=r[8],
                hsm_timeout=bool(r[9]),
            )
            for r in cursor.fetchall()
        ]

    def get(self, key_store_id: str) -> KeyStore:
        rows = self._rows("WHERE id = ?", (key_store_id,))
        if not rows:
            raise CustomKeyStoreNotFoundException(f"Custom key store '{key_store_id}' does not exist.")
        return rows[0]

    def find(self, *, key_store_id: str | None = None, name: str | None = None) -> list[KeyStore]:
        """All stores, or the one with this ID / name (CustomKeyStoreNotFoundException if none)."""
        if key_store_id is not None:
            return [self.get(key_store_id)]
        if name is not None:
            rows = self._rows("WHERE name = ?", (name,))
            if not rows:
                raise CustomKeyStoreNotFoundException(f"Custom key store with name '{name}' does not exist.")
            return rows
        return self._rows()

    def data_version(self) -> int:
        """A number that changes when another connection commits a change (SQLite's ``PRAGMA
        data_version``); this connection's own commits leave it as it was."""
        (version,) = self._db.execute("PRAGMA data_version").fetchone()
        return int(version)

    def snapshot(self) -> KeyStoresSnapshot:
        """Every key store as it is now (one statement: one consistent read)."""
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM key_stores ORDER BY created, id").fetchall()  # noqa: S608
        return KeyStoresSnapshot(rows=tuple(rows))

    def restore(self, snapshot: KeyStoresSnapshot) -> None:
        """Every key store back to ``snapshot``, in one transaction: those made since are gone (their names
        and clusters free again), those changed or deleted since are as they were."""
        placeholders = ", ".join("?" * len(_COLUMNS.split(",")))
        insert = f"INSERT INTO key_stores ({_COLUMNS}) VALUES ({placeholders})"  # noqa: S608
        with self._transaction():
            self._db.execute("DELETE FROM key_stores")
            self._db.executemany(insert, snapshot.rows)

    def create(
        self,
        *,
        name: str,
        store_type: str,
        cluster_id: str | None,
        trust_anchor: str | None,
        xks: str | None,
        at: datetime,
    ) -> str:
        key_store_id = "cks-" + secrets.token_hex(9)[:17]
        with self._transaction():
            (count,) = self._db.execute("SELECT COUNT(*) FROM key_stores").fetchone()
            if count >= MAX_KEY_STORES:
                raise LimitExceededException(
                    f"The request would exceed the limit of {MAX_KEY_STORES} custom key stores."
                )
            if self._db.execute("SELECT 1 FROM key_stores WHERE name = ?", (name,)).fetchone():
                raise CustomKeyStoreNameInUseException(f"Custom key store name '{name}' is already in use.")
            if (
                cluster_id is not None
                and self._db.execute(
                    "SELECT 1 FROM key_stores WHERE cluster_id = ?", (cluster_id,)
                ).fetchone()
            ):
                raise CloudHsmClusterInUseException(
                    f"CloudHSM cluster '{cluster_id}' is already associated with a custom key store."
                )
            self._db.execute(
                f"INSERT INTO key_stores ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, 'DISCONNECTED', NULL, ?, 0)",  # noqa: S608
                (key_store_id, name, store_type, cluster_id, trust_anchor, xks, at.timestamp()),
            )
        return key_store_id

    def _transition(self, key_store_id: str, allowed: tuple[str, ...], new_state: str, action: str) -> None:
        with self._transaction():
            store = self.get(key_store_id)
            if store.state not in allowed:
                raise CustomKeyStoreInvalidStateException(
                    f"{action} is not valid for custom key store '{key_store_id}' in state {store.state}."
                )
            self._db.execute(
                "UPDATE key_stores SET state = ?, error_code = NULL WHERE id = ?", (new_state, key_store_id)
            )

    def connect(self, key_store_id: str) -> None:
        # "ConnectCustomKeyStore on a ConnectionState of DISCONNECTING or FAILED ... valid for all other"
        self._transition(key_store_id, ("CONNECTED", "CONNECTING", "DISCONNECTED"), "CONNECTED", "Connect")

    def disconnect(self, key_store_id: str) -> None:
        # "DisconnectCustomKeyStore on ... DISCONNECTING or DISCONNECTED ... valid for all other" states
        self._transition(key_store_id, ("CONNECTED", "CONNECTING", "FAILED"), "DISCONNECTED", "Disconnect")

    def delete(self, key_store_id: str) -> None:
        # "DeleteCustomKeyStore on a custom key store that is not disconnected" is invalid.
        with self._transaction():
            store = self.get(key_store_id)
            if store.state != "DISCONNECTED":
                raise CustomKeyStoreInvalidStateException(
                    f"Custom key store '{key_store_id}' must be DISCONNECTED to be deleted, not {store.state}"
                )
            self._db.execute("DELETE FROM key_stores WHERE id = ?", (key_store_id,))

    def set_simulation(
        self,
        key_store_id: str,
        *,
        state: str | None = None,
        error_code: str | None = None,
        hsm_timeout: bool | None = None,
    ) -> None:
        """Operator control of the simulation (``kms-sim keystore set``), not reachable over the API."""
        store = self.get(key_store_id)
        if state is not None and state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}")
        if error_code is not None and error_code not in CONNECTION_ERROR_CODES:
            raise ValueError(f"error code must be one of {', '.join(CONNECTION_ERROR_CODES)}")
        self._db.execute(
            "UPDATE key_stores SET state = ?, error_code = ?, hsm_timeout = ? WHERE id = ?",
            (
                state or store.state,
                error_code if state is not None else store.error_code,
                int(store.hsm_timeout if hsm_timeout is None else hsm_timeout),
                key_store_id,
            ),
        )


def creation_date(store: KeyStore) -> datetime:
    return datetime.fromtimestamp(store.created, UTC)
