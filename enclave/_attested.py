"""The attested data operations' requests and the checks on what they open to, without I/O.

Decrypt, GenerateDataKey, GenerateDataKeyPair and DeriveSharedSecret share one path in
:meth:`enclave.kms.KMSClient._attested`: attach a document, call, read the answer
(:func:`enclave._awsjson.attested_answer`), open CiphertextForRecipient inside the enclave. What differs per
operation is here: the boto3 parameters checked client-side (types, required members, the model's list
bounds; botocore's ``ParamValidationError``, one line), the request members, and :attr:`Request.check`, a
test of the opened plaintext against what is known before it is opened:

- Decrypt: 1..4096 bytes (``PlaintextType``);
- GenerateDataKey: 32 bytes for ``AES_256``, 16 for ``AES_128``, ``NumberOfBytes`` when given that way;
- GenerateDataKeyPair: a DER PKCS#8 private key (re-encoded, it must give back the same bytes) of the
  ``KeyPairSpec`` asked for, whose public key is the answer's ``PublicKey``;
- DeriveSharedSecret: ECDH gives the x coordinate, as long as the field of the peer's curve (``PublicKey``).

A plaintext that fails its check raises the same :class:`attestation.errors.DecryptionError` as a blob that
does not open: telling "opened, wrong length" from "did not open" would be a padding oracle for a host that
replays an earlier CiphertextForRecipient with edited blocks (CBC has no MAC).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from enclave.errors import ParamValidationError

__all__ = [
    "DATA_KEY_SPEC_BYTES",
    "MAX_PLAINTEXT_BYTES",
    "Request",
    "decrypt_request",
    "derive_shared_secret_request",
    "generate_data_key_pair_request",
    "generate_data_key_request",
]

#: ``PlaintextType``: a Plaintext, PrivateKeyPlaintext or SharedSecret is 1..4096 bytes.
MAX_PLAINTEXT_BYTES = 4096
#: ``CiphertextType``: a CiphertextBlob is 1..6144 bytes.
MAX_CIPHERTEXT_BLOB_BYTES = 6144
#: ``PublicKeyType``: DeriveSharedSecret's PublicKey is 1..8192 bytes.
MAX_PUBLIC_KEY_BYTES = 8192
#: ``KeyIdType``: 1..2048 characters.
MAX_KEY_ID_CHARS = 2048
#: ``GrantTokenList``: at most 10 tokens, each ``GrantTokenType`` 1..8192 characters.
MAX_GRANT_TOKENS = 10
MAX_GRANT_TOKEN_CHARS = 8192
#: ``NumberOfBytesType``: 1..1024.
MAX_NUMBER_OF_BYTES = 1024
#: GenerateDataKey's ``DataKeySpec`` and the length of the key each gives (API reference, GenerateDataKey:
#: "AES_128 to generate a 128-bit symmetric key, or AES_256 to generate a 256-bit symmetric key").
DATA_KEY_SPEC_BYTES: Mapping[str, int] = {"AES_256": 32, "AES_128": 16}
#: ``DataKeyPairSpec`` values whose private key this check can identify: RSA modulus bits or EC curve.
_PAIR_SPECS: Mapping[str, int | type[ec.EllipticCurve]] = {
    "RSA_2048": 2048,
    "RSA_3072": 3072,
    "RSA_4096": 4096,
    "ECC_NIST_P256": ec.SECP256R1,
    "ECC_NIST_P384": ec.SECP384R1,
    "ECC_NIST_P521": ec.SECP521R1,
    "ECC_SECG_P256K1": ec.SECP256K1,
}

#: The check of an opened plaintext: (plaintext, the answer's other members) -> acceptable.
Check = Callable[[bytes, Mapping[str, Any]], bool]


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """One attested call: its operation, its members (blobs as bytes) and the check on what it opens to."""

    operation: str
    members: Mapping[str, object]
    check: Check


def _invalid(message: str) -> ParamValidationError:
    return ParamValidationError(f"Parameter validation failed: {message}")


def _require(name: str, value: object) -> None:
    if value is None:
        raise _invalid(f'Missing required parameter in input: "{name}"')


def _string(name: str, value: object, high: int) -> str:
    if not isinstance(value, str):
        raise _invalid(f"{name} must be a string, got {type(value).__name__}")
    if not 1 <= len(value) <= high:
        raise _invalid(f"{name} must be 1..{high} characters, got {len(value)}")
    return value


def _blob(name: str, value: object, high: int) -> bytes:
    if not isinstance(value, bytes | bytearray):
        raise _invalid(f"{name} must be bytes, got {type(value).__name__}")
    if not 1 <= len(value) <= high:
        raise _invalid(f"{name} must be 1..{high} bytes, got {len(value)}")
    return bytes(value)


def _common(members: dict[str, object], context: object, tokens: object) -> dict[str, object]:
    if context is not None:
        # type() first: a dict, the usual context, skips the ABC's isinstance machinery.
        if not (type(context) is dict or isinstance(context, Mapping)) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in context.items()
        ):
            raise _invalid("EncryptionContext must be a mapping of strings to strings")
        members["EncryptionContext"] = dict(context)
    if tokens is not None:
        if not isinstance(tokens, list | tuple) or not all(isinstance(t, str) and t for t in tokens):
            raise _invalid("GrantTokens must be a list of non-empty strings")
        if len(tokens) > MAX_GRANT_TOKENS or any(len(t) > MAX_GRANT_TOKEN_CHARS for t in tokens):
            raise _invalid(f"GrantTokens: at most {MAX_GRANT_TOKENS} tokens of 1..{MAX_GRANT_TOKEN_CHARS}")
        members["GrantTokens"] = list(tokens)
    return members


def _length_between(low: int, high: int) -> Check:
    return lambda plaintext, answer: low <= len(plaintext) <= high


def decrypt_request(
    ciphertext_blob: object, context: object, key_id: object, algorithm: object, tokens: object
) -> Request:
    """Decrypt ``CiphertextBlob`` (``KeyId`` and ``EncryptionAlgorithm`` optional, as in the model)."""
    _require("CiphertextBlob", ciphertext_blob)
    members: dict[str, object] = {
        "CiphertextBlob": _blob("CiphertextBlob", ciphertext_blob, MAX_CIPHERTEXT_BLOB_BYTES)
    }
    if key_id is not None:
        members["KeyId"] = _string("KeyId", key_id, MAX_KEY_ID_CHARS)
    if algorithm is not None:
        members["EncryptionAlgorithm"] = _string("EncryptionAlgorithm", algorithm, MAX_KEY_ID_CHARS)
    return Request(
        operation="Decrypt",
        members=_common(members, context, tokens),
        check=_length_between(1, MAX_PLAINTEXT_BYTES),
    )


def generate_data_key_request(
    key_id: object, key_spec: object, number_of_bytes: object, context: object, tokens: object
) -> Request:
    """GenerateDataKey under ``KeyId``; the key's length from ``KeySpec`` or ``NumberOfBytes``."""
    _require("KeyId", key_id)
    members: dict[str, object] = {"KeyId": _string("KeyId", key_id, MAX_KEY_ID_CHARS)}
    expected: int | None = None
    if key_spec is not None:
        members["KeySpec"] = _string("KeySpec", key_spec, MAX_KEY_ID_CHARS)
        expected = DATA_KEY_SPEC_BYTES.get(str(key_spec))
    if number_of_bytes is not None:
        if isinstance(number_of_bytes, bool) or not isinstance(number_of_bytes, int):
            raise _invalid("NumberOfBytes must be an integer")
        members["NumberOfBytes"] = number_of_bytes
        expected = number_of_bytes if key_spec is None else expected
    # KMS refuses a request with both or neither (ValidationException); without a known length, the model's.
    low, high = (1, MAX_PLAINTEXT_BYTES) if expected is None else (expected, expected)
    check = _length_between(low, high)
    return Request(operation="GenerateDataKey", members=_common(members, context, tokens), check=check)


