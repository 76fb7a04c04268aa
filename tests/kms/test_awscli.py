"""The AWS CLI (v1, from the registry: the ``awscli`` test extra) against a running kms-sim.

The issue: "the AWS CLI's ``kms generate-random`` works too". The CLI signs with the home's credentials
and config files (``kms-sim env`` prints the same exports), and shows KMS's errors as AWS does.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

Server = Any  # tests/kms/conftest.py Server (conftest modules are not importable)


def test_generate_random(shared_server: Server) -> None:
    result = shared_server.aws("generate-random", "--number-of-bytes", "32")
    assert result.returncode == 0, result.stderr
    assert len(base64.b64decode(json.loads(result.stdout)["Plaintext"])) == 32


@pytest.mark.parametrize(
    ("args", "error"),
    [
        # botocore checks only the minimum client-side; the maximum is the server's ValidationException
        (("--number-of-bytes", "1025"), "ValidationException"),
        (
            ("--number-of-bytes", "8", "--custom-key-store-id", "cks-0123456789abcdef0"),
            "CustomKeyStoreNotFound",
        ),
    ],
    ids=["too-many-bytes", "unknown-key-store"],
)
def test_refusals_are_aws_errors(shared_server: Server, args: tuple[str, ...], error: str) -> None:
    result = shared_server.aws("generate-random", *args)
    assert result.returncode != 0
    assert f"An error occurred ({error}" in result.stderr
    assert "when calling the GenerateRandom operation" in result.stderr
    assert "Traceback" not in result.stderr
