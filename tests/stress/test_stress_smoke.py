"""Smoke test of ``make stress``: the harness runs end to end with tiny counts, so it never rots.

It runs ``python -m stress --quick`` as a process, exactly as ``make stress`` does minus the counts: every
crash, hostile client, the swapped answer and the full disk happen, and every zero-target is checked. It
asserts nothing about time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    out = tmp_path_factory.mktemp("stress-results")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NITRO_SIM", "AWS_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "stress", "--quick", "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert (out / "results.md").read_text(encoding="utf-8").startswith("# attested-random stress results")
    return proc, json.loads((out / "results.json").read_text(encoding="utf-8"))


def test_every_zero_target_is_met(quick_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]]) -> None:
    proc, doc = quick_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "Verdict: every zero-target met." in proc.stdout
    assert doc["missed"] == []
    assert doc["failures"]["unexpected"] == []
    assert doc["records"]["lost"] == 0
    assert doc["leaks"] == []
    assert all(doc["flat"].values())


def test_every_fault_happened(quick_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]]) -> None:
    _, doc = quick_run
    assert {"date", "cpu", "cpus", "kernel", "python", "versions"} <= doc["machine"].keys()
    assert len(doc["restarts"]) == 5  # kms-sim, a kms-sim worker, vsock-proxy, an nsm-sim, a client
    assert sorted(h["name"] for h in doc["hostile"] if h["ok"]) == ["drip", "flood", "idle"]
    assert doc["cross_decryption"]["decryption_errors"] == 1
    assert doc["records"]["missing_in_disk_full"] > 0  # the full disk really dropped records...
    assert doc["records"]["dropped_reported"] >= doc["records"]["missing_in_disk_full"]  # ...and said so
    assert doc["audit_refusals"]["RequestTimeoutException"] >= 1
    assert doc["records"]["key_stores_found"] == doc["settings"]["key_stores"]
    assert doc["scan"]["found_where_allowed"]  # the scan finds the secret key in its own file


def test_bad_settings_are_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "stress", "--clients", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "clients must be 2.." in proc.stderr
