"""Policies on ImageSha384 / PCRs, end to end: a running kms-sim, real boto3, simulated enclave documents."""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

Server = Any
Recipient = Callable[[bytes], dict[str, Any]]

IMAGE = {i: hashlib.sha384(f"test image PCR{i}".encode()).digest() for i in (0, 1, 2)}


def _policy(path: Path, statements: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"nitro-sim": {"Version": "2012-10-17", "Statement": statements}}))
    return path


@pytest.fixture
def pinned(start_server: Callable[..., Server], tmp_path: Path) -> Server:
    """kms-sim whose only Allow needs ImageSha384 (upper-case hex, IgnoreCase) and PCR1 of IMAGE."""
    policy = _policy(
        tmp_path / "policy.json",
        [
            {
                "Sid": "EnclaveOnly",
                "Effect": "Allow",
                "Action": "kms:GenerateRandom",
                "Resource": "*",
                "Condition": {
                    "StringEqualsIgnoreCase": {
                        "kms:RecipientAttestation:ImageSha384": IMAGE[0].hex().upper()
                    },
                    "StringEquals": {"kms:RecipientAttestation:PCR1": IMAGE[1].hex()},
                },
            },
            {"Effect": "Allow", "Action": "kms:DescribeCustomKeyStores", "Resource": "*"},
        ],
    )
    return start_server("--policy", str(policy))


def _denied(server: Server, **kwargs: Any) -> str:
    client = server.client()
    with pytest.raises(client.exceptions.ClientError) as caught:
        client.generate_random(NumberOfBytes=8, **kwargs)
    assert caught.value.response["Error"]["Code"] == "AccessDeniedException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with contextlib.suppress(client.exceptions.ClientError):  # the server answers the next request
        client.describe_custom_key_stores()
    return str(caught.value.response["Error"]["Message"])


def test_matching_document_is_allowed(
    pinned: Server, make_document: Callable[..., bytes], recipient: Recipient
) -> None:
    response = pinned.client().generate_random(
        NumberOfBytes=8, Recipient=recipient(make_document(pcrs=IMAGE))
    )
    assert "CiphertextForRecipient" in response


@pytest.mark.parametrize("index", [0, 1])
def test_any_other_pcr_value_is_denied(
    pinned: Server, make_document: Callable[..., bytes], recipient: Recipient, index: int
) -> None:
    other = dict(IMAGE)
    other[index] = hashlib.sha384(b"another image").digest()
    message = _denied(pinned, Recipient=recipient(make_document(pcrs=other)))
    assert "not authorized to perform: kms:GenerateRandom on resource: * because" in message


def test_debug_mode_document_is_denied_when_policy_names_pcr0(
    pinned: Server, make_document: Callable[..., bytes], recipient: Recipient
) -> None:
    _denied(pinned, Recipient=recipient(make_document(pcrs=IMAGE, debug=True)))


def test_request_without_recipient_is_denied_by_attestation_condition(pinned: Server) -> None:
    _denied(pinned)


def test_document_signed_outside_trusted_roots_never_reaches_the_policy(
    pinned: Server,
    make_document: Callable[..., bytes],
    recipient: Recipient,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    client = pinned.client()
    foreign = make_document(home=tmp_path_factory.mktemp("foreign"), pcrs=IMAGE)
    with pytest.raises(client.exceptions.ClientError) as caught:
        client.generate_random(NumberOfBytes=8, Recipient=recipient(foreign))
    assert caught.value.response["Error"]["Code"] == "ValidationException"


def test_explicit_deny_wins_over_allow(
    start_server: Callable[..., Server],
    make_document: Callable[..., bytes],
    recipient: Recipient,
    tmp_path: Path,
) -> None:
    policy = _policy(
        tmp_path / "policy.json",
        [
            {"Effect": "Allow", "Action": "kms:*", "Resource": "*"},
            {
                "Effect": "Deny",
                "Action": "kms:GenerateRandom",
                "Resource": "*",
                "Condition": {"StringLike": {"kms:RecipientAttestation:PCR0": IMAGE[0].hex()[:8] + "*"}},
            },
        ],
    )
    server = start_server("--policy", str(policy))
    assert "explicit deny" in _denied(server, Recipient=recipient(make_document(pcrs=IMAGE)))
    assert len(server.client().generate_random(NumberOfBytes=8)["Plaintext"]) == 8


def test_principal_absent_from_policy_is_denied(start_server: Callable[..., Server], tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"someone-else": {"Statement": [{"Effect": "Allow", "Action": "kms:*"}]}}))
    assert "no identity-based policy allows" in _denied(start_server("--policy", str(policy)))


def test_bad_policy_file_is_a_one_line_startup_error(aws_env: Path, tmp_path: Path) -> None:
    policy = _policy(
        tmp_path / "policy.json", [{"Effect": "Allow", "Action": "kms:*", "Condition": {"Nope": {}}}]
    )
    result = subprocess.run(
        [sys.executable, "-m", "kms.cli", "serve", "--listen", "127.0.0.1:0", "--policy", str(policy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "unsupported condition operator 'Nope'" in result.stderr


def _eventually(check: Callable[[], bool]) -> bool:
    """Poll ``check`` (files are re-read at most once a second, on a request) for up to 15 s."""
    for _ in range(150):
        if check():
            return True
        time.sleep(0.1)
    return False


def test_policy_and_credentials_edits_take_effect_without_restart(
    start_server: Callable[..., Server],
) -> None:
    server = start_server()
    client = server.client()
    policy = server.home / "kms" / "policy.json"
    document = json.loads(policy.read_text())
    document["nitro-sim"]["Statement"].append(
        {"Effect": "Deny", "Action": "kms:GenerateRandom", "Resource": "*"}
    )
    document["second"] = {"Statement": [{"Effect": "Allow", "Action": "kms:GenerateRandom", "Resource": "*"}]}
    policy.write_text(json.dumps(document))

    def denied() -> bool:
        try:
            client.generate_random(NumberOfBytes=4)
        except client.exceptions.ClientError as error:
            return bool(error.response["Error"]["Code"] == "AccessDeniedException")
        return False

    assert _eventually(denied)
    # A broken edit keeps the previous policy (still denying) and says so on stderr.
    policy.write_text("{ not json")
    assert _eventually(lambda: denied() and "keeping the previous policy" in server.stderr)
    # A new profile in the credentials file becomes a principal.
    credentials = server.home / "kms" / "credentials"
    with credentials.open("a") as handle:
        handle.write(
            "[second]\naws_access_key_id = AKIASECONDSECOND2345\naws_secret_access_key = " + "z" * 40 + "\n"
        )
    policy.write_text(json.dumps(document))
    second = server.client(profile="second")

    def second_allowed() -> bool:
        try:
            return len(second.generate_random(NumberOfBytes=4)["Plaintext"]) == 4
        except second.exceptions.ClientError:
            return False

    assert _eventually(second_allowed)
