"""The attested-random provider's wire protocol: frames and messages, no I/O (sans-IO).

Both ends use this one module: the enclave app (``enclave.provider``) and the parent's client
(``host.random_client``, console script ``attested-random``). A connection to the provider's vsock port
(:data:`DEFAULT_PORT`) carries requests and answers in turn, any number per connection:

    frame    = length (4 bytes, big-endian) || body (``length`` bytes, CBOR, one item, RFC 8949)
    request  = {"bytes": uint 1..MAX_RANDOM_BYTES, "nonce": bstr MIN..MAX_NONCE_BYTES,
                ? "public_key": bstr (DER SubjectPublicKeyInfo, RSA 2048/3072/4096)}
             / {"data_key": {"key_id": tstr, "key_spec": "AES_256" / "AES_128", ? "encryption_context":
                context}, "nonce": bstr, "public_key": bstr}
             / {"check_secret": {"ciphertext_blob": bstr 1..MAX_CIPHERTEXT_BLOB_BYTES,
                ? "encryption_context": context}, "nonce": bstr}
    context  = {+ tstr => tstr}                          KMS's EncryptionContext, MAX_ENCRYPTION_CONTEXT_BYTES
    answer   = {"random": bstr, "document": bstr}        plaintext, when the request had no public_key
             / {"ciphertext": bstr, "document": bstr}    CMS EnvelopedData to public_key, KMS's
                                                         CiphertextForRecipient format (attestation.cms)
             / {"data_key": {"ciphertext": bstr, "ciphertext_blob": bstr, "key_arn": tstr},
                "document": bstr}                        the data key as CMS to public_key, KMS's
                                                         CiphertextBlob of it and the KMS key's ARN
             / {"secret_sha384": bstr 48, "document": bstr}
                                                         SHA-384 of the decrypted secret, nothing else
             / {"error": tstr, "message": tstr}          the request was refused or could not be served

The request's top-level key names its kind: ``bytes`` (random bytes), ``data_key`` (a data key under a KMS
key, GenerateDataKey; the plaintext key leaves the enclave only encrypted to the caller, so ``public_key``
is required), ``check_secret`` (a secret the caller had KMS encrypt, Decrypt: the enclave answers only the
digest of its plaintext, so the parent learns nothing else). The provider makes every KMS call attested.

Rules (what each side may rely on):

- ``document`` is a fresh NSM attestation document with ``nonce`` = the request's nonce and
  ``user_data`` binding the whole answer payload exactly as sent (:func:`payload_digest`, checked by
  :class:`PayloadDigest`):

  * ``random`` / ``ciphertext``: SHA-384 of those bytes;
  * ``data_key``: SHA-384 of the CBOR array ``["data_key", ciphertext, ciphertext_blob, key_arn]``
    (definite lengths, RFC 8949 §4.2.1 preferred serialization, as :func:`data_key_payload` encodes it),
    so neither the blob nor the ARN can be swapped without breaking the document;
  * ``secret_sha384``: the digest itself (it is the whole payload, and SHA-384 fills ``user_data`` as is).

  A client verifies the document (chain to a pinned root, signature), then PCR0, the nonce and the payload
  digest; only then does it use, or decrypt, the payload. A digest of a low-entropy secret can be guessed
  by trying candidates: ``check_secret`` is for secrets of full entropy (keys, tokens).
- The nonce is the client's freshness challenge: at least :data:`MIN_NONCE_BYTES` (128 bits), at most what
  a document's ``nonce`` field holds (:data:`MAX_NONCE_BYTES`).
- ``error`` is an identifier: the AWS error name KMS answered (``AccessDeniedException``, ...), the SDK's or
  NSM's error class name, or one of this protocol's (:data:`ERROR_MALFORMED_REQUEST`,
  :data:`ERROR_REQUEST_TOO_LARGE`, :data:`ERROR_TOO_MANY_CONNECTIONS`, :data:`ERROR_INTERNAL`). A
  malformed request is answered and the connection stays usable; a frame over the bound is answered and
  the connection closed (its end cannot be found without reading it).
- Decoding is strict (attestation._cbor: one item, no trailing bytes, no duplicate keys, no back-references)
  and refuses unknown keys and values out of bounds; every failure is a
  :class:`MalformedProviderMessageError` with one line. Every size has a named bound below.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import cbor2

from attestation._cbor import shown, strict_loads
from attestation.cms import MAX_CIPHERTEXT_FOR_RECIPIENT_BYTES, MAX_PLAINTEXT_BYTES
from attestation.document import MAX_DOCUMENT_BYTES, MAX_OPTIONAL_FIELD_BYTES, AttestationDocument
from attestation.errors import MalformedError, PolicyError
from attestation.policy import load_rsa_public_key

__all__ = [
    "DATA_KEY_SPECS",
    "DEFAULT_PORT",
    "ERROR_INTERNAL",
    "ERROR_MALFORMED_REQUEST",
    "ERROR_REQUEST_TOO_LARGE",
    "ERROR_TOO_MANY_CONNECTIONS",
    "FRAME_HEADER_BYTES",
    "MAX_ANSWER_BODY_BYTES",
    "MAX_CIPHERTEXT_BLOB_BYTES",
    "MAX_ENCRYPTION_CONTEXT_BYTES",
    "MAX_ERROR_MESSAGE_CHARS",
    "MAX_ERROR_NAME_CHARS",
    "MAX_KEY_ID_CHARS",
    "MAX_NONCE_BYTES",
    "MAX_PUBLIC_KEY_BYTES",
    "MAX_RANDOM_BYTES",
    "MAX_REQUEST_BODY_BYTES",
    "MIN_NONCE_BYTES",
    "SHA384_BYTES",
    "Answer",
    "AnyAnswer",
    "DataKeyAnswer",
    "DataKeyRequest",
    "ErrorAnswer",
    "FrameReader",
    "FrameTooLargeError",
    "MalformedProviderMessageError",
    "PayloadDigest",
    "RandomRequest",
    "Request",
    "SecretCheckAnswer",
    "SecretCheckRequest",
    "SecretDigest",
    "data_key_payload",
    "decode_answer",
    "decode_request",
    "encode_answer",
    "encode_frame",
    "encode_request",
    "payload_digest",
]

#: The provider's vsock port, on both sides unless ``--port`` says otherwise: the port of AWS's vsock sample
#: (aws-nitro-enclaves-samples ``vsock_sample/README.md``); not 8000, the vsock-proxy's, nor 9000, the
#: enclave's boot heartbeat.
DEFAULT_PORT: Final = 5005
#: Each frame starts with the body's length, big-endian.
FRAME_HEADER_BYTES: Final = 4
#: Random bytes per request: KMS's bound on a Plaintext blob (1..4096), so that every answer can also be
#: sent as CiphertextForRecipient. The provider draws them in GenerateRandom calls of at most 1024.
MAX_RANDOM_BYTES: Final = MAX_PLAINTEXT_BYTES
#: The nonce is a freshness challenge: at least 128 bits; at most what a document's nonce field holds.
MIN_NONCE_BYTES: Final = 16
MAX_NONCE_BYTES: Final = MAX_OPTIONAL_FIELD_BYTES
#: A DER RSA-4096 SubjectPublicKeyInfo is 550 bytes.
MAX_PUBLIC_KEY_BYTES: Final = 1024
#: KMS's ``CiphertextType`` (a CiphertextBlob): 1..6144 bytes (botocore kms model).
MAX_CIPHERTEXT_BLOB_BYTES: Final = 6144
#: KMS's ``KeyIdType``: 1..2048 characters (an ARN in an answer; a key ID, alias or ARN in a request).
MAX_KEY_ID_CHARS: Final = 2048
#: This protocol's bound on an encryption context: its keys and values, UTF-8, together.
MAX_ENCRYPTION_CONTEXT_BYTES: Final = 2048
#: GenerateDataKey's ``DataKeySpec`` and the data key's length for each (API reference, GenerateDataKey).
DATA_KEY_SPECS: Final = {"AES_256": 32, "AES_128": 16}
#: SHA-384: the secret check's answer.
SHA384_BYTES: Final = 48
#: A request body: 16 KiB holds the largest kind (a CiphertextBlob, a context and the nonce: 6144 + 2048 +
#: 1024 bytes, with CBOR heads) and a data key request (a key id, a context, the nonce and a public key).
MAX_REQUEST_BODY_BYTES: Final = 16 * 1024
#: An answer body: the largest document, the largest CiphertextForRecipient, CiphertextBlob and ARN, with
#: room for CBOR heads.
MAX_ANSWER_BODY_BYTES: Final = (
    MAX_DOCUMENT_BYTES
    + MAX_CIPHERTEXT_FOR_RECIPIENT_BYTES
    + MAX_CIPHERTEXT_BLOB_BYTES
    + MAX_KEY_ID_CHARS
    + 256
)
#: An error answer's name (an identifier, as KMS's ``__type``) and message.
MAX_ERROR_NAME_CHARS: Final = 128
MAX_ERROR_MESSAGE_CHARS: Final = 1024

#: The protocol's own error names (others are AWS's, the SDK's or the NSM's).
ERROR_MALFORMED_REQUEST: Final = "MalformedRequest"
ERROR_REQUEST_TOO_LARGE: Final = "RequestTooLarge"
ERROR_TOO_MANY_CONNECTIONS: Final = "TooManyConnections"
ERROR_INTERNAL: Final = "InternalError"

_MAX_FRAME_BODY: Final = 0xFFFF_FFFF


class MalformedProviderMessageError(MalformedError):
    """A provider frame or message does not decode, or breaks one of this protocol's bounds."""


