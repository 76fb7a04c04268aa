"""Encrypt, Decrypt, data keys, data key pairs and DeriveSharedSecret against a real ``kms-sim serve``.

One server for the module; its keys are made in its home's keys.db (``KeyRing.create``, what CreateKey
does), which every request reads. Clients are real boto3; a Recipient carries a document from the home's
simulated NSM, and CiphertextForRecipient is opened with the enclave's RSA key.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError  # type: ignore[import-untyped]
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from attestation.cms import decrypt_ciphertext_for_recipient
from attestation.nsm import simulate_document
from kms.ciphertext import INVALID_CIPHERTEXT_MESSAGE
from kms.keys import Key, KeyRing, alias_arn
from kms.state import KMSHome

Server = Any


@dataclass(frozen=True)
class Keys:
    symmetric: Key
    other: Key
    disabled: Key
    pending: Key
    rsa: Key
    ecc: Key
    ecc384: Key


@pytest.fixture(scope="module")
def keys(shared_server: Server) -> Iterator[Keys]:
    ring = KeyRing(KMSHome(root=shared_server.home / "kms").keys)
    now = datetime.now(UTC)
    try:
        made = Keys(
            symmetric=ring.create(spec="SYMMETRIC_DEFAULT", usage="ENCRYPT_DECRYPT", at=now),
            other=ring.create(spec="SYMMETRIC_DEFAULT", usage="ENCRYPT_DECRYPT", at=now),
            disabled=ring.create(spec="SYMMETRIC_DEFAULT", usage="ENCRYPT_DECRYPT", at=now),
            pending=ring.create(spec="SYMMETRIC_DEFAULT", usage="ENCRYPT_DECRYPT", at=now),
            rsa=ring.create(spec="RSA_2048", usage="ENCRYPT_DECRYPT", at=now),
            ecc=ring.create(spec="ECC_NIST_P256", usage="KEY_AGREEMENT", at=now),
            ecc384=ring.create(spec="ECC_NIST_P384", usage="KEY_AGREEMENT", at=now),
        )
        ring.set_enabled(made.disabled.id, False, at=now)
        ring.schedule_deletion(made.pending.id, 30, at=now)
        ring.create_alias("alias/crypto-ops-test", made.symmetric.id, at=now)
        yield made
    finally:
        ring.close()


@pytest.fixture(scope="module")
def kms(shared_server: Server) -> Any:
    return shared_server.client()


@pytest.fixture(scope="module")
def enclave_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def recipient(shared_server: Server, enclave_key: rsa.RSAPrivateKey) -> dict[str, Any]:
    """A Recipient: a fresh document from the home's simulated NSM carrying the enclave's public key."""
    spki = enclave_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    document = simulate_document(shared_server.home, at=datetime.now(UTC), public_key=spki)
    return {"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256", "AttestationDocument": document}


def _error(call: Callable[..., Any], **kwargs: Any) -> tuple[str, str, int]:
    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    response = caught.value.response
    return (
        response["Error"]["Code"],
        response["Error"]["Message"],
        response["ResponseMetadata"]["HTTPStatusCode"],
    )


# -- Encrypt / Decrypt ------------------------------------------------------------------------------------


def test_symmetric_roundtrip_with_context(kms: Any, keys: Keys) -> None:
    encrypted = kms.encrypt(
        KeyId=keys.symmetric.id, Plaintext=b"hello", EncryptionContext={"a": "1", "b": "2"}
    )
    assert encrypted["KeyId"] == keys.symmetric.arn
    assert encrypted["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    # No KeyId: the blob names its key; the context's pairs in another order are the same context.
    decrypted = kms.decrypt(
        CiphertextBlob=encrypted["CiphertextBlob"], EncryptionContext={"b": "2", "a": "1"}
    )
    assert decrypted["Plaintext"] == b"hello"
    assert decrypted["KeyId"] == keys.symmetric.arn
    assert decrypted["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    assert decrypted["KeyMaterialId"] == keys.symmetric.material_id
    # Every KeyId form names the same key.
    alias = "alias/crypto-ops-test"
    for key_id in (keys.symmetric.id, keys.symmetric.arn, alias, alias_arn(alias)):
        assert (
            kms.decrypt(
                CiphertextBlob=encrypted["CiphertextBlob"],
                KeyId=key_id,
                EncryptionContext={"a": "1", "b": "2"},
            )["Plaintext"]
            == b"hello"
        )


def test_encrypt_by_alias(kms: Any, keys: Keys) -> None:
    encrypted = kms.encrypt(KeyId="alias/crypto-ops-test", Plaintext=b"by alias")
    assert encrypted["KeyId"] == keys.symmetric.arn  # the key's ARN, not the alias
    assert kms.decrypt(CiphertextBlob=encrypted["CiphertextBlob"])["Plaintext"] == b"by alias"


@pytest.mark.parametrize(
    "context",
    [
        pytest.param({}, id="missing"),
        pytest.param({"a": "1"}, id="a-pair-missing"),
        pytest.param({"a": "1", "b": "2", "c": "3"}, id="extra-pair"),
        pytest.param({"a": "1", "b": "2 "}, id="value-differs"),
        pytest.param({"A": "1", "b": "2"}, id="key-case-differs"),
    ],
)
def test_other_context_is_invalid_ciphertext(kms: Any, keys: Keys, context: dict[str, str]) -> None:
    blob = kms.encrypt(KeyId=keys.symmetric.id, Plaintext=b"x", EncryptionContext={"a": "1", "b": "2"})[
        "CiphertextBlob"
    ]
    assert _error(kms.decrypt, CiphertextBlob=blob, EncryptionContext=context) == (
        "InvalidCiphertextException",
        INVALID_CIPHERTEXT_MESSAGE,
        400,
    )


def test_tampered_truncated_and_foreign_blobs_fail_alike(kms: Any, keys: Keys) -> None:
    blob = kms.encrypt(KeyId=keys.symmetric.id, Plaintext=b"secret")["CiphertextBlob"]
    changed = bytearray(blob)
    changed[-1] ^= 1
    for bad in (bytes(changed), blob[:-1], blob[:20], b"\x01" * 64, os.urandom(200)):
        assert _error(kms.decrypt, CiphertextBlob=bad)[:2] == (
            "InvalidCiphertextException",
            INVALID_CIPHERTEXT_MESSAGE,
        )


def test_blob_of_a_key_we_do_not_have_is_invalid_ciphertext(kms: Any, keys: Keys) -> None:
    blob = kms.encrypt(KeyId=keys.symmetric.id, Plaintext=b"secret")["CiphertextBlob"]
    unknown = blob.replace(keys.symmetric.id.encode(), b"00000000-0000-4000-8000-000000000000")
    assert _error(kms.decrypt, CiphertextBlob=unknown)[0] == "InvalidCiphertextException"


def test_another_key_id_is_incorrect_key(kms: Any, keys: Keys) -> None:
    blob = kms.encrypt(KeyId=keys.symmetric.id, Plaintext=b"secret")["CiphertextBlob"]
    code, _, status = _error(kms.decrypt, CiphertextBlob=blob, KeyId=keys.other.id)
    assert (code, status) == ("IncorrectKeyException", 400)


def test_decrypt_with_recipient(
    kms: Any, keys: Keys, recipient: dict[str, Any], enclave_key: rsa.RSAPrivateKey
) -> None:
    blob = kms.encrypt(KeyId=keys.symmetric.id, Plaintext=b"for the enclave")["CiphertextBlob"]
    answer = kms.decrypt(CiphertextBlob=blob, Recipient=recipient)
    assert "Plaintext" not in answer
    assert "KeyMaterialId" not in answer  # "omitted if the request includes the Recipient parameter"
    assert answer["KeyId"] == keys.symmetric.arn
    assert (
        decrypt_ciphertext_for_recipient(answer["CiphertextForRecipient"], enclave_key) == b"for the enclave"
    )


def test_encrypt_bounds(kms: Any, keys: Keys) -> None:
    assert kms.encrypt(KeyId=keys.symmetric.id, Plaintext=os.urandom(4096))["CiphertextBlob"]
    code, message, _ = _error(kms.encrypt, KeyId=keys.symmetric.id, Plaintext=os.urandom(4097))
    assert code == "ValidationException"
    assert "Member must have length less than or equal to 4096" in message
    code, message, _ = _error(
        kms.encrypt, KeyId=keys.symmetric.id, Plaintext=b"x", EncryptionContext={"k": "v" * 8192}
    )
    assert (code, message) == (
        "ValidationException",
        "EncryptionContext is over 8192 bytes (its keys and values as UTF-8)",
    )
    code, message, _ = _error(kms.encrypt, KeyId=keys.symmetric.id, Plaintext=b"x", GrantTokens=["t"] * 11)
    assert code == "ValidationException"
    assert (
        "'grantTokens' failed to satisfy constraint: Member must have length less than or equal to 10"
        in message
    )
    assert kms.encrypt(KeyId=keys.symmetric.id, Plaintext=b"x", GrantTokens=["token"])["CiphertextBlob"]


@pytest.mark.parametrize(("algorithm", "limit"), [("RSAES_OAEP_SHA_1", 214), ("RSAES_OAEP_SHA_256", 190)])
def test_rsa_encrypt_decrypt(kms: Any, keys: Keys, algorithm: str, limit: int) -> None:
    plaintext = os.urandom(limit)
    answer = kms.encrypt(KeyId=keys.rsa.id, Plaintext=plaintext, EncryptionAlgorithm=algorithm)
    assert answer["EncryptionAlgorithm"] == algorithm
    assert len(answer["CiphertextBlob"]) == 256
    decrypted = kms.decrypt(
        CiphertextBlob=answer["CiphertextBlob"], KeyId=keys.rsa.arn, EncryptionAlgorithm=algorithm
    )
    assert decrypted["Plaintext"] == plaintext
    assert "KeyMaterialId" not in decrypted
    code, message, _ = _error(
        kms.encrypt, KeyId=keys.rsa.id, Plaintext=os.urandom(limit + 1), EncryptionAlgorithm=algorithm
    )
    assert code == "ValidationException"
    assert f"at most {limit}" in message


def test_rsa_ciphertext_made_outside_kms(kms: Any, keys: Keys) -> None:
    # "Decrypt also decrypts ciphertext that was encrypted outside of KMS by the public key".
    private = serialization.load_der_private_key(keys.rsa.material, password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    blob = private.public_key().encrypt(b"outside", oaep)
    answer = kms.decrypt(CiphertextBlob=blob, KeyId=keys.rsa.id, EncryptionAlgorithm="RSAES_OAEP_SHA_256")
    assert answer["Plaintext"] == b"outside"


def test_rsa_errors(kms: Any, keys: Keys) -> None:
    assert _error(kms.encrypt, KeyId=keys.rsa.id, Plaintext=b"x")[:2] == (
        "InvalidKeyUsageException",
        "Algorithm SYMMETRIC_DEFAULT is incompatible with key spec RSA_2048.",
    )
    assert _error(
        kms.encrypt, KeyId=keys.symmetric.id, Plaintext=b"x", EncryptionAlgorithm="RSAES_OAEP_SHA_256"
    )[0] == ("InvalidKeyUsageException")
    code, _, _ = _error(
        kms.encrypt,
        KeyId=keys.rsa.id,
        Plaintext=b"x",
        EncryptionAlgorithm="RSAES_OAEP_SHA_256",
        EncryptionContext={"a": "b"},
    )
    assert code == "ValidationException"
    blob = kms.encrypt(KeyId=keys.rsa.id, Plaintext=b"x", EncryptionAlgorithm="RSAES_OAEP_SHA_256")[
        "CiphertextBlob"
    ]
    # Without KeyId the raw OAEP blob names no key; with the other algorithm it does not open.
    assert _error(kms.decrypt, CiphertextBlob=blob)[0] == "InvalidCiphertextException"
    assert _error(
        kms.decrypt, CiphertextBlob=blob, KeyId=keys.rsa.id, EncryptionAlgorithm="RSAES_OAEP_SHA_1"
    )[:2] == (
        "InvalidCiphertextException",
        INVALID_CIPHERTEXT_MESSAGE,
    )


def test_key_state_and_usage(kms: Any, keys: Keys) -> None:
    code, message, _ = _error(kms.encrypt, KeyId=keys.disabled.id, Plaintext=b"x")
    assert (code, message) == ("DisabledException", f"{keys.disabled.arn} is disabled.")
    code, message, _ = _error(kms.generate_data_key, KeyId=keys.pending.arn, KeySpec="AES_256")
    assert (code, message) == ("KMSInvalidStateException", f"{keys.pending.arn} is pending deletion.")
    assert _error(kms.encrypt, KeyId=keys.ecc.id, Plaintext=b"x")[:2] == (
        "InvalidKeyUsageException",
        f"{keys.ecc.arn} key usage is KEY_AGREEMENT which is not valid for Encrypt.",
    )
    assert (
        _error(kms.encrypt, KeyId="00000000-0000-4000-8000-000000000000", Plaintext=b"x")[0]
        == "NotFoundException"
    )


def test_dry_run(kms: Any, keys: Keys) -> None:
    code, message, status = _error(kms.encrypt, KeyId=keys.symmetric.id, Plaintext=b"x", DryRun=True)
    assert (code, status) == ("DryRunOperationException", 412)
    assert message == "The request would have succeeded, but the DryRun option is set."
    # A request that would fail fails as it would without DryRun.
    assert _error(kms.encrypt, KeyId=keys.disabled.id, Plaintext=b"x", DryRun=True)[0] == "DisabledException"
    blob = kms.encrypt(KeyId=keys.symmetric.id, Plaintext=b"x")["CiphertextBlob"]
    assert _error(kms.decrypt, CiphertextBlob=blob, DryRun=True)[0] == "DryRunOperationException"
    assert _error(kms.decrypt, CiphertextBlob=blob[:-1], DryRun=True)[0] == "InvalidCiphertextException"
    # IGNORE_CIPHERTEXT: authorization only, KeyId required, no CiphertextBlob needed.
    assert _error(kms.decrypt, KeyId=keys.symmetric.id, DryRun=True, DryRunModifiers=["IGNORE_CIPHERTEXT"])[
        0
    ] == ("DryRunOperationException")
    assert _error(kms.decrypt, DryRun=True, DryRunModifiers=["IGNORE_CIPHERTEXT"])[0] == "ValidationException"
    # ... and the blob, if one is sent, is not looked at.
    ignored = {"DryRun": True, "DryRunModifiers": ["IGNORE_CIPHERTEXT"], "CiphertextBlob": blob[:-1]}
    assert _error(kms.decrypt, KeyId=keys.symmetric.id, **ignored)[0] == "DryRunOperationException"
    assert _error(kms.decrypt, KeyId=keys.disabled.id, **ignored)[0] == "DisabledException"
    assert _error(kms.decrypt, KeyId=keys.symmetric.id)[0] == "ValidationException"


# -- data keys --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "size"),
    [({"KeySpec": "AES_256"}, 32), ({"KeySpec": "AES_128"}, 16), ({"NumberOfBytes": 1024}, 1024)],
)
def test_generate_data_key(kms: Any, keys: Keys, spec: dict[str, Any], size: int) -> None:
    answer = kms.generate_data_key(KeyId=keys.symmetric.id, EncryptionContext={"use": "test"}, **spec)
    assert len(answer["Plaintext"]) == size
    assert answer["KeyId"] == keys.symmetric.arn
    assert answer["KeyMaterialId"] == keys.symmetric.material_id
    opened = kms.decrypt(CiphertextBlob=answer["CiphertextBlob"], EncryptionContext={"use": "test"})
    assert opened["Plaintext"] == answer["Plaintext"]
    without = kms.generate_data_key_without_plaintext(KeyId=keys.symmetric.id, **spec)
    assert "Plaintext" not in without
    assert len(kms.decrypt(CiphertextBlob=without["CiphertextBlob"])["Plaintext"]) == size


def test_generate_data_key_with_recipient(
    kms: Any, keys: Keys, recipient: dict[str, Any], enclave_key: rsa.RSAPrivateKey
) -> None:
    answer = kms.generate_data_key(KeyId=keys.symmetric.id, KeySpec="AES_256", Recipient=recipient)
    assert "Plaintext" not in answer
    assert "KeyMaterialId" not in answer  # "omitted if the request includes the Recipient parameter"
    data_key = decrypt_ciphertext_for_recipient(answer["CiphertextForRecipient"], enclave_key)
    assert len(data_key) == 32
    assert kms.decrypt(CiphertextBlob=answer["CiphertextBlob"])["Plaintext"] == data_key


def test_generate_data_key_errors(kms: Any, keys: Keys) -> None:
    for spec in ({}, {"KeySpec": "AES_256", "NumberOfBytes": 32}):
        assert _error(kms.generate_data_key, KeyId=keys.symmetric.id, **spec)[:2] == (
            "ValidationException",
            "Please specify either number of bytes or key spec.",
        )
    assert (
        _error(kms.generate_data_key, KeyId=keys.symmetric.id, NumberOfBytes=1025)[0] == "ValidationException"
    )
    assert _error(kms.generate_data_key, KeyId=keys.rsa.id, KeySpec="AES_256")[:2] == (
        "InvalidKeyUsageException",
        f"{keys.rsa.arn} key spec is RSA_2048 which is not valid for GenerateDataKey.",
    )
    assert _error(kms.generate_data_key_without_plaintext, KeyId=keys.ecc.id, KeySpec="AES_256")[0] == (
        "InvalidKeyUsageException"
    )
    assert _error(kms.generate_data_key, KeyId=keys.symmetric.id, KeySpec="AES_256", DryRun=True)[0] == (
        "DryRunOperationException"
    )


# -- data key pairs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        "RSA_2048",
        "ECC_NIST_P256",
        "ECC_NIST_P384",
        "ECC_NIST_P521",
        "ECC_SECG_P256K1",
        "ECC_NIST_EDWARDS25519",
    ],
)
def test_generate_data_key_pair(kms: Any, keys: Keys, spec: str) -> None:
    answer = kms.generate_data_key_pair(
        KeyId=keys.symmetric.id, KeyPairSpec=spec, EncryptionContext={"p": "q"}
    )
    assert answer["KeyPairSpec"] == spec
    assert answer["KeyId"] == keys.symmetric.arn
    assert answer["KeyMaterialId"] == keys.symmetric.material_id
    private = serialization.load_der_private_key(answer["PrivateKeyPlaintext"], password=None)
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert public == answer["PublicKey"]
    opened = kms.decrypt(CiphertextBlob=answer["PrivateKeyCiphertextBlob"], EncryptionContext={"p": "q"})
    assert opened["Plaintext"] == answer["PrivateKeyPlaintext"]


def test_generate_data_key_pair_without_plaintext_and_with_recipient(
    kms: Any, keys: Keys, recipient: dict[str, Any], enclave_key: rsa.RSAPrivateKey
) -> None:
    without = kms.generate_data_key_pair_without_plaintext(
        KeyId=keys.symmetric.id, KeyPairSpec="ECC_NIST_P256"
    )
    assert "PrivateKeyPlaintext" not in without
    assert without["PublicKey"]
    attested = kms.generate_data_key_pair(
        KeyId=keys.symmetric.id, KeyPairSpec="ECC_NIST_P256", Recipient=recipient
    )
    assert "PrivateKeyPlaintext" not in attested
    private = decrypt_ciphertext_for_recipient(attested["CiphertextForRecipient"], enclave_key)
    assert kms.decrypt(CiphertextBlob=attested["PrivateKeyCiphertextBlob"])["Plaintext"] == private
    loaded = serialization.load_der_private_key(private, password=None)
    assert (
        loaded.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        == attested["PublicKey"]
    )


def test_generate_data_key_pair_errors(kms: Any, keys: Keys) -> None:
    assert _error(kms.generate_data_key_pair, KeyId=keys.symmetric.id, KeyPairSpec="SM2")[0] == (
        "UnsupportedOperationException"
    )
    assert (
        _error(kms.generate_data_key_pair, KeyId=keys.rsa.id, KeyPairSpec="RSA_2048")[0]
        == "InvalidKeyUsageException"
    )
    assert (
        _error(kms.generate_data_key_pair, KeyId=keys.symmetric.id, KeyPairSpec="RSA_1024")[0]
        == "ValidationException"
    )
    assert (
        _error(
            kms.generate_data_key_pair_without_plaintext,
            KeyId=keys.symmetric.id,
            KeyPairSpec="ECC_NIST_P256",
            DryRun=True,
        )[0]
        == "DryRunOperationException"
    )


# -- DeriveSharedSecret -----------------------------------------------------------------------------------


def _peer(curve: ec.EllipticCurve) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    private = ec.generate_private_key(curve)
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def _kms_public(key: Key) -> ec.EllipticCurvePublicKey:
    private = serialization.load_der_private_key(key.material, password=None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    return private.public_key()


def test_derive_shared_secret(kms: Any, keys: Keys) -> None:
    peer, public = _peer(ec.SECP256R1())
    answer = kms.derive_shared_secret(KeyId=keys.ecc.id, KeyAgreementAlgorithm="ECDH", PublicKey=public)
    assert answer["SharedSecret"] == peer.exchange(ec.ECDH(), _kms_public(keys.ecc))
    assert answer["KeyId"] == keys.ecc.arn
    assert answer["KeyAgreementAlgorithm"] == "ECDH"
    assert answer["KeyOrigin"] == "AWS_KMS"


def test_derive_shared_secret_with_recipient(
    kms: Any, keys: Keys, recipient: dict[str, Any], enclave_key: rsa.RSAPrivateKey
) -> None:
    peer, public = _peer(ec.SECP384R1())
    answer = kms.derive_shared_secret(
        KeyId=keys.ecc384.id, KeyAgreementAlgorithm="ECDH", PublicKey=public, Recipient=recipient
    )
    assert "SharedSecret" not in answer
    secret = decrypt_ciphertext_for_recipient(answer["CiphertextForRecipient"], enclave_key)
    assert secret == peer.exchange(ec.ECDH(), _kms_public(keys.ecc384))


def test_derive_shared_secret_errors(kms: Any, keys: Keys) -> None:
    _, p384 = _peer(ec.SECP384R1())
    _, p256 = _peer(ec.SECP256R1())
    assert _error(kms.derive_shared_secret, KeyId=keys.ecc.id, KeyAgreementAlgorithm="ECDH", PublicKey=p384)[
        0
    ] == ("ValidationException")
    assert _error(
        kms.derive_shared_secret, KeyId=keys.ecc.id, KeyAgreementAlgorithm="ECDH", PublicKey=b"not DER"
    )[0] == ("ValidationException")
    assert _error(
        kms.derive_shared_secret, KeyId=keys.symmetric.id, KeyAgreementAlgorithm="ECDH", PublicKey=p256
    )[:2] == (
        "InvalidKeyUsageException",
        f"{keys.symmetric.arn} key usage is ENCRYPT_DECRYPT which is not valid for DeriveSharedSecret.",
    )
    assert (
        _error(
            kms.derive_shared_secret,
            KeyId=keys.ecc.id,
            KeyAgreementAlgorithm="ECDH",
            PublicKey=p256,
            DryRun=True,
        )[0]
        == "DryRunOperationException"
    )


def test_no_secret_in_the_audit_log(shared_server: Server, kms: Any, keys: Keys) -> None:
    marker = b"AUDIT-CANARY-PLAINTEXT"
    blob = kms.encrypt(KeyId=keys.symmetric.id, Plaintext=marker, EncryptionContext={"ctx": "visible"})[
        "CiphertextBlob"
    ]
    kms.decrypt(CiphertextBlob=blob, EncryptionContext={"ctx": "visible"})
    log = (shared_server.home / "kms" / "audit.jsonl").read_text()
    assert marker.decode() not in log
    assert keys.symmetric.material.hex() not in log
    records = [json.loads(line) for line in log.splitlines()]
    encrypts = [r for r in records if r["eventName"] == "Encrypt"]
    assert encrypts[-1]["requestParameters"]["encryptionContext"] == {"ctx": "visible"}
    assert "plaintext" not in encrypts[-1]["requestParameters"]


def test_decrypt_follows_key_changes_on_every_worker(start_server: Callable[..., Server]) -> None:
    """``--workers 2``: each worker keeps the key rows it read (kms.keys), yet a key disabled, re-enabled or
    given a new key policy through one worker is refused or served so by the next request on any other."""
    server = start_server("--workers", "2")
    client = server.client()
    key_id = client.create_key()["KeyMetadata"]["KeyId"]
    blob = client.encrypt(KeyId=key_id, Plaintext=b"kept", EncryptionContext={"k": "v"})["CiphertextBlob"]

    def decrypt_everywhere() -> set[str]:
        """Decrypt on new connections (each accepted by either worker); the outcomes seen."""
        outcomes = set()
        for _ in range(12):
            try:
                answer = server.client().decrypt(CiphertextBlob=blob, EncryptionContext={"k": "v"})
                assert answer["Plaintext"] == b"kept"
                outcomes.add("ok")
            except ClientError as error:
                outcomes.add(error.response["Error"]["Code"])
        return outcomes

    assert decrypt_everywhere() == {"ok"}  # both workers now keep the row
    server.client().disable_key(KeyId=key_id)
    assert decrypt_everywhere() == {"DisabledException"}
    server.client().enable_key(KeyId=key_id)
    assert decrypt_everywhere() == {"ok"}
    root = "arn:aws:iam::111122223333:root"
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": root}, "Action": "kms:*", "Resource": "*"},
            {"Effect": "Deny", "Principal": {"AWS": root}, "Action": "kms:Decrypt", "Resource": "*"},
        ],
    }
    server.client().put_key_policy(KeyId=key_id, PolicyName="default", Policy=json.dumps(policy))
    assert decrypt_everywhere() == {"AccessDeniedException"}
    # A change made outside the server (another connection to keys.db) reaches the workers as well.
    ring = KeyRing(KMSHome(root=server.home / "kms").keys)
    try:
        ring.put_policy(
            key_id, json.dumps({**policy, "Statement": policy["Statement"][:1]}), at=datetime.now(UTC)
        )
    finally:
        ring.close()
    assert decrypt_everywhere() == {"ok"}
