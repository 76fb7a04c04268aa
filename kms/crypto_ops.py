"""The cryptographic operations on KMS keys: Encrypt, Decrypt, data keys, data key pairs, key agreement.

Each operation's input shape copies botocore kms service-2.json (2014-11-01), member order included (the
audit record lists members in that order). The service verifies any Recipient, finds the key (``resolve``:
Decrypt's is the KeyId given or else the key its blob names), authorizes on that key, then calls the handler.
Every handler runs the same numbered checks, each failure an AWS error name:

    (1) the key's state: DisabledException / KMSInvalidStateException (``kms.keys.check_usable``)
    (2) KeyUsage and KeySpec, then the algorithm: InvalidKeyUsageException
    (3) the request's own limits (sizes, EncryptionContext on an asymmetric key): ValidationException
    (4) the ciphertext (Decrypt): InvalidCiphertextException, one message; IncorrectKeyException
    (5) DryRun: DryRunOperationException (HTTP 412), only once every check above passed
    (6) the work, and the response: KeyId is always the key ARN

With a verified Recipient (an attested enclave), the secret in the response (Plaintext, PrivateKeyPlaintext,
SharedSecret) is left out and ``CiphertextForRecipient`` carries it, a CMS EnvelopedData to the enclave's
key built exactly as GenerateRandom builds it: "the Plaintext field in the response is null or empty".
GrantTokens are validated by the model (1..10 tokens of 1..8192 characters) and otherwise ignored: kms-sim
has no grants. Secrets never reach a message, a log line or the audit record (``kms.audit`` skips blobs).
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from attestation.cms import build_ciphertext_for_recipient
from kms._document_text import decode_document_text
from kms._op import (
    KEY_ENCRYPTION_ALGORITHM,
    MAX_ATTESTATION_DOCUMENT_BYTES,
    RECIPIENT_FIELD,
    AttestedRecipient,
    Backend,
    Operation,
)
from kms.ciphertext import (
    INVALID_CIPHERTEXT_MESSAGE,
    MAX_CIPHERTEXT_BYTES,
    RSA_ALGORITHMS,
    encode_context,
    key_id_of,
    open_parsed,
    parse,
    rsa_decrypt,
    rsa_encrypt,
    rsa_max_plaintext,
    seal,
)
from kms.errors import (
    DryRunOperationException,
    IncorrectKeyException,
    InvalidArnException,
    InvalidCiphertextException,
    InvalidKeyUsageException,
    NotFoundException,
    UnsupportedOperationException,
    ValidationException,
)
from kms.keys import Key, check_usable
from kms.protocol import Field

__all__ = [
    "CRYPTO_OPERATIONS",
    "DATA_KEY_PAIR_SPECS",
    "DECRYPT_FIELDS",
    "DRY_RUN_MESSAGE",
    "MAX_DATA_KEY_BYTES",
    "plain_decrypt",
]

SYMMETRIC_DEFAULT = "SYMMETRIC_DEFAULT"
ENCRYPT_DECRYPT = "ENCRYPT_DECRYPT"
KEY_AGREEMENT = "KEY_AGREEMENT"
IGNORE_CIPHERTEXT = "IGNORE_CIPHERTEXT"
ECDH = "ECDH"

#: ``NumberOfBytesType`` of GenerateDataKey: 1..1024 (botocore kms model).
MAX_DATA_KEY_BYTES = 1024
#: GenerateDataKey's ``KeySpec`` (``DataKeySpec``) and the data key length each names.
DATA_KEY_SPECS: Mapping[str, int] = {"AES_128": 16, "AES_256": 32}
#: ``PublicKeyType``: blob, 1..8192 bytes.
MAX_PUBLIC_KEY_BYTES = 8192
#: ``KeyIdType``: 1..2048 characters.
MAX_KEY_ID_CHARS = 2048
#: ``GrantTokenList``: 0..10 tokens; ``GrantTokenType``: 1..8192 characters.
MAX_GRANT_TOKENS = 10
MAX_GRANT_TOKEN_CHARS = 8192

#: What DryRunOperationException says when every check passed (the KMS developer guide, "Testing your
#: permissions": the request "would have succeeded").
DRY_RUN_MESSAGE = "The request would have succeeded, but the DryRun option is set."

#: ``DataKeyPairSpec`` values kms-sim makes, and how (``cryptography``). SM2 (China Regions only) and
#: ML_KEM_* are UnsupportedOperationException.
_CURVES: Mapping[str, type[ec.EllipticCurve]] = {
    "ECC_NIST_P256": ec.SECP256R1,
    "ECC_NIST_P384": ec.SECP384R1,
    "ECC_NIST_P521": ec.SECP521R1,
    "ECC_SECG_P256K1": ec.SECP256K1,
}
_RSA_SIZES: Mapping[str, int] = {"RSA_2048": 2048, "RSA_3072": 3072, "RSA_4096": 4096}
DATA_KEY_PAIR_SPECS = (*_RSA_SIZES, *_CURVES, "ECC_NIST_EDWARDS25519")

_ENCRYPTION_ALGORITHMS = (SYMMETRIC_DEFAULT, "RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256", "SM2PKE")
#: ``DataKeyPairSpec``, in the model's order.
_ALL_PAIR_SPECS = (
    *_RSA_SIZES,
    *_CURVES,
    "SM2",
    "ECC_NIST_EDWARDS25519",
    "ML_KEM_512",
    "ML_KEM_768",
    "ML_KEM_1024",
)

# -- input shapes (botocore kms model) -------------------------------------------------------------------

_KEY_ID = Field(name="KeyId", kind="string", minimum=1, maximum=MAX_KEY_ID_CHARS, required=True)
_OPTIONAL_KEY_ID = Field(name="KeyId", kind="string", minimum=1, maximum=MAX_KEY_ID_CHARS)
#: ``EncryptionContextType``: a string-to-string map without bounds in the model (kms.ciphertext bounds it).
_CONTEXT = Field(
    name="EncryptionContext",
    kind="map",
    members=(Field(name="key", kind="string"), Field(name="value", kind="string")),
)
_GRANT_TOKENS = Field(
    name="GrantTokens",
    kind="list",
    minimum=0,
    maximum=MAX_GRANT_TOKENS,
    members=(Field(name="member", kind="string", minimum=1, maximum=MAX_GRANT_TOKEN_CHARS),),
)
_ALGORITHM = Field(name="EncryptionAlgorithm", kind="string", enum=_ENCRYPTION_ALGORITHMS)
_DRY_RUN = Field(name="DryRun", kind="boolean")
_PLAINTEXT = Field(name="Plaintext", kind="blob", minimum=1, maximum=4096, sensitive=True, required=True)
_CIPHERTEXT = Field(name="CiphertextBlob", kind="blob", minimum=1, maximum=MAX_CIPHERTEXT_BYTES)
_NUMBER_OF_BYTES = Field(name="NumberOfBytes", kind="integer", minimum=1, maximum=MAX_DATA_KEY_BYTES)
_DATA_KEY_SPEC = Field(name="KeySpec", kind="string", enum=("AES_256", "AES_128"))
_PAIR_SPEC = Field(name="KeyPairSpec", kind="string", enum=_ALL_PAIR_SPECS, required=True)

#: Decrypt's input shape (``DecryptRequest``), in the model's member order.
DECRYPT_FIELDS = (
    _CIPHERTEXT,
    _CONTEXT,
    _GRANT_TOKENS,
    _OPTIONAL_KEY_ID,
    _ALGORITHM,
    RECIPIENT_FIELD,
    _DRY_RUN,
    Field(
        name="DryRunModifiers",
        kind="list",
        members=(Field(name="member", kind="string", enum=(IGNORE_CIPHERTEXT,)),),
    ),
)


def _plain_blob(value: object, limit: int) -> bytes | None:
    """A blob member as ``validate`` decodes it (the same base64 call), within 1..``limit``; else None."""
    if type(value) is not str:
        return None
    try:
        blob = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return blob if 1 <= len(blob) <= limit else None


def plain_decrypt(raw: Mapping[str, object]) -> dict[str, Any] | None:
    """Decrypt's members as ``validate(DECRYPT_FIELDS, raw)`` gives them, for the usual request (a
    CiphertextBlob, an EncryptionContext of strings, KeyId and EncryptionAlgorithm in the model's bounds,
    a well-formed Recipient; none of them required but the blob); else None.

    GrantTokens, DryRun and DryRunModifiers are left to ``validate`` (present: None), as is anything of
    another JSON type. Exact types only (JSON gives str and dict), the model's bounds, the same base64 call
    (the attestation document through ``kms._document_text``, as GenerateRandom's shortcut), and the
    members in the model's order (the audit record lists them in that order). Unknown members are ignored,
    as ``validate`` ignores them. tests/kms/test_protocol.py checks that the two agree.
    """
    if raw.get("GrantTokens") is not None or raw.get("DryRun") is not None:
        return None
    if raw.get("DryRunModifiers") is not None:
        return None
    blob = _plain_blob(raw.get("CiphertextBlob"), MAX_CIPHERTEXT_BYTES)
    if blob is None:
        return None
    members: dict[str, Any] = {"CiphertextBlob": blob}
    context = raw.get("EncryptionContext")
    if context is not None:
        if type(context) is not dict or not all(
            type(name) is str and type(value) is str for name, value in context.items()
        ):
            return None
        members["EncryptionContext"] = dict(context)
    key_id = raw.get("KeyId")
    if key_id is not None:
        if type(key_id) is not str or not 1 <= len(key_id) <= MAX_KEY_ID_CHARS:
            return None
        members["KeyId"] = key_id
    algorithm = raw.get("EncryptionAlgorithm")
    if algorithm is not None:
        if type(algorithm) is not str or algorithm not in _ENCRYPTION_ALGORITHMS:
            return None
        members["EncryptionAlgorithm"] = algorithm
    recipient = raw.get("Recipient")
    if recipient is not None:
        if type(recipient) is not dict:
            return None
        wrapping = recipient.get("KeyEncryptionAlgorithm")
        text = recipient.get("AttestationDocument")
        if type(wrapping) is not str or wrapping != KEY_ENCRYPTION_ALGORITHM or type(text) is not str:
            return None
        document = decode_document_text(text)
        if document is None or not 1 <= len(document) <= MAX_ATTESTATION_DOCUMENT_BYTES:
            return None
        members["Recipient"] = {"KeyEncryptionAlgorithm": wrapping, "AttestationDocument": document}
    return members


# -- the checks every handler shares -----------------------------------------------------------------


def _resolve_key_id(backend: Backend, members: dict[str, Any], at: datetime) -> Key | None:
    return backend.keys.resolve(members["KeyId"], at=at)


def _check_key(key: Key | None, usage: str, operation: str) -> Key:
    """(1) and (2): the key is usable and has ``usage``."""
    assert key is not None, "every crypto operation resolves its key"
    check_usable(key)
    if key.usage != usage:
        raise InvalidKeyUsageException(
            f"{key.arn} key usage is {key.usage} which is not valid for {operation}."
        )
    return key


def _check_symmetric(key: Key, operation: str) -> None:
    """Data keys and data key pairs are encrypted under a symmetric encryption key only."""
    if key.spec != SYMMETRIC_DEFAULT:
        raise InvalidKeyUsageException(
            f"{key.arn} key spec is {key.spec} which is not valid for {operation}."
        )


def _check_algorithm(key: Key, algorithm: str) -> None:
    """(2) SYMMETRIC_DEFAULT for symmetric keys, RSAES_OAEP_SHA_1/256 for RSA keys (SM2PKE for none)."""
    allowed = (SYMMETRIC_DEFAULT,) if key.spec == SYMMETRIC_DEFAULT else tuple(RSA_ALGORITHMS)
    if algorithm not in allowed:
        raise InvalidKeyUsageException(f"Algorithm {algorithm} is incompatible with key spec {key.spec}.")


def _check_context(key: Key, members: dict[str, Any]) -> bytes:
    """(3) An EncryptionContext, bounded, on symmetric keys only ("Asymmetric algorithms ... do not support
    an encryption context", KMS developer guide, "Encryption context"). Returns the context's canonical
    encoding (``kms.ciphertext.encode_context``; empty for an asymmetric key), which Decrypt opens with."""
    context: Mapping[str, str] | None = members.get("EncryptionContext")
    if key.spec == SYMMETRIC_DEFAULT:
        return encode_context(context)
    if context:
        raise ValidationException(
            f"EncryptionContext is not supported with asymmetric KMS keys (key spec {key.spec})."
        )
    return b""


def _dry_run(members: dict[str, Any]) -> None:
    """(5) after every other check has passed."""
    if members.get("DryRun"):
        raise DryRunOperationException(DRY_RUN_MESSAGE)


def _secret(
    result: dict[str, Any], name: str, secret: bytes, recipient: AttestedRecipient | None
) -> dict[str, Any]:
    """(6) ``secret`` as ``name``, or (with a Recipient) as CiphertextForRecipient with ``name`` left out."""
    if recipient is None:
        result[name] = secret
    else:
        result["CiphertextForRecipient"] = build_ciphertext_for_recipient(
            secret, recipient.public_key, key_id=recipient.key_id
        )
    return result


# -- Encrypt and Decrypt ----------------------------------------------------------------------------------


def encrypt(
    backend: Backend,
    members: dict[str, Any],
    recipient: AttestedRecipient | None,
    at: datetime,
    key: Key | None,
) -> dict[str, Any]:
    key = _check_key(key, ENCRYPT_DECRYPT, "Encrypt")
    algorithm = members.get("EncryptionAlgorithm", SYMMETRIC_DEFAULT)
    _check_algorithm(key, algorithm)
    _check_context(key, members)
    context: Mapping[str, str] | None = members.get("EncryptionContext")
    plaintext: bytes = members["Plaintext"]
    if key.spec != SYMMETRIC_DEFAULT:
        limit = rsa_max_plaintext(_RSA_SIZES[key.spec], algorithm)
        if len(plaintext) > limit:
            # The Encrypt reference's table of "maximum size of the data that you can encrypt".
            raise ValidationException(
                f"Plaintext is {len(plaintext)} bytes; {algorithm} with {key.spec} takes at most {limit}."
            )
    _dry_run(members)
    if key.spec == SYMMETRIC_DEFAULT:
        blob = seal(key_id=key.id, material=key.material, plaintext=plaintext, context=context)
    else:
        blob = rsa_encrypt(material=key.material, algorithm=algorithm, plaintext=plaintext)
    return {"CiphertextBlob": blob, "KeyId": key.arn, "EncryptionAlgorithm": algorithm}


def _resolve_decrypt(backend: Backend, members: dict[str, Any], at: datetime) -> Key | None:
    """The key a Decrypt acts on: the KeyId given, else the key the blob names (unverified until opened).

    A blob that names no key of ours is InvalidCiphertextException, as any other foreign blob.
    """
    blob: bytes | None = members.get("CiphertextBlob")
    if _ignores_ciphertext(members):
        # KeyId "is required ... when DryRun is true and DryRunModifiers is set to IGNORE_CIPHERTEXT".
        if "KeyId" not in members:
            raise ValidationException(
                "KeyId is required when DryRun is true and DryRunModifiers is set to IGNORE_CIPHERTEXT."
            )
    elif blob is None:
        # CiphertextBlob "is required in all cases except when DryRun is true and DryRunModifiers is set
        # to IGNORE_CIPHERTEXT" (Decrypt reference).
        raise ValidationException(
            "1 validation error detected: Value null at 'ciphertextBlob' failed to satisfy constraint: "
            "Member must not be null"
        )
    if "KeyId" in members:
        return backend.keys.resolve(members["KeyId"], at=at)
    assert blob is not None
    named = key_id_of(blob)
    try:
        return backend.keys.resolve(named, aliases=False, at=at)
    except (NotFoundException, InvalidArnException):
        raise InvalidCiphertextException(INVALID_CIPHERTEXT_MESSAGE) from None


def _ignores_ciphertext(members: dict[str, Any]) -> bool:
    """A dry run that "performs only authorization validation without ciphertext validation"."""
    return bool(members.get("DryRun")) and IGNORE_CIPHERTEXT in members.get("DryRunModifiers", ())


def decrypt(
    backend: Backend,
    members: dict[str, Any],
    recipient: AttestedRecipient | None,
    at: datetime,
    key: Key | None,
) -> dict[str, Any]:
    key = _check_key(key, ENCRYPT_DECRYPT, "Decrypt")
    algorithm = members.get("EncryptionAlgorithm", SYMMETRIC_DEFAULT)
    _check_algorithm(key, algorithm)
    encoded_context = _check_context(key, members)
    if _ignores_ciphertext(members):
        _dry_run(members)
    blob: bytes = members["CiphertextBlob"]  # present: resolve refused its absence otherwise
    # (4) the blob, parsed once: the key it names, then the open
    if key.spec == SYMMETRIC_DEFAULT:
        parsed = parse(blob)
        if parsed.key_id != key.id:
            raise IncorrectKeyException(
                "The key ID in the request does not identify a KMS key that can perform this operation."
            )
        plaintext = open_parsed(parsed, material=key.material, encoded_context=encoded_context)
    else:
        plaintext = rsa_decrypt(material=key.material, algorithm=algorithm, blob=blob)
    _dry_run(members)
    result: dict[str, Any] = {"KeyId": key.arn, "EncryptionAlgorithm": algorithm}
    # KeyMaterialId: "present only when the operation uses a symmetric encryption KMS key ... omitted if the
    # request includes the Recipient parameter" (Decrypt reference).
    if key.spec == SYMMETRIC_DEFAULT and recipient is None:
        result["KeyMaterialId"] = key.material_id
    return _secret(result, "Plaintext", plaintext, recipient)


# -- data keys --------------------------------------------------------------------------------------------


def _data_key_size(members: dict[str, Any]) -> int:
    """(3) "Use either the KeySpec or NumberOfBytes parameters (but not both)" (GenerateDataKey reference)."""
    spec = members.get("KeySpec")
    number = members.get("NumberOfBytes")
    if (spec is None) == (number is None):
        raise ValidationException("Please specify either number of bytes or key spec.")
    if spec is not None:
        return DATA_KEY_SPECS[spec]
    size: int = members["NumberOfBytes"]
    return size


def _data_key(members: dict[str, Any], key: Key | None, operation: str) -> tuple[Key, dict[str, Any], bytes]:
    """The checks and the work both GenerateDataKey operations share: (key, response, plaintext key)."""
    key = _check_key(key, ENCRYPT_DECRYPT, operation)
    _check_symmetric(key, operation)
    size = _data_key_size(members)
    _check_context(key, members)
    _dry_run(members)
    data_key = os.urandom(size)
    blob = seal(
        key_id=key.id, material=key.material, plaintext=data_key, context=members.get("EncryptionContext")
    )
    return key, {"CiphertextBlob": blob, "KeyId": key.arn, "KeyMaterialId": key.material_id}, data_key


def generate_data_key(
    backend: Backend,
    members: dict[str, Any],
    recipient: AttestedRecipient | None,
    at: datetime,
    key: Key | None,
) -> dict[str, Any]:
    key, result, data_key = _data_key(members, key, "GenerateDataKey")
    if recipient is not None:
        # KeyMaterialId: "This field is omitted if the request includes the Recipient parameter"
        # (GenerateDataKey reference; GenerateDataKeyPair's has no such line and keeps it).
        del result["KeyMaterialId"]
    return _secret(result, "Plaintext", data_key, recipient)


def generate_data_key_without_plaintext(
    backend: Backend,
    members: dict[str, Any],
    recipient: AttestedRecipient | None,
    at: datetime,
    key: Key | None,
) -> dict[str, Any]:
    return _data_key(members, key, "GenerateDataKeyWithoutPlaintext")[1]


# -- data key pairs ---------------------------------------------------------------------------------------


def _new_pair(spec: str) -> tuple[bytes, bytes]:
    """(PKCS#8 DER private key, DER SubjectPublicKeyInfo) of a fresh key pair of ``spec``."""
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    if spec in _RSA_SIZES:
        private = rsa.generate_private_key(public_exponent=65537, key_size=_RSA_SIZES[spec])
    elif spec in _CURVES:
        private = ec.generate_private_key(_CURVES[spec]())
    else:
        private = ed25519.Ed25519PrivateKey.generate()
    return (
        private.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )


def _data_key_pair(
    members: dict[str, Any], key: Key | None, operation: str
) -> tuple[Key, dict[str, Any], bytes]:
    """The checks and the work both GenerateDataKeyPair operations share: (key, response, private key)."""
    key = _check_key(key, ENCRYPT_DECRYPT, operation)
    _check_symmetric(key, operation)
    spec = members["KeyPairSpec"]
    if spec not in DATA_KEY_PAIR_SPECS:
        raise UnsupportedOperationException(f"KeyPairSpec {spec} is not supported in this Region.")
    _check_context(key, members)
    _dry_run(members)
    private, public = _new_pair(spec)
    blob = seal(
        key_id=key.id, material=key.material, plaintext=private, context=members.get("EncryptionContext")
    )
    result = {
        "PrivateKeyCiphertextBlob": blob,
        "PublicKey": public,
        "KeyId": key.arn,
        "KeyPairSpec": spec,
        "KeyMaterialId": key.material_id,
    }
    return key, result, private


def generate_data_key_pair(
    backend: Backend,
    members: dict[str, Any],
    recipient: AttestedRecipient | None,
    at: datetime,
    key: Key | None,
) -> dict[str, Any]:
    key, result, private = _data_key_pair(members, key, "GenerateDataKeyPair")
    return _secret(result, "PrivateKeyPlaintext", private, recipient)


def generate_data_key_pair_without_plaintext(
    backend: Backend,
    members: dict[str, Any],
    recipient: AttestedRecipient | None,
    at: datetime,
    key: Key | None,
) -> dict[str, Any]:
    return _data_key_pair(members, key, "GenerateDataKeyPairWithoutPlaintext")[1]


# -- key agreement ----------------------------------------------------------------------------------------


def derive_shared_secret(
    backend: Backend,
    members: dict[str, Any],
    recipient: AttestedRecipient | None,
    at: datetime,
    key: Key | None,
) -> dict[str, Any]:
    key = _check_key(key, KEY_AGREEMENT, "DeriveSharedSecret")
    private = serialization.load_der_private_key(key.material, password=None)
    if not isinstance(private, ec.EllipticCurvePrivateKey):
        raise InvalidKeyUsageException(
            f"{key.arn} key spec is {key.spec} which is not valid for key agreement."
        )
    # (3) "The public key must be a DER-encoded X.509 public key, also known as SubjectPublicKeyInfo" and
    # "both key pairs must be on the same elliptic curve" (DeriveSharedSecret reference).
    try:
        peer = serialization.load_der_public_key(members["PublicKey"])
    except (ValueError, TypeError, NotImplementedError):
        peer = None
    if not isinstance(peer, ec.EllipticCurvePublicKey) or peer.curve.name != private.curve.name:
        raise ValidationException(
            f"PublicKey must be a DER-encoded SubjectPublicKeyInfo of an elliptic curve key on the curve of "
            f"key spec {key.spec}."
        )
    _dry_run(members)
    secret = private.exchange(ec.ECDH(), peer)
    result: dict[str, Any] = {"KeyId": key.arn, "KeyAgreementAlgorithm": ECDH, "KeyOrigin": key.origin}
    return _secret(result, "SharedSecret", secret, recipient)


# -- the registry -----------------------------------------------------------------------------------------

CRYPTO_OPERATIONS: Mapping[str, Operation] = {
    "Encrypt": Operation(
        fields=(_KEY_ID, _PLAINTEXT, _CONTEXT, _GRANT_TOKENS, _ALGORITHM, _DRY_RUN),
        handler=encrypt,
        resolve=_resolve_key_id,
    ),
    "Decrypt": Operation(
        fields=DECRYPT_FIELDS, handler=decrypt, resolve=_resolve_decrypt, plain=plain_decrypt
    ),
    "GenerateDataKey": Operation(
        fields=(
            _KEY_ID,
            _CONTEXT,
            _NUMBER_OF_BYTES,
            _DATA_KEY_SPEC,
            _GRANT_TOKENS,
            RECIPIENT_FIELD,
            _DRY_RUN,
        ),
        handler=generate_data_key,
        resolve=_resolve_key_id,
    ),
    "GenerateDataKeyWithoutPlaintext": Operation(
        fields=(_KEY_ID, _CONTEXT, _DATA_KEY_SPEC, _NUMBER_OF_BYTES, _GRANT_TOKENS, _DRY_RUN),
        handler=generate_data_key_without_plaintext,
        resolve=_resolve_key_id,
    ),
    "GenerateDataKeyPair": Operation(
        fields=(_CONTEXT, _KEY_ID, _PAIR_SPEC, _GRANT_TOKENS, RECIPIENT_FIELD, _DRY_RUN),
        handler=generate_data_key_pair,
        resolve=_resolve_key_id,
    ),
    "GenerateDataKeyPairWithoutPlaintext": Operation(
        fields=(_CONTEXT, _KEY_ID, _PAIR_SPEC, _GRANT_TOKENS, _DRY_RUN),
        handler=generate_data_key_pair_without_plaintext,
        resolve=_resolve_key_id,
    ),
    "DeriveSharedSecret": Operation(
        fields=(
            _KEY_ID,
            Field(name="KeyAgreementAlgorithm", kind="string", enum=(ECDH,), required=True),
            Field(name="PublicKey", kind="blob", minimum=1, maximum=MAX_PUBLIC_KEY_BYTES, required=True),
            _GRANT_TOKENS,
            _DRY_RUN,
            RECIPIENT_FIELD,
        ),
        handler=derive_shared_secret,
        resolve=_resolve_key_id,
    ),
}