def _pair_check(spec: str) -> Check:
    kind = _PAIR_SPECS.get(spec)

    def check(plaintext: bytes, answer: Mapping[str, Any]) -> bool:
        try:
            key = serialization.load_der_private_key(plaintext, password=None)
            pkcs8 = key.private_bytes(
                serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            public = key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        except (ValueError, TypeError, UnsupportedAlgorithm):
            return False
        if pkcs8 != plaintext or public != answer.get("PublicKey"):
            return False
        if isinstance(kind, int):
            return isinstance(key, rsa.RSAPrivateKey) and key.key_size == kind
        if kind is not None:
            return isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, kind)
        return True

    return check


def generate_data_key_pair_request(key_id: object, spec: object, context: object, tokens: object) -> Request:
    """GenerateDataKeyPair under ``KeyId`` of ``KeyPairSpec``."""
    _require("KeyId", key_id)
    _require("KeyPairSpec", spec)
    members: dict[str, object] = {
        "KeyId": _string("KeyId", key_id, MAX_KEY_ID_CHARS),
        "KeyPairSpec": _string("KeyPairSpec", spec, MAX_KEY_ID_CHARS),
    }
    members = _common(members, context, tokens)
    return Request(operation="GenerateDataKeyPair", members=members, check=_pair_check(str(spec)))


def derive_shared_secret_request(
    key_id: object, algorithm: object, public_key: object, tokens: object
) -> Request:
    """DeriveSharedSecret of ``KeyId``'s private key with the peer's ``PublicKey`` (DER SPKI)."""
    _require("KeyId", key_id)
    _require("KeyAgreementAlgorithm", algorithm)
    _require("PublicKey", public_key)
    peer = _blob("PublicKey", public_key, MAX_PUBLIC_KEY_BYTES)
    members: dict[str, object] = {
        "KeyId": _string("KeyId", key_id, MAX_KEY_ID_CHARS),
        "KeyAgreementAlgorithm": _string("KeyAgreementAlgorithm", algorithm, MAX_KEY_ID_CHARS),
        "PublicKey": peer,
    }
    # ECDH's shared secret is the x coordinate: as many bytes as the curve's field. A peer key that does
    # not load here is KMS's to refuse (ValidationException); then only the model's bound applies.
    check = _length_between(1, MAX_PLAINTEXT_BYTES)
    try:
        loaded = serialization.load_der_public_key(peer)
    except (ValueError, UnsupportedAlgorithm):
        loaded = None
    if isinstance(loaded, ec.EllipticCurvePublicKey):
        size = (loaded.curve.key_size + 7) // 8
        check = _length_between(size, size)
    return Request(operation="DeriveSharedSecret", members=_common(members, None, tokens), check=check)
