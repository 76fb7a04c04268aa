"""Hostile input to kms-sim and its command line (session 4): each a clear error, never a traceback or a 500.

Process-level findings run the real ``kms-sim`` (``shared_server`` or ``python -m kms.cli``); pure parsers are
called directly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from attestation.errors import SimulationError
from kms.iam import PolicyFileError, load_policies
from kms.state import load_principals

Server = Any

#: How long a test waits for a process it started.
WAIT_S = 30


def _kms_sim(home: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """``kms-sim ARGV`` expected to stop at once (a server that started would time out here)."""
    return subprocess.run(
        [sys.executable, "-m", "kms.cli", *argv],
        env={**os.environ, "NITRO_SIM_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
    )


def _one_line_error(result: subprocess.CompletedProcess[str], code: int, fragment: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("kms-sim: error: ")
    assert result.stderr.count("\n") == 1, result.stderr
    assert fragment in result.stderr
    assert result.stdout == ""


# --- DescribeCustomKeyStores Marker: only the ASCII offsets we issue ---------------------------------------


@pytest.mark.parametrize(
    "marker", ["\u00b2", "\u0660", "\uff10", "\u00b9\u00b2"], ids=["sup2", "arabic0", "fw0", "sup12"]
)
def test_marker_of_non_ascii_digits_is_invalid_marker(shared_server: Server, marker: str) -> None:
    # "\u00b2".isdigit() is True but int() refuses it (was HTTP 500); int("\u0660") is 0 (was accepted).
    client = shared_server.client()
    with pytest.raises(client.exceptions.InvalidMarkerException):
        client.describe_custom_key_stores(Marker=marker)
    assert len(client.generate_random(NumberOfBytes=8)["Plaintext"]) == 8
    assert "internal error" not in shared_server.stderr


# --- files the operator hands kms-sim ---------------------------------------------------------------------


def test_deeply_nested_policy_file_is_a_policy_error(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text("[" * 100_000 + "]" * 100_000)  # under the 1 MiB bound, deeper than the stack
    with pytest.raises(PolicyFileError, match="nested too deeply"):
        load_policies(path)


def test_deeply_nested_policy_file_stops_serve_in_one_line(aws_env: Path) -> None:
    path = aws_env / "deep.json"
    path.write_text("{" + '"a":{' * 50_000 + "}" * 50_001)
    _one_line_error(_kms_sim(aws_env, "serve", "--policy", str(path)), 1, "nested too deeply")


def test_credentials_file_without_sections_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "credentials"
    path.write_text("aws_access_key_id = x\n")
    with pytest.raises(SimulationError) as raised:
        load_principals(path)
    assert "\n" not in str(raised.value)
    assert "no section headers" in str(raised.value)


def test_credentials_file_without_sections_stops_serve_in_one_line(aws_env: Path) -> None:
    (aws_env / "kms").mkdir(parents=True, exist_ok=True)
    (aws_env / "kms" / "credentials").write_text("not an ini file\n")
    _one_line_error(_kms_sim(aws_env, "serve", "--listen", "127.0.0.1:0"), 1, "no section headers")


def test_trust_root_that_never_ends_is_refused(aws_env: Path) -> None:
    # /dev/zero was read whole (unbounded memory, never started); now read up to a bound and refused.
    _one_line_error(_kms_sim(aws_env, "serve", "--trust-root", "/dev/zero"), 1, "byte limit")


def test_corrupt_key_store_database_is_one_line(aws_env: Path) -> None:
    (aws_env / "kms").mkdir(parents=True, exist_ok=True)
    (aws_env / "kms" / "keystores.db").write_bytes(b"\x00garbage" * 1000)
    for argv in (["keystore", "list"], ["keystore", "set", "--id", "cks-1", "--state", "FAILED"]):
        _one_line_error(_kms_sim(aws_env, *argv), 1, "not a database")


# --- flags ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("age", ["1e300", "1e12", "315360001"])
def test_max_doc_age_beyond_ten_years_is_a_usage_error(aws_env: Path, age: str) -> None:
    # 1e300 s overflowed timedelta after the flag was accepted: a traceback.
    _one_line_error(_kms_sim(aws_env, "serve", "--max-doc-age", age), 2, "--max-doc-age")


@pytest.mark.parametrize("port", ["\u0663", "\uff18\uff10", "8\u00b2"], ids=["arabic3", "fw80", "sup"])
def test_listen_port_of_non_ascii_digits_is_refused(aws_env: Path, port: str) -> None:
    # "127.0.0.1:٣" bound port 3.
    _one_line_error(_kms_sim(aws_env, "serve", "--listen", f"127.0.0.1:{port}"), 1, "--listen must be")


def test_audit_log_is_valid_after_hostile_markers(shared_server: Server) -> None:
    client = shared_server.client()
    with pytest.raises(client.exceptions.InvalidMarkerException):
        client.describe_custom_key_stores(Marker="\u00b2")
    lines = (shared_server.home / "kms" / "audit.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert records[-1]["errorCode"] == "InvalidMarkerException"
