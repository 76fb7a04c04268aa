"""kms.keys: KeyRing.snapshot / restore / data_version (what the pytest plugin's reset between tests uses)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kms.errors import NotFoundException
from kms.keys import DISABLED, ENABLED, PENDING_DELETION, KeyRing, KeyRingSnapshot

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@pytest.fixture
def rings(tmp_path: Path) -> Iterator[tuple[KeyRing, KeyRing]]:
    """Two connections to one keys.db: the plugin's and a kms-sim worker's."""
    first, second = KeyRing(tmp_path / "keys.db"), KeyRing(tmp_path / "keys.db")
    yield first, second
    first.close()
    second.close()


def _symmetric(ring: KeyRing) -> str:
    return ring.create(spec="SYMMETRIC_DEFAULT", usage="ENCRYPT_DECRYPT", at=T0).id


def test_an_empty_snapshot_restored_removes_every_key_and_alias(rings: tuple[KeyRing, KeyRing]) -> None:
    plugin, worker = rings
    empty = plugin.snapshot()
    assert empty.key_ids == ()
    key_id = _symmetric(worker)
    worker.create_alias("alias/app", key_id, at=T0)
    plugin.restore(empty)
    assert worker.list_keys(at=T0) == []
    assert worker.aliases() == []
    worker.create_alias("alias/app", _symmetric(worker), at=T0)  # the name is free again


def test_restore_brings_back_changed_and_deleted_keys_as_they_were(rings: tuple[KeyRing, KeyRing]) -> None:
    plugin, worker = rings
    kept, pending = _symmetric(worker), _symmetric(worker)
    worker.schedule_deletion(pending, 7, at=T0)
    worker.create_alias("alias/kept", kept, at=T0)
    before = plugin.snapshot()
    assert sorted(before.key_ids) == sorted((kept, pending))  # one creation time: the order is the IDs'
    material = worker.resolve(kept).material

    worker.set_enabled(kept, False, at=T0)
    worker.put_policy(kept, "{}", at=T0)
    worker.cancel_deletion(pending, at=T0)
    worker.delete_alias("alias/kept")
    worker.create_alias("alias/new", pending, at=T0)
    _symmetric(worker)
    plugin.restore(before)

    assert sorted(k.id for k in worker.list_keys(at=T0)) == sorted([kept, pending])
    restored = worker.resolve("alias/kept")
    assert (restored.id, restored.state, restored.material) == (kept, ENABLED, material)
    assert restored.policy != "{}"
    again = worker.resolve(pending)
    assert (again.state, again.pending_window_days) == (PENDING_DELETION, 7)
    with pytest.raises(NotFoundException):
        worker.resolve("alias/new")


def test_a_workers_kept_row_does_not_survive_a_restore(rings: tuple[KeyRing, KeyRing]) -> None:
    plugin, worker = rings
    key_id = _symmetric(worker)
    before = plugin.snapshot()
    worker.set_enabled(key_id, False, at=T0)
    assert worker.resolve(key_id).state == DISABLED  # now kept by the worker
    plugin.restore(before)
    assert worker.resolve(key_id).state == ENABLED
    plugin.restore(KeyRingSnapshot(keys=(), aliases=()))
    with pytest.raises(NotFoundException):
        worker.resolve(key_id)


def test_data_version_moves_on_another_connections_commit_only(rings: tuple[KeyRing, KeyRing]) -> None:
    plugin, worker = rings
    start = plugin.data_version()
    worker.list_keys()  # reads do not count
    worker.aliases()
    assert plugin.data_version() == start
    _symmetric(worker)
    moved = plugin.data_version()
    assert moved != start
    plugin.restore(KeyRingSnapshot(keys=(), aliases=()))
    assert plugin.data_version() == moved  # its own commit


def test_a_snapshot_has_no_material_in_its_repr(rings: tuple[KeyRing, KeyRing]) -> None:
    plugin, worker = rings
    material = worker.resolve(_symmetric(worker)).material
    snapshot = plugin.snapshot()
    assert material.hex() not in repr(snapshot)
    assert repr(material) not in repr(snapshot)
