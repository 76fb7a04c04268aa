"""kms.keys: the key store in process (file mode, sharing between connections, resolve forms, deletion)."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

import kms.keys
from kms.errors import (
    AlreadyExistsException,
    DisabledException,
    InvalidArnException,
    KMSInvalidStateException,
    LimitExceededException,
    NotFoundException,
)
from kms.keys import DISABLED, ENABLED, PENDING_DELETION, KeyRing, check_usable, default_policy

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
ARN_PREFIX = "arn:aws:kms:us-east-1:111122223333:"


@pytest.fixture
def ring(tmp_path: Path) -> Iterator[KeyRing]:
    keys = KeyRing(tmp_path / "keys.db")
    yield keys
    keys.close()


def _symmetric(ring: KeyRing, at: datetime = T0) -> kms.keys.Key:
    return ring.create(spec="SYMMETRIC_DEFAULT", usage="ENCRYPT_DECRYPT", at=at)


def test_database_and_its_journal_files_are_owner_only(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path / "keys.db")
    try:
        _symmetric(ring)
        for name in ("keys.db", "keys.db-wal", "keys.db-shm"):
            path = tmp_path / name
            assert path.exists(), name
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
    finally:
        ring.close()


def test_an_existing_wider_file_is_made_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    path.touch(mode=0o644)
    path.chmod(0o644)
    KeyRing(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_material_per_spec(ring: KeyRing) -> None:
    symmetric = _symmetric(ring)
    assert len(symmetric.material) == 32
    assert len(symmetric.material_id) == 64
    int(symmetric.material_id, 16)
    rsa_key = ring.create(spec="RSA_2048", usage="ENCRYPT_DECRYPT", at=T0)
    private = serialization.load_der_private_key(rsa_key.material, password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    assert private.key_size == 2048
    for spec, curve in (("ECC_NIST_P256", ec.SECP256R1), ("ECC_NIST_P384", ec.SECP384R1)):
        ecc = ring.create(spec=spec, usage="KEY_AGREEMENT", at=T0)
        loaded = serialization.load_der_private_key(ecc.material, password=None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        assert isinstance(loaded.curve, curve)


def test_material_never_in_repr(ring: KeyRing) -> None:
    key = _symmetric(ring)
    assert "material=" not in repr(key)
    assert key.material.hex() not in repr(key)
    assert repr(key.material) not in repr(key)


def test_new_key_fields(ring: KeyRing) -> None:
    key = ring.create(spec="SYMMETRIC_DEFAULT", usage="ENCRYPT_DECRYPT", description="d", at=T0)
    assert key.arn == f"{ARN_PREFIX}key/{key.id}"
    assert key.state == ENABLED
    assert key.created == T0.timestamp()
    assert key.deletion_date is None
    assert key.description == "d"
    assert key.policy == default_policy()


def test_two_connections_see_each_others_changes(tmp_path: Path) -> None:
    """What two ``kms-sim serve`` workers do: one disables, the other's next read sees it."""
    first, second = KeyRing(tmp_path / "keys.db"), KeyRing(tmp_path / "keys.db")
    try:
        key = _symmetric(first)
        assert second.resolve(key.id).state == ENABLED
        second.set_enabled(key.id, False, at=T0)
        assert first.resolve(key.id).state == DISABLED
        first.create_alias("alias/shared", key.id, at=T0)
        assert second.resolve("alias/shared").id == key.id
    finally:
        first.close()
        second.close()


def test_resolve_forms(ring: KeyRing) -> None:
    key = _symmetric(ring)
    ring.create_alias("alias/app", key.id, at=T0)
    for form in (key.id, key.arn, "alias/app", f"{ARN_PREFIX}alias/app"):
        assert ring.resolve(form).id == key.id, form
    for form in ("alias/app", f"{ARN_PREFIX}alias/app"):
        with pytest.raises(NotFoundException):
            ring.resolve(form, aliases=False)