class FrameTooLargeError(MalformedProviderMessageError):
    """A frame announces a body over the reader's bound; the stream cannot be read past it."""


# -- messages ------------------------------------------------------------------------------------------------


def _check_bytes(name: str, value: object, low: int, high: int) -> bytes:
    if not isinstance(value, bytes):
        raise TypeError(f"{name} must be a byte string, got {type(value).__name__}")
    if not low <= len(value) <= high:
        raise ValueError(f"{name} must be {low}..{high} bytes, got {len(value)}")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class RandomRequest:
    """``number_of_bytes`` random bytes, attested with ``nonce``; encrypted to ``public_key`` if given."""

    number_of_bytes: int
    nonce: bytes
    public_key: bytes | None = None

    def __post_init__(self) -> None:
        n = self.number_of_bytes
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_RANDOM_BYTES:
            raise ValueError(f"bytes must be an integer in 1..{MAX_RANDOM_BYTES}, got {shown(n)}")
        _check_bytes("nonce", self.nonce, MIN_NONCE_BYTES, MAX_NONCE_BYTES)
        if self.public_key is not None:
            _check_rsa_key(self.public_key)


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    """The random bytes (``encrypted`` False) or their CiphertextForRecipient, and the document binding them.

    Nothing here is verified: a client runs the document through its verifier and :class:`PayloadDigest`.
    """

    payload: bytes
    encrypted: bool
    document: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.encrypted, bool):
            raise TypeError("encrypted must be a bool")
        high = MAX_CIPHERTEXT_FOR_RECIPIENT_BYTES if self.encrypted else MAX_RANDOM_BYTES
        _check_bytes(self.key, self.payload, 1, high)
        _check_bytes("document", self.document, 1, MAX_DOCUMENT_BYTES)

    @property
    def key(self) -> str:
        """The payload's key on the wire: ``ciphertext`` or ``random``."""
        return "ciphertext" if self.encrypted else "random"


