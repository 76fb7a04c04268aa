"""The audit records of key operations as KMS's CloudTrail examples show them, live: boto3 against one
kms-sim for the module, reading its ``kms/audit.jsonl``.

requestParameters carry the values a request left to their defaults where the examples do (CreateKey,
Encrypt, Decrypt, PutKeyPolicy); responseElements are the new key's metadata (CreateKey), the deletion
(ScheduleKeyDeletion) and the key's ARN (CancelKeyDeletion), null for every other operation; no blob
(plaintext, ciphertext, public key) is ever in a record.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from kms.audit import CLOUDTRAIL_MONTHS, _trail_date
from kms.key_admin import KEY_USAGE_REQUIRED

Server = Any  # tests/kms/conftest.py Server (conftest modules are not importable)

ACCOUNT = "111122223333"
#: CloudTrail's dates in responseElements: "Aug 10, 2022, 10:38:27 PM" (ct-createkey.md).
TRAIL_DATE = re.compile(r"(?:" + "|".join(CLOUDTRAIL_MONTHS) + r") \d{1,2}, \d{4}, \d{1,2}:\d{2}:\d{2} [AP]M")


@pytest.fixture(scope="module")
def kms(shared_server: Server) -> Any:
    return shared_server.client()


def _records(server: Server) -> list[dict[str, Any]]:
    lines = (server.home / "kms" / "audit.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _last(server: Server, name: str) -> dict[str, Any]:
    """The newest record of operation ``name``."""
    return next(r for r in reversed(_records(server)) if r["eventName"] == name)


def _resources(arn: str) -> list[dict[str, str]]:
    return [{"accountId": ACCOUNT, "type": "AWS::KMS::Key", "ARN": arn}]


def test_create_key_record(shared_server: Server, kms: Any) -> None:
    """ct-createkey.md: the defaults in requestParameters, keyMetadata in responseElements, the key in
    resources."""
    metadata = kms.create_key()["KeyMetadata"]
    record = _last(shared_server, "CreateKey")
    assert record["requestParameters"] == {
        "description": "",
        "bypassPolicyLockoutSafetyCheck": False,
        "keySpec": "SYMMETRIC_DEFAULT",
        "customerMasterKeySpec": "SYMMETRIC_DEFAULT",
        "keyUsage": "ENCRYPT_DECRYPT",
    }
    logged = record["responseElements"]["keyMetadata"]
    assert logged == {
        "aWSAccountId": ACCOUNT,
        "keyId": metadata["KeyId"],
        "arn": metadata["Arn"],
        "creationDate": _trail_date(metadata["CreationDate"].timestamp()),
        "enabled": True,
        "description": "",
        "keyUsage": "ENCRYPT_DECRYPT",
        "keyState": "Enabled",
        "origin": "AWS_KMS",
        "keyManager": "CUSTOMER",
        "customerMasterKeySpec": "SYMMETRIC_DEFAULT",
        "keySpec": "SYMMETRIC_DEFAULT",
        "encryptionAlgorithms": ["SYMMETRIC_DEFAULT"],
        "multiRegion": False,
        "currentKeyMaterialId": metadata["CurrentKeyMaterialId"],
    }
    assert TRAIL_DATE.fullmatch(logged["creationDate"])
    assert record["resources"] == _resources(metadata["Arn"])
    assert record["readOnly"] is False


def test_create_key_record_keeps_what_was_sent(shared_server: Server, kms: Any) -> None:
    kms.create_key(
        KeySpec="ECC_NIST_P256",
        KeyUsage="KEY_AGREEMENT",
        Description="agree",
        BypassPolicyLockoutSafetyCheck=True,
    )
    parameters = _last(shared_server, "CreateKey")["requestParameters"]
    assert parameters == {
        "description": "agree",
        "keyUsage": "KEY_AGREEMENT",
        "keySpec": "ECC_NIST_P256",
        "bypassPolicyLockoutSafetyCheck": True,
        "customerMasterKeySpec": "ECC_NIST_P256",
    }


def test_refused_create_key_record(shared_server: Server, kms: Any) -> None:
    """An asymmetric key without KeyUsage is refused: no response data, no resource, no keyUsage made up."""
    with pytest.raises(ClientError) as caught:
        kms.create_key(KeySpec="RSA_2048")
    assert caught.value.response["Error"] == {"Code": "ValidationException", "Message": KEY_USAGE_REQUIRED}
    record = _last(shared_server, "CreateKey")
    assert (record["errorCode"], record["errorMessage"]) == ("ValidationException", KEY_USAGE_REQUIRED)
    assert record["responseElements"] is None
    assert "resources" not in record
    assert record["requestParameters"] == {
        "keySpec": "RSA_2048",
        "description": "",
        "bypassPolicyLockoutSafetyCheck": False,
        "customerMasterKeySpec": "RSA_2048",
    }


def test_deletion_records(shared_server: Server, kms: Any) -> None:
    """ct-schedule-key-deletion.md and ct-cancel-key-deletion.md: the key's ARN (whatever form the request
    named it by), state, date and window; requestParameters as sent."""
    metadata = kms.create_key()["KeyMetadata"]
    scheduled = kms.schedule_key_deletion(KeyId=metadata["KeyId"], PendingWindowInDays=9)
    record = _last(shared_server, "ScheduleKeyDeletion")
    assert record["requestParameters"] == {"keyId": metadata["KeyId"], "pendingWindowInDays": 9}
    assert record["responseElements"] == {
        "keyId": metadata["Arn"],
        "deletionDate": _trail_date(scheduled["DeletionDate"].timestamp()),
        "keyState": "PendingDeletion",
        "pendingWindowInDays": 9,
    }
    assert TRAIL_DATE.fullmatch(record["responseElements"]["deletionDate"])
    assert record["resources"] == _resources(metadata["Arn"])
    kms.cancel_key_deletion(KeyId=metadata["KeyId"])
    record = _last(shared_server, "CancelKeyDeletion")
    assert record["requestParameters"] == {"keyId": metadata["KeyId"]}
    assert record["responseElements"] == {"keyId": metadata["Arn"]}
    with pytest.raises(ClientError):
        kms.cancel_key_deletion(KeyId=metadata["KeyId"])  # not pending any more: refused
    assert _last(shared_server, "CancelKeyDeletion")["responseElements"] is None


@pytest.mark.parametrize(
    ("name", "call"),
    [
        ("DescribeKey", lambda kms, key: kms.describe_key(KeyId=key)),
        ("DisableKey", lambda kms, key: kms.disable_key(KeyId=key)),
        ("EnableKey", lambda kms, key: kms.enable_key(KeyId=key)),
        ("GetKeyPolicy", lambda kms, key: kms.get_key_policy(KeyId=key)),
        ("ListAliases", lambda kms, key: kms.list_aliases(Limit=5)),
        ("ListKeys", lambda kms, key: kms.list_keys()),
        ("GenerateRandom", lambda kms, key: kms.generate_random(NumberOfBytes=16)),
    ],
)
def test_null_response_elements(
    shared_server: Server, kms: Any, name: str, call: Callable[[Any, str], Any]
) -> None:
    """Every other operation's examples have ``responseElements: null``."""
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    call(kms, key)
    record = _last(shared_server, name)
    assert "errorCode" not in record
    assert record["responseElements"] is None


