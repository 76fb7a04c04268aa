"""Key management live: a running kms-sim, real boto3 and the AWS CLI; keys, aliases, policies, states."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from kms.key_admin import KEY_USAGE_REQUIRED, MAX_LIST_ALIASES_LIMIT

Server = Any  # tests/kms/conftest.py Server (conftest modules are not importable)

ROOT = "arn:aws:iam::111122223333:root"
USER = "arn:aws:iam::111122223333:user/nitro-sim"


@pytest.fixture(scope="module")
def kms(shared_server: Server) -> Any:
    return shared_server.client()


def _error(call: Callable[..., Any], **kwargs: Any) -> tuple[str, str]:
    """The AWS error name and message of a call that must fail (HTTP 4xx)."""
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    response = caught.value.response
    assert 400 <= response["ResponseMetadata"]["HTTPStatusCode"] < 500
    return response["Error"]["Code"], response["Error"]["Message"]


def _records(server: Server) -> list[dict[str, Any]]:
    lines = (server.home / "kms" / "audit.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_key_lifecycle(kms: Any) -> None:
    """create-key → describe → alias → disable → DisabledException → enable → schedule → cancel."""
    created = kms.create_key(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT", Description="lifecycle")
    key_id = created["KeyMetadata"]["KeyId"]
    arn = created["KeyMetadata"]["Arn"]
    assert arn == f"arn:aws:kms:us-east-1:111122223333:key/{key_id}"
    kms.create_alias(AliasName="alias/lifecycle", TargetKeyId=key_id)
    for form in (key_id, arn, "alias/lifecycle", "arn:aws:kms:us-east-1:111122223333:alias/lifecycle"):
        assert kms.describe_key(KeyId=form)["KeyMetadata"]["KeyId"] == key_id
    kms.disable_key(KeyId=key_id)
    metadata = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert (metadata["KeyState"], metadata["Enabled"]) == ("Disabled", False)
    assert _error(kms.get_public_key, KeyId="alias/lifecycle") == ("DisabledException", f"{arn} is disabled.")
    kms.enable_key(KeyId=arn)
    assert kms.get_public_key(KeyId="alias/lifecycle")["KeyId"] == arn
    scheduled = kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    assert (scheduled["KeyState"], scheduled["PendingWindowInDays"]) == ("PendingDeletion", 7)
    window = scheduled["DeletionDate"] - kms.describe_key(KeyId=key_id)["KeyMetadata"]["CreationDate"]
    assert 7 * 86400 - 60 < window.total_seconds() <= 7 * 86400 + 60
    assert _error(kms.get_public_key, KeyId=key_id) == (
        "KMSInvalidStateException",
        f"{arn} is pending deletion.",
    )
    assert _error(kms.enable_key, KeyId=key_id)[0] == "KMSInvalidStateException"
    assert (
        _error(kms.create_alias, AliasName="alias/late", TargetKeyId=key_id)[0] == "KMSInvalidStateException"
    )
    assert kms.cancel_key_deletion(KeyId=key_id)["KeyId"] == arn
    metadata = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert metadata["KeyState"] == "Disabled"
    assert "DeletionDate" not in metadata
    assert _error(kms.cancel_key_deletion, KeyId=key_id)[0] == "KMSInvalidStateException"


@pytest.mark.parametrize(
    ("arguments", "usage", "member", "algorithms"),
    [
        ({}, "ENCRYPT_DECRYPT", "EncryptionAlgorithms", ["SYMMETRIC_DEFAULT"]),
        (
            {"KeySpec": "RSA_3072", "KeyUsage": "ENCRYPT_DECRYPT"},
            "ENCRYPT_DECRYPT",
            "EncryptionAlgorithms",
            ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"],
        ),
        (
            {"CustomerMasterKeySpec": "RSA_2048", "KeyUsage": "ENCRYPT_DECRYPT"},
            "ENCRYPT_DECRYPT",
            "EncryptionAlgorithms",
            ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"],
        ),
        (
            {"KeySpec": "ECC_NIST_P256", "KeyUsage": "KEY_AGREEMENT"},
            "KEY_AGREEMENT",
            "KeyAgreementAlgorithms",
            ["ECDH"],
        ),
        (
            {"KeySpec": "ECC_NIST_P384", "KeyUsage": "KEY_AGREEMENT"},
            "KEY_AGREEMENT",
            "KeyAgreementAlgorithms",
            ["ECDH"],
        ),
    ],
)
def test_key_metadata(
    kms: Any, arguments: dict[str, str], usage: str, member: str, algorithms: list[str]
) -> None:
    metadata = kms.create_key(**arguments)["KeyMetadata"]
    spec = arguments.get("KeySpec", arguments.get("CustomerMasterKeySpec", "SYMMETRIC_DEFAULT"))
    assert metadata == kms.describe_key(KeyId=metadata["KeyId"])["KeyMetadata"]
    expected = {
        "AWSAccountId": "111122223333",
        "Enabled": True,
        "Description": "",
        "KeyUsage": usage,
        "KeyState": "Enabled",
        "Origin": "AWS_KMS",
        "KeyManager": "CUSTOMER",
        "CustomerMasterKeySpec": spec,
        "KeySpec": spec,
        member: algorithms,
        "MultiRegion": False,
    }
    assert {k: metadata[k] for k in expected} == expected
    assert ("CurrentKeyMaterialId" in metadata) is (spec == "SYMMETRIC_DEFAULT")


def test_get_public_key(kms: Any) -> None:
    rsa_id = kms.create_key(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]["KeyId"]
    answer = kms.get_public_key(KeyId=rsa_id)
    public = serialization.load_der_public_key(answer["PublicKey"])
    assert isinstance(public, rsa.RSAPublicKey)
    assert public.key_size == 2048
    assert answer["EncryptionAlgorithms"] == ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"]
    ecc_id = kms.create_key(KeySpec="ECC_NIST_P384", KeyUsage="KEY_AGREEMENT")["KeyMetadata"]["KeyId"]
    ecc = kms.get_public_key(KeyId=ecc_id)
    loaded = serialization.load_der_public_key(ecc["PublicKey"])
    assert isinstance(loaded, ec.EllipticCurvePublicKey)
    assert isinstance(loaded.curve, ec.SECP384R1)
    assert ecc["KeyAgreementAlgorithms"] == ["ECDH"]
    symmetric = kms.create_key()["KeyMetadata"]["KeyId"]
    assert _error(kms.get_public_key, KeyId=symmetric)[0] == "UnsupportedOperationException"


@pytest.mark.parametrize(
    ("arguments", "error", "fragment"),
    [
        (
            {"KeySpec": "HMAC_256", "KeyUsage": "GENERATE_VERIFY_MAC"},
            "UnsupportedOperationException",
            "HMAC_256",
        ),
        ({"KeySpec": "RSA_2048", "KeyUsage": "SIGN_VERIFY"}, "ValidationException", "SIGN_VERIFY"),
        ({"KeySpec": "ECC_NIST_P256"}, "ValidationException", KEY_USAGE_REQUIRED),
        ({"KeySpec": "RSA_2048"}, "ValidationException", KEY_USAGE_REQUIRED),
        ({"CustomerMasterKeySpec": "RSA_4096"}, "ValidationException", KEY_USAGE_REQUIRED),
        ({"KeySpec": "HMAC_256"}, "ValidationException", KEY_USAGE_REQUIRED),
        ({"Origin": "EXTERNAL"}, "UnsupportedOperationException", "Origin EXTERNAL"),
        ({"MultiRegion": True}, "UnsupportedOperationException", "multi-Region"),
        ({"CustomKeyStoreId": "cks-1234567890abcdef0"}, "UnsupportedOperationException", "custom key stores"),
        ({"KeySpec": "RSA_2048", "CustomerMasterKeySpec": "RSA_2048"}, "ValidationException", "KeySpec"),
        ({"Description": "d" * 8193}, "ValidationException", "8192"),
        ({"Policy": "{"}, "MalformedPolicyDocumentException", "not valid JSON"),
    ],
)
def test_create_key_refusals(kms: Any, arguments: dict[str, Any], error: str, fragment: str) -> None:
    code, message = _error(kms.create_key, **arguments)
    assert code == error
    assert fragment in message


def test_alias_rules(kms: Any) -> None:
    first = kms.create_key()["KeyMetadata"]["KeyId"]
    second = kms.create_key()["KeyMetadata"]["KeyId"]
    rsa_key = kms.create_key(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/rules", TargetKeyId=first)
    assert (
        _error(kms.create_alias, AliasName="alias/rules", TargetKeyId=second)[0] == "AlreadyExistsException"
    )
    assert _error(kms.create_alias, AliasName="rules", TargetKeyId=first) == (
        "ValidationException",
        'Alias must start with the prefix "alias/". '
        "Please see https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html",
    )
    assert _error(kms.create_alias, AliasName="alias/a:b", TargetKeyId=first) == (
        "ValidationException",
        "alias/a:b contains invalid characters for an alias",
    )
    assert (
        _error(kms.create_alias, AliasName="alias/aws/s3", TargetKeyId=first)[0]
        == "InvalidAliasNameException"
    )
    assert _error(kms.create_alias, AliasName="alias/sp ace", TargetKeyId=first)[0] == "ValidationException"
    assert _error(kms.create_alias, AliasName="alias/x", TargetKeyId="alias/rules")[0] == "NotFoundException"
    assert _error(kms.enable_key, KeyId="alias/rules") == ("NotFoundException", "Invalid keyId alias/rules")
    kms.update_alias(AliasName="alias/rules", TargetKeyId=second)
    assert kms.describe_key(KeyId="alias/rules")["KeyMetadata"]["KeyId"] == second
    assert _error(kms.update_alias, AliasName="alias/rules", TargetKeyId=rsa_key)[0] == "ValidationException"
    (entry,) = kms.list_aliases(KeyId=second)["Aliases"]
    assert entry["AliasName"] == "alias/rules"
    assert entry["AliasArn"] == "arn:aws:kms:us-east-1:111122223333:alias/rules"
    assert entry["TargetKeyId"] == second
    assert kms.list_aliases(KeyId=first)["Aliases"] == []
    kms.delete_alias(AliasName="alias/rules")
    code, message = _error(kms.describe_key, KeyId="alias/rules")
    assert (code, message) == (
        "NotFoundException",
        "Alias 'arn:aws:kms:us-east-1:111122223333:alias/rules' is not found.",
    )
    assert _error(kms.delete_alias, AliasName="alias/rules")[0] == "NotFoundException"


def test_list_aliases_limit(kms: Any) -> None:
    """ListAliases Limit is 1..100 ("between 1 and 100, inclusive"); ListKeys' goes to 1000."""
    assert MAX_LIST_ALIASES_LIMIT == 100
    assert "Aliases" in kms.list_aliases(Limit=MAX_LIST_ALIASES_LIMIT)
    for limit in (MAX_LIST_ALIASES_LIMIT + 1, 1000):  # botocore checks the minimum itself
        code, message = _error(kms.list_aliases, Limit=limit)
        assert code == "ValidationException"
        assert "limit" in message.lower()
    assert "Keys" in kms.list_keys(Limit=MAX_LIST_ALIASES_LIMIT + 1)


