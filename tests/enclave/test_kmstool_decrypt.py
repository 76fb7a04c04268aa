"""kmstool-enclave-cli decrypt and genkey as processes, against the real kms-sim, vsock-proxy and nsm-sim
(the plugin's fixtures; the tool is this test's simulated enclave app), checked with boto3."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from typing import Any

import pytest

from nitro_sim.stack import KmsSim

#: Bound on one run of the tool (never asserted as a time).
RUN_TIMEOUT = 60.0


def _kmstool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "enclave.kmstool", *args],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


@pytest.fixture
def key(kms_sim: KmsSim, vsock_proxy: Any, nsm: Any) -> dict[str, Any]:
    boto = kms_sim.boto3_client()
    return {"boto": boto, "meta": boto.create_key(Description="kmstool")["KeyMetadata"]}


def test_decrypt_prints_the_plaintext(key: dict[str, Any]) -> None:
    blob = key["boto"].encrypt(KeyId=key["meta"]["KeyId"], Plaintext=b"kmstool secret")["CiphertextBlob"]
    done = _kmstool("decrypt", "--ciphertext", base64.b64encode(blob).decode())
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"PLAINTEXT: {base64.b64encode(b'kmstool secret').decode()}"]
    with_key = _kmstool(
        "decrypt",
        "--ciphertext",
        base64.b64encode(blob).decode(),
        "--key-id",
        key["meta"]["Arn"],
        "--encryption-algorithm",
        "SYMMETRIC_DEFAULT",
    )
    assert with_key.returncode == 0, with_key.stderr
    assert with_key.stdout == done.stdout


def test_decrypt_failure_lines(key: dict[str, Any]) -> None:
    # As the real tool: source/kms.c's two lines, decrypt()'s, then main's "Could not decrypt\n" printed
    # with "%s\n" (an empty line), and main returns AWS_OP_ERR: exit status 255. Our cause line comes first.
    done = _kmstool("decrypt", "--ciphertext", base64.b64encode(b"not a blob").decode())
    assert done.returncode == 255
    assert done.stdout == ""
    err = done.stderr.split("\n")
    assert err[0].startswith("InvalidCiphertextException: An error occurred (InvalidCiphertextException)")
    assert err[1:] == [
        "Got non-200 answer from KMS: 400",
        "Could not read response from KMS",
        "Could not decrypt ciphertext",
        "Could not decrypt",
        "",
        "",
    ]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(("spec", "length"), [("AES-256", 32), ("AES-128", 16)])
def test_genkey_prints_ciphertext_then_plaintext(key: dict[str, Any], spec: str, length: int) -> None:
    done = _kmstool("genkey", "--key-id", key["meta"]["KeyId"], "--key-spec", spec)
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    assert first.startswith("CIPHERTEXT: ")
    assert second.startswith("PLAINTEXT: ")
    plaintext = base64.b64decode(second.removeprefix("PLAINTEXT: "), validate=True)
    blob = base64.b64decode(first.removeprefix("CIPHERTEXT: "), validate=True)
    assert len(plaintext) == length
    assert key["boto"].decrypt(CiphertextBlob=blob)["Plaintext"] == plaintext


def test_genkey_failure_lines(key: dict[str, Any]) -> None:
    done = _kmstool("genkey", "--key-id", "alias/no-such-key", "--key-spec", "AES-256")
    assert done.returncode == 255
    assert done.stdout == ""
    err = done.stderr.split("\n")
    assert err[0].startswith("NotFoundException: ")
    assert err[1:] == [
        "Got non-200 answer from KMS: 400",
        "Could not generate data key",
        "Could not generate data key",
        "",
        "",
    ]