def test_key_policy_and_alias_records(shared_server: Server, kms: Any) -> None:
    """ct-getkeypolicy.md and ct-put-key-policy.md show policyName "default" and bypass false; the alias
    operations' requestParameters are as sent; all have null responseElements."""
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    policy = kms.get_key_policy(KeyId=key)["Policy"]
    assert _last(shared_server, "GetKeyPolicy")["requestParameters"] == {
        "keyId": key,
        "policyName": "default",
    }
    kms.put_key_policy(KeyId=key, Policy=policy)
    record = _last(shared_server, "PutKeyPolicy")
    assert record["requestParameters"] == {
        "keyId": key,
        "policy": policy,
        "policyName": "default",
        "bypassPolicyLockoutSafetyCheck": False,
    }
    assert record["responseElements"] is None
    kms.create_alias(AliasName="alias/audit-key-ops", TargetKeyId=key)
    record = _last(shared_server, "CreateAlias")
    assert record["requestParameters"] == {"aliasName": "alias/audit-key-ops", "targetKeyId": key}
    assert record["responseElements"] is None


def test_crypto_records(shared_server: Server, kms: Any) -> None:
    """ct-encrypt.md / ct-decrypt.md: encryptionAlgorithm SYMMETRIC_DEFAULT when left out; Encrypt's keyId as
    sent (an alias here), Decrypt's the ARN of the key that decrypted (sent or not); no blob logged."""
    metadata = kms.create_key()["KeyMetadata"]
    kms.create_alias(AliasName="alias/audit-crypto", TargetKeyId=metadata["KeyId"])
    secret = b"audit-key-ops secret bytes"
    blob = kms.encrypt(KeyId="alias/audit-crypto", Plaintext=secret, EncryptionContext={"k": "v"})[
        "CiphertextBlob"
    ]
    record = _last(shared_server, "Encrypt")
    assert record["requestParameters"] == {
        "keyId": "alias/audit-crypto",
        "encryptionContext": {"k": "v"},
        "encryptionAlgorithm": "SYMMETRIC_DEFAULT",
    }
    assert record["responseElements"] is None
    assert record["resources"] == _resources(metadata["Arn"])
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext={"k": "v"})["Plaintext"] == secret
    record = _last(shared_server, "Decrypt")
    assert record["requestParameters"] == {
        "encryptionContext": {"k": "v"},
        "encryptionAlgorithm": "SYMMETRIC_DEFAULT",
        "keyId": metadata["Arn"],
    }
    assert record["responseElements"] is None
    kms.decrypt(CiphertextBlob=blob, EncryptionContext={"k": "v"}, KeyId=metadata["KeyId"])
    assert _last(shared_server, "Decrypt")["requestParameters"]["keyId"] == metadata["Arn"]
    text = (shared_server.home / "kms" / "audit.jsonl").read_text()
    for value in (secret, blob):
        assert base64.b64encode(value).decode() not in text
    assert secret.decode() not in text


def test_keyless_records(shared_server: Server, kms: Any) -> None:
    """ct-generaterandom.md and ct-listaliases.md: an operation that uses no KMS key has ``resources: []``;
    GenerateRandom's requestParameters are null (NumberOfBytes is not logged), and, like every KMS call's,
    its record is a management event."""
    kms.generate_random(NumberOfBytes=16)
    record = _last(shared_server, "GenerateRandom")
    assert (record["requestParameters"], record["responseElements"]) == (None, None)
    assert (record["readOnly"], record["resources"], record["managementEvent"]) == (True, [], True)
    kms.list_aliases(Limit=5)
    assert _last(shared_server, "ListAliases")["resources"] == []
    assert _last(shared_server, "ListAliases")["requestParameters"] == {"limit": 5}
    kms.list_keys()
    assert _last(shared_server, "ListKeys")["resources"] == []
