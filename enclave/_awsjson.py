"""The attested KMS operations as awsJson1_1 bytes, without I/O: the request body out; an answer's parts in.

Separate from :mod:`enclave.kms` as a codec from the client that uses it: these functions see bytes and
:class:`enclave._http.Response` objects only, never the connection, the credentials or the RSA key. The
client signs and sends the body, retries on the error code, and decrypts the CiphertextForRecipient.

- Body (aws-facts §1): ``{"NumberOfBytes": n, ["CustomKeyStoreId": s,] "Recipient":
  {"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256", "AttestationDocument": <base64>}}``.
- Bodies that do not decode (not JSON, not UTF-8, nested past the ``json`` module's recursion limit) are
  "not JSON": a ResponseError on success, the HTTP status and reason on an error.
- Error answers: ``(code, message)`` as botocore's JSON parser reads them (``__type`` or ``code``, the
  part after ``#`` and before ``:``); without a code, the HTTP status and reason.
- A success must carry a non-empty base64 ``CiphertextForRecipient``; a ``Plaintext`` is never read.
- Decrypt, GenerateDataKey, GenerateDataKeyPair and DeriveSharedSecret (:data:`ATTESTED_SHAPES`): the body
  is the request's members (blobs in base64) plus the same ``Recipient``; the answer's members of the
  model's output shape are read (blobs base64-decoded, within the model's bounds; members the model does
  not name are ignored, as botocore ignores them), and an answer that carries the plaintext member
  (``Plaintext``, ``PrivateKeyPlaintext``, ``SharedSecret``) with a value is refused: KMS sends it "null or
  empty" when a Recipient is given (API reference, ``CiphertextForRecipient``), so a value there came from
  the host, which must never be able to hand the enclave a plaintext of its choosing.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from enclave._http import Response
from enclave.errors import ResponseError

__all__ = [
    "ATTESTED_SHAPES",
    "KEY_ENCRYPTION_ALGORITHM",
    "AttestedShape",
    "attested_answer",
    "attested_body",
    "ciphertext_for_recipient",
    "error_code",
    "generate_random_body",
    "response_metadata",
]

#: The one key encryption algorithm KMS offers for a Recipient.
KEY_ENCRYPTION_ALGORITHM = "RSAES_OAEP_SHA_256"
#: The constant middle of a GenerateRandom body, up to the document's base64.
_RECIPIENT_PREFIX = b',"Recipient":{"KeyEncryptionAlgorithm":"%s","AttestationDocument":"' % (
    KEY_ENCRYPTION_ALGORITHM.encode()
)


def generate_random_body(n: int, store: str | None, document: bytes) -> bytes:
    """The GenerateRandom body for ``n`` bytes, key store ``store`` (or none) and attestation ``document``."""
    # Built directly: the document's base64 (the only large part) is spliced between two constant byte
    # strings in one join, so its ~8 KB are copied once after encoding.
    store_part = b',"CustomKeyStoreId":' + json.dumps(store).encode() if store is not None else b""
    return b"".join(
        (
            b'{"NumberOfBytes":%d' % n,
            store_part,
            _RECIPIENT_PREFIX,
            binascii.b2a_base64(document, newline=False),
            b'"}}',
        )
    )


#: ``CiphertextType`` (CiphertextBlob, PrivateKeyCiphertextBlob, CiphertextForRecipient): 1..6144 bytes.
MAX_CIPHERTEXT_BYTES = 6144
#: ``PublicKeyType`` (GenerateDataKeyPair's PublicKey): 1..8192 bytes.
MAX_PUBLIC_KEY_BYTES = 8192
#: ``KeyIdType`` (a key ID or ARN in an answer): 1..2048 characters; the other string members are shorter.
MAX_STRING_MEMBER_CHARS = 2048


@dataclass(frozen=True, slots=True, kw_only=True)
class AttestedShape:
    """An attested operation's output shape (botocore kms model): its plaintext member and what else it reads.

    ``blobs`` maps each blob member to its maximum length; ``strings`` names the string members.
    """

    plaintext: str
    blobs: Mapping[str, int]
    strings: frozenset[str]


#: The output shapes of the operations that take a Recipient besides GenerateRandom (botocore kms model).
ATTESTED_SHAPES: Mapping[str, AttestedShape] = {
    "Decrypt": AttestedShape(
        plaintext="Plaintext",
        blobs={"CiphertextForRecipient": MAX_CIPHERTEXT_BYTES},
        strings=frozenset({"KeyId", "EncryptionAlgorithm", "KeyMaterialId"}),
    ),
    "GenerateDataKey": AttestedShape(
        plaintext="Plaintext",
        blobs={"CiphertextBlob": MAX_CIPHERTEXT_BYTES, "CiphertextForRecipient": MAX_CIPHERTEXT_BYTES},
        strings=frozenset({"KeyId", "KeyMaterialId"}),
    ),
    "GenerateDataKeyPair": AttestedShape(
        plaintext="PrivateKeyPlaintext",
        blobs={
            "PrivateKeyCiphertextBlob": MAX_CIPHERTEXT_BYTES,
            "PublicKey": MAX_PUBLIC_KEY_BYTES,
            "CiphertextForRecipient": MAX_CIPHERTEXT_BYTES,
        },
        strings=frozenset({"KeyId", "KeyPairSpec", "KeyMaterialId"}),
    ),
    "DeriveSharedSecret": AttestedShape(
        plaintext="SharedSecret",
        blobs={"CiphertextForRecipient": MAX_CIPHERTEXT_BYTES},
        strings=frozenset({"KeyId", "KeyAgreementAlgorithm", "KeyOrigin"}),
    ),
}


#: Reused per request (``json.dumps`` with options builds a new encoder per call); the same output as
#: ``json.dumps(value, separators=(",", ":"))``.
_BODY_ENCODER = json.JSONEncoder(separators=(",", ":"))


def attested_body(members: Mapping[str, object], document: bytes) -> bytes:
    """The body of an attested operation: ``members`` (bytes values as base64) plus the Recipient.

    ``json.dumps`` of the members and then the Recipient, compactly; the document's base64 (most of the
    body, and JSON-neutral) is spliced in as GenerateRandom's body does, not copied through the encoder.
    """
    fields: dict[str, object] = {
        name: binascii.b2a_base64(value, newline=False).decode() if isinstance(value, bytes) else value
        for name, value in members.items()
    }
    head = _BODY_ENCODER.encode(fields).encode()[:-1]  # without its closing brace
    return b"".join(
        (
            head,
            _RECIPIENT_PREFIX if fields else _RECIPIENT_PREFIX[1:],  # a comma only after a member
            binascii.b2a_base64(document, newline=False),
            b'"}}',
        )
    )


def _blob(operation: str, name: str, value: object, limit: int) -> bytes:
    if not isinstance(value, str):
        raise ResponseError(f"KMS answered {operation} with a {name} that is not a base64 string")
    try:
        blob = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ResponseError(f"{name} is not valid base64") from None
    if not 1 <= len(blob) <= limit:
        raise ResponseError(f"KMS answered {operation} with a {name} of {len(blob)} bytes, not 1..{limit}")
    return blob


def attested_answer(response: Response, operation: str) -> dict[str, Any]:
    """The members of an attested operation's success (its shape in :data:`ATTESTED_SHAPES`), decoded.

    ResponseError when the body is not a JSON object, a member breaks the model, CiphertextForRecipient is
    missing, or the plaintext member came with a value (see the module docstring).
    """
    shape = ATTESTED_SHAPES[operation]
    try:
        body = json.loads(response.body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ResponseError(f"KMS answered {operation} with a body that is not JSON") from None
    if not isinstance(body, dict):
        raise ResponseError(f"KMS answered {operation} with a body that is not a JSON object")
    if body.get(shape.plaintext) not in (None, ""):
        raise ResponseError(
            f"KMS answered {operation} with {shape.plaintext} in the clear: refused, it must come only as "
            "CiphertextForRecipient"
        )
    if not body.get("CiphertextForRecipient"):
        raise ResponseError(f"KMS answered {operation} without CiphertextForRecipient (Recipient ignored?)")
    members: dict[str, Any] = {}
    for name, limit in shape.blobs.items():
        if body.get(name) is not None:
            members[name] = _blob(operation, name, body[name], limit)
    for name in shape.strings:
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or not 1 <= len(value) <= MAX_STRING_MEMBER_CHARS:
            raise ResponseError(f"KMS answered {operation} with a {name} that is not a string of the model")
        members[name] = value
    return members


def error_code(response: Response) -> tuple[str, str]:
    """``(code, message)`` of an error answer, as botocore's JSON parser reads them."""
    try:
        body = json.loads(response.body) if response.body else {}
    except (ValueError, UnicodeDecodeError, RecursionError):
        body = {}
    if not isinstance(body, dict):
        body = {}
    code = body.get("__type") or body.get("code") or ""
    if not isinstance(code, str) or not code:
        return str(response.status), response.reason
    # "com.amazonaws.kms#AccessDeniedException:http://..." -> "AccessDeniedException"
    code = code.split("#")[-1].split(":")[0]
    message = body.get("message") or body.get("Message") or ""
    return code, str(message)


def ciphertext_for_recipient(response: Response) -> bytes:
    """The CiphertextForRecipient of a GenerateRandom success, base64-decoded; ResponseError otherwise."""
    try:
        body = json.loads(response.body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: "[[[[..." nested too deep
        raise ResponseError("KMS answered GenerateRandom with a body that is not JSON") from None
    blob64 = body.get("CiphertextForRecipient") if isinstance(body, dict) else None
    if not isinstance(blob64, str) or not blob64:
        raise ResponseError("KMS answered GenerateRandom without CiphertextForRecipient (Recipient ignored?)")
    try:
        return base64.b64decode(blob64, validate=True)
    except (binascii.Error, ValueError):
        raise ResponseError("CiphertextForRecipient is not valid base64") from None


def response_metadata(response: Response, retries: int) -> dict[str, Any]:
    """botocore's ``ResponseMetadata`` for an answer that came after ``retries`` retries."""
    headers = dict(response.headers)
    return {
        "RequestId": headers.get("x-amzn-requestid", ""),
        "HTTPStatusCode": response.status,
        "HTTPHeaders": headers,
        "RetryAttempts": retries,
    }
