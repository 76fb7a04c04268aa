"""The KMS client's wire behaviour against a scripted HTTP peer on the simulated vsock (unit level).

End-to-end runs against the real kms-sim live in tests/integration; here a scripted peer lets each
transport and retry rule be exercised exactly: request shape and SigV4, error classes, retries, the
persistent connection, stale-connection reopen, timeouts.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

import enclave
from attestation import sigv4
from attestation.sim import PARENT_CID, vsock_socket_path
from enclave import Config
from enclave.errors import (
    ClientError,
    EndpointConnectionError,
    ParamValidationError,
    ReadTimeoutError,
    ResponseError,
)

AK, SK = "AKIDSIMULATED", "sim/secret/key"
AT = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)


class StubNSM:
    """Returns a marker document; the real NSM is exercised in tests/integration."""

    def __init__(self) -> None:
        self.calls: list[bytes | None] = []

    def attestation(self, *, user_data=None, nonce=None, public_key=None) -> bytes:
        self.calls.append(public_key)
        return b"DOC:" + (public_key or b"")[:8]

    def get_random(self) -> bytes:
        return b"\x01" * 256


Reply = Callable[[bytes, bytes], bytes | None]  # (head, body) -> raw response, or None to hang up


def json_error(status: int, code: str, message: str = "no") -> bytes:
    body = json.dumps({"__type": code, "message": message}).encode()
    return b"HTTP/1.1 %d X\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: %d\r\n\r\n%s" % (
        status,
        len(body),
        body,
    )


class ScriptedPeer:
    """Serves connections one at a time on vsock (3, port); answers request i with script[i]."""

    def __init__(self, port: int, script: list[Reply | bytes], *, close_after_each: bool = False) -> None:
        self.path = vsock_socket_path(PARENT_CID, port)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.path))
        self.listener.listen(8)
        self.script = script
        self.close_after_each = close_after_each
        self.requests: list[tuple[bytes, bytes]] = []
        self.connections = 0
        self.current: socket.socket | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            self.current = conn
            with conn:
                self._handle(conn)

    def _handle(self, conn: socket.socket) -> None:
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
            head, _, buf = buf.partition(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            while len(buf) < length:
                buf += conn.recv(65536)
            body, buf = buf[:length], buf[length:]
            self.requests.append((head, body))
            step = self.script[min(len(self.requests), len(self.script)) - 1]
            answer = step(head, body) if callable(step) else step
            if answer is None:
                if self.stop.wait(0):
                    return
                return  # hang up without answering
            if answer == b"HANG":
                self.stop.wait(30)
                return
            conn.sendall(answer)
            if self.close_after_each:
                return

    def close(self) -> None:
        self.stop.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes a blocked accept() on Linux
        self.listener.close()
        if self.current is not None:
            with contextlib.suppress(OSError):
                self.current.shutdown(socket.SHUT_RDWR)
        self.thread.join(timeout=10)


@pytest.fixture
def peer_factory(sim_home: Path) -> Iterator[Callable[..., ScriptedPeer]]:
    peers: list[ScriptedPeer] = []

    def make(script: list[Reply | bytes], **kw: bool) -> ScriptedPeer:
        peer = ScriptedPeer(8000, script, **kw)
        peers.append(peer)
        return peer

    yield make
    for peer in peers:
        peer.close()


_CLIENTS: list[enclave.KMSClient] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _CLIENTS:
        _CLIENTS.pop().close()


def make_client(**kw: object) -> enclave.KMSClient:
    sleeps: list[float] = []
    kms = enclave.client(
        "kms",
        region_name="eu-west-2",
        aws_access_key_id=AK,
        aws_secret_access_key=SK,
        aws_session_token="TOKEN",
        nsm=StubNSM(),
        use_ssl=False,
        config=kw.pop("config", Config(connect_timeout=5, read_timeout=5)),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )
    kms._sleep = sleeps.append  # record backoff instead of sleeping
    kms.sleeps = sleeps  # type: ignore[attr-defined]
    _CLIENTS.append(kms)
    return kms


def test_request_shape_and_signature(peer_factory: Callable[..., ScriptedPeer]) -> None:
    peer = peer_factory([json_error(400, "AccessDeniedException", "denied by policy")])
    kms = make_client()
    with pytest.raises(kms.exceptions.AccessDeniedException) as info:
        kms.generate_random(NumberOfBytes=32, CustomKeyStoreId="cks-1234567890abcdef0")
    error = info.value
    assert isinstance(error, ClientError)
    assert isinstance(error, enclave.EnclaveError)
    assert error.response["Error"] == {"Code": "AccessDeniedException", "Message": "denied by policy"}
    assert error.operation_name == "GenerateRandom"
    assert "An error occurred (AccessDeniedException) when calling the GenerateRandom operation" in str(error)
    assert len(peer.requests) == 1  # a 4xx is never retried

    head, body = peer.requests[0]
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST / HTTP/1.1"
    headers = [tuple(line.split(": ", 1)) for line in lines[1:]]
    named = {k.lower(): v for k, v in headers}
    assert named["host"] == "kms.eu-west-2.amazonaws.com"
    assert named["content-type"] == "application/x-amz-json-1.1"
    assert named["x-amz-target"] == "TrentService.GenerateRandom"
    assert named["x-amz-security-token"] == "TOKEN"
    payload = json.loads(body)
    assert payload["NumberOfBytes"] == 32
    assert payload["CustomKeyStoreId"] == "cks-1234567890abcdef0"
    assert payload["Recipient"]["KeyEncryptionAlgorithm"] == "RSAES_OAEP_SHA_256"
    assert base64.b64decode(payload["Recipient"]["AttestationDocument"]) == b"DOC:" + kms.public_key_der[:8]

    parsed = sigv4.parse_authorization(named["authorization"])
    assert parsed.access_key == AK
    assert parsed.region == "eu-west-2"
    assert parsed.service == "kms"
    assert parsed.signed_headers == (
        "content-type",
        "host",
        "x-amz-date",
        "x-amz-security-token",
        "x-amz-target",
    )
    expected = sigv4.request_signature(
        "POST",
        "/",
        "",
        headers,
        sigv4.payload_hash(body),
        authorization=parsed,
        secret_key=SK,
        amz_date_value=named["x-amz-date"],
    )
    assert expected == parsed.signature


def test_every_kms_error_name_maps_to_its_class(peer_factory: Callable[..., ScriptedPeer]) -> None:
    names = ["ValidationException", "CustomKeyStoreNotFoundException", "UnrecognizedClientException"]
    peer_factory(
        [json_error(400, name) for name in names] + [json_error(400, "com.amazonaws.kms#DisabledException:x")]
    )
    kms = make_client()
    for name in [*names, "DisabledException"]:
        with pytest.raises(ClientError) as info:
            kms.generate_random(NumberOfBytes=1)
        assert type(info.value) is getattr(kms.exceptions, name)
        assert info.value.code == name


def test_5xx_is_retried_then_raised(peer_factory: Callable[..., ScriptedPeer]) -> None:
    peer = peer_factory([json_error(500, "KMSInternalException")])
    kms = make_client()
    with pytest.raises(kms.exceptions.KMSInternalException) as info:
        kms.generate_random(NumberOfBytes=8)
    assert len(peer.requests) == 3
    assert len(kms.sleeps) == 2  # type: ignore[attr-defined]
    assert all(0 <= s <= 2 for s in kms.sleeps)  # type: ignore[attr-defined]
    assert info.value.response["ResponseMetadata"]["RetryAttempts"] == 2
    assert peer.connections == 1  # the same persistent connection throughout


def test_throttling_is_retried_with_configured_attempts(peer_factory: Callable[..., ScriptedPeer]) -> None:
    peer = peer_factory([json_error(400, "ThrottlingException")])
    kms = make_client(config=Config(connect_timeout=5, read_timeout=5, retries={"total_max_attempts": 5}))
    with pytest.raises(kms.exceptions.ThrottlingException):
        kms.generate_random(NumberOfBytes=8)
    assert len(peer.requests) == 5


def test_plaintext_instead_of_ciphertext_is_refused(peer_factory: Callable[..., ScriptedPeer]) -> None:
    body = json.dumps({"Plaintext": base64.b64encode(b"x" * 8).decode()}).encode()
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    peer_factory([ok])
    kms = make_client()
    with pytest.raises(ResponseError, match="without CiphertextForRecipient"):
        kms.generate_random(NumberOfBytes=8)


def test_stale_connection_is_reopened(peer_factory: Callable[..., ScriptedPeer]) -> None:
    peer = peer_factory([json_error(400, "ValidationException")], close_after_each=True)
    kms = make_client()
    for _ in range(3):
        with pytest.raises(kms.exceptions.ValidationException):
            kms.generate_random(NumberOfBytes=0)
    assert len(peer.requests) == 3
    assert peer.connections == 3


def test_connection_refused_after_retries(sim_home: Path) -> None:
    kms = make_client()
    with pytest.raises(EndpointConnectionError, match="Could not connect to the endpoint URL"):
        kms.generate_random(NumberOfBytes=8)
    assert len(kms.sleeps) == 2  # type: ignore[attr-defined]


def test_hang_up_before_answer_is_a_connection_error(peer_factory: Callable[..., ScriptedPeer]) -> None:
    peer = peer_factory([lambda head, body: None])
    kms = make_client()
    with pytest.raises(EndpointConnectionError, match="closed before any response"):
        kms.generate_random(NumberOfBytes=8)
    assert len(peer.requests) == 3


def test_read_timeout(peer_factory: Callable[..., ScriptedPeer]) -> None:
    peer_factory([b"HANG"])
    kms = make_client(config=Config(connect_timeout=5, read_timeout=0.2, retries={"total_max_attempts": 1}))
    with pytest.raises(ReadTimeoutError, match="Read timeout"):
        kms.generate_random(NumberOfBytes=8)


def test_parameter_types_checked_client_side(sim_home: Path) -> None:
    kms = make_client()
    for bad in (None, "32", 3.0, True):
        with pytest.raises(ParamValidationError):
            kms.generate_random(NumberOfBytes=bad)  # type: ignore[arg-type]


def test_client_options(sim_home: Path) -> None:
    with pytest.raises(ValueError, match="only the 'kms' client"):
        enclave.client("s3")
    with pytest.raises(ValueError, match="rsa_key_size"):
        make_client(rsa_key_size=1024)
    assert make_client(endpoint_url="http://127.0.0.1:4566").endpoint_url == "http://127.0.0.1:4566"
    assert make_client(proxy_port=8443).endpoint_url == "vsock://3:8443"
    with pytest.raises(ValueError, match="endpoint_url"):
        make_client(endpoint_url="ftp://x")


def test_credentials_from_kms_sim_home(sim_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(sim_home / "none"))
    with pytest.raises(enclave.EnclaveError, match="Unable to locate credentials"):
        enclave.client("kms", nsm=StubNSM())
    (sim_home / "kms").mkdir()
    (sim_home / "kms" / "credentials").write_text(
        "[nitro-sim]\naws_access_key_id = AKIASIM\naws_secret_access_key = s3cr3t\n"
    )
    kms = enclave.client("kms", nsm=StubNSM())
    _CLIENTS.append(kms)
    assert kms.region == "us-east-1"
    assert "s3cr3t" not in repr(kms._credentials)


def _cms_reply(kms: enclave.KMSClient, plaintext: bytes | None, blob: bytes | None = None) -> Reply:
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    from attestation.cms import build_ciphertext_for_recipient

    def reply(head: bytes, body: bytes) -> bytes:
        key = load_der_public_key(kms.public_key_der)
        data = blob if blob is not None else build_ciphertext_for_recipient(plaintext or b"", key)  # type: ignore[arg-type]
        payload = json.dumps(
            {"CiphertextForRecipient": base64.b64encode(data).decode(), "KeyId": None}
        ).encode()
        return b"HTTP/1.1 200 OK\r\nx-amzn-RequestId: req-1\r\nContent-Length: %d\r\n\r\n%s" % (
            len(payload),
            payload,
        )

    return reply


def test_success_decrypts_inside_and_reports_metadata(peer_factory: Callable[..., ScriptedPeer]) -> None:
    kms = make_client()
    secret = bytes(range(32))
    peer_factory([_cms_reply(kms, secret)])
    result = kms.generate_random(NumberOfBytes=32)
    assert result["Plaintext"] == secret
    assert result["ResponseMetadata"]["RequestId"] == "req-1"
    assert result["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert result["ResponseMetadata"]["RetryAttempts"] == 0
    assert set(result) == {"Plaintext", "ResponseMetadata"}


def test_wrong_length_is_refused_as_the_one_decryption_error(
    peer_factory: Callable[..., ScriptedPeer],
) -> None:
    from attestation.errors import DecryptionError

    kms = make_client()
    peer_factory([_cms_reply(kms, b"x" * 31)])
    with pytest.raises(DecryptionError, match=f"^{DecryptionError.MESSAGE}$"):
        kms.generate_random(NumberOfBytes=32)


def test_undecryptable_blob_is_one_opaque_error(peer_factory: Callable[..., ScriptedPeer]) -> None:
    from attestation.errors import DecryptionError

    kms = make_client()
    peer_factory([_cms_reply(kms, None, blob=b"\x30\x80garbage")])
    with pytest.raises(DecryptionError) as info:
        kms.generate_random(NumberOfBytes=32)
    assert str(info.value) == DecryptionError.MESSAGE
