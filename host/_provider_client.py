"""The parent's side of the attested-random provider protocol: connect, ask, and verify the answer.

The library under ``attested-random`` (:mod:`host.random_client`, which states the rules of the
verification pipeline): :func:`fetch` makes one request to an enclave's provider and returns the verified
bytes, :func:`data_key` a verified data key (opened with a key pair made for the one request),
:func:`check_secret` the verified SHA-384 of a secret the enclave decrypted; each raises
:class:`RefusedError` (a check failed, named) or :class:`ProviderError` (the provider answered an error, or
could not be reached).
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from attestation.cms import decrypt_ciphertext_for_recipient
from attestation.document import AttestationDocument
from attestation.errors import AttestationError, DecryptionError, MalformedError, VerificationError
from attestation.policy import Nonce, image_sha384
from attestation.provider_wire import (
    DATA_KEY_SPECS,
    MAX_ANSWER_BODY_BYTES,
    Answer,
    AnyAnswer,
    DataKeyAnswer,
    DataKeyRequest,
    ErrorAnswer,
    FrameReader,
    PayloadDigest,
    RandomRequest,
    Request,
    SecretCheckAnswer,
    SecretCheckRequest,
    SecretDigest,
    decode_answer,
    encode_frame,
    encode_request,
)
from attestation.sim import is_simulated, vsock_socket_path
from attestation.verify import Verifier

__all__ = [
    "DataKey",
    "Fetched",
    "ProviderError",
    "RefusedError",
    "SecretChecked",
    "check_secret",
    "connect",
    "data_key",
    "exchange",
    "fetch",
    "verify_answer",
]

#: Our freshness challenge: 256 bits, new for every request.
NONCE_BYTES = 32
#: The key pair made for ``--encrypt`` (one per request; KMS's Recipient size).
RSA_KEY_BITS = 2048
#: Bound on connecting and on receiving the whole answer (the provider makes up to four KMS calls).
TIMEOUT_SECONDS = 60.0
#: How often a not-yet-listening enclave is tried again.
RETRY_SECONDS = 0.02
#: A PCR is a SHA-384 value.
PCR_BYTES = 48
#: One ``recv`` of the answer.
RECV_BYTES = 64 * 1024


class RefusedError(Exception):
    """The answer failed verification step ``check`` (``PCR0``, ``nonce``, ``user_data``, ...)."""

    def __init__(self, check: str, detail: str) -> None:
        super().__init__(f"refused: {check} check failed: {detail}")
        self.check = check
        self.detail = detail


class ProviderError(Exception):
    """The provider could not be reached, or answered an error (``error`` is its name)."""

    def __init__(self, error: str, message: str) -> None:
        super().__init__(f"provider error {error}: {message}")
        self.error = error
        self.message = message


@dataclass(frozen=True, slots=True, kw_only=True)
class Fetched:
    """Verified random bytes and the verified document that binds them."""

    random: bytes
    document: AttestationDocument
    encrypted: bool
    root: x509.Certificate


@dataclass(frozen=True, slots=True, kw_only=True)
class DataKey:
    """A verified data key: its plaintext (opened here), KMS's CiphertextBlob of it, the KMS key's ARN."""

    plaintext: bytes
    ciphertext_blob: bytes
    key_arn: str
    document: AttestationDocument
    root: x509.Certificate

    def __repr__(self) -> str:  # the data key is secret: never in a repr, a log or a traceback
        return f"DataKey(key_arn={self.key_arn!r}, ciphertext_blob=<{len(self.ciphertext_blob)} bytes>)"


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretChecked:
    """The verified SHA-384 of the secret the enclave decrypted, and the document binding it."""

    secret_sha384: bytes
    document: AttestationDocument
    root: x509.Certificate


# -- transport ----------------------------------------------------------------------------------------------


def connect(
    cid: int, port: int, *, timeout: float, wait: float = 0.0, simulated: bool | None = None
) -> socket.socket:
    """A stream socket connected to vsock ``(cid, port)`` (simulated: its Unix socket), or ProviderError.

    For up to ``wait`` seconds, an enclave whose app is not listening yet (nobody at the address: the
    enclave is still starting, as it is right after ``nitro-cli run-enclave`` returns) is tried again
    every :data:`RETRY_SECONDS`.
    """
    deadline = time.monotonic() + wait
    while True:
        try:
            return _connect_once(cid, port, timeout=timeout, simulated=simulated)
        except _NotListeningError as exc:
            if time.monotonic() >= deadline:
                raise ProviderError("ConnectionError", str(exc)) from None
            time.sleep(RETRY_SECONDS)


class _NotListeningError(Exception):
    """Nobody listens at the address (yet)."""


def _connect_once(cid: int, port: int, *, timeout: float, simulated: bool | None) -> socket.socket:
    sim = is_simulated() if simulated is None else simulated
    where = f"vsock://{cid}:{port}"
    try:
        if sim:
            address: str | tuple[int, int] = os.fspath(vsock_socket_path(cid, port))
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        else:
            address = (cid, port)
            sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    except (AttestationError, OSError) as exc:
        raise ProviderError("ConnectionError", f"{where}: {exc}") from None
    try:
        sock.settimeout(timeout)
        sock.connect(address)
    except OSError as exc:
        sock.close()
        reason = "timed out" if isinstance(exc, TimeoutError) else exc.strerror or type(exc).__name__
        message = f"cannot connect to {where}: {reason}"
        if isinstance(exc, FileNotFoundError | ConnectionRefusedError | ConnectionResetError):
            raise _NotListeningError(message) from None
        raise ProviderError("ConnectionError", message) from None
    return sock


def exchange(sock: socket.socket, request: Request, *, timeout: float) -> AnyAnswer:
    """Send ``request`` and read one answer, all within ``timeout``; ProviderError on transport failures."""
    deadline = time.monotonic() + timeout
    reader = FrameReader(MAX_ANSWER_BODY_BYTES)
    try:
        sock.settimeout(timeout)
        sock.sendall(encode_frame(encode_request(request)))
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            data = sock.recv(RECV_BYTES)
            if not data:
                raise ProviderError("ConnectionError", "the provider closed the connection without answering")
            bodies = reader.feed(data)
            if bodies:
                return decode_answer(bodies[0])
    except OSError as exc:
        if not isinstance(exc, TimeoutError):
            raise ProviderError("ConnectionError", exc.strerror or type(exc).__name__) from None
    except MalformedError as exc:
        raise ProviderError("MalformedAnswer", str(exc)) from None
    raise ProviderError("Timeout", f"no answer within {timeout:g} s")


# -- verification --------------------------------------------------------------------------------------------


def _verified_document(
    document: bytes, *, nonce: bytes, binding: Any, verifier: Verifier, pcr0: bytes, at: datetime
) -> tuple[AttestationDocument, x509.Certificate]:
    """Steps (2)-(5): authentic document, PCR0, nonce, user_data (``binding``); or RefusedError."""
    # (2) the document is authentic (chain to a pinned root at `at`, ES384 signature)
    try:
        doc = verifier.verify(document, at=at)
    except VerificationError as exc:
        raise RefusedError(f"document {exc.step}", exc.detail) from None
    except MalformedError as exc:
        raise RefusedError("document decode", str(exc)) from None
    # (3) PCR0, (4) nonce, (5) user_data: each a policy on the verified document
    for check, policy in (("PCR0", image_sha384(pcr0)), ("nonce", Nonce(nonce)), ("user_data", binding)):
        try:
            policy.check(doc, at=at)
        except VerificationError as exc:
            raise RefusedError(check, exc.detail) from None
    root = next(r for r in verifier.roots if r.public_bytes(serialization.Encoding.DER) == doc.cabundle[0])
    return doc, root


def _expect(answer: AnyAnswer, kind: type[Any], asked: str) -> None:
    """Step (1): an answer, of the kind asked for; ProviderError for an error answer."""
    if isinstance(answer, ErrorAnswer):
        raise ProviderError(answer.error, answer.message)
    if not isinstance(answer, kind):
        raise RefusedError("answer", f"we asked for {asked}, the provider sent another kind of answer")


def verify_answer(
    answer: AnyAnswer,
    *,
    request: RandomRequest,
    private_key: rsa.RSAPrivateKey | None,
    verifier: Verifier,
    pcr0: bytes,
    at: datetime,
) -> Fetched:
    """Run the pipeline of the module docstring; return the verified bytes or raise RefusedError
    (ProviderError for an error answer)."""
    # (1) an answer, of the kind we asked for
    _expect(answer, Answer, "random bytes")
    assert isinstance(answer, Answer)
    if answer.encrypted != (request.public_key is not None):
        asked = "a ciphertext" if request.public_key is not None else "plaintext"
        raise RefusedError("answer", f"we asked for {asked}, the provider sent {answer.key}")
    # (2)-(5)
    doc, root = _verified_document(
        answer.document,
        nonce=request.nonce,
        binding=PayloadDigest(answer.payload),
        verifier=verifier,
        pcr0=pcr0,
        at=at,
    )
    # (6) the bytes themselves: opened with our key when encrypted; exactly as many as asked for
    random = answer.payload
    if answer.encrypted:
        if private_key is None:
            raise ValueError("an encrypted request needs its private key")
        try:
            random = decrypt_ciphertext_for_recipient(answer.payload, private_key)
        except DecryptionError as exc:
            raise RefusedError("decryption", str(exc)) from None
    if len(random) != request.number_of_bytes:
        raise RefusedError("length", f"asked for {request.number_of_bytes} bytes, got {len(random)}")
    return Fetched(random=random, document=doc, encrypted=answer.encrypted, root=root)


def verify_data_key(
    answer: AnyAnswer,
    *,
    request: DataKeyRequest,
    private_key: rsa.RSAPrivateKey,
    verifier: Verifier,
    pcr0: bytes,
    at: datetime,
) -> DataKey:
    """The pipeline for a data key: (1)-(5) on the whole payload, (6) the key opens, of its spec's length."""
    _expect(answer, DataKeyAnswer, "a data key")
    assert isinstance(answer, DataKeyAnswer)
    doc, root = _verified_document(
        answer.document,
        nonce=request.nonce,
        binding=PayloadDigest(answer.payload),
        verifier=verifier,
        pcr0=pcr0,
        at=at,
    )
    try:
        plaintext = decrypt_ciphertext_for_recipient(answer.ciphertext, private_key)
    except DecryptionError as exc:
        raise RefusedError("decryption", str(exc)) from None
    if len(plaintext) != DATA_KEY_SPECS[request.key_spec]:
        raise RefusedError("decryption", DecryptionError.MESSAGE)  # a length apart would be an oracle
    return DataKey(
        plaintext=plaintext,
        ciphertext_blob=answer.ciphertext_blob,
        key_arn=answer.key_arn,
        document=doc,
        root=root,
    )