def _check_context(context: object) -> None:
    if context is None:
        return
    if not isinstance(context, dict) or not context:
        raise ValueError("encryption_context must be a non-empty map of text to text")
    size = 0
    for key, value in context.items():
        if not isinstance(key, str) or not isinstance(value, str) or not key:
            raise ValueError("encryption_context must be a non-empty map of text to text")
        size += len(key.encode("utf-8", "surrogatepass")) + len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_ENCRYPTION_CONTEXT_BYTES:
        raise ValueError(f"encryption_context is over {MAX_ENCRYPTION_CONTEXT_BYTES} bytes")


def _check_rsa_key(public_key: object) -> None:
    _check_bytes("public_key", public_key, 1, MAX_PUBLIC_KEY_BYTES)
    # The same rule KMS applies to a Recipient key: a DER SPKI of RSA 2048, 3072 or 4096 bits.
    try:
        load_rsa_public_key(public_key)  # type: ignore[arg-type]  # bytes, checked just above
    except PolicyError as exc:
        raise ValueError(exc.detail) from None


@dataclass(frozen=True, slots=True, kw_only=True)
class DataKeyRequest:
    """A data key under KMS key ``key_id`` (GenerateDataKey), encrypted to ``public_key``, attested."""

    key_id: str
    key_spec: str
    nonce: bytes
    public_key: bytes
    encryption_context: dict[str, str] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.key_id, str) or not 1 <= len(self.key_id) <= MAX_KEY_ID_CHARS:
            raise ValueError(f"key_id must be a string of 1..{MAX_KEY_ID_CHARS} characters")
        if self.key_spec not in DATA_KEY_SPECS:
            raise ValueError(
                f"key_spec must be one of {', '.join(DATA_KEY_SPECS)}, got {shown(self.key_spec)}"
            )
        _check_bytes("nonce", self.nonce, MIN_NONCE_BYTES, MAX_NONCE_BYTES)
        _check_rsa_key(self.public_key)
        _check_context(self.encryption_context)


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretCheckRequest:
    """Decrypt ``ciphertext_blob`` (attested) and answer only SHA-384 of the plaintext, attested."""

    ciphertext_blob: bytes
    nonce: bytes
    encryption_context: dict[str, str] | None = None

    def __post_init__(self) -> None:
        _check_bytes("ciphertext_blob", self.ciphertext_blob, 1, MAX_CIPHERTEXT_BLOB_BYTES)
        _check_bytes("nonce", self.nonce, MIN_NONCE_BYTES, MAX_NONCE_BYTES)
        _check_context(self.encryption_context)