def test_list_keys_pages(kms: Any) -> None:
    created = {kms.create_key()["KeyMetadata"]["KeyId"] for _ in range(3)}
    seen: list[str] = []
    marker: dict[str, str] = {}
    while True:
        page = kms.list_keys(Limit=2, **marker)
        assert len(page["Keys"]) <= 2
        seen.extend(entry["KeyId"] for entry in page["Keys"])
        if not page["Truncated"]:
            break
        marker = {"Marker": page["NextMarker"]}
    assert created <= set(seen)
    assert len(seen) == len(set(seen))
    assert _error(kms.list_keys, Marker="not-a-marker")[0] == "InvalidMarkerException"
    paginated = [
        k["KeyId"]
        for p in kms.get_paginator("list_keys").paginate(PaginationConfig={"PageSize": 2})
        for k in p["Keys"]
    ]
    assert paginated == seen


def test_key_policy_decides_access(kms: Any) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    answer = kms.get_key_policy(KeyId=key_id, PolicyName="default")
    default = json.loads(answer["Policy"])
    assert default["Id"] == "key-default-1"
    assert default["Statement"][0]["Principal"] == {"AWS": ROOT}
    deny_describe = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": ROOT}, "Action": "kms:*", "Resource": "*"},
            {"Effect": "Deny", "Principal": {"AWS": USER}, "Action": "kms:DescribeKey", "Resource": "*"},
        ],
    }
    kms.put_key_policy(KeyId=key_id, PolicyName="default", Policy=json.dumps(deny_describe))
    code, message = _error(kms.describe_key, KeyId=key_id)
    assert code == "AccessDeniedException"
    assert message == (
        f"User: {USER} is not authorized to perform: kms:DescribeKey on resource: "
        f"arn:aws:kms:us-east-1:111122223333:key/{key_id} with an explicit deny in a resource-based policy"
    )
    assert json.loads(kms.get_key_policy(KeyId=key_id)["Policy"]) == deny_describe
    assert _error(kms.get_key_policy, KeyId=key_id, PolicyName="AWS_RAM")[0] == "NotFoundException"


