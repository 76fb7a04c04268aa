"""The provider protocol's data key and secret check messages: round trips, strict decoding, the bindings."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from attestation.document import decode_document
from attestation.errors import PolicyError
from attestation.nsm import simulate_document
from attestation.provider_wire import (
    MAX_ENCRYPTION_CONTEXT_BYTES,
    DataKeyAnswer,
    DataKeyRequest,
    MalformedProviderMessageError,
    PayloadDigest,
    SecretCheckAnswer,
    SecretCheckRequest,
    SecretDigest,
    data_key_payload,
    decode_answer,
    decode_request,
    encode_answer,
    encode_request,
    payload_digest,
)

NONCE = b"n" * 32


@pytest.fixture(scope="module")
def spki() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_requests_round_trip(spki: bytes) -> None:
    for request in (
        DataKeyRequest(key_id="alias/app", key_spec="AES_256", nonce=NONCE, public_key=spki),
        DataKeyRequest(
            key_id="k", key_spec="AES_128", nonce=NONCE, public_key=spki, encryption_context={"a": "b"}
        ),
        SecretCheckRequest(ciphertext_blob=b"\x01" * 6144, nonce=NONCE),
        SecretCheckRequest(ciphertext_blob=b"\x01", nonce=NONCE, encryption_context={"app": "demo"}),
    ):
        assert decode_request(encode_request(request)) == request


def test_answers_round_trip() -> None:
    for answer in (
        DataKeyAnswer(ciphertext=b"c", ciphertext_blob=b"b", key_arn="arn:aws:kms:x", document=b"d"),
        SecretCheckAnswer(secret_sha384=b"s" * 48, document=b"d"),
    ):
        assert decode_answer(encode_answer(answer)) == answer


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"data_key": {"key_id": "k", "key_spec": "AES_256"}, "nonce": NONCE}, "has no 'public_key'"),
        (
            {"data_key": {"key_id": "k", "key_spec": "AES_512"}, "nonce": NONCE, "public_key": b"k"},
            "key_spec",
        ),
        ({"data_key": {"key_id": "k"}, "nonce": NONCE, "public_key": b"k"}, "has no 'key_spec'"),
        ({"data_key": "k", "nonce": NONCE, "public_key": b"k"}, "data_key must be a map"),
        ({"check_secret": {"ciphertext_blob": b""}, "nonce": NONCE}, "ciphertext_blob must be 1..6144"),
        ({"check_secret": {"ciphertext_blob": b"x", "extra": 1}, "nonce": NONCE}, "unknown key"),
        (
            {"check_secret": {"ciphertext_blob": b"x", "encryption_context": {}}, "nonce": NONCE},
            "non-empty map",
        ),
        (
            {"check_secret": {"ciphertext_blob": b"x", "encryption_context": {"a": 1}}, "nonce": NONCE},
            "text to text",
        ),
        (
            {
                "check_secret": {
                    "ciphertext_blob": b"x",
                    "encryption_context": {"a": "v" * MAX_ENCRYPTION_CONTEXT_BYTES},
                },
                "nonce": NONCE,
            },
            "encryption_context is over",
        ),
        ({"check_secret": {"ciphertext_blob": b"x"}, "nonce": b"short"}, "nonce must be"),
        ({"check_secret": {"ciphertext_blob": b"x"}, "nonce": NONCE, "bytes": 1}, "unknown key"),
    ],
    ids=[
        "dk-no-key",
        "dk-bad-spec",
        "dk-no-spec",
        "dk-not-map",
        "cs-empty-blob",
        "cs-unknown",
        "cs-empty-context",
        "cs-context-int",
        "cs-context-big",
        "cs-short-nonce",
        "cs-mixed-kinds",
    ],
)
def test_malformed_requests(fields: dict[str, object], message: str) -> None:
    with pytest.raises(MalformedProviderMessageError, match=message) as refused:
        decode_request(cbor2.dumps(fields))
    assert "\n" not in str(refused.value)


def test_data_key_payload_binds_every_part() -> None:
    base = data_key_payload(b"c", b"b", "arn")
    assert base == cbor2.dumps(["data_key", b"c", b"b", "arn"])
    assert len({base, data_key_payload(b"c", b"B", "arn"), data_key_payload(b"c", b"b", "arN")}) == 3


def test_the_documents_bind_the_answers(sim_home: Path) -> None:
    answer = DataKeyAnswer(ciphertext=b"c", ciphertext_blob=b"b", key_arn="arn", document=b"d")
    now = datetime.now(UTC)
    doc = decode_document(
        simulate_document(sim_home, at=now, user_data=payload_digest(answer.payload))
    ).document
    PayloadDigest(answer.payload).check(doc, at=now)
    with pytest.raises(PolicyError):
        PayloadDigest(data_key_payload(b"c", b"other", "arn")).check(doc, at=now)
    digest = hashlib.sha384(b"secret").digest()
    doc = decode_document(simulate_document(sim_home, at=now, user_data=digest)).document
    SecretDigest(digest).check(doc, at=now)
    with pytest.raises(PolicyError):
        SecretDigest(hashlib.sha384(b"other").digest()).check(doc, at=now)
