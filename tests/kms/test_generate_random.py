"""GenerateRandom through real boto3 against a running kms-sim: plain, bounds, Recipient, rejections."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from attestation.cms import decrypt_ciphertext_for_recipient

Server = Any  # tests/kms/conftest.py Server (conftest modules are not importable)
Recipient = Callable[[bytes], dict[str, Any]]


@pytest.fixture
def server(shared_server: Server) -> Server:
    """One kms-sim for the module: these tests add nothing but audit lines to its state."""
    return shared_server


@pytest.fixture
def make_document(
    shared_server: Server, rsa_key: rsa.RSAPrivateKey, spki_of: Callable[[rsa.RSAPrivateKey], bytes]
) -> Callable[..., bytes]:
    """Documents from the shared server's simulated PKI (override ``home`` for another one)."""
    from attestation.nsm import simulate_document

    def make(*, home: Path | None = None, at: datetime | None = None, **kwargs: Any) -> bytes:
        kwargs.setdefault("public_key", spki_of(rsa_key))
        return simulate_document(home or shared_server.home, at=at or datetime.now(UTC), **kwargs)

    return make


def test_plain_generate_random_and_request_id(server: Server) -> None:
    client = server.client()
    for size in (1, 32, 1024):
        response = client.generate_random(NumberOfBytes=size)
        assert len(response["Plaintext"]) == size
        assert "CiphertextForRecipient" not in response
        assert response["ResponseMetadata"]["HTTPHeaders"]["content-type"] == "application/x-amz-json-1.1"
        assert response["ResponseMetadata"]["RequestId"]
    assert (
        client.generate_random(NumberOfBytes=32)["Plaintext"]
        != client.generate_random(NumberOfBytes=32)["Plaintext"]
    )


@pytest.mark.parametrize(
    ("size", "constraint"),
    [
        (0, "Member must have value greater than or equal to 1"),
        (-5, "Member must have value greater than or equal to 1"),
        (1025, "Member must have value less than or equal to 1024"),
    ],
)
def test_number_of_bytes_out_of_range(server: Server, size: int, constraint: str) -> None:
    client = server.client(parameter_validation=False)  # botocore checks min itself; we test the server
    with pytest.raises(client.exceptions.ClientError) as caught:
        client.generate_random(NumberOfBytes=size)
    error = caught.value.response["Error"]
    assert error["Code"] == "ValidationException"
    assert error["Message"] == (
        f"1 validation error detected: Value '{size}' at 'numberOfBytes' "
        f"failed to satisfy constraint: {constraint}"
    )
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_number_of_bytes_missing(server: Server) -> None:
    client = server.client()
    with pytest.raises(client.exceptions.ClientError) as caught:
        client.generate_random()
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert "'numberOfBytes'" in caught.value.response["Error"]["Message"]