@dataclass(frozen=True, slots=True, kw_only=True)
class DataKeyAnswer:
    """The data key as CiphertextForRecipient to the caller, KMS's CiphertextBlob of it, the key's ARN.

    Nothing here is verified: the document's user_data must be :func:`payload_digest` of :attr:`payload`.
    """

    ciphertext: bytes
    ciphertext_blob: bytes
    key_arn: str
    document: bytes

    def __post_init__(self) -> None:
        _check_bytes("ciphertext", self.ciphertext, 1, MAX_CIPHERTEXT_FOR_RECIPIENT_BYTES)
        _check_bytes("ciphertext_blob", self.ciphertext_blob, 1, MAX_CIPHERTEXT_BLOB_BYTES)
        if not isinstance(self.key_arn, str) or not 1 <= len(self.key_arn) <= MAX_KEY_ID_CHARS:
            raise ValueError(f"key_arn must be a string of 1..{MAX_KEY_ID_CHARS} characters")
        _check_bytes("document", self.document, 1, MAX_DOCUMENT_BYTES)

    @property
    def payload(self) -> bytes:
        """What the document's user_data digests (:func:`data_key_payload`)."""
        return data_key_payload(self.ciphertext, self.ciphertext_blob, self.key_arn)


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretCheckAnswer:
    """SHA-384 of the decrypted secret; the document's user_data is this digest itself. Unverified."""

    secret_sha384: bytes
    document: bytes

    def __post_init__(self) -> None:
        _check_bytes("secret_sha384", self.secret_sha384, SHA384_BYTES, SHA384_BYTES)
        _check_bytes("document", self.document, 1, MAX_DOCUMENT_BYTES)


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorAnswer:
    """The provider could not serve the request: ``error`` names why, ``message`` says it in one line."""

    error: str
    message: str

    def __post_init__(self) -> None:
        name = self.error
        if not isinstance(name, str) or not name.isascii() or not name.isidentifier():
            raise ValueError(f"error must be an ASCII identifier, got {shown(name)}")
        if len(name) > MAX_ERROR_NAME_CHARS:
            raise ValueError(f"error must be at most {MAX_ERROR_NAME_CHARS} characters")
        if not isinstance(self.message, str) or len(self.message) > MAX_ERROR_MESSAGE_CHARS:
            raise ValueError(f"message must be a string of at most {MAX_ERROR_MESSAGE_CHARS} characters")

    @classmethod
    def of(cls, error: str, message: str) -> ErrorAnswer:
        """An error answer with ``message`` made one line and cut to :data:`MAX_ERROR_MESSAGE_CHARS`."""
        line = " ".join(message.split())
        if len(line) > MAX_ERROR_MESSAGE_CHARS:
            line = line[: MAX_ERROR_MESSAGE_CHARS - 3] + "..."
        return cls(error=error, message=line)


