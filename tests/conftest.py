"""Shared fixtures: the real AWS test vectors and a fresh simulation home per test."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from attestation.document import DocumentEncoder, encode_pcrs
from attestation.pki import SimulatedPKI, new_module_id

REPO = Path(__file__).resolve().parents[1]
#: ../shared/test-vectors beside the checkout (CI lays shared/ next to the clone); override with the env var.
VECTORS = Path(os.environ.get("ATTESTED_RANDOM_VECTORS", REPO.parent / "shared" / "test-vectors"))


@pytest.fixture(scope="session")
def vectors() -> Path:
    """The directory of real AWS artifacts (attestation/, kms-cms/, vsock-proxy/)."""
    if not VECTORS.is_dir():
        pytest.fail(f"test vectors not found at {VECTORS}; set ATTESTED_RANDOM_VECTORS")
    return VECTORS


@pytest.fixture
def sim_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh, short NITRO_SIM_HOME (Unix socket paths must stay under 108 bytes)."""
    home = tmp_path_factory.mktemp("sim")
    monkeypatch.setenv("NITRO_SIM_HOME", str(home))
    return home


#: ``(home, timestamp, public_key)`` -> a document signed by the simulated PKI in ``home``.
SignAtTimestamp = Callable[[Path, int, bytes | None], bytes]


@pytest.fixture
def sign_at_timestamp() -> SignAtTimestamp:
    """Sign a document with any ``timestamp`` the CDDL allows (e.g. past year 9999, which no NSM issues),
    by the simulated PKI of a home, so that a verifier trusting that home's root checks the rest of it."""

    def sign(home: Path, timestamp: int, public_key: bytes | None = None) -> bytes:
        now = datetime.now(UTC)
        pki = SimulatedPKI.load_or_create(home, at=now)
        signer = pki.issue_signer(at=now)
        encoder = DocumentEncoder(
            module_id=new_module_id(pki.instance_id, at=now),
            certificate=signer.certificate,
            cabundle=signer.cabundle,
            signing_key=signer.private_key,
        )
        pcrs = encode_pcrs({index: bytes([index + 1]) * 48 for index in range(3)})
        return encoder.sign(encoder.payload(timestamp=timestamp, pcrs_cbor=pcrs, public_key=public_key))

    return sign
