"""The provider app without processes: the request handler with a fake KMS and a simulated NSM, the
connection shell over socket pairs, and the command line's start-up errors."""

from __future__ import annotations

import hashlib
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from attestation.cms import decrypt_ciphertext_for_recipient
from attestation.document import decode_document
from attestation.errors import NSMError
from attestation.nsm import NSM
from attestation.pki import SimulatedPKI, new_module_id
from attestation.provider_wire import (
    MAX_ANSWER_BODY_BYTES,
    Answer,
    ErrorAnswer,
    FrameReader,
    RandomRequest,
    decode_answer,
    encode_frame,
    encode_request,
)
from enclave import provider
from enclave.errors import EndpointConnectionError, EntropyError, error_class
from enclave.provider import Provider, _Server

PCR0 = bytes.fromhex("a1" * 48)
NONCE = b"n" * 32


class FakeKMS:
    """Stands in for the KMS client: fixed bytes, or the exception it is told to raise."""

    def __init__(self) -> None:
        self.fail: Exception | None = None
        self.short = False
        self.calls: list[int] = []

    def random_bytes(self, n: int) -> bytes:
        self.calls.append(n)
        if self.fail is not None:
            raise self.fail
        return bytes(i % 251 for i in range(n - self.short))


class SimNSM:
    """The NSM core behind the client's attestation() signature (the clock read here, as nsm-sim does)."""

    def __init__(self, home: Path) -> None:
        now = datetime.now(UTC)
        pki = SimulatedPKI.load_or_create(home, at=now)
        self.nsm = NSM(pki=pki, module_id=new_module_id(pki.instance_id, at=now), pcrs={0: PCR0})
        self.fail: Exception | None = None

    def attestation(
        self, *, user_data: bytes | None = None, nonce: bytes | None = None, public_key: bytes | None = None
    ) -> bytes:
        if self.fail is not None:
            raise self.fail
        return self.nsm.attestation(
            user_data=user_data, nonce=nonce, public_key=public_key, at=datetime.now(UTC)
        )


@pytest.fixture
def kms() -> FakeKMS:
    return FakeKMS()


@pytest.fixture
def nsm(sim_home: Path) -> SimNSM:
    return SimNSM(sim_home)


@pytest.fixture
def handler(kms: FakeKMS, nsm: SimNSM) -> Provider:
    return Provider(kms, nsm)


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _spki(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_plaintext_answer_is_bound_to_its_document(handler: Provider, kms: FakeKMS) -> None:
    answer = handler.handle(encode_request(RandomRequest(number_of_bytes=32, nonce=NONCE)))
    assert isinstance(answer, Answer)
    assert not answer.encrypted
    assert answer.payload == bytes(range(32))
    doc = decode_document(answer.document).document
    assert doc.user_data == hashlib.sha384(answer.payload).digest()
    assert doc.nonce == NONCE
    assert doc.pcrs[0] == PCR0
    assert doc.public_key is None
    assert kms.calls == [32]


def test_encrypted_answer_opens_with_the_callers_key(handler: Provider, key: rsa.RSAPrivateKey) -> None:
    request = RandomRequest(number_of_bytes=4096, nonce=NONCE, public_key=_spki(key))
    answer = handler.handle(encode_request(request))
    assert isinstance(answer, Answer)
    assert answer.encrypted
    assert decrypt_ciphertext_for_recipient(answer.payload, key) == bytes(i % 251 for i in range(4096))
    doc = decode_document(answer.document).document
    assert doc.user_data == hashlib.sha384(answer.payload).digest()  # the ciphertext, exactly as sent


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\xff\xff", "invalid CBOR"),
        (cbor2.dumps({"bytes": 0, "nonce": NONCE}), "bytes must be an integer in 1..4096"),
        (cbor2.dumps({"bytes": 8, "nonce": b"short"}), "nonce must be 16..1024 bytes"),
    ],
    ids=["garbage", "zero-bytes", "short-nonce"],
)
def test_malformed_requests_are_answered(handler: Provider, kms: FakeKMS, body: bytes, message: str) -> None:
    answer = handler.handle(body)
    assert isinstance(answer, ErrorAnswer)
    assert answer.error == "MalformedRequest"
    assert message in answer.message
    assert kms.calls == []


def test_kms_error_is_passed_on_by_its_aws_name(handler: Provider, kms: FakeKMS) -> None:
    error = {"Error": {"Code": "AccessDeniedException", "Message": "not for this PCR0"}}
    kms.fail = error_class("AccessDeniedException")(error, "GenerateRandom")
    answer = handler.handle(encode_request(RandomRequest(number_of_bytes=8, nonce=NONCE)))
    assert answer == ErrorAnswer(error="AccessDeniedException", message="not for this PCR0")


@pytest.mark.parametrize("code", ["Not An Identifier!", "E" * 200])
def test_kms_error_name_that_is_no_identifier_is_client_error(
    handler: Provider, kms: FakeKMS, code: str
) -> None:
    kms.fail = error_class(code)({"Error": {"Code": code, "Message": "odd"}}, "GenerateRandom")
    answer = handler.handle(encode_request(RandomRequest(number_of_bytes=8, nonce=NONCE)))
    assert answer == ErrorAnswer(error="ClientError", message="odd")


@pytest.mark.parametrize(
    ("where", "exc"),
    [
        ("kms", EndpointConnectionError("vsock://3:8000", "Connection refused")),
        ("nsm", NSMError("InternalError", "device gone")),
    ],
    ids=["kms-unreachable", "nsm-error"],
)
def test_sdk_and_nsm_errors_are_named_by_class(
    handler: Provider, kms: FakeKMS, nsm: SimNSM, where: str, exc: Exception
) -> None:
    (kms if where == "kms" else nsm).fail = exc
    answer = handler.handle(encode_request(RandomRequest(number_of_bytes=8, nonce=NONCE)))
    assert answer == ErrorAnswer(error=type(exc).__name__, message=str(exc))