def test_attested_request_returns_cms_only_the_enclave_opens(
    server: Server,
    make_document: Callable[..., bytes],
    rsa_key: rsa.RSAPrivateKey,
    tmp_path: Path,
    recipient: Recipient,
) -> None:
    response = server.client().generate_random(NumberOfBytes=32, Recipient=recipient(make_document()))
    assert "Plaintext" not in response
    blob = response["CiphertextForRecipient"]
    plaintext = decrypt_ciphertext_for_recipient(blob, rsa_key)
    assert len(plaintext) == 32
    # The openssl CLI opens it with the enclave key alone.
    key_pem = tmp_path / "enclave.pem"
    key_pem.write_bytes(
        rsa_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    opened = subprocess.run(
        ["openssl", "cms", "-decrypt", "-inform", "DER", "-inkey", str(key_pem)],
        input=blob,
        capture_output=True,
        check=True,
    )
    assert opened.stdout == plaintext


def test_structure_matches_real_kms_vector(
    server: Server, make_document: Callable[..., bytes], vectors: Path, recipient: Recipient
) -> None:
    blob = server.client().generate_random(NumberOfBytes=32, Recipient=recipient(make_document()))[
        "CiphertextForRecipient"
    ]

    def shape(data: bytes) -> list[str]:
        out = subprocess.run(
            ["openssl", "asn1parse", "-inform", "DER", "-i"], input=data, capture_output=True, check=True
        ).stdout.decode()
        return [line.split("[HEX DUMP]")[0].rstrip() for line in out.splitlines()]

    assert shape(blob) == shape((vectors / "kms-cms" / "constructed.ber").read_bytes())


def _rejected(server: Server, recipient: Recipient, document: bytes) -> str:
    client = server.client()
    with pytest.raises(client.exceptions.ClientError) as caught:
        client.generate_random(NumberOfBytes=16, Recipient=recipient(document))
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    # ... and the server goes on serving.
    assert len(client.generate_random(NumberOfBytes=4)["Plaintext"]) == 4
    return str(caught.value.response["Error"]["Message"])


def test_document_outside_trusted_roots_is_rejected(
    server: Server,
    make_document: Callable[..., bytes],
    tmp_path_factory: pytest.TempPathFactory,
    recipient: Recipient,
) -> None:
    foreign = tmp_path_factory.mktemp("foreign")
    message = _rejected(server, recipient, make_document(home=foreign))
    assert "chain" in message


def test_stale_and_future_documents_are_rejected(
    server: Server, make_document: Callable[..., bytes], recipient: Recipient
) -> None:
    now = datetime.now(UTC)
    assert "old" in _rejected(server, recipient, make_document(at=now - timedelta(hours=1)))
    # A document from the future fails at its leaf's notBefore (or MaxAge's skew), either way rejected.
    future = _rejected(server, recipient, make_document(at=now + timedelta(hours=1)))
    assert "not valid before" in future or "after" in future


def test_max_doc_age_is_configurable(
    start_server: Callable[..., Server], make_document: Callable[..., bytes], recipient: Recipient
) -> None:
    server = start_server("--max-doc-age", "3600")
    document = make_document(home=server.home, at=datetime.now(UTC) - timedelta(minutes=10))
    response = server.client().generate_random(NumberOfBytes=8, Recipient=recipient(document))
    assert "CiphertextForRecipient" in response


@pytest.mark.parametrize("kind", ["none", "ec", "rsa1024", "pkcs1"])
def test_document_without_a_usable_rsa_key_is_rejected(
    server: Server,
    make_document: Callable[..., bytes],
    kind: str,
    spki_of: Callable[[rsa.RSAPrivateKey], bytes],
    recipient: Recipient,
) -> None:
    public_key: bytes | None
    if kind == "none":
        public_key = None
    elif kind == "ec":
        public_key = (
            ec.generate_private_key(ec.SECP256R1())
            .public_key()
            .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
    elif kind == "rsa1024":
        public_key = spki_of(rsa.generate_private_key(public_exponent=65537, key_size=1024))
    else:
        public_key = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            .public_key()
            .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
        )
    assert "public_key" in _rejected(server, recipient, make_document(public_key=public_key))


def test_garbage_and_tampered_documents_are_rejected(
    server: Server, make_document: Callable[..., bytes], recipient: Recipient
) -> None:
    assert "malformed" in _rejected(server, recipient, b"\x84garbage")
    document = bytearray(make_document())
    document[-5] ^= 0x01  # inside the signature
    assert "signature" in _rejected(server, recipient, bytes(document))


def test_wrong_key_encryption_algorithm(server: Server, make_document: Callable[..., bytes]) -> None:
    client = server.client()
    with pytest.raises(client.exceptions.ClientError) as caught:
        client.generate_random(
            NumberOfBytes=8,
            Recipient={"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_1", "AttestationDocument": make_document()},
        )
    message = caught.value.response["Error"]["Message"]
    assert "recipient.keyEncryptionAlgorithm" in message
    assert "enum value set: [RSAES_OAEP_SHA_256]" in message


def test_rsa_3072_and_4096_recipients(
    server: Server,
    make_document: Callable[..., bytes],
    rsa_keys_3072_4096: list[rsa.RSAPrivateKey],
    recipient: Recipient,
    spki_of: Callable[[rsa.RSAPrivateKey], bytes],
) -> None:
    for key in rsa_keys_3072_4096:
        blob = server.client().generate_random(
            NumberOfBytes=64, Recipient=recipient(make_document(public_key=spki_of(key)))
        )["CiphertextForRecipient"]
        assert len(decrypt_ciphertext_for_recipient(blob, key)) == 64


@pytest.fixture(scope="module")
def rsa_keys_3072_4096() -> list[rsa.RSAPrivateKey]:
    return [rsa.generate_private_key(public_exponent=65537, key_size=size) for size in (3072, 4096)]


def test_audit_log_records_attested_call_without_secrets(
    server: Server, make_document: Callable[..., bytes], recipient: Recipient
) -> None:
    client = server.client()
    document = make_document()
    blob = client.generate_random(NumberOfBytes=32, Recipient=recipient(document))["CiphertextForRecipient"]
    with pytest.raises(client.exceptions.ClientError):
        client.generate_random(NumberOfBytes=2000)
    text = (server.home / "kms" / "audit.jsonl").read_text()
    events = [json.loads(line) for line in text.splitlines()]
    attested, failed = events[-2], events[-1]
    assert attested["eventName"] == "GenerateRandom"
    assert attested["eventSource"] == "kms.amazonaws.com"
    assert attested["userIdentity"]["userName"] == "nitro-sim"
    assert attested["userIdentity"]["accessKeyId"].startswith("AKIA")
    assert attested["requestParameters"] is None  # ct-nitro-enclave: GenerateRandom (for an enclave)
    assert attested["resources"] == []
    assert "errorCode" not in attested
    data: dict[str, Any] = attested["additionalEventData"]["recipient"]
    assert data["attestationDocumentModuleId"].startswith("i-")
    assert len(base64.b64decode(data["attestationDocumentEnclaveImageDigest"])) == 48  # base64 in CloudTrail
    assert "attestationDocumentEnclavePCR0" not in data
    assert failed["errorCode"] == "ValidationException"
    for secret in (blob, document):
        assert base64.b64encode(secret).decode() not in text
        assert secret.hex() not in text


def test_unknown_operation_via_botocore_is_a_client_error(server: Server) -> None:
    client = server.client()
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        client.get_key_rotation_status(KeyId="1234abcd-12ab-34cd-56ef-1234567890ab")
    assert caught.value.response["Error"]["Code"] == "UnknownOperationException"