# -- the digest binding an answer's payload ------------------------------------------------------------------


def payload_digest(payload: bytes) -> bytes:
    """The ``user_data`` of an answer's document: SHA-384 of the payload exactly as sent."""
    return hashlib.sha384(payload).digest()


def data_key_payload(ciphertext: bytes, ciphertext_blob: bytes, key_arn: str) -> bytes:
    """A data key answer's payload as its document digests it: ``["data_key", ciphertext, blob, arn]``."""
    return cbor2.dumps(["data_key", ciphertext, ciphertext_blob, key_arn])


@dataclass(frozen=True, slots=True)
class PayloadDigest:
    """Policy: the document's ``user_data`` is :func:`payload_digest` of ``payload`` (constant-time)."""

    payload: bytes

    def check(self, doc: AttestationDocument, *, at: datetime) -> None:
        if doc.user_data is None:
            raise PolicyError("user_data is absent; it must be the SHA-384 of the answer's payload")
        if not hmac.compare_digest(doc.user_data, payload_digest(self.payload)):
            raise PolicyError("user_data is not the SHA-384 of the answer's payload")


@dataclass(frozen=True, slots=True)
class SecretDigest:
    """Policy: the document's ``user_data`` is a secret check answer's digest itself (constant-time)."""

    secret_sha384: bytes

    def check(self, doc: AttestationDocument, *, at: datetime) -> None:
        if doc.user_data is None or not hmac.compare_digest(doc.user_data, self.secret_sha384):
            raise PolicyError("user_data is not the answer's SHA-384 of the secret")


# -- framing -------------------------------------------------------------------------------------------------


def encode_frame(body: bytes) -> bytes:
    """One frame: the body's length (4 bytes, big-endian), then the body."""
    if len(body) > _MAX_FRAME_BODY:
        raise ValueError("a frame body must fit a 32-bit length")
    return len(body).to_bytes(FRAME_HEADER_BYTES, "big") + body


