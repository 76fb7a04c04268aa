"""The SDK against a hostile "KMS" (or a hostile host in between): whatever comes back, GenerateRandom
raises the SDK's documented errors (``enclave.errors.EnclaveError``, or the attestation core's
``DecryptionError`` passed through), never a raw exception, and never reads without end (a stalled answer
is test_kms_client_wire.py's read timeout).

The peer is a tiny server on the simulated vsock (3, 8000) that reads one request and answers with canned
bytes. Timeouts here only bound the harness; the assertions are on what is raised.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

import enclave
from attestation.cms import _assemble, build_ciphertext_for_recipient, parse_ciphertext_for_recipient
from attestation.errors import DecryptionError
from attestation.sim import PARENT_CID, vsock_socket_path
from enclave import Config, errors
from enclave.errors import (
    ClientError,
    EnclaveError,
    ProtocolError,
    ResponseError,
)

#: The harness's bound on one read by the SDK (never asserted as a time).
READ_TIMEOUT = 5.0


class CannedPeer:
    """Answers every request on vsock (3, 8000) with ``answer``, then closes the connection.

    ``answer`` is bytes, or a callable given the connection (to stream, trickle or stall).
    """

    def __init__(self, answer: bytes | object) -> None:
        self.answer = answer
        self.path = vsock_socket_path(PARENT_CID, 8000)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.path))
        self.listener.listen(8)
        self.stop = threading.Event()
        self.requests = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(READ_TIMEOUT * 4)
                with contextlib.suppress(OSError):
                    self._read_request(conn)
                    self.requests += 1
                    if callable(self.answer):
                        self.answer(conn, self.stop)
                    else:
                        conn.sendall(self.answer)  # type: ignore[arg-type]

    @staticmethod
    def _read_request(conn: socket.socket) -> None:
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = conn.recv(65536)
            if not data:
                raise ConnectionError("closed")
            buf += data
        head, _, body = buf.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        while len(body) < length:
            body += conn.recv(65536)

    def close(self) -> None:
        self.stop.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join(timeout=READ_TIMEOUT * 6)
        self.path.unlink(missing_ok=True)


@pytest.fixture
def kms(sim_home: Path) -> Iterator[enclave.KMSClient]:
    client = enclave.client(
        "kms",
        region_name="us-east-1",
        aws_access_key_id="AKIDSIMULATED",
        aws_secret_access_key="sim/secret/key",
        nsm=_StubNSM(),
        use_ssl=False,
        config=Config(
            connect_timeout=READ_TIMEOUT, read_timeout=READ_TIMEOUT, retries={"total_max_attempts": 2}
        ),
    )
    client._sleep = lambda _seconds: None  # type: ignore[method-assign]  # no backoff waits in tests
    try:
        yield client
    finally:
        client.close()


class _StubNSM:
    def attestation(
        self, *, user_data: bytes | None = None, nonce: bytes | None = None, public_key: bytes | None = None
    ) -> bytes:
        return b"DOC"

    def get_random(self) -> bytes:
        return b"\x01" * 256


def _http(status: int, body: bytes, *, extra: bytes = b"", length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    return b"HTTP/1.1 %d X\r\nContent-Type: application/x-amz-json-1.1\r\n%sContent-Length: %d\r\n\r\n%s" % (
        status,
        extra,
        size,
        body,
    )


def _ok(payload: object) -> bytes:
    return _http(200, json.dumps(payload).encode())


def _stream_forever(chunk: bytes):  # type: ignore[no-untyped-def]
    def send(conn: socket.socket, stop: threading.Event) -> None:
        while not stop.is_set():
            conn.sendall(chunk)

    return send


_DEEP_JSON = b"[" * 200_000 + b"]" * 200_000

HOSTILE = {
    # framing
    "truncated-body": (_http(200, b'{"Ciphert', length=100), ProtocolError),
    "head-only-then-close": (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n", ProtocolError),
    "body-longer-than-length": (_http(200, b'{"a": 1}' * 4, length=8), ProtocolError),
    "length-too-big": (_http(200, b"", length=10**9), ProtocolError),
    "length-superscript": (b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\nab", ProtocolError),
    "not-http": (b"SSH-2.0-OpenSSH_9.6\r\n", ProtocolError),
    "huge-close-framed-body": (_stream_forever(b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 65536), ProtocolError),
    "endless-headers": (_stream_forever(b"X-A: " + b"a" * 1000 + b"\r\n"), ProtocolError),
    "endless-1xx": (_stream_forever(b"HTTP/1.1 100 Continue\r\n\r\n"), ProtocolError),
    "endless-trailers": (
        lambda c, s: (
            c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"),
            _stream_forever(b"T: 1\r\n")(c, s),
        ),
        ProtocolError,
    ),
    # bodies
    "200-not-json": (_http(200, b"<html>hi</html>"), ResponseError),
    "200-not-utf8": (_http(200, b"\xff\xfe{}"), ResponseError),
    "200-json-array": (_http(200, b"[1, 2]"), ResponseError),
    "200-deeply-nested-json": (_http(200, _DEEP_JSON), ResponseError),
    "200-huge-number": (_http(200, b"1" * 5000), ResponseError),
    "200-no-ciphertext": (_ok({"Plaintext": base64.b64encode(b"x" * 32).decode()}), ResponseError),
    "200-ciphertext-not-string": (_ok({"CiphertextForRecipient": 12}), ResponseError),
    "200-ciphertext-not-base64": (_ok({"CiphertextForRecipient": "***"}), ResponseError),
    "200-ciphertext-garbage": (
        _ok({"CiphertextForRecipient": base64.b64encode(b"\x30\x80junk").decode()}),
        DecryptionError,
    ),
    "200-ciphertext-empty-der": (_ok({"CiphertextForRecipient": "MAA="}), DecryptionError),
    # errors
    "400-no-type": (_http(400, b'{"message": "nope"}'), ClientError),
    "400-not-json": (_http(400, b"nope"), ClientError),
    "400-deeply-nested-json": (_http(400, _DEEP_JSON), ClientError),
    "400-type-not-string": (_http(400, b'{"__type": ["AccessDeniedException"]}'), ClientError),
    "400-type-odd": (_http(400, b'{"__type": "#:"}'), ClientError),
    "400-message-object": (
        _http(400, b'{"__type": "ValidationException", "message": {"a": [1]}}'),
        ClientError,
    ),
}


@pytest.mark.parametrize(("answer", "expected"), HOSTILE.values(), ids=HOSTILE.keys())
def test_generate_random_raises_only_documented_errors(
    kms: enclave.KMSClient, answer: bytes | object, expected: type[Exception]
) -> None:
    peer = CannedPeer(answer)
    try:
        with pytest.raises(Exception) as info:  # noqa: PT011 - the type is checked below, one line per kind
            kms.generate_random(NumberOfBytes=32)
    finally:
        peer.close()
    assert isinstance(info.value, EnclaveError | DecryptionError), repr(info.value)
    assert isinstance(info.value, expected), repr(info.value)
    assert len(str(info.value).splitlines()) <= 1, str(info.value)
    if isinstance(info.value, DecryptionError):
        assert str(info.value) == DecryptionError.MESSAGE


def test_error_names_make_a_bounded_number_of_classes(
    kms: enclave.KMSClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A new __type on every answer made a new class each time, kept for ever.
    table = dict(errors._ERROR_CLASSES)
    monkeypatch.setattr(errors, "_ERROR_CLASSES", table)
    names = [f"Hostile{i}Exception" for i in range(errors.MAX_ERROR_CLASSES + 10)]
    classes = [errors.error_class(name) for name in names]
    assert len(table) == errors.MAX_ERROR_CLASSES
    assert classes[-1] is ClientError
    # Past the bound the SDK still raises ClientError with the name KMS sent; known names keep their class.
    for body, expected in (
        (b'{"__type": "YetAnotherException"}', ClientError),
        (b'{"__type": "AccessDeniedException"}', kms.exceptions.AccessDeniedException),
    ):
        peer = CannedPeer(_http(400, body))
        try:
            with pytest.raises(expected) as info:
                kms.generate_random(NumberOfBytes=32)
        finally:
            peer.close()
        assert info.value.code == json.loads(body)["__type"]
    # A name the program asks for still gets a class of its own: if it got ClientError, an
    # ``except kms.exceptions.ProgramsOwnException`` would catch every error.
    own = kms.exceptions.ProgramsOwnException
    assert own is not ClientError
    assert issubclass(own, ClientError)
    assert kms.exceptions.ProgramsOwnException is own


def test_edited_blocks_of_an_earlier_blob_are_no_padding_oracle(kms: enclave.KMSClient) -> None:
    # The host replays a blob it saw, cut to one block, with each of the 256 values of the IV's last byte:
    # the one whose padding comes out valid (plaintext 15 bytes) was a ResponseError ("returned 15 random
    # bytes"), every other a DecryptionError: which one told the host the block's last plaintext byte.
    # Every outcome is now the one DecryptionError.
    public_key = load_der_public_key(kms.public_key_der)
    assert isinstance(public_key, rsa.RSAPublicKey)
    fields = parse_ciphertext_for_recipient(build_ciphertext_for_recipient(bytes(range(32)), public_key))
    blobs = iter(
        _assemble(
            fields.key_id,
            fields.encrypted_key,
            fields.iv[:15] + bytes([fields.iv[15] ^ x]),
            fields.ciphertext[:16],
        )
        for x in range(256)
    )

    def replay(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(_ok({"CiphertextForRecipient": base64.b64encode(next(blobs)).decode()}))

    peer = CannedPeer(replay)
    outcomes: set[tuple[type[Exception], str]] = set()
    try:
        for _ in range(256):
            try:
                kms.generate_random(NumberOfBytes=32)
            except Exception as error:  # every kind is collected and compared below
                outcomes.add((type(error), str(error)))
    finally:
        peer.close()
    assert outcomes == {(DecryptionError, DecryptionError.MESSAGE)}
