"""``nitro-attest`` with hostile times: a usage error in one line (exit 2), never an OverflowError."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from attestation.cli import EXIT_USAGE, MAX_KEY_FILE_BYTES, main

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


@pytest.fixture
def far_document(sim_home: Path, tmp_path: Path, sign_at_timestamp: Any) -> Path:
    """A document signed by the simulated PKI in ``sim_home`` whose timestamp is past year 9999."""
    path = tmp_path / "far.cbor"
    path.write_bytes(sign_at_timestamp(sim_home, 2**64 - 1))
    return path


def test_inspect_shows_a_timestamp_past_year_9999_without_a_traceback(
    capsys: pytest.CaptureFixture[str], far_document: Path
) -> None:
    path = far_document
    code, out, err = _run(capsys, "inspect", str(path))
    assert (code, err) == (0, "")
    assert f"timestamp    {2**64 - 1} (<past year 9999>)" in out
    code, out, err = _run(capsys, "inspect", str(path), "--json")
    assert (code, err) == (0, "")
    assert '"issued_at": "<past year 9999>"' in out


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        # The freshness policy counts in integer time: the far timestamp is simply after the verification.
        (["--max-age", "5"], "FAILED at step policy: timestamp: the document is dated "),
        # No datetime holds the document's own time.
        (["--at", "document"], "FAILED at step timestamp: the document's timestamp is past year 9999\n"),
    ],
    ids=["max-age", "at-document"],
)
def test_verify_of_a_timestamp_past_year_9999_fails_in_one_line(
    capsys: pytest.CaptureFixture[str], far_document: Path, extra: list[str], expected: str
) -> None:
    path = far_document
    code, out, err = _run(capsys, "verify", str(path), "--root", "sim", *extra)
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(expected)


def test_verify_without_a_time_policy_reports_the_far_timestamp(
    capsys: pytest.CaptureFixture[str], far_document: Path
) -> None:
    path = far_document
    code, out, err = _run(capsys, "verify", str(path), "--root", "sim")
    assert (code, err) == (0, "")
    assert "issued <past year 9999>" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["verify", "DOC", "--root", "/dev/zero"],
        ["simulate", "--out", "OUT", "--public-key", "/dev/zero"],
    ],
    ids=["root", "public-key"],
)
def test_endless_key_files_are_refused_at_a_bound(
    capsys: pytest.CaptureFixture[str], document: Path, tmp_path: Path, argv: list[str]
) -> None:
    # Read whole: /dev/zero grew the process until a MemoryError traceback (or the machine's limit).
    argv = [str(document) if a == "DOC" else str(tmp_path / "out") if a == "OUT" else a for a in argv]
    code, out, err = _run(capsys, *argv)
    assert code == EXIT_USAGE
    assert out == ""
    assert err.startswith("nitro-attest: error: --")
    assert f"larger than {MAX_KEY_FILE_BYTES} bytes" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(("nonce", "size"), [("ab" * 1025, 1025), ("", 0)], ids=["over", "empty"])
def test_verify_nonce_outside_its_bounds_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], document: Path, nonce: str, size: int
) -> None:
    # 1025 bytes reached Nonce(), whose ValueError escaped as a traceback.
    code, out, err = _run(capsys, "verify", str(document), "--root", "sim", "--nonce", nonce)
    assert code == EXIT_USAGE
    assert out == ""
    assert err == f"nitro-attest: error: --nonce must be 1..1024 bytes, got {size}\n"
