"""`make demo` keeps working: image, PCR0, a policy on it, attested bytes, the tampered image refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parents[2] / "tools" / "demo.py"


def test_demo_builds_runs_fetches_and_refuses_the_tampered_image() -> None:
    done = subprocess.run(
        [sys.executable, str(DEMO)], capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "32 attested random bytes" in done.stdout
    assert "refused by KMS: AccessDeniedException" in done.stdout
    assert "(PCR1 unchanged)" in done.stdout
    assert "demo OK" in done.stdout
    assert "Traceback" not in done.stderr
