"""``nitro-attest`` with hostile times: a usage error in one line (exit 2), never an OverflowError."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from attestation.cli import EXIT_USAGE, main

#: How long a test waits for a process it started.
WAIT_S = 60


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def document(sim_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    path = tmp_path / "doc.cbor"
    code, _, err = _run(capsys, "simulate", "--out", str(path), "--at", "2026-11-29T12:00:00Z")
    assert code == 0, err
    return path


@pytest.mark.parametrize(
    "at",
    ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59.999999-00:01"],
    ids=["past-9999", "before-1", "past-9999-by-a-minute"],
)
def test_verify_at_a_time_outside_the_calendar_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], document: Path, at: str
) -> None:
    code, out, err = _run(capsys, "verify", str(document), "--root", "sim", "--at", at)
    assert code == EXIT_USAGE
    assert out == ""
    assert err.startswith("nitro-attest: error: --at wants an ISO 8601 time")
    assert err.count("\n") == 1


@pytest.mark.parametrize("at", ["9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "9990-06-01T00:00:00Z"])
def test_simulate_at_a_time_its_certificates_cannot_cover_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], sim_home: Path, tmp_path: Path, at: str
) -> None:
    code, out, err = _run(capsys, "simulate", "--out", str(tmp_path / "doc.cbor"), "--at", at)
    assert code == EXIT_USAGE
    assert out == ""
    assert err.startswith("nitro-attest: error: ")
    assert err.count("\n") == 1


def test_simulate_far_future_as_a_process_has_no_traceback(sim_home: Path, tmp_path: Path) -> None:
    argv = ["simulate", "--out", str(tmp_path / "d"), "--at", "9999-12-31"]
    result = subprocess.run(
        [sys.executable, "-m", "attestation.cli", *argv],
        env={**os.environ, "NITRO_SIM_HOME": str(sim_home)},
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
    )
    assert result.returncode == EXIT_USAGE
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