def test_lockout_safety_check(kms: Any) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    other_only = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": "arn:aws:iam::111122223333:user/other"},
                    "Action": "kms:*",
                    "Resource": "*",
                }
            ],
        }
    )
    code, message = _error(kms.put_key_policy, KeyId=key_id, PolicyName="default", Policy=other_only)
    assert (code, message) == (
        "MalformedPolicyDocumentException",
        "The new key policy will not allow you to update the key policy in the future.",
    )
    assert _error(kms.create_key, Policy=other_only)[0] == "MalformedPolicyDocumentException"
    kms.put_key_policy(
        KeyId=key_id, PolicyName="default", Policy=other_only, BypassPolicyLockoutSafetyCheck=True
    )
    assert _error(kms.describe_key, KeyId=key_id)[1].endswith(
        "because no resource-based policy allows the kms:DescribeKey action"
    )
    oversized = json.dumps(
        {
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": ROOT},
                    "Action": "kms:*",
                    "Resource": "*",
                    "Sid": "x" * 33000,
                }
            ]
        }
    )
    assert _error(kms.create_key, Policy=oversized)[0] == "LimitExceededException"


def test_schedule_key_deletion_window_bounds(kms: Any) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    for days in (6, 31):
        code, message = _error(kms.schedule_key_deletion, KeyId=key_id, PendingWindowInDays=days)
        assert code == "ValidationException"
        assert "between 7 and 30" in message
    assert kms.schedule_key_deletion(KeyId=key_id)["PendingWindowInDays"] == 30