def verify_secret_check(
    answer: AnyAnswer, *, request: SecretCheckRequest, verifier: Verifier, pcr0: bytes, at: datetime
) -> SecretChecked:
    """The pipeline for a secret check: (1)-(4), and (5) user_data is the answered digest itself."""
    _expect(answer, SecretCheckAnswer, "a secret check")
    assert isinstance(answer, SecretCheckAnswer)
    doc, root = _verified_document(
        answer.document,
        nonce=request.nonce,
        binding=SecretDigest(answer.secret_sha384),
        verifier=verifier,
        pcr0=pcr0,
        at=at,
    )
    return SecretChecked(secret_sha384=answer.secret_sha384, document=doc, root=root)


def _key_pair() -> tuple[rsa.RSAPrivateKey, bytes]:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
    public = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_key, public


def data_key(
    cid: int,
    port: int,
    *,
    key_id: str,
    key_spec: str,
    encryption_context: dict[str, str] | None,
    pcr0: bytes,
    verifier: Verifier,
    at: datetime,
    timeout: float = TIMEOUT_SECONDS,
    wait: float = 0.0,
    simulated: bool | None = None,
) -> DataKey:
    """A data key under ``key_id`` from the provider at vsock ``(cid, port)``, encrypted to a key pair made
    for this one request and verified; or RefusedError / ProviderError. ValueError for a bad argument."""
    private_key, public_key = _key_pair()
    request = DataKeyRequest(
        key_id=key_id,
        key_spec=key_spec,
        encryption_context=encryption_context,
        nonce=secrets.token_bytes(NONCE_BYTES),
        public_key=public_key,
    )
    with connect(cid, port, timeout=timeout, wait=wait, simulated=simulated) as sock:
        answer = exchange(sock, request, timeout=timeout)
    return verify_data_key(
        answer, request=request, private_key=private_key, verifier=verifier, pcr0=pcr0, at=at
    )