class FrameReader:
    """Bytes in, whole frame bodies out (h11-style): ``feed`` what was received, take the bodies it returns.

    A frame announcing more than ``max_body`` bytes raises :class:`FrameTooLargeError`; the reader is then
    broken for good (its stream has no way back to a frame boundary) and every later ``feed`` raises
    RuntimeError. At most one partial frame is held, so the buffer stays under ``header + max_body`` plus
    one ``feed``'s data.
    """

    __slots__ = ("_buffer", "_max_body", "broken")

    def __init__(self, max_body: int) -> None:
        if not 0 < max_body <= _MAX_FRAME_BODY:
            raise ValueError("max_body must be in 1..2**32-1")
        self._max_body = max_body
        self._buffer = bytearray()
        self.broken = False

    @property
    def at_boundary(self) -> bool:
        """No partial frame is buffered (end of stream here is a clean close)."""
        return not self._buffer

    def feed(self, data: bytes) -> list[bytes]:
        if self.broken:
            raise RuntimeError("the frame reader saw an oversized frame; its stream cannot be read further")
        self._buffer += data
        bodies = []
        buffer = self._buffer
        while len(buffer) >= FRAME_HEADER_BYTES:
            length = int.from_bytes(buffer[:FRAME_HEADER_BYTES], "big")
            if length > self._max_body:
                self.broken = True
                buffer.clear()
                raise FrameTooLargeError(f"frame of {length} bytes is over the {self._max_body}-byte bound")
            end = FRAME_HEADER_BYTES + length
            if len(buffer) < end:
                break
            bodies.append(bytes(buffer[FRAME_HEADER_BYTES:end]))
            del buffer[:end]
        return bodies


# -- encoding and decoding -----------------------------------------------------------------------------------


#: Every request kind.
Request = RandomRequest | DataKeyRequest | SecretCheckRequest
#: Every answer kind a provider may send.
AnyAnswer = Answer | DataKeyAnswer | SecretCheckAnswer | ErrorAnswer


def encode_request(request: Request) -> bytes:
    """The request's frame body (CBOR map; optional members only when given)."""
    if isinstance(request, DataKeyRequest):
        inner: dict[str, Any] = {"key_id": request.key_id, "key_spec": request.key_spec}
        if request.encryption_context is not None:
            inner["encryption_context"] = request.encryption_context
        return cbor2.dumps({"data_key": inner, "nonce": request.nonce, "public_key": request.public_key})
    if isinstance(request, SecretCheckRequest):
        inner = {"ciphertext_blob": request.ciphertext_blob}
        if request.encryption_context is not None:
            inner["encryption_context"] = request.encryption_context
        return cbor2.dumps({"check_secret": inner, "nonce": request.nonce})
    fields: dict[str, Any] = {"bytes": request.number_of_bytes, "nonce": request.nonce}
    if request.public_key is not None:
        fields["public_key"] = request.public_key
    return cbor2.dumps(fields)


def encode_answer(answer: AnyAnswer) -> bytes:
    """The answer's frame body (CBOR map)."""
    if isinstance(answer, ErrorAnswer):
        return cbor2.dumps({"error": answer.error, "message": answer.message})
    if isinstance(answer, DataKeyAnswer):
        inner = {
            "ciphertext": answer.ciphertext,
            "ciphertext_blob": answer.ciphertext_blob,
            "key_arn": answer.key_arn,
        }
        return cbor2.dumps({"data_key": inner, "document": answer.document})
    if isinstance(answer, SecretCheckAnswer):
        return cbor2.dumps({"secret_sha384": answer.secret_sha384, "document": answer.document})
    return cbor2.dumps({answer.key: answer.payload, "document": answer.document})


def _fail(message: str) -> MalformedProviderMessageError:
    return MalformedProviderMessageError(message)