def test_audit_records_of_key_operations(shared_server: Server, kms: Any) -> None:
    key_id = kms.create_key(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]["KeyId"]
    arn = f"arn:aws:kms:us-east-1:111122223333:key/{key_id}"
    public = kms.get_public_key(KeyId=key_id)["PublicKey"]
    kms.create_alias(AliasName="alias/audited", TargetKeyId=key_id)
    records = _records(shared_server)
    by_name = {r["eventName"]: r for r in records[-3:]}
    get = by_name["GetPublicKey"]
    assert get["readOnly"] is True
    assert get["resources"] == [{"accountId": "111122223333", "type": "AWS::KMS::Key", "ARN": arn}]
    assert get["requestParameters"] == {"keyId": key_id}
    alias = by_name["CreateAlias"]
    assert alias["readOnly"] is False
    assert alias["requestParameters"] == {"aliasName": "alias/audited", "targetKeyId": key_id}
    assert alias["resources"][0]["ARN"] == arn
    assert by_name["CreateKey"]["requestParameters"] == {
        "keyUsage": "ENCRYPT_DECRYPT",
        "keySpec": "RSA_2048",
        "description": "",
        "bypassPolicyLockoutSafetyCheck": False,
        "customerMasterKeySpec": "RSA_2048",
    }
    assert by_name["CreateKey"]["resources"] == get["resources"]
    text = (shared_server.home / "kms" / "audit.jsonl").read_text()
    assert public.hex() not in text
    assert base64.b64encode(public).decode() not in text


def test_state_is_shared_by_workers(start_server: Callable[..., Server]) -> None:
    """``--workers 2``: a key disabled through one worker is disabled for the next request on any other."""
    server = start_server("--workers", "2")
    key_id = server.client().create_key()["KeyMetadata"]["KeyId"]
    server.client().create_alias(AliasName="alias/workers", TargetKeyId=key_id)
    server.client().disable_key(KeyId=key_id)
    for _ in range(12):  # a new client is a new connection, accepted by either worker
        client = server.client()
        assert client.describe_key(KeyId="alias/workers")["KeyMetadata"]["KeyState"] == "Disabled"
    server.client().enable_key(KeyId=key_id)
    for _ in range(12):
        assert server.client().describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Enabled"


def test_aws_cli_key_management(shared_server: Server, tmp_path: Path) -> None:
    created = shared_server.aws("create-key", "--description", "from the cli")
    assert created.returncode == 0, created.stderr
    key_id = json.loads(created.stdout)["KeyMetadata"]["KeyId"]
    alias = shared_server.aws("create-alias", "--alias-name", "alias/cli", "--target-key-id", key_id)
    assert alias.returncode == 0, alias.stderr
    policy = tmp_path / "policy.json"
    policy.write_text(
        json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Principal": {"AWS": USER}, "Action": "kms:*", "Resource": "*"}
                ],
            }
        )
    )
    put = shared_server.aws(
        "put-key-policy",
        "--key-id",
        key_id,
        "--policy-name",
        "default",
        "--policy",
        f"file://{policy}",
    )
    assert put.returncode == 0, put.stderr
    described = shared_server.aws("describe-key", "--key-id", "alias/cli")
    assert described.returncode == 0, described.stderr
    assert json.loads(described.stdout)["KeyMetadata"]["Description"] == "from the cli"
    for args, error in (
        (("describe-key", "--key-id", "alias/none"), "NotFoundException"),
        (("create-alias", "--alias-name", "alias/cli", "--target-key-id", key_id), "AlreadyExistsException"),
        (
            ("put-key-policy", "--key-id", key_id, "--policy-name", "default", "--policy", "{bad"),
            "MalformedPolicyDocumentException",
        ),
        (
            ("create-key", "--key-spec", "HMAC_256", "--key-usage", "GENERATE_VERIFY_MAC"),
            "UnsupportedOperationException",
        ),
    ):
        result = shared_server.aws(*args)
        assert result.returncode != 0, args
        assert f"An error occurred ({error})" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
