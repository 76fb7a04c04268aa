"""``aws kms encrypt / decrypt / generate-data-key`` (AWS CLI v1, the ``awscli`` test extra) against kms-sim.

The CLI reads blobs from ``fileb://`` files and prints them base64, takes ``--encryption-context`` in its
shorthand (``k=v,k2=v2``) or JSON, and shows a KMS error as ``An error occurred (<Name>) ...`` on stderr with
a non-zero exit status.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from kms.keys import Key, KeyRing
from kms.state import KMSHome

Server = Any  # tests/kms/conftest.py Server (conftest modules are not importable)


def _ok(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


@pytest.fixture(scope="module")
def key(shared_server: Server) -> Iterator[Key]:
    ring = KeyRing(KMSHome(root=shared_server.home / "kms").keys)
    try:
        yield ring.create(spec="SYMMETRIC_DEFAULT", usage="ENCRYPT_DECRYPT", at=datetime.now(UTC))
    finally:
        ring.close()


def test_encrypt_then_decrypt_with_context(shared_server: Server, key: Key, tmp_path: Path) -> None:
    (tmp_path / "plain").write_bytes(b"attested secret")
    encrypted = _ok(
        shared_server.aws(
            "encrypt",
            "--key-id",
            key.id,
            "--plaintext",
            f"fileb://{tmp_path / 'plain'}",
            "--encryption-context",
            "purpose=test,team=b",
        )
    )
    assert encrypted["KeyId"] == key.arn
    assert encrypted["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    (tmp_path / "blob").write_bytes(base64.b64decode(encrypted["CiphertextBlob"]))
    # The same context as JSON, its pairs in the other order.
    decrypted = _ok(
        shared_server.aws(
            "decrypt",
            "--ciphertext-blob",
            f"fileb://{tmp_path / 'blob'}",
            "--encryption-context",
            '{"team": "b", "purpose": "test"}',
        )
    )
    assert base64.b64decode(decrypted["Plaintext"]) == b"attested secret"
    assert decrypted["KeyId"] == key.arn
    assert decrypted["KeyMaterialId"] == key.material_id

    wrong = shared_server.aws(
        "decrypt",
        "--ciphertext-blob",
        f"fileb://{tmp_path / 'blob'}",
        "--encryption-context",
        "purpose=other,team=b",
    )
    assert wrong.returncode != 0
    assert "An error occurred (InvalidCiphertextException) when calling the Decrypt operation" in wrong.stderr
    assert "Traceback" not in wrong.stderr


def test_generate_data_key(shared_server: Server, key: Key, tmp_path: Path) -> None:
    answer = _ok(
        shared_server.aws(
            "generate-data-key",
            "--key-id",
            key.arn,
            "--key-spec",
            "AES_256",
            "--encryption-context",
            "bucket=b1",
        )
    )
    data_key = base64.b64decode(answer["Plaintext"])
    assert len(data_key) == 32
    (tmp_path / "blob").write_bytes(base64.b64decode(answer["CiphertextBlob"]))
    opened = _ok(
        shared_server.aws(
            "decrypt",
            "--ciphertext-blob",
            f"fileb://{tmp_path / 'blob'}",
            "--encryption-context",
            "bucket=b1",
            "--key-id",
            key.id,
        )
    )
    assert base64.b64decode(opened["Plaintext"]) == data_key


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("generate-data-key", "--key-id", "KEY"), "ValidationException"),
        (("generate-data-key", "--key-id", "KEY", "--number-of-bytes", "2000"), "ValidationException"),
        (
            ("encrypt", "--key-id", "00000000-0000-4000-8000-000000000000", "--plaintext", "fileb://PLAIN"),
            "NotFoundException",
        ),
        (
            ("encrypt", "--key-id", "KEY", "--plaintext", "fileb://PLAIN", "--dry-run"),
            "DryRunOperationException",
        ),
        (("decrypt", "--ciphertext-blob", "fileb://PLAIN"), "InvalidCiphertextException"),
    ],
    ids=["no-key-spec", "too-many-bytes", "unknown-key", "dry-run", "foreign-blob"],
)
def test_errors(shared_server: Server, key: Key, tmp_path: Path, args: tuple[str, ...], error: str) -> None:
    (tmp_path / "plain").write_bytes(b"x" * 64)
    argv = [a.replace("KEY", key.id).replace("PLAIN", str(tmp_path / "plain")) for a in args]
    result = shared_server.aws(*argv)
    assert result.returncode != 0
    assert f"An error occurred ({error})" in result.stderr
    assert "Traceback" not in result.stderr
