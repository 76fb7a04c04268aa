"""The parent's side of the attested-random provider protocol: connect, ask, and verify the answer.

The library under ``attested-random fetch`` (:mod:`host.random_client`, which states the rules of the
verification pipeline): :func:`fetch` makes one request to an enclave's provider and returns the verified
bytes, or raises :class:`RefusedError` (a check failed, named) or :class:`ProviderError` (the provider
answered an error, or could not be reached).
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from attestation.cms import decrypt_ciphertext_for_recipient
from attestation.document import AttestationDocument
from attestation.errors import AttestationError, DecryptionError, MalformedError, VerificationError
from attestation.policy import Nonce, image_sha384
from attestation.provider_wire import (
    MAX_ANSWER_BODY_BYTES,
    Answer,
    ErrorAnswer,
    FrameReader,
    PayloadDigest,
    RandomRequest,
    decode_answer,
    encode_frame,
    encode_request,
)
from attestation.sim import is_simulated, vsock_socket_path
from attestation.verify import Verifier

__all__ = ["Fetched", "ProviderError", "RefusedError", "connect", "exchange", "fetch", "verify_answer"]

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


def exchange(sock: socket.socket, request: RandomRequest, *, timeout: float) -> Answer | ErrorAnswer:
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


def verify_answer(
    answer: Answer | ErrorAnswer,
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
    if isinstance(answer, ErrorAnswer):
        raise ProviderError(answer.error, answer.message)
    if answer.encrypted != (request.public_key is not None):
        asked = "a ciphertext" if request.public_key is not None else "plaintext"
        raise RefusedError("answer", f"we asked for {asked}, the provider sent {answer.key}")
    # (2) the document is authentic (chain to a pinned root at `at`, ES384 signature)
    try:
        doc = verifier.verify(answer.document, at=at)
    except VerificationError as exc:
        raise RefusedError(f"document {exc.step}", exc.detail) from None
    except MalformedError as exc:
        raise RefusedError("document decode", str(exc)) from None
    # (3) PCR0, (4) nonce, (5) user_data: each a policy on the verified document
    for check, policy in (
        ("PCR0", image_sha384(pcr0)),
        ("nonce", Nonce(request.nonce)),
        ("user_data", PayloadDigest(answer.payload)),
    ):
        try:
            policy.check(doc, at=at)
        except VerificationError as exc:
            raise RefusedError(check, exc.detail) from None
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
    root = next(r for r in verifier.roots if r.public_bytes(serialization.Encoding.DER) == doc.cabundle[0])
    return Fetched(random=random, document=doc, encrypted=answer.encrypted, root=root)


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