def _map(body: bytes, *, what: str, limit: int) -> dict[Any, Any]:
    if len(body) > limit:
        raise _fail(f"{what} is {len(body)} bytes, over the {limit}-byte bound")
    value = strict_loads(body, what=what, error=MalformedProviderMessageError)
    if not isinstance(value, dict):
        raise _fail(f"{what} must be a CBOR map, got {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise _fail(f"{what} keys must be text, got {shown(key)}")
    return value


def _only(fields: dict[str, Any], *, required: set[str], optional: frozenset[str], what: str) -> None:
    missing = sorted(required - fields.keys())
    if missing:
        raise _fail(f"{what} has no {missing[0]!r}")
    unknown = sorted(fields.keys() - required - optional)
    if unknown:
        raise _fail(f"{what} has an unknown key {shown(unknown[0])}")


def _inner(
    fields: dict[str, Any], key: str, *, required: set[str], optional: frozenset[str]
) -> dict[str, Any]:
    inner = fields[key]
    if not isinstance(inner, dict) or not all(isinstance(k, str) for k in inner):
        raise _fail(f"request: {key} must be a map with text keys")
    _only(inner, required=required, optional=optional, what=key)
    return inner


_CONTEXT = frozenset({"encryption_context"})


def decode_request(body: bytes) -> Request:
    """A request from its frame body; MalformedProviderMessageError (one line) if it is not one."""
    fields = _map(body, what="request", limit=MAX_REQUEST_BODY_BYTES)
    try:
        if "data_key" in fields:
            _only(fields, required={"data_key", "nonce", "public_key"}, optional=frozenset(), what="request")
            inner = _inner(fields, "data_key", required={"key_id", "key_spec"}, optional=_CONTEXT)
            return DataKeyRequest(
                key_id=inner["key_id"],
                key_spec=inner["key_spec"],
                encryption_context=inner.get("encryption_context", None)
                if "encryption_context" in inner
                else None,
                nonce=fields["nonce"],
                public_key=fields["public_key"],
            )
        if "check_secret" in fields:
            _only(fields, required={"check_secret", "nonce"}, optional=frozenset(), what="request")
            inner = _inner(fields, "check_secret", required={"ciphertext_blob"}, optional=_CONTEXT)
            return SecretCheckRequest(
                ciphertext_blob=inner["ciphertext_blob"],
                encryption_context=inner.get("encryption_context"),
                nonce=fields["nonce"],
            )
    except (TypeError, ValueError) as exc:
        raise _fail(f"request: {exc}") from None
    _only(fields, required={"bytes", "nonce"}, optional=frozenset({"public_key"}), what="request")
    if "public_key" in fields and fields["public_key"] is None:  # absent is absent, not null
        raise _fail("request: public_key must be a byte string, got NoneType")
    try:
        return RandomRequest(
            number_of_bytes=fields["bytes"], nonce=fields["nonce"], public_key=fields.get("public_key")
        )
    except (TypeError, ValueError) as exc:
        raise _fail(f"request: {exc}") from None


def decode_answer(body: bytes) -> AnyAnswer:
    """An answer or error answer from its frame body; MalformedProviderMessageError if it is neither."""
    fields = _map(body, what="answer", limit=MAX_ANSWER_BODY_BYTES)
    try:
        if "error" in fields:
            _only(fields, required={"error", "message"}, optional=frozenset(), what="error answer")
            return ErrorAnswer(error=fields["error"], message=fields["message"])
        if "data_key" in fields:
            _only(fields, required={"data_key", "document"}, optional=frozenset(), what="answer")
            inner = fields["data_key"]
            if not isinstance(inner, dict) or not all(isinstance(k, str) for k in inner):
                raise _fail("answer: data_key must be a map with text keys")
            _only(
                inner,
                required={"ciphertext", "ciphertext_blob", "key_arn"},
                optional=frozenset(),
                what="data_key",
            )
            return DataKeyAnswer(
                ciphertext=inner["ciphertext"],
                ciphertext_blob=inner["ciphertext_blob"],
                key_arn=inner["key_arn"],
                document=fields["document"],
            )
        if "secret_sha384" in fields:
            _only(fields, required={"secret_sha384", "document"}, optional=frozenset(), what="answer")
            return SecretCheckAnswer(secret_sha384=fields["secret_sha384"], document=fields["document"])
        key = "ciphertext" if "ciphertext" in fields else "random"
        _only(fields, required={key, "document"}, optional=frozenset(), what="answer")
        return Answer(payload=fields[key], encrypted=key == "ciphertext", document=fields["document"])
    except (TypeError, ValueError) as exc:
        raise _fail(f"answer: {exc}") from None