def test_unexpected_errors_say_only_their_type(
    handler: Provider, kms: FakeKMS, capsys: pytest.CaptureFixture[str]
) -> None:
    kms.fail = RuntimeError("secret detail 0123")
    answer = handler.handle(encode_request(RandomRequest(number_of_bytes=8, nonce=NONCE)))
    assert answer == ErrorAnswer(error="InternalError", message="internal error (RuntimeError)")
    err = capsys.readouterr().err
    assert "RuntimeError" in err
    assert "secret" not in err


def test_wrong_length_from_kms_is_an_internal_error(handler: Provider, kms: FakeKMS) -> None:
    kms.short = True
    answer = handler.handle(encode_request(RandomRequest(number_of_bytes=8, nonce=NONCE)))
    assert isinstance(answer, ErrorAnswer)
    assert answer.error == "InternalError"


# -- the connection shell, over socket pairs ---


@pytest.fixture
def server(handler: Provider) -> Iterator[_Server]:
    srv = _Server(handler)
    yield srv
    srv.close_clients(timeout=5)


def _read_answer(sock: socket.socket) -> Answer | ErrorAnswer | None:
    reader = FrameReader(MAX_ANSWER_BODY_BYTES)
    while data := sock.recv(65536):
        if bodies := reader.feed(data):
            return decode_answer(bodies[0])
    return None


def _connected(server: _Server) -> socket.socket:
    ours, theirs = socket.socketpair()
    ours.settimeout(30)
    server.accept(theirs)
    return ours


def test_connection_survives_bad_requests(server: _Server) -> None:
    with _connected(server) as sock:
        sock.sendall(encode_frame(b"\x00garbage"))
        bad = _read_answer(sock)
        assert isinstance(bad, ErrorAnswer)
        assert bad.error == "MalformedRequest"
        # the same connection, byte by byte
        for byte in encode_frame(encode_request(RandomRequest(number_of_bytes=16, nonce=NONCE))):
            sock.sendall(bytes([byte]))
        assert isinstance(_read_answer(sock), Answer)


def test_oversized_frame_is_answered_then_closed(server: _Server) -> None:
    with _connected(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = _read_answer(sock)
        assert isinstance(answer, ErrorAnswer)
        assert answer.error == "RequestTooLarge"
        assert sock.recv(1) == b""  # closed


def test_pipelined_requests_are_answered_in_order(server: _Server) -> None:
    with _connected(server) as sock:
        sock.sendall(
            b"".join(
                encode_frame(encode_request(RandomRequest(number_of_bytes=n, nonce=NONCE))) for n in (1, 2, 3)
            )
        )
        reader = FrameReader(MAX_ANSWER_BODY_BYTES)
        bodies: list[bytes] = []
        while len(bodies) < 3:
            bodies += reader.feed(sock.recv(65536))
        sizes = []
        for body in bodies:
            answer = decode_answer(body)
            assert isinstance(answer, Answer)
            sizes.append(len(answer.payload))
        assert sizes == [1, 2, 3]


def test_idle_connection_is_closed(server: _Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(provider, "IDLE_TIMEOUT_SECONDS", 0.05)
    with _connected(server) as sock:
        sock.sendall(b"\x00\x00")  # half a header, then nothing
        assert sock.recv(1) == b""


def test_one_connection_past_the_bound_is_refused(server: _Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(provider, "MAX_CONNECTIONS", 1)
    with _connected(server) as first, _connected(server) as second:
        busy = _read_answer(second)
        assert busy == ErrorAnswer(error="TooManyConnections", message="at most 1 connections")
        first.sendall(encode_frame(encode_request(RandomRequest(number_of_bytes=4, nonce=NONCE))))
        assert isinstance(_read_answer(first), Answer)


def test_client_leaving_mid_frame_ends_only_its_connection(server: _Server) -> None:
    with _connected(server) as sock:
        sock.sendall(encode_frame(b"\xa0" * 10)[:7])
    with _connected(server) as sock:
        sock.sendall(encode_frame(encode_request(RandomRequest(number_of_bytes=4, nonce=NONCE))))
        assert isinstance(_read_answer(sock), Answer)


def test_close_clients_wakes_waiting_connections(handler: Provider) -> None:
    srv = _Server(handler)
    sock = _connected(srv)
    done = threading.Event()

    def closer() -> None:
        srv.close_clients(timeout=30)
        done.set()

    thread = threading.Thread(target=closer)
    thread.start()
    thread.join(30)
    assert done.is_set()
    assert sock.recv(1) == b""
    sock.close()


# -- start-up ---


@pytest.mark.parametrize("argv", [["--port", "0"], ["--port", "x"], ["--proxy-port", "99999999999"]])
def test_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        provider.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid vsock_port value" in err
    assert "Traceback" not in err


def test_missing_nsm_is_one_line(
    sim_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NITRO_SIM_NSM", str(sim_home / "no-nsm.sock"))
    monkeypatch.setenv("NITRO_SIM_CID", "16")
    assert provider.main([]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "enclave-provider: error: NSMDeviceError" in err


def test_entropy_refusal_is_tolerated_only_in_simulation(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse(n: int) -> int:
        raise EntropyError("adding entropy to the kernel pool is not permitted")

    monkeypatch.setattr(provider, "seed_entropy", refuse)
    provider._seed(simulated=True)
    err = capsys.readouterr().err
    assert err == (
        "enclave-provider: entropy pool not seeded (simulation, going on): "
        "adding entropy to the kernel pool is not permitted\n"
    )
    with pytest.raises(EntropyError):
        provider._seed(simulated=False)
