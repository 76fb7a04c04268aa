"""kms.keystores: KeyStores.snapshot / restore / data_version (what the pytest plugin's reset between tests
uses)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kms.errors import CustomKeyStoreNotFoundException
from kms.keystores import CLOUDHSM, EXTERNAL, KeyStores, KeyStoresSnapshot

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
T1 = datetime(2026, 11, 29, 12, 1, tzinfo=UTC)  # stores list by creation time, then (random) ID


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[KeyStores, KeyStores]]:
    """Two connections to one keystores.db: the plugin's and a kms-sim worker's."""
    first, second = KeyStores(tmp_path / "keystores.db"), KeyStores(tmp_path / "keystores.db")
    yield first, second
    first.close()
    second.close()


def _hsm(stores: KeyStores, name: str, cluster: str = "cluster-abcdefghijk", at: datetime = T0) -> str:
    return stores.create(
        name=name, store_type=CLOUDHSM, cluster_id=cluster, trust_anchor="anchor", xks=None, at=at
    )


def test_an_empty_snapshot_restored_removes_every_key_store(stores: tuple[KeyStores, KeyStores]) -> None:
    plugin, worker = stores
    empty = plugin.snapshot()
    assert empty.ids == ()
    _hsm(worker, "x")
    worker.create(name="xks", store_type=EXTERNAL, cluster_id=None, trust_anchor=None, xks="{}", at=T0)
    plugin.restore(empty)
    assert worker.find() == []
    _hsm(worker, "x")  # the name and the cluster are free again


def test_restore_brings_back_changed_and_deleted_key_stores_as_they_were(
    stores: tuple[KeyStores, KeyStores],
) -> None:
    plugin, worker = stores
    kept, deleted = _hsm(worker, "kept"), _hsm(worker, "deleted", "cluster-bcdefghijkl", T1)
    worker.set_simulation(kept, state="FAILED", error_code="NETWORK_ERRORS", hsm_timeout=True)
    before = plugin.snapshot()
    assert before.ids == (kept, deleted)
    rows = worker.find()

    worker.set_simulation(kept, state="CONNECTED", hsm_timeout=False)
    worker.delete(deleted)
    made = _hsm(worker, "new", "cluster-cdefghijklm")
    plugin.restore(before)

    assert worker.find() == rows
    with pytest.raises(CustomKeyStoreNotFoundException):
        worker.get(made)


def test_data_version_moves_on_another_connections_commit_only(stores: tuple[KeyStores, KeyStores]) -> None:
    plugin, worker = stores
    start = plugin.data_version()
    worker.find()  # reads do not count
    assert plugin.data_version() == start
    _hsm(worker, "x")
    moved = plugin.data_version()
    assert moved != start
    plugin.restore(KeyStoresSnapshot(rows=()))
    assert plugin.data_version() == moved  # its own commit