def check_secret(
    cid: int,
    port: int,
    *,
    ciphertext_blob: bytes,
    encryption_context: dict[str, str] | None,
    pcr0: bytes,
    verifier: Verifier,
    at: datetime,
    timeout: float = TIMEOUT_SECONDS,
    wait: float = 0.0,
    simulated: bool | None = None,
) -> SecretChecked:
    """Have the provider decrypt ``ciphertext_blob`` and answer SHA-384 of the secret, verified."""
    request = SecretCheckRequest(
        ciphertext_blob=ciphertext_blob,
        encryption_context=encryption_context,
        nonce=secrets.token_bytes(NONCE_BYTES),
    )
    with connect(cid, port, timeout=timeout, wait=wait, simulated=simulated) as sock:
        answer = exchange(sock, request, timeout=timeout)
    return verify_secret_check(answer, request=request, verifier=verifier, pcr0=pcr0, at=at)


def fetch(
    cid: int,
    port: int,
    *,
    number_of_bytes: int,
    pcr0: bytes,
    verifier: Verifier,
    at: datetime,
    encrypt: bool = False,
    timeout: float = TIMEOUT_SECONDS,
    wait: float = 0.0,
    simulated: bool | None = None,
) -> Fetched:
    """One request to the provider at vsock ``(cid, port)``, verified; or RefusedError / ProviderError."""
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS) if encrypt else None
    public_key = None
    if private_key is not None:
        public_key = private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    request = RandomRequest(
        number_of_bytes=number_of_bytes, nonce=secrets.token_bytes(NONCE_BYTES), public_key=public_key
    )
    with connect(cid, port, timeout=timeout, wait=wait, simulated=simulated) as sock:
        answer = exchange(sock, request, timeout=timeout)
    return verify_answer(
        answer, request=request, private_key=private_key, verifier=verifier, pcr0=pcr0, at=at
    )
