"""`make demo` keeps working: the real programs, end to end, allowed and refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parents[2] / "tools" / "demo.py"


def test_demo_fetches_attested_bytes_and_is_refused_under_another_pcr0() -> None:
    done = subprocess.run(
        [sys.executable, str(DEMO)], capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "got 32 attested random bytes" in done.stdout
    assert "refused: AccessDeniedException" in done.stdout
    assert "demo OK" in done.stdout
    assert "Traceback" not in done.stderr
