"""The audit line's spliced encoding equals the JSON of the whole record, and the records of GenerateRandom
and of attested calls have the members of KMS's CloudTrail examples in their order (pure functions, no
server)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from kms.audit import _ENCODER, RECORDED_PCRS, _trail_date, event, event_line, request_parameters
from kms.operations import AttestedRecipient
from kms.state import Principal

_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
_TEXT = st.one_of(st.text(max_size=12), st.sampled_from(["\x00time\x00", "a\x00id\x00b", '"\\']))

_RECIPIENTS = st.builds(
    lambda module_id, pcrs: AttestedRecipient(module_id=module_id, pcrs=pcrs, public_key=_KEY, key_id=b"k"),
    _TEXT,
    st.dictionaries(st.integers(0, 31), st.binary(min_size=48, max_size=48), min_size=1, max_size=4),
)


@settings(max_examples=400)
@given(
    operation=st.one_of(
        st.none(),
        st.sampled_from(["GenerateRandom", "DescribeCustomKeyStores", "Decrypt", "ListAliases", "ListKeys"]),
    ),
    principal=st.one_of(st.none(), st.builds(Principal, name=_TEXT, access_key=_TEXT, secret_key=_TEXT)),
    access_key=st.one_of(st.none(), _TEXT),
    region=_TEXT,
    user_agent=st.one_of(st.none(), st.text(max_size=40), st.just("ua \x00time\x00 \x00id\x00")),
    params=st.one_of(
        st.just({}),
        st.just({"NumberOfBytes": 32, "Recipient": {"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256"}}),
        st.dictionaries(
            _TEXT,
            st.one_of(st.integers(), _TEXT, st.booleans(), st.floats(allow_nan=False), st.none()),
            max_size=3,
        ),
        st.just({"NumberOfBytes": 1, "KeyStorePassword": "secret"}),
        st.just({"NumberOfBytes": True}),
        st.fixed_dictionaries(
            {
                "CiphertextBlob": st.just(b"blob"),
                "EncryptionContext": st.dictionaries(_TEXT, _TEXT, max_size=3),
            }
        ),
        st.just({"EncryptionContext": {"a": "b"}, "GrantTokens": ["t"], "Other": {"a": 1}}),
        st.just({"NumberOfBytes": 1.0, "Recipient": {"KeyEncryptionAlgorithm": 1}}),
        st.just({"Recipient": {"AttestationDocument": b"doc", "Other": "\x00recipient\x00"}}),
        st.just({"KeyId": "\x00recipient\x00", "Recipient": "not a structure"}),
    ),
    recipient=st.one_of(st.none(), _RECIPIENTS),
    error=st.one_of(st.none(), st.tuples(_TEXT, st.text(max_size=30))),
    key_arn=st.one_of(st.none(), st.just("arn:aws:kms:us-east-1:111122223333:key/k")),
    request_ids=st.lists(
        st.one_of(
            st.just("6f1c6a3e-2b7d-4c1e-9a53-0d8c4e2f1b7a"),
            st.uuids().map(str),
            _TEXT,
            st.sampled_from(["\x00id\x00", "", "a" * 65, "é"]),
        ),
        min_size=1,
        max_size=3,
    ),
    seconds=st.integers(0, 10**6),
)
def test_event_line_is_the_json_of_the_event(  # noqa: PLR0917 - hypothesis's arguments
    operation: str | None,
    principal: Principal | None,
    access_key: str | None,
    region: str,
    user_agent: str | None,
    params: dict[str, object],
    recipient: AttestedRecipient | None,
    error: tuple[str, str] | None,
    key_arn: str | None,
    request_ids: list[str],
    seconds: int,
) -> None:
    for n, request_id in enumerate(request_ids):  # the second and later hit the template cache
        _check_line(
            at=datetime(2026, 11, 29, 14, 5, 6, 789, tzinfo=UTC) + timedelta(seconds=seconds + n),
            request_id=request_id,
            operation=operation,
            principal=principal,
            access_key=access_key,
            region=region,
            user_agent=user_agent,
            params=params,
            recipient=recipient,
            error=error,
            key_arn=key_arn,
        )


def _check_line(
    *,
    at: datetime,
    request_id: str,
    operation: str | None,
    principal: Principal | None,
    access_key: str | None,
    region: str,
    user_agent: str | None,
    params: dict[str, object],
    recipient: AttestedRecipient | None,
    error: tuple[str, str] | None,
    key_arn: str | None,
) -> None:
    fields = {
        "at": at,
        "request_id": request_id,
        "operation": operation,
        "principal": principal,
        "access_key": access_key,
        "region": region,
        "source_ip": "127.0.0.1",
        "user_agent": user_agent,
        "params": params,
        "recipient": recipient,
        "error_code": error[0] if error else None,
        "error_message": error[1] if error else None,
        "key_arn": key_arn,
    }
    line = event_line(**fields)  # type: ignore[arg-type]
    assert line == _ENCODER.encode(event(**fields))  # type: ignore[arg-type]
    assert json.loads(line) == json.loads(json.dumps(event(**fields), default=str))  # type: ignore[arg-type]


_METADATA = st.fixed_dictionaries(
    {
        "AWSAccountId": st.just("111122223333"),
        "KeyId": _TEXT,
        "Arn": _TEXT,
        "CreationDate": st.floats(0, 4e9),
        "KeyState": st.sampled_from(["Enabled", "PendingDeletion"]),
        "EncryptionAlgorithms": st.just(["SYMMETRIC_DEFAULT"]),
    },
    optional={"DeletionDate": st.floats(0, 4e9), "Stray": st.just(b"never logged")},
)
#: The operations whose records carry responseElements (ct-createkey.md, ct-*-key-deletion.md).
_RESPONDING = ("CreateKey", "ScheduleKeyDeletion", "CancelKeyDeletion")
_RESULTS = st.one_of(
    st.none(),
    st.builds(lambda metadata: {"KeyMetadata": metadata}, _METADATA),
    st.fixed_dictionaries(
        {
            "KeyId": _TEXT,
            "DeletionDate": st.floats(0, 4e9),
            "KeyState": st.just("PendingDeletion"),
            "PendingWindowInDays": st.integers(7, 30),
        }
    ),
)


@settings(max_examples=300)
@given(
    operation=st.sampled_from(
        [*_RESPONDING, "Encrypt", "Decrypt", "ReEncrypt", "PutKeyPolicy", "GetKeyPolicy", "GenerateRandom"]
    ),
    params=st.one_of(
        st.just({}),
        st.just({"KeySpec": "RSA_2048", "KeyUsage": "ENCRYPT_DECRYPT"}),
        st.just({"CustomerMasterKeySpec": "ECC_NIST_P256", "Description": "d"}),
        st.just({"KeyId": "alias/a", "EncryptionContext": {"a": "b"}, "Plaintext": b"p"}),
        st.just({"CiphertextBlob": b"c", "EncryptionAlgorithm": "RSAES_OAEP_SHA_1"}),
    ),
    key_arn=st.one_of(st.none(), st.just("arn:aws:kms:us-east-1:111122223333:key/k")),
    result=_RESULTS,
    recipient=st.one_of(st.none(), _RECIPIENTS),
    request_ids=st.lists(st.uuids().map(str), min_size=1, max_size=3),
)
def test_event_line_with_defaults_and_response_elements(  # noqa: PLR0917 - hypothesis's arguments
    operation: str,
    params: dict[str, object],
    key_arn: str | None,
    result: dict[str, Any] | None,
    recipient: AttestedRecipient | None,
    request_ids: list[str],
) -> None:
    """The per-operation requestParameters defaults and responseElements: the line is still the record's
    JSON (templates or not), and no bytes member of a request or an answer reaches it."""
    if result is not None and operation == "CreateKey" and "KeyMetadata" not in result:
        result = None  # the shapes go with their operations
    if result is not None and operation != "CreateKey" and "KeyMetadata" in result:
        result = None
    for n, request_id in enumerate(request_ids):
        fields: dict[str, Any] = {
            "at": datetime(2026, 11, 29, 14, 5, 6, tzinfo=UTC) + timedelta(seconds=n),
            "request_id": request_id,
            "operation": operation,
            "principal": None,
            "access_key": "AKIDEXAMPLE",
            "region": "us-east-1",
            "source_ip": "127.0.0.1",
            "user_agent": "ua",
            "params": params,
            "recipient": recipient,
            "error_code": None,
            "error_message": None,
            "key_arn": key_arn,
            "result": result,
        }
        line = event_line(**fields)
        assert line == _ENCODER.encode(event(**fields))
        record = json.loads(line)
        assert "never logged" not in line
        assert '"p"' not in line
        assert '"c"' not in line
        assert (record["responseElements"] is None) is (result is None or operation not in _RESPONDING)


def test_trail_date() -> None:
    """CloudTrail's dates (ct-createkey.md "Aug 10, 2022, 10:38:27 PM"; ct-schedule-key-deletion.md
    "Nov 2, 2021, 11:25:25 PM"): UTC, 12-hour clock, midnight 12 AM and noon 12 PM."""
    for at, text in [
        (datetime(2022, 8, 10, 22, 38, 27, tzinfo=UTC), "Aug 10, 2022, 10:38:27 PM"),
        (datetime(2021, 11, 2, 23, 25, 25, tzinfo=UTC), "Nov 2, 2021, 11:25:25 PM"),
        (datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC), "Jan 1, 2026, 12:00:05 AM"),
        (datetime(2026, 12, 31, 12, 59, 59, 999999, tzinfo=UTC), "Dec 31, 2026, 12:59:59 PM"),
    ]:
        assert _trail_date(at.timestamp()) == text


def test_request_parameters_defaults() -> None:
    """Each rule fills only what the request left out, and only for its operation."""
    arn = "arn:aws:kms:us-east-1:111122223333:key/k"
    assert request_parameters({}, "CreateKey") == {
        "description": "",
        "bypassPolicyLockoutSafetyCheck": False,
        "keySpec": "SYMMETRIC_DEFAULT",
        "customerMasterKeySpec": "SYMMETRIC_DEFAULT",
        "keyUsage": "ENCRYPT_DECRYPT",
    }
    assert request_parameters({"KeyId": "alias/a"}, "Encrypt", arn) == {
        "keyId": "alias/a",
        "encryptionAlgorithm": "SYMMETRIC_DEFAULT",
    }
    assert request_parameters({"KeyId": "k", "EncryptionAlgorithm": "RSAES_OAEP_SHA_1"}, "Decrypt", arn) == {
        "keyId": arn,
        "encryptionAlgorithm": "RSAES_OAEP_SHA_1",
    }
    assert request_parameters({}, "ReEncrypt") == {
        "sourceEncryptionAlgorithm": "SYMMETRIC_DEFAULT",
        "destinationEncryptionAlgorithm": "SYMMETRIC_DEFAULT",
    }
    assert request_parameters({"NumberOfBytes": 32}, "GenerateRandom") is None
    assert request_parameters({}, "GenerateRandom") is None
    assert request_parameters({"NumberOfBytes": 8, "CustomKeyStoreId": "cks-1"}, "GenerateRandom") is None
    recipient = {"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256", "AttestationDocument": b"doc"}
    assert request_parameters({"KeyId": "k", "Recipient": recipient}, "Decrypt", arn) == {
        "keyId": arn,
        "encryptionAlgorithm": "SYMMETRIC_DEFAULT",
    }
    assert request_parameters(
        {"KeyId": "k", "KeyAgreementAlgorithm": "ECDH", "PublicKey": b"p", "Recipient": recipient},
        "DeriveSharedSecret",
        arn,
    ) == {"keyId": "k", "keyAgreementAlgorithm": "ECDH"}
    assert request_parameters({}, "DescribeKey", arn) is None


#: The members of KMS's GenerateRandom record, in order (ct-generaterandom.md), and ours after them.
_GENERATE_RANDOM_MEMBERS = [
    "eventVersion",
    "userIdentity",
    "eventTime",
    "eventSource",
    "eventName",
    "awsRegion",
    "sourceIPAddress",
    "userAgent",
    "requestParameters",
    "responseElements",
    "requestID",
    "eventID",
    "readOnly",
    "resources",
    "eventType",
    "managementEvent",
    "recipientAccountId",
]
#: The same for an attested call ("Monitoring requests for Nitro enclaves": each of its examples).
_ENCLAVE_MEMBERS = [*_GENERATE_RANDOM_MEMBERS[:10], "additionalEventData", *_GENERATE_RANDOM_MEMBERS[10:]]
#: The recipient's members in every enclave example: no PCR0 (it is the image digest), no other PCR.
_RECIPIENT_MEMBERS = [
    "attestationDocumentModuleId",
    "attestationDocumentEnclaveImageDigest",
    "attestationDocumentEnclavePCR1",
    "attestationDocumentEnclavePCR2",
    "attestationDocumentEnclavePCR3",
    "attestationDocumentEnclavePCR4",
    "attestationDocumentEnclavePCR8",
]
_ARN = "arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
_ENCLAVE = AttestedRecipient(
    module_id="i-123456789abcde123-enc123456789abcde12",
    pcrs={index: bytes([index]) * 48 for index in range(16)},
    public_key=_KEY,
    key_id=b"k",
)
_RECIPIENT = {"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256", "AttestationDocument": b"document"}


def _line(operation: str, params: dict[str, object], **fields: Any) -> dict[str, Any]:
    """The record :func:`event_line` writes (twice: the second from the template), parsed."""
    arguments: dict[str, Any] = {
        "at": datetime(2020, 7, 27, 22, 58, 24, tzinfo=UTC),
        "operation": operation,
        "principal": Principal(name="Alice", access_key="AKIDEXAMPLE", secret_key="s"),
        "access_key": "AKIDEXAMPLE",
        "region": "us-west-2",
        "source_ip": "192.0.2.0",
        "user_agent": "aws-nitro-enclaves-sdk-c/v0.4.0",
        "params": params,
        "recipient": None,
        "error_code": None,
        "error_message": None,
        "key_arn": None,
    } | fields
    first = event_line(request_id="b4a65126-30d5-4b28-98b9-9153da559963", **arguments)
    second = event_line(request_id="e5a2f202-ba1a-467c-b4ba-f729d45ae521", **arguments)
    assert second == first.replace(
        "b4a65126-30d5-4b28-98b9-9153da559963", "e5a2f202-ba1a-467c-b4ba-f729d45ae521"
    )
    record: dict[str, Any] = json.loads(first)
    return record


def test_generate_random_record_is_the_examples() -> None:
    """ct-generaterandom.md: requestParameters and responseElements null (NumberOfBytes not logged),
    readOnly, resources empty (no KMS key), AwsApiCall; our managementEvent (true, as every KMS call's)
    after eventType."""
    record = _line("GenerateRandom", {"NumberOfBytes": 32})
    assert list(record) == _GENERATE_RANDOM_MEMBERS
    assert record["requestParameters"] is None
    assert record["responseElements"] is None
    assert record["readOnly"] is True
    assert record["resources"] == []
    assert (record["eventType"], record["managementEvent"]) == ("AwsApiCall", True)


def test_keyless_operations_have_empty_resources() -> None:
    """ct-listaliases.md: "doesn't use any particular alias or AWS KMS key, the resources field is empty";
    ListKeys uses none either. A refused GenerateRandom still uses none; the custom key store operations'
    records have no resources member (ct-describe-keystores.md)."""
    assert _line("ListAliases", {"Limit": 5})["resources"] == []
    assert _line("ListKeys", {})["resources"] == []
    refused = _line("GenerateRandom", {}, error_code="AccessDeniedException", error_message="denied")
    assert refused["resources"] == []
    assert "resources" not in _line("DescribeCustomKeyStores", {"CustomKeyStoreId": "cks-1234567890abcdef0"})
    assert _line("ListAliases", {"KeyId": "k"}, key_arn=_ARN)["resources"][0]["ARN"] == _ARN


def test_attested_records_are_the_enclave_examples() -> None:
    """Each example of "Monitoring requests for Nitro enclaves" (Decrypt, GenerateDataKey,
    GenerateDataKeyPair, GenerateRandom; DeriveSharedSecret as they are): additionalEventData right after
    responseElements, its recipient the module ID, the image digest and PCRs 1, 2, 3, 4 and 8 (hex),
    requestParameters as the non-enclave call's, with no recipient member."""
    cases: list[tuple[str, dict[str, object], str | None, dict[str, object] | None]] = [
        (
            "Decrypt",
            {"CiphertextBlob": b"c", "Recipient": _RECIPIENT},
            _ARN,
            {"encryptionAlgorithm": "SYMMETRIC_DEFAULT", "keyId": _ARN},
        ),
        (
            "GenerateDataKey",
            {"KeyId": "1234abcd-12ab-34cd-56ef-1234567890ab", "NumberOfBytes": 32, "Recipient": _RECIPIENT},
            _ARN,
            {"keyId": "1234abcd-12ab-34cd-56ef-1234567890ab", "numberOfBytes": 32},
        ),
        (
            "GenerateDataKeyPair",
            {
                "KeyPairSpec": "RSA_3072",
                "EncryptionContext": {"Project": "Alpha"},
                "KeyId": "k",
                "Recipient": _RECIPIENT,
            },
            _ARN,
            {"keyPairSpec": "RSA_3072", "encryptionContext": {"Project": "Alpha"}, "keyId": "k"},
        ),
        ("GenerateRandom", {"NumberOfBytes": 32, "Recipient": _RECIPIENT}, None, None),
        (
            "DeriveSharedSecret",
            {"KeyId": "k", "KeyAgreementAlgorithm": "ECDH", "PublicKey": b"p", "Recipient": _RECIPIENT},
            _ARN,
            {"keyId": "k", "keyAgreementAlgorithm": "ECDH"},
        ),
    ]
    for operation, params, key_arn, parameters in cases:
        record = _line(operation, params, recipient=_ENCLAVE, key_arn=key_arn)
        assert list(record) == _ENCLAVE_MEMBERS, operation
        assert record["requestParameters"] == parameters, operation
        assert list(record["requestParameters"] or {}) == list(parameters or {}), operation
        assert record["responseElements"] is None
        recipient = record["additionalEventData"]["recipient"]
        assert list(record["additionalEventData"]) == ["recipient"]
        assert list(recipient) == _RECIPIENT_MEMBERS
        assert recipient["attestationDocumentModuleId"] == _ENCLAVE.module_id
        assert (
            base64.b64decode(recipient["attestationDocumentEnclaveImageDigest"]).hex()
            == _ENCLAVE.pcrs[0].hex()
        )
        for index in RECORDED_PCRS:
            assert (
                base64.b64decode(recipient[f"attestationDocumentEnclavePCR{index}"]).hex()
                == _ENCLAVE.pcrs[index].hex()
            )
        expected = (
            [] if key_arn is None else [{"accountId": "111122223333", "type": "AWS::KMS::Key", "ARN": _ARN}]
        )
        assert record["resources"] == expected


def test_a_document_without_a_recorded_pcr() -> None:
    """A PCR the document lacks is left out of the record (the others keep their order)."""
    enclave = AttestedRecipient(
        module_id="i-0-enc0",
        pcrs={0: b"\x00" * 48, 3: b"\x03" * 48, 8: b"\x08" * 48},
        public_key=_KEY,
        key_id=b"k",
    )
    recipient = _line("GenerateRandom", {}, recipient=enclave)["additionalEventData"]["recipient"]
    assert list(recipient) == [
        "attestationDocumentModuleId",
        "attestationDocumentEnclaveImageDigest",
        "attestationDocumentEnclavePCR3",
        "attestationDocumentEnclavePCR8",
    ]
