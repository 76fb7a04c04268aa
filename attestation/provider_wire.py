"""The attested-random provider's wire protocol: frames and messages, no I/O (sans-IO).

Both ends use this one module: the enclave app (``enclave.provider``) and the parent's client
(``host.random_client``, console script ``attested-random``). A connection to the provider's vsock port
(:data:`DEFAULT_PORT`) carries requests and answers in turn, any number per connection:

    frame    = length (4 bytes, big-endian) || body (``length`` bytes, CBOR, one item, RFC 8949)
    request  = {"bytes": uint 1..MAX_RANDOM_BYTES, "nonce": bstr MIN..MAX_NONCE_BYTES,
                ? "public_key": bstr (DER SubjectPublicKeyInfo, RSA 2048/3072/4096)}
    answer   = {"random": bstr, "document": bstr}        plaintext, when the request had no public_key
             / {"ciphertext": bstr, "document": bstr}    CMS EnvelopedData to public_key, KMS's
                                                         CiphertextForRecipient format (attestation.cms)
             / {"error": tstr, "message": tstr}          the request was refused or could not be served

Rules (what each side may rely on):

- ``document`` is a fresh NSM attestation document with ``nonce`` = the request's nonce and
  ``user_data`` = SHA-384 of the answer's payload (the ``random`` or ``ciphertext`` bytes) exactly as sent
  (:func:`payload_digest`). A client verifies it (chain to a pinned root, signature), then PCR0, the nonce
  and :class:`PayloadDigest`; only then does it use, or decrypt, the payload.
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
    "DEFAULT_PORT",
    "ERROR_INTERNAL",
    "ERROR_MALFORMED_REQUEST",
    "ERROR_REQUEST_TOO_LARGE",
    "ERROR_TOO_MANY_CONNECTIONS",
    "FRAME_HEADER_BYTES",
    "MAX_ANSWER_BODY_BYTES",
    "MAX_ERROR_MESSAGE_CHARS",
    "MAX_ERROR_NAME_CHARS",
    "MAX_NONCE_BYTES",
    "MAX_PUBLIC_KEY_BYTES",
    "MAX_RANDOM_BYTES",
    "MAX_REQUEST_BODY_BYTES",
    "MIN_NONCE_BYTES",
    "Answer",
    "ErrorAnswer",
    "FrameReader",
    "FrameTooLargeError",
    "MalformedProviderMessageError",
    "PayloadDigest",
    "RandomRequest",
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
#: A request body: three keys, an integer, the nonce and the key, with room for CBOR heads.
MAX_REQUEST_BODY_BYTES: Final = 4096
#: An answer body: the largest document and the largest CiphertextForRecipient, with room for CBOR heads.
MAX_ANSWER_BODY_BYTES: Final = MAX_DOCUMENT_BYTES + MAX_CIPHERTEXT_FOR_RECIPIENT_BYTES + 256
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
            _check_bytes("public_key", self.public_key, 1, MAX_PUBLIC_KEY_BYTES)
            # The same rule KMS applies to a Recipient key: a DER SPKI of RSA 2048, 3072 or 4096 bits.
            try:
                load_rsa_public_key(self.public_key)
            except PolicyError as exc:
                raise ValueError(exc.detail) from None


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


@dataclass(frozen=True, slots=True)
class PayloadDigest:
    """Policy: the document's ``user_data`` is :func:`payload_digest` of ``payload`` (constant-time)."""

    payload: bytes

    def check(self, doc: AttestationDocument, *, at: datetime) -> None:
        if doc.user_data is None:
            raise PolicyError("user_data is absent; it must be the SHA-384 of the answer's payload")
        if not hmac.compare_digest(doc.user_data, payload_digest(self.payload)):
            raise PolicyError("user_data is not the SHA-384 of the answer's payload")


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


def encode_request(request: RandomRequest) -> bytes:
    """The request's frame body (CBOR map; ``public_key`` only when given)."""
    fields: dict[str, Any] = {"bytes": request.number_of_bytes, "nonce": request.nonce}
    if request.public_key is not None:
        fields["public_key"] = request.public_key
    return cbor2.dumps(fields)


def encode_answer(answer: Answer | ErrorAnswer) -> bytes:
    """The answer's frame body (CBOR map)."""
    if isinstance(answer, ErrorAnswer):
        return cbor2.dumps({"error": answer.error, "message": answer.message})
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


def decode_request(body: bytes) -> RandomRequest:
    """A request from its frame body; MalformedProviderMessageError (one line) if it is not one."""
    fields = _map(body, what="request", limit=MAX_REQUEST_BODY_BYTES)
    _only(fields, required={"bytes", "nonce"}, optional=frozenset({"public_key"}), what="request")
    if "public_key" in fields and fields["public_key"] is None:  # absent is absent, not null
        raise _fail("request: public_key must be a byte string, got NoneType")
    try:
        return RandomRequest(
            number_of_bytes=fields["bytes"], nonce=fields["nonce"], public_key=fields.get("public_key")
        )
    except (TypeError, ValueError) as exc:
        raise _fail(f"request: {exc}") from None


def decode_answer(body: bytes) -> Answer | ErrorAnswer:
    """An answer or error answer from its frame body; MalformedProviderMessageError if it is neither."""
    fields = _map(body, what="answer", limit=MAX_ANSWER_BODY_BYTES)
    try:
        if "error" in fields:
            _only(fields, required={"error", "message"}, optional=frozenset(), what="error answer")
            return ErrorAnswer(error=fields["error"], message=fields["message"])
        key = "ciphertext" if "ciphertext" in fields else "random"
        _only(fields, required={key, "document"}, optional=frozenset(), what="answer")
        return Answer(payload=fields[key], encrypted=key == "ciphertext", document=fields["document"])
    except (TypeError, ValueError) as exc:
        raise _fail(f"answer: {exc}") from None
