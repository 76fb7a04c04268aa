"""RecipientCheck in process: verification, freshness on every call, and the exact-document cache's limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from attestation.nsm import NSM, simulate_document
from attestation.pki import SimulatedPKI
from kms.errors import ValidationException
from kms.recipient import RecipientCheck

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def spki() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture
def check(sim_home: Path) -> RecipientCheck:
    root = SimulatedPKI.load_or_create(sim_home, at=T0).root_der
    return RecipientCheck(roots=[root], max_age=timedelta(minutes=5))


def test_verified_recipient_fields(check: RecipientCheck, sim_home: Path, spki: bytes) -> None:
    document = simulate_document(sim_home, at=T0, public_key=spki)
    first = check(document, T0 + timedelta(seconds=1))
    assert first.module_id.startswith("i-")
    assert len(first.key_id) == 32
    assert first.public_key.key_size == 2048
    assert check(document, T0 + timedelta(seconds=2)) is first  # served from the exact-document cache


def test_freshness_is_checked_on_every_call_even_when_cached(
    check: RecipientCheck, sim_home: Path, spki: bytes
) -> None:
    document = simulate_document(sim_home, at=T0, public_key=spki)
    check(document, T0)
    with pytest.raises(ValidationException, match="old"):
        check(document, T0 + timedelta(minutes=6))


def test_outside_the_certificate_window_the_full_pipeline_runs_again(
    check: RecipientCheck, sim_home: Path, spki: bytes
) -> None:
    document = simulate_document(sim_home, at=T0, public_key=spki)
    check(document, T0)
    with pytest.raises(ValidationException, match="chain"):
        check(document, T0 + timedelta(days=400))


def test_rejections_are_not_cached(
    check: RecipientCheck, sim_home: Path, tmp_path: Path, spki: bytes
) -> None:
    foreign = simulate_document(tmp_path, at=T0, public_key=spki)
    for _ in range(2):
        with pytest.raises(ValidationException, match="chain"):
            check(foreign, T0)
    no_key = simulate_document(sim_home, at=T0)
    for _ in range(2):
        with pytest.raises(ValidationException, match="public_key"):
            check(no_key, T0)


def test_an_enclaves_new_documents_share_its_recipient(
    check: RecipientCheck, sim_home: Path, spki: bytes
) -> None:
    nsm = NSM(
        pki=SimulatedPKI.load_or_create(sim_home, at=T0), module_id="i-0123456789abcdef0-enc0123456789abcdef"
    )
    first = check(nsm.attestation(public_key=spki, at=T0), T0)
    second = check(nsm.attestation(public_key=spki, at=T0 + timedelta(seconds=1)), T0)
    assert second is first  # same module ID, PCRs and key objects: the last recipient, reused
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    other_spki = other_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    third = check(nsm.attestation(public_key=other_spki, at=T0 + timedelta(seconds=2)), T0)
    assert third is not first
    assert third.public_key.public_numbers() == other_key.public_numbers()
    assert (third.module_id, dict(third.pcrs)) == (first.module_id, dict(first.pcrs))
    assert third.key_id != first.key_id
    fourth = check(nsm.attestation(public_key=spki, at=T0 + timedelta(seconds=3)), T0)
    assert (fourth.module_id, dict(fourth.pcrs), fourth.key_id) == (
        first.module_id,
        dict(first.pcrs),
        first.key_id,
    )
