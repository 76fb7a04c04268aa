"""The provider's data key and secret check requests, handled in process by :class:`enclave.provider.Provider`
with the real parts: the SDK's KMS client through the real vsock-proxy to the real kms-sim, and the NSM
client of the real nsm-sim (the plugin's fixtures). What the provider answers is checked by a second
implementation: boto3 against the same kms-sim, the caller's RSA key, the document decoded here.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterator
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from attestation.cms import decrypt_ciphertext_for_recipient
from attestation.document import decode_document
from attestation.provider_wire import (
    DATA_KEY_SPECS,
    DataKeyAnswer,
    DataKeyRequest,
    ErrorAnswer,
    SecretCheckAnswer,
    SecretCheckRequest,
    data_key_payload,
    encode_request,
)
from enclave.nsm import open_nsm
from enclave.provider import Provider
from nitro_sim.stack import KmsSim

PCR0_HEX = "a1" * 48
NONCE = b"n" * 32
CONTEXT = {"purpose": "provider-test", "tenant": "t-1"}

pytestmark = pytest.mark.nitro_pcr(0, PCR0_HEX)


@pytest.fixture(scope="module")
def caller() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _spki(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture
def provider(enclave_kms: Any, capsys: pytest.CaptureFixture[str]) -> Iterator[Provider]:
    yield Provider(enclave_kms, open_nsm())
    # The provider logs error names and counts only: never a key, a secret, a blob or a nonce.
    logged = capsys.readouterr().err
    assert NONCE.hex() not in logged
    assert "Plaintext" not in logged


@pytest.fixture
def key(kms_sim: KmsSim) -> dict[str, Any]:
    boto = kms_sim.boto3_client()
    return {"boto": boto, "arn": boto.create_key(Description="provider data ops")["KeyMetadata"]["Arn"]}


def _data_key(
    provider: Provider, caller: rsa.RSAPrivateKey, key_id: str, spec: str = "AES_256"
) -> DataKeyAnswer | ErrorAnswer:
    request = DataKeyRequest(
        key_id=key_id, key_spec=spec, encryption_context=CONTEXT, nonce=NONCE, public_key=_spki(caller)
    )
    answer = provider.handle(encode_request(request))
    assert isinstance(answer, DataKeyAnswer | ErrorAnswer)
    return answer


@pytest.mark.parametrize("spec", sorted(DATA_KEY_SPECS))
def test_data_key_opens_with_the_callers_key_and_its_blob_with_boto3(
    provider: Provider, caller: rsa.RSAPrivateKey, key: dict[str, Any], kms_sim: KmsSim, spec: str
) -> None:
    answer = _data_key(provider, caller, key["arn"], spec)
    assert isinstance(answer, DataKeyAnswer), answer
    assert answer.key_arn == key["arn"]
    data_key = decrypt_ciphertext_for_recipient(answer.ciphertext, caller)
    assert len(data_key) == DATA_KEY_SPECS[spec]
    opened = key["boto"].decrypt(CiphertextBlob=answer.ciphertext_blob, EncryptionContext=CONTEXT)
    assert opened["Plaintext"] == data_key
    # The document: our nonce, the image's PCR0, user_data binding ciphertext, blob and ARN together.
    doc = decode_document(answer.document).document
    assert doc.nonce == NONCE
    assert doc.pcrs[0].hex() == PCR0_HEX
    bound = data_key_payload(answer.ciphertext, answer.ciphertext_blob, answer.key_arn)
    assert doc.user_data == hashlib.sha384(bound).digest()
    assert doc.public_key is None
    # KMS's record is an attested GenerateDataKey; no form of the key is in it.
    (record,) = [r for r in kms_sim.audit() if r["eventName"] == "GenerateDataKey"]
    assert record.get("errorCode") is None
    audit = repr(kms_sim.audit()).encode()
    for form in (data_key, base64.b64encode(data_key), data_key.hex().encode()):
        assert form not in audit


def test_data_keys_by_alias_are_new_each_time(
    provider: Provider, caller: rsa.RSAPrivateKey, key: dict[str, Any]
) -> None:
    key["boto"].create_alias(AliasName="alias/provider-data-keys", TargetKeyId=key["arn"])
    first = _data_key(provider, caller, "alias/provider-data-keys")
    second = _data_key(provider, caller, "alias/provider-data-keys")
    assert isinstance(first, DataKeyAnswer)
    assert isinstance(second, DataKeyAnswer)
    assert first.key_arn == second.key_arn == key["arn"]  # KMS answers the key's ARN, not the alias
    assert decrypt_ciphertext_for_recipient(first.ciphertext, caller) != decrypt_ciphertext_for_recipient(
        second.ciphertext, caller
    )


def test_data_key_kms_errors_are_answered_by_their_aws_names(
    provider: Provider, caller: rsa.RSAPrivateKey, key: dict[str, Any]
) -> None:
    missing = _data_key(provider, caller, "alias/no-such-key")
    assert isinstance(missing, ErrorAnswer)
    assert missing.error == "NotFoundException"
    key["boto"].disable_key(KeyId=key["arn"])
    disabled = _data_key(provider, caller, key["arn"])
    assert isinstance(disabled, ErrorAnswer)
    assert disabled.error == "DisabledException"


def _check(
    provider: Provider, blob: bytes, context: dict[str, str] | None
) -> SecretCheckAnswer | ErrorAnswer:
    request = SecretCheckRequest(ciphertext_blob=blob, encryption_context=context, nonce=NONCE)
    answer = provider.handle(encode_request(request))
    assert isinstance(answer, SecretCheckAnswer | ErrorAnswer)
    return answer


def test_secret_check_answers_only_the_digest_bound_as_user_data(
    provider: Provider, key: dict[str, Any], kms_sim: KmsSim
) -> None:
    secret = secrets.token_bytes(32)
    blob = key["boto"].encrypt(KeyId=key["arn"], Plaintext=secret, EncryptionContext=CONTEXT)[
        "CiphertextBlob"
    ]
    answer = _check(provider, blob, CONTEXT)
    assert isinstance(answer, SecretCheckAnswer), answer
    assert answer.secret_sha384 == hashlib.sha384(secret).digest()
    doc = decode_document(answer.document).document
    assert (doc.user_data, doc.nonce) == (answer.secret_sha384, NONCE)
    assert doc.pcrs[0].hex() == PCR0_HEX
    audit = repr(kms_sim.audit()).encode()
    for form in (secret, base64.b64encode(secret), secret.hex().encode()):
        assert form not in audit
        assert form not in answer.document


@pytest.mark.parametrize(
    "context", [None, {"purpose": "another"}, {**CONTEXT, "extra": "x"}], ids=["none", "other", "more"]
)
def test_secret_check_with_another_context_is_invalid_ciphertext(
    provider: Provider, key: dict[str, Any], context: dict[str, str] | None
) -> None:
    blob = key["boto"].encrypt(KeyId=key["arn"], Plaintext=b"s" * 32, EncryptionContext=CONTEXT)[
        "CiphertextBlob"
    ]
    answer = _check(provider, blob, context)
    assert isinstance(answer, ErrorAnswer)
    assert answer.error == "InvalidCiphertextException"


def test_secret_check_of_a_blob_that_is_no_ciphertext(provider: Provider, key: dict[str, Any]) -> None:
    answer = _check(provider, b"\x01\x02" + b"x" * 100, None)
    assert isinstance(answer, ErrorAnswer)
    assert answer.error == "InvalidCiphertextException"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"data_key": {"key_id": "k", "key_spec": "AES_256"}, "nonce": NONCE}, "public_key"),
        (
            {"data_key": {"key_id": "k", "key_spec": "AES_512"}, "nonce": NONCE, "public_key": b"k"},
            "key_spec",
        ),
        ({"data_key": {"key_id": "", "key_spec": "AES_256"}, "nonce": NONCE, "public_key": b"k"}, "key_id"),
        ({"check_secret": {"ciphertext_blob": b""}, "nonce": NONCE}, "ciphertext_blob"),
        ({"check_secret": {"ciphertext_blob": b"b", "encryption_context": {}}, "nonce": NONCE}, "encryption"),
        ({"check_secret": {"ciphertext_blob": b"b", "key_id": "k"}, "nonce": NONCE}, "key_id"),
        ({"check_secret": {"ciphertext_blob": b"b"}, "nonce": b"short"}, "nonce"),
    ],
    ids=[
        "no-public-key",
        "bad-spec",
        "empty-key-id",
        "empty-blob",
        "empty-context",
        "unknown-field",
        "nonce",
    ],
)
def test_malformed_data_requests_are_answered_before_any_kms_call(
    provider: Provider, kms_sim: KmsSim, fields: dict[str, object], message: str
) -> None:
    answer = provider.handle(cbor2.dumps(fields))
    assert isinstance(answer, ErrorAnswer)
    assert answer.error == "MalformedRequest"
    assert message in answer.message
    assert kms_sim.audit() == []
