"""Shared fixtures: the real AWS test vectors and a fresh simulation home per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

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
