"""ReEncrypt against a live kms-sim with boto3: the blob moves from the source key to the destination key,
each half authorized as AWS does (kms:ReEncryptFrom on the source key, kms:ReEncryptTo on the destination;
``kms:ReEncrypt*`` covers both), failures in AWS's names, DryRun after every check."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from kms.state import default_policy

Server = Any

ACCOUNT = "111122223333"
ALICE_ARN = f"arn:aws:iam::{ACCOUNT}:user/alice"
SECRET = b"the plaintext that moves between keys"


def _replace(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text)
    os.replace(temp, path)


@pytest.fixture(scope="module")
def server(start_module_server: Callable[..., Server]) -> Iterator[Server]:
    server = start_module_server("--reload-interval", "0")
    credentials = server.home / "kms" / "credentials"
    _replace(
        credentials,
        credentials.read_text()
        + "\n[alice]\naws_access_key_id = AKIAALICEALICEALICE1\naws_secret_access_key = "
        + "a" * 40
        + "\n",
    )
    yield server
    assert "Traceback" not in server.stderr
    assert SECRET.decode() not in (server.home / "kms" / "audit.jsonl").read_text()


@pytest.fixture(scope="module")
def admin(server: Server) -> Any:
    return server.client()


@pytest.fixture(scope="module")
def keys(admin: Any) -> tuple[str, str]:
    first, second = (admin.create_key()["KeyMetadata"]["Arn"] for _ in range(2))
    return first, second


def _allow_alice(server: Server, *statements: dict[str, Any]) -> None:
    policy: dict[str, Any] = default_policy()
    policy["alice"] = {"Version": "2012-10-17", "Statement": list(statements)}
    _replace(server.home / "kms" / "policy.json", json.dumps(policy))


def _error(call: Callable[[], Any]) -> tuple[str, str]:
    with pytest.raises(ClientError) as raised:
        call()
    error = raised.value.response["Error"]
    return error["Code"], error["Message"]


def test_reencrypt_moves_the_blob_to_the_destination_key(admin: Any, keys: tuple[str, str]) -> None:
    source, destination = keys
    blob = admin.encrypt(KeyId=source, Plaintext=SECRET, EncryptionContext={"app": "a"})["CiphertextBlob"]
    reply = admin.re_encrypt(
        CiphertextBlob=blob,
        SourceEncryptionContext={"app": "a"},
        DestinationKeyId=destination,
        DestinationEncryptionContext={"app": "b"},
    )
    assert reply["SourceKeyId"] == source
    assert reply["KeyId"] == destination
    assert (
        reply["SourceEncryptionAlgorithm"] == reply["DestinationEncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    )
    assert len(reply["SourceKeyMaterialId"]) == len(reply["DestinationKeyMaterialId"]) == 64
    opened = admin.decrypt(CiphertextBlob=reply["CiphertextBlob"], EncryptionContext={"app": "b"})
    assert opened["Plaintext"] == SECRET
    assert opened["KeyId"] == destination
    # The old context no longer opens the new blob; the source context must match to open the old one.
    code, _ = _error(
        lambda: admin.decrypt(CiphertextBlob=reply["CiphertextBlob"], EncryptionContext={"app": "a"})
    )
    assert code == "InvalidCiphertextException"
    code, _ = _error(lambda: admin.re_encrypt(CiphertextBlob=blob, DestinationKeyId=destination))
    assert code == "InvalidCiphertextException"


def test_a_named_source_key_must_be_the_blobs(admin: Any, keys: tuple[str, str]) -> None:
    source, destination = keys
    blob = admin.encrypt(KeyId=source, Plaintext=SECRET)["CiphertextBlob"]
    code, _ = _error(
        lambda: admin.re_encrypt(CiphertextBlob=blob, SourceKeyId=destination, DestinationKeyId=source)
    )
    assert code == "IncorrectKeyException"


@pytest.mark.parametrize(
    ("members", "code"),
    [
        ({"DestinationKeyId": "alias/none-such"}, "NotFoundException"),
        (
            {"DestinationKeyId": "DEST", "DestinationEncryptionAlgorithm": "RSAES_OAEP_SHA_256"},
            "InvalidKeyUsageException",
        ),
        ({"DestinationKeyId": "DEST", "DryRun": True}, "DryRunOperationException"),
    ],
    ids=["no-destination", "wrong-algorithm", "dry-run"],
)
def test_reencrypt_errors(admin: Any, keys: tuple[str, str], members: dict[str, Any], code: str) -> None:
    source, destination = keys
    blob = admin.encrypt(KeyId=source, Plaintext=SECRET)["CiphertextBlob"]
    if members["DestinationKeyId"] == "DEST":
        members = {**members, "DestinationKeyId": destination}
    assert _error(lambda: admin.re_encrypt(CiphertextBlob=blob, **members))[0] == code


def test_a_foreign_blob_is_invalid_ciphertext(admin: Any, keys: tuple[str, str]) -> None:
    code, _ = _error(lambda: admin.re_encrypt(CiphertextBlob=b"\x01" * 64, DestinationKeyId=keys[1]))
    assert code == "InvalidCiphertextException"


def test_reencrypt_from_and_to_are_authorized_on_their_keys(
    server: Server, admin: Any, keys: tuple[str, str]
) -> None:
    source, destination = keys
    alice = server.client("alice")
    blob = admin.encrypt(KeyId=source, Plaintext=SECRET)["CiphertextBlob"]
    _allow_alice(server, {"Effect": "Allow", "Action": "kms:ReEncryptFrom", "Resource": source})
    code, message = _error(lambda: alice.re_encrypt(CiphertextBlob=blob, DestinationKeyId=destination))
    assert code == "AccessDeniedException"
    assert message == (
        f"User: {ALICE_ARN} is not authorized to perform: kms:ReEncryptTo on resource: {destination} "
        "because no identity-based policy allows the kms:ReEncryptTo action"
    )
    _allow_alice(server, {"Effect": "Allow", "Action": "kms:ReEncryptTo", "Resource": destination})
    code, message = _error(lambda: alice.re_encrypt(CiphertextBlob=blob, DestinationKeyId=destination))
    assert message == (
        f"User: {ALICE_ARN} is not authorized to perform: kms:ReEncryptFrom on resource: {source} "
        "because no identity-based policy allows the kms:ReEncryptFrom action"
    )
    _allow_alice(server, {"Effect": "Allow", "Action": "kms:ReEncrypt*", "Resource": [source, destination]})
    reply = alice.re_encrypt(CiphertextBlob=blob, DestinationKeyId=destination)
    assert admin.decrypt(CiphertextBlob=reply["CiphertextBlob"])["Plaintext"] == SECRET


def test_dry_run_ignore_ciphertext_checks_authorization_and_both_keys_only(
    server: Server, admin: Any, keys: tuple[str, str]
) -> None:
    source, destination = keys
    ignore = {"DryRun": True, "DryRunModifiers": ["IGNORE_CIPHERTEXT"]}

    def code(**members: Any) -> str:
        return _error(lambda: admin.re_encrypt(**members))[0]

    # No CiphertextBlob needed, SourceKeyId required ("required ... when DryRun is true and DryRunModifiers
    # is set to IGNORE_CIPHERTEXT"); a blob, if one is sent, is not looked at.
    assert code(SourceKeyId=source, DestinationKeyId=destination, **ignore) == "DryRunOperationException"
    assert code(DestinationKeyId=destination, **ignore) == "ValidationException"
    blob = admin.encrypt(KeyId=source, Plaintext=SECRET)["CiphertextBlob"]
    assert code(CiphertextBlob=blob[:-1], SourceKeyId=source, DestinationKeyId=destination, **ignore) == (
        "DryRunOperationException"
    )
    # The modifier alone, without DryRun, changes nothing: the blob is required and opened.
    assert code(SourceKeyId=source, DestinationKeyId=destination, DryRunModifiers=["IGNORE_CIPHERTEXT"]) == (
        "ValidationException"
    )
    # Both halves' key checks run: state, usage, algorithm; then DryRun.
    disabled = admin.create_key()["KeyMetadata"]["Arn"]
    admin.disable_key(KeyId=disabled)
    assert code(SourceKeyId=disabled, DestinationKeyId=destination, **ignore) == "DisabledException"
    assert code(SourceKeyId=source, DestinationKeyId=disabled, **ignore) == "DisabledException"
    rsa = admin.create_key(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]["Arn"]
    to_rsa = {"SourceKeyId": source, "DestinationKeyId": rsa, **ignore}
    assert code(**to_rsa) == "InvalidKeyUsageException"  # SYMMETRIC_DEFAULT with an RSA key
    assert code(**to_rsa, DestinationEncryptionAlgorithm="RSAES_OAEP_SHA_256") == "DryRunOperationException"
    from_rsa = {"SourceKeyId": rsa, "DestinationKeyId": destination, **ignore}
    assert code(**from_rsa, SourceEncryptionAlgorithm="RSAES_OAEP_SHA_1") == "DryRunOperationException"
    assert code(**from_rsa) == "InvalidKeyUsageException"
    # Authorization is what the dry run tests: kms:ReEncryptFrom on the source key still applies.
    alice = server.client("alice")
    _allow_alice(server, {"Effect": "Allow", "Action": "kms:ReEncryptTo", "Resource": destination})
    denied = _error(lambda: alice.re_encrypt(SourceKeyId=source, DestinationKeyId=destination, **ignore))
    assert denied[0] == "AccessDeniedException"
    assert "kms:ReEncryptFrom" in denied[1]
    _allow_alice(server, {"Effect": "Allow", "Action": "kms:ReEncrypt*", "Resource": [source, destination]})
    allowed = _error(lambda: alice.re_encrypt(SourceKeyId=source, DestinationKeyId=destination, **ignore))
    assert allowed[0] == "DryRunOperationException"
