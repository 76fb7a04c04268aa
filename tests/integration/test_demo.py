"""`make demo` keeps working: image, PCR0, a policy on it, attested bytes, a secret only the image opens, a
data key it makes, the tampered image refused both."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parents[2] / "tools" / "demo.py"


def test_demo_builds_runs_fetches_decrypts_and_refuses_the_tampered_image() -> None:
    done = subprocess.run(
        [sys.executable, str(DEMO)], capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "32 attested random bytes" in done.stdout
    assert "attested-random fetch from it: refused by KMS: AccessDeniedException" in done.stdout
    assert "aws kms     create-key " in done.stdout
    assert "the operator's own decrypt: refused by KMS" in done.stdout
    assert "the enclave opened it (attested Decrypt)" in done.stdout
    assert "= the secret's, as its document's user_data" in done.stdout
    assert "attested-random data-key: a 32-byte AES_256 key" in done.stdout
    assert "SHA-384 = our key's: the blob holds the key we got" in done.stdout
    assert "attested-random check-secret from it: refused by KMS: AccessDeniedException" in done.stdout
    assert "(PCR1 unchanged)" in done.stdout
    assert "demo OK" in done.stdout
    assert "Traceback" not in done.stderr