@pytest.mark.parametrize(
    ("key_id", "error", "message"),
    [
        (
            "1234abcd-12ab-34cd-56ef-1234567890ab",
            NotFoundException,
            f"Key '{ARN_PREFIX}key/1234abcd-12ab-34cd-56ef-1234567890ab' does not exist",
        ),
        ("alias/none", NotFoundException, f"Alias '{ARN_PREFIX}alias/none' is not found."),
        (f"{ARN_PREFIX}alias/none", NotFoundException, f"Alias '{ARN_PREFIX}alias/none' is not found."),
        ("not-a-key", NotFoundException, "Invalid keyId not-a-key"),
        ("arn:aws:kms:us-east-1", InvalidArnException, "is not a valid"),
        (
            "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            NotFoundException,
            "does not exist",
        ),
    ],
)
def test_resolve_errors(ring: KeyRing, key_id: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as caught:
        ring.resolve(key_id)
    assert message in str(caught.value)


def test_check_usable_per_state(ring: KeyRing) -> None:
    key = _symmetric(ring)
    check_usable(ring.resolve(key.id))
    ring.set_enabled(key.id, False, at=T0)
    with pytest.raises(DisabledException, match=r"key/.* is disabled\.$"):
        check_usable(ring.resolve(key.id))
    ring.schedule_deletion(key.id, 7, at=T0)
    with pytest.raises(KMSInvalidStateException, match=r"is pending deletion\.$"):
        check_usable(ring.resolve(key.id))


def test_deletion_takes_effect_at_the_request_time(ring: KeyRing) -> None:
    key = _symmetric(ring)
    ring.create_alias("alias/doomed", key.id, at=T0)
    scheduled = ring.schedule_deletion(key.id, 7, at=T0)
    assert scheduled.state == PENDING_DELETION
    assert scheduled.deletion_date == (T0 + timedelta(days=7)).timestamp()
    before = T0 + timedelta(days=7) - timedelta(seconds=1)
    assert ring.resolve(key.id, at=before).state == PENDING_DELETION
    assert [k.id for k in ring.list_keys(at=before)] == [key.id]
    after = T0 + timedelta(days=7)
    with pytest.raises(NotFoundException):
        ring.resolve(key.id, at=after)
    assert ring.list_keys(at=after) == []
    assert ring.aliases(at=after) == []
    # gone for good: even a request "earlier" does not bring it back
    with pytest.raises(NotFoundException):
        ring.resolve(key.id, at=T0)


def test_cancel_deletion_leaves_the_key_disabled(ring: KeyRing) -> None:
    key = _symmetric(ring)
    ring.schedule_deletion(key.id, 30, at=T0)
    with pytest.raises(KMSInvalidStateException):
        ring.set_enabled(key.id, True, at=T0)
    with pytest.raises(KMSInvalidStateException):
        ring.schedule_deletion(key.id, 7, at=T0)
    ring.cancel_deletion(key.id, at=T0)
    after = ring.resolve(key.id)
    assert (after.state, after.deletion_date) == (DISABLED, None)
    with pytest.raises(KMSInvalidStateException, match="is not pending deletion"):
        ring.cancel_deletion(key.id, at=T0)


def test_alias_rules(ring: KeyRing) -> None:
    first, second = _symmetric(ring), _symmetric(ring)
    ring.create_alias("alias/a", first.id, at=T0)
    with pytest.raises(AlreadyExistsException):
        ring.create_alias("alias/a", second.id, at=T0)
    later = T0 + timedelta(hours=1)
    ring.update_alias("alias/a", second.id, at=later)
    (alias,) = ring.aliases(key_id=second.id)
    assert (alias.name, alias.created, alias.updated) == ("alias/a", T0.timestamp(), later.timestamp())
    assert alias.arn == f"{ARN_PREFIX}alias/a"
    ring.delete_alias("alias/a")
    with pytest.raises(NotFoundException):
        ring.delete_alias("alias/a")
    with pytest.raises(NotFoundException):
        ring.update_alias("alias/a", first.id, at=T0)


def test_key_and_alias_bounds(ring: KeyRing, monkeypatch: pytest.MonkeyPatch) -> None:
    key = _symmetric(ring)
    monkeypatch.setattr(kms.keys, "MAX_KEYS", 1)
    with pytest.raises(LimitExceededException, match="limit of 1 KMS keys"):
        _symmetric(ring)
    monkeypatch.setattr(kms.keys, "MAX_ALIASES", 1)
    ring.create_alias("alias/one", key.id, at=T0)
    with pytest.raises(LimitExceededException, match="limit of 1 aliases"):
        ring.create_alias("alias/two", key.id, at=T0)


def test_keys_survive_a_reopen(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path / "keys.db")
    key = _symmetric(ring)
    ring.close()
    again = KeyRing(tmp_path / "keys.db")
    try:
        assert again.resolve(key.id).material == key.material
    finally:
        again.close()


def test_kept_rows_follow_every_change_of_another_connection(tmp_path: Path) -> None:
    """resolve keeps rows between requests; a commit by another connection (another worker) drops them."""
    first, second = KeyRing(tmp_path / "keys.db"), KeyRing(tmp_path / "keys.db")
    try:
        key = _symmetric(first)
        assert first.resolve(key.id) is first.resolve(key.id)  # the kept row, no re-read
        second.set_enabled(key.id, False, at=T0)
        assert first.resolve(key.id).state == DISABLED
        second.set_enabled(key.id, True, at=T0)
        assert first.resolve(key.arn).state == ENABLED
        second.put_policy(key.id, '{"Statement": []}', at=T0)
        assert first.resolve(key.id).policy == '{"Statement": []}'
        second.set_description(key.id, "changed", at=T0)
        assert first.resolve(key.id).description == "changed"
        second.schedule_deletion(key.id, 7, at=T0)
        assert first.resolve(key.id, at=T0).state == PENDING_DELETION
        with pytest.raises(NotFoundException):
            first.resolve(key.id, at=T0 + timedelta(days=7))
        with pytest.raises(NotFoundException):
            second.resolve(key.id, at=T0)
    finally:
        first.close()
        second.close()


def test_kept_rows_follow_the_connections_own_changes(ring: KeyRing) -> None:
    """SQLite's data_version does not count a connection's own commits: its writes drop the kept rows."""
    key = _symmetric(ring)
    assert ring.resolve(key.id).state == ENABLED
    ring.set_enabled(key.id, False, at=T0)
    assert ring.resolve(key.id).state == DISABLED
    ring.put_policy(key.id, '{"Statement": []}', at=T0)
    assert ring.resolve(key.id).policy == '{"Statement": []}'
    ring.cancel_deletion(ring.schedule_deletion(key.id, 7, at=T0).id, at=T0)
    assert ring.resolve(key.id).deletion_date is None


def test_kept_rows_are_bounded(ring: KeyRing, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kms.keys, "MAX_CACHED_KEYS", 2)
    made = [_symmetric(ring) for _ in range(3)]
    for key in made:
        assert ring.resolve(key.id).id == key.id
    assert len(ring._cache) == 2  # the oldest entry went
    assert ring.resolve(made[0].id).id == made[0].id
