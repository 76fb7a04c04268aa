"""The attested-random provider: an enclave app that serves attested random bytes to its parent.

    python -m enclave.provider [--port P] [--proxy-port 8000] [--region R]

It listens on vsock port ``P`` (:data:`attestation.provider_wire.DEFAULT_PORT`, 5005) of its enclave, with
:func:`enclave.vsock.listen` (in simulation the Unix socket of ``(NITRO_SIM_CID, P)``), and answers each
request of the protocol in :mod:`attestation.provider_wire` (the wire format and its bounds are stated
there) as follows:

1. decode the request (bounded; a malformed one gets a ``MalformedRequest`` answer, the connection stays);
2. make the request's KMS calls through the SDK, every one attested (a Recipient; the plaintext opened
   here; via the parent's vsock-proxy; a KMS error is answered with its AWS error name, e.g.
   ``AccessDeniedException``):

   * random bytes: ``kms.random_bytes(n)``, GenerateRandom calls of at most 1024 bytes;
   * a data key: ``kms.generate_data_key(KeyId, KeySpec, EncryptionContext)``;
   * a secret check: ``kms.decrypt(CiphertextBlob, EncryptionContext)``, then SHA-384 of the plaintext,
     which is dropped at once: only the digest leaves;
3. encrypt what is secret to the caller's ``public_key`` as a CiphertextForRecipient
   (:func:`attestation.cms.build_ciphertext_for_recipient`, KMS's own format): random bytes when a key is
   sent, a data key always (its request requires the key);
4. ask the NSM for a fresh document with ``user_data`` binding the answer payload exactly as sent (the
   rules per kind are :func:`attestation.provider_wire.payload_digest`'s, in that module's docstring) and
   ``nonce`` = the caller's nonce; answer payload and document.

At start it seeds the kernel's entropy pool with 1024 bytes from the NSM (``enclave.seed_entropy``, as
kmstool-enclave-cli does). In a real enclave (no ``NITRO_SIM_*`` variable set) a failure to seed is fatal;
in simulation, where the app shares the host's kernel and usually lacks CAP_SYS_ADMIN, it is said in one
stderr line and the app goes on. It makes ONE KMS client (one RSA key pair) for its lifetime, then prints
its ready line (``enclave-provider listening on vsock port P``) on stdout.

Serving rules: a thread per connection, at most :data:`MAX_CONNECTIONS` at once (one more is answered
``TooManyConnections`` and closed); a connection must deliver each whole request within
:data:`IDLE_TIMEOUT_SECONDS` of the previous answer (or of connecting), and take each answer within as
long, or it is closed. SIGTERM or SIGINT stops it: no new connections, open ones closed, the socket
removed, exit status 0. Nothing secret is logged: no random bytes, ciphertexts, nonces or documents, only
error names and counts. Exit status 2 for a usage error, 1 when it cannot start.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from attestation.cms import build_ciphertext_for_recipient
from attestation.errors import AttestationError
from attestation.provider_wire import (
    DEFAULT_PORT,
    ERROR_INTERNAL,
    ERROR_MALFORMED_REQUEST,
    ERROR_REQUEST_TOO_LARGE,
    ERROR_TOO_MANY_CONNECTIONS,
    MAX_REQUEST_BODY_BYTES,
    Answer,
    AnyAnswer,
    DataKeyAnswer,
    DataKeyRequest,
    ErrorAnswer,
    FrameReader,
    FrameTooLargeError,
    MalformedProviderMessageError,
    RandomRequest,
    Request,
    SecretCheckAnswer,
    SecretCheckRequest,
    data_key_payload,
    decode_request,
    encode_answer,
    encode_frame,
    payload_digest,
)
from enclave import vsock
from enclave._entropy import seed_entropy
from enclave.app import vsock_port
from enclave.errors import ClientError, EnclaveError, EntropyError, ResponseError
from enclave.kms import client
from enclave.nsm import open_nsm

__all__ = ["IDLE_TIMEOUT_SECONDS", "MAX_CONNECTIONS", "Provider", "main", "serve"]

PROG = "enclave-provider"
#: Connections served at once (a thread each).
MAX_CONNECTIONS = 32
#: How long a connection may take to deliver its next whole request, or to take an answer.
IDLE_TIMEOUT_SECONDS = 30.0
#: How long shutdown waits for connection threads (one may be inside a KMS call).
SHUTDOWN_SECONDS = 5.0
#: NSM bytes credited to the kernel pool at start (kmstool-enclave-cli seeds 1024).
SEED_BYTES = 1024
#: One ``recv``: a whole request frame and then some.
RECV_BYTES = 2 * MAX_REQUEST_BODY_BYTES


class KmsSource(Protocol):
    """What the provider needs from the KMS client (``enclave.client("kms")`` is one)."""

    def random_bytes(self, n: int) -> bytes: ...

    def generate_data_key(  # boto3's parameter names
        self,
        *,
        KeyId: str | None = None,  # noqa: N803
        KeySpec: str | None = None,  # noqa: N803
        EncryptionContext: Any = None,  # noqa: N803
    ) -> dict[str, Any]: ...

    def decrypt(
        self,
        *,
        CiphertextBlob: bytes | None = None,  # noqa: N803 - boto3's parameter names
        EncryptionContext: Any = None,  # noqa: N803
    ) -> dict[str, Any]: ...


class Attester(Protocol):
    """What the provider needs from the NSM (``enclave.nsm.open_nsm()`` is one)."""

    def attestation(
        self, *, user_data: bytes | None = None, nonce: bytes | None = None, public_key: bytes | None = None
    ) -> bytes: ...


def _log(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


class Provider:
    """The request handler, without sockets: a request's frame body in, the answer's frame body out."""

    def __init__(self, kms: KmsSource, nsm: Attester) -> None:
        self._kms = kms
        self._nsm = nsm

    def answer(self, body: bytes) -> bytes:
        """The encoded answer to one request body (never raises for anything the request or KMS did)."""
        return encode_answer(self.handle(body))

    def handle(self, body: bytes) -> AnyAnswer:
        try:
            # (1) decode and check the request
            request = decode_request(body)
        except MalformedProviderMessageError as exc:
            return ErrorAnswer.of(ERROR_MALFORMED_REQUEST, str(exc))
        try:
            return self._serve(request)
        except ClientError as exc:  # KMS answered an error: pass its AWS name on
            message = str(exc.response.get("Error", {}).get("Message", ""))
            try:
                return ErrorAnswer.of(exc.code, message)
            except ValueError:  # a name that is no identifier (the host is not trusted): the generic one
                return ErrorAnswer.of(ClientError.__name__, message)
        except (EnclaveError, AttestationError) as exc:  # transport, NSM, decryption: the class names it
            _log(f"request failed: {type(exc).__name__}")
            return ErrorAnswer.of(type(exc).__name__, str(exc))
        except Exception as exc:  # never let one request take the provider down; say only the type
            _log(f"internal error serving a request: {type(exc).__name__}")
            return ErrorAnswer.of(ERROR_INTERNAL, f"internal error ({type(exc).__name__})")

    def _serve(self, request: Request) -> Answer | DataKeyAnswer | SecretCheckAnswer:
        if isinstance(request, DataKeyRequest):
            return self._data_key(request)
        if isinstance(request, SecretCheckRequest):
            return self._check_secret(request)
        return self._random(request)

    def _data_key(self, request: DataKeyRequest) -> DataKeyAnswer:
        # (2) an attested GenerateDataKey, opened inside this enclave (the SDK checked the key's length)
        result = self._kms.generate_data_key(
            KeyId=request.key_id, KeySpec=request.key_spec, EncryptionContext=request.encryption_context
        )
        blob, arn = result.get("CiphertextBlob"), result.get("KeyId")
        if not isinstance(blob, bytes) or not isinstance(arn, str):
            raise ResponseError("KMS answered GenerateDataKey without CiphertextBlob or KeyId")
        # (3) the data key leaves only as a CiphertextForRecipient to the caller's key
        ciphertext = build_ciphertext_for_recipient(result["Plaintext"], _rsa_key(request.public_key))
        # (4) a fresh document binding the whole payload: ciphertext, blob and ARN
        digest = payload_digest(data_key_payload(ciphertext, blob, arn))
        document = self._nsm.attestation(user_data=digest, nonce=request.nonce)
        return DataKeyAnswer(ciphertext=ciphertext, ciphertext_blob=blob, key_arn=arn, document=document)

    def _check_secret(self, request: SecretCheckRequest) -> SecretCheckAnswer:
        # (2) an attested Decrypt, opened inside this enclave; only its digest is kept
        result = self._kms.decrypt(
            CiphertextBlob=request.ciphertext_blob, EncryptionContext=request.encryption_context
        )
        digest = hashlib.sha384(result.pop("Plaintext")).digest()
        # (4) the digest is the whole payload and the document's user_data
        document = self._nsm.attestation(user_data=digest, nonce=request.nonce)
        return SecretCheckAnswer(secret_sha384=digest, document=document)

    def _random(self, request: RandomRequest) -> Answer:
        # (2) attested random bytes from KMS, opened inside this enclave
        plaintext = self._kms.random_bytes(request.number_of_bytes)
        if len(plaintext) != request.number_of_bytes:
            raise RuntimeError("the KMS client returned the wrong number of bytes")
        # (3) to the caller's key, as KMS's CiphertextForRecipient, if it sent one
        payload = plaintext
        if request.public_key is not None:
            payload = build_ciphertext_for_recipient(plaintext, _rsa_key(request.public_key))
        # (4) a fresh document binding the payload as sent, and the caller's nonce
        document = self._nsm.attestation(user_data=payload_digest(payload), nonce=request.nonce)
        return Answer(payload=payload, encrypted=request.public_key is not None, document=document)


def _rsa_key(der: bytes) -> rsa.RSAPublicKey:
    key = serialization.load_der_public_key(der)
    if not isinstance(key, rsa.RSAPublicKey):  # pragma: no cover - the request's constructor checked it
        raise TypeError("public_key is not RSA")
    return key


class _Server:
    """The socket shell: accept loop on the main thread, a blocking thread per connection."""

    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._mutex = threading.Lock()

    def accept(self, conn: socket.socket) -> None:
        with self._mutex:
            if len(self._connections) < MAX_CONNECTIONS:
                thread = threading.Thread(target=self._serve, args=(conn,), name="provider-conn", daemon=True)
                self._connections[conn] = thread
                thread.start()
                return
        # One past the bound: say so (a small frame fits the fresh socket's buffer) and close.
        with contextlib.suppress(OSError), conn:
            conn.setblocking(False)
            busy = ErrorAnswer.of(ERROR_TOO_MANY_CONNECTIONS, f"at most {MAX_CONNECTIONS} connections")
            conn.send(encode_frame(encode_answer(busy)))

    def _serve(self, conn: socket.socket) -> None:
        reader = FrameReader(MAX_REQUEST_BODY_BYTES)
        deadline = time.monotonic() + IDLE_TIMEOUT_SECONDS
        try:
            while (left := deadline - time.monotonic()) > 0:
                conn.settimeout(left)
                data = conn.recv(RECV_BYTES)
                if not data:
                    return  # the client left (even mid-frame): only this connection ends
                try:
                    bodies = reader.feed(data)
                except FrameTooLargeError as exc:
                    conn.settimeout(IDLE_TIMEOUT_SECONDS)
                    too_large = ErrorAnswer.of(ERROR_REQUEST_TOO_LARGE, str(exc))
                    conn.sendall(encode_frame(encode_answer(too_large)))
                    return
                for body in bodies:
                    answer = self.provider.answer(body)
                    conn.settimeout(IDLE_TIMEOUT_SECONDS)
                    conn.sendall(encode_frame(answer))
                if bodies:
                    deadline = time.monotonic() + IDLE_TIMEOUT_SECONDS
        except OSError:
            pass  # timed out, the client went away, or shutdown closed the connection
        finally:
            with self._mutex:
                self._connections.pop(conn, None)
            conn.close()

    def close_clients(self, *, timeout: float) -> None:
        with self._mutex:
            connections = list(self._connections.items())
        for conn, _ in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv
        deadline = time.monotonic() + timeout
        for _, thread in connections:
            thread.join(max(0.0, deadline - time.monotonic()))


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _wake(signum: int, frame: object) -> None:
    """A no-op Python handler: the C handler has already written the signal to the wakeup pipe."""


def _stop_requested(wake_read: int) -> bool:
    stop = False
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(wake_read, 64):
            stop = stop or any(signum in _STOP_SIGNALS for signum in chunk)
    return stop


def serve(listener: socket.socket, provider: Provider, *, ready_line: str | None = None) -> None:
    """Serve ``provider`` on ``listener`` until SIGTERM or SIGINT (main thread only: it sets the handlers).

    The signals only wake the accept loop through a wakeup pipe; the loop then stops accepting, closes the
    listener and the connections. The caller removes a simulated socket's path.
    """
    server = _Server(provider)
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    previous = {signum: signal.signal(signum, _wake) for signum in _STOP_SIGNALS}
    previous_fd = signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
    try:
        if ready_line:
            print(ready_line, flush=True)
        while True:
            ready, _, _ = select.select([listener.fileno(), wake_read], [], [])
            if wake_read in ready and _stop_requested(wake_read):
                break
            if listener.fileno() not in ready:
                continue
            try:
                conn, _ = listener.accept()
            except OSError:
                continue  # a client that gave up before we accepted it
            server.accept(conn)
    finally:
        listener.close()
        server.close_clients(timeout=SHUTDOWN_SECONDS)
        signal.set_wakeup_fd(previous_fd)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        os.close(wake_read)
        os.close(wake_write)


def _seed(simulated: bool) -> None:
    """Seed the kernel pool from the NSM; in simulation a refusal by the kernel is said and tolerated."""
    try:
        seed_entropy(SEED_BYTES)
    except EntropyError as exc:
        if not simulated:
            raise
        _log(f"entropy pool not seeded (simulation, going on): {exc}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument(
        "--port",
        type=vsock_port,
        default=DEFAULT_PORT,
        help=f"vsock port to serve on (default {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--proxy-port", type=vsock_port, default=vsock.DEFAULT_PROXY_PORT, help="vsock-proxy port"
    )
    parser.add_argument("--region", default=None, help="KMS region (default: the SDK's resolution)")
    args = parser.parse_args(argv)
    simulated = vsock.is_simulated()
    try:
        _seed(simulated)  # first, as kmstool-enclave-cli does: the RSA key pair is made next
        kms = client("kms", region_name=args.region, proxy_port=args.proxy_port)
    except ValueError as exc:  # a region the SDK refuses: a usage error, one line
        parser.error(str(exc))
    except (EnclaveError, AttestationError, OSError) as exc:  # no NSM, no credentials, ...
        _log(f"error: {type(exc).__name__}: {exc}")
        return 1
    path: Path | None = None
    try:
        with kms:
            address = vsock.listen_address(args.port, simulated=simulated)
            listener = vsock.listen(args.port, simulated=simulated)
            path = address if isinstance(address, Path) else None
            where = f" (simulated at {path})" if path else ""
            serve(
                listener,
                Provider(kms, open_nsm()),
                ready_line=f"{PROG} listening on vsock port {args.port}{where}",
            )
    except (EnclaveError, AttestationError, OSError) as exc:
        _log(f"error: {type(exc).__name__}: {exc}")
        return 1
    finally:
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    _log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
