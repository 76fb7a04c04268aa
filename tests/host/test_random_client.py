"""attested-random without processes: each verification step refuses what it should, the command lines'
usage errors (fetch, data-key, check-secret), and one whole fetch against an in-test provider on the simulated
vsock socket."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from attestation.cms import build_ciphertext_for_recipient
from attestation.eif import build_eif, read_eif
from attestation.nsm import NSM
from attestation.pki import SimulatedPKI, new_module_id
from attestation.provider_wire import (
    MAX_REQUEST_BODY_BYTES,
    Answer,
    ErrorAnswer,
    FrameReader,
    RandomRequest,
    decode_request,
    encode_answer,
    encode_frame,
    payload_digest,
)
from attestation.sim import vsock_socket_path
from attestation.verify import Verifier, aws_nitro_root
from host import random_client
from host._provider_client import exchange, verify_answer
from host.random_client import ProviderError, RefusedError, main

PCR0 = bytes.fromhex("a1" * 48)
NONCE = b"\x11" * 32
RANDOM = bytes(range(32))


@pytest.fixture
def nsm(sim_home: Path) -> NSM:
    now = datetime.now(UTC)
    pki = SimulatedPKI.load_or_create(sim_home, at=now)
    return NSM(pki=pki, module_id=new_module_id(pki.instance_id, at=now), pcrs={0: PCR0})


@pytest.fixture
def verifier(sim_home: Path, nsm: NSM) -> Verifier:
    return Verifier(roots=[(sim_home / "pki" / "root.crt").read_bytes()])


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _spki(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _answer(nsm: NSM, payload: bytes, *, encrypted: bool = False, nonce: bytes = NONCE) -> Answer:
    document = nsm.attestation(user_data=payload_digest(payload), nonce=nonce, at=datetime.now(UTC))
    return Answer(payload=payload, encrypted=encrypted, document=document)


def _verify(
    answer: Answer | ErrorAnswer,
    verifier: Verifier,
    *,
    request: RandomRequest | None = None,
    private_key: rsa.RSAPrivateKey | None = None,
    pcr0: bytes = PCR0,
) -> random_client.Fetched:
    return verify_answer(
        answer,
        request=request or RandomRequest(number_of_bytes=len(RANDOM), nonce=NONCE),
        private_key=private_key,
        verifier=verifier,
        pcr0=pcr0,
        at=datetime.now(UTC),
    )


# -- the pipeline ---


def test_plaintext_answer_verifies(nsm: NSM, verifier: Verifier) -> None:
    fetched = _verify(_answer(nsm, RANDOM), verifier)
    assert fetched.random == RANDOM
    assert fetched.document.module_id == nsm.module_id
    assert not fetched.encrypted


def test_encrypted_answer_verifies_and_opens(nsm: NSM, verifier: Verifier, key: rsa.RSAPrivateKey) -> None:
    request = RandomRequest(number_of_bytes=len(RANDOM), nonce=NONCE, public_key=_spki(key))
    blob = build_ciphertext_for_recipient(RANDOM, key.public_key())
    fetched = _verify(_answer(nsm, blob, encrypted=True), verifier, request=request, private_key=key)
    assert fetched.random == RANDOM
    assert fetched.encrypted


def test_error_answer_is_a_provider_error(verifier: Verifier) -> None:
    with pytest.raises(ProviderError, match="provider error AccessDeniedException: denied"):
        _verify(ErrorAnswer(error="AccessDeniedException", message="denied"), verifier)


def test_provider_messages_are_printed_as_one_safe_line(
    sim_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = vsock_socket_path(16, 5005, sim_home)
    path.parent.mkdir(parents=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen(1)
        hostile = ErrorAnswer(error="AccessDeniedException", message="two\nlines \x1b[2J")

        def answer() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(encode_frame(encode_answer(hostile)))

        thread = threading.Thread(target=answer)
        thread.start()
        (sim_home / "pki").mkdir()
        (sim_home / "pki" / "root.crt").write_bytes(aws_nitro_root().public_bytes(serialization.Encoding.PEM))
        assert main(GOOD) == 1
        thread.join(30)
    err = capsys.readouterr().err
    assert err == "attested-random: provider error AccessDeniedException: two\\nlines \\x1b[2J\n"


def test_plaintext_to_an_encrypted_request_is_refused(
    nsm: NSM, verifier: Verifier, key: rsa.RSAPrivateKey
) -> None:
    request = RandomRequest(number_of_bytes=len(RANDOM), nonce=NONCE, public_key=_spki(key))
    with pytest.raises(RefusedError, match="answer check failed: we asked for a ciphertext") as info:
        _verify(_answer(nsm, RANDOM), verifier, request=request, private_key=key)
    assert info.value.check == "answer"


def test_unpinned_root_is_refused(nsm: NSM) -> None:
    with pytest.raises(
        RefusedError, match=r"document chain check failed: cabundle\[0\] .* is not a pinned root"
    ):
        _verify(_answer(nsm, RANDOM), Verifier(roots=[aws_nitro_root()]))


def test_garbage_document_is_refused(verifier: Verifier) -> None:
    with pytest.raises(RefusedError, match="document decode check failed"):
        _verify(Answer(payload=RANDOM, encrypted=False, document=b"\x84junk"), verifier)


def test_other_pcr0_is_refused(nsm: NSM, verifier: Verifier) -> None:
    with pytest.raises(RefusedError, match=r"PCR0 check failed: pcrs\[0\] is a1a1") as info:
        _verify(_answer(nsm, RANDOM), verifier, pcr0=b"\xb2" * 48)
    assert info.value.check == "PCR0"


def test_other_nonce_is_refused(nsm: NSM, verifier: Verifier) -> None:
    with pytest.raises(RefusedError, match="nonce check failed"):
        _verify(_answer(nsm, RANDOM, nonce=b"\x22" * 32), verifier)


def test_swapped_payload_is_refused(nsm: NSM, verifier: Verifier) -> None:
    good = _answer(nsm, RANDOM)
    swapped = Answer(payload=bytes(32), encrypted=False, document=good.document)
    with pytest.raises(RefusedError, match="user_data check failed"):
        _verify(swapped, verifier)


def test_ciphertext_not_for_our_key_is_refused(nsm: NSM, verifier: Verifier, key: rsa.RSAPrivateKey) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    request = RandomRequest(number_of_bytes=len(RANDOM), nonce=NONCE, public_key=_spki(key))
    blob = build_ciphertext_for_recipient(RANDOM, other.public_key())
    with pytest.raises(RefusedError, match="decryption check failed: unable to decrypt"):
        _verify(_answer(nsm, blob, encrypted=True), verifier, request=request, private_key=key)


def test_wrong_length_is_refused(nsm: NSM, verifier: Verifier) -> None:
    with pytest.raises(RefusedError, match="length check failed: asked for 32 bytes, got 31"):
        _verify(_answer(nsm, RANDOM[:31]), verifier)


# -- the transport ---


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (b"", "closed the connection without answering"),
        (encode_frame(b"x")[:3], "closed the connection without answering"),
        ((10**8).to_bytes(4, "big"), "MalformedAnswer.*over the"),
        (encode_frame(b"\xa0"), "MalformedAnswer: answer has no 'document'"),
    ],
    ids=["eof", "eof-mid-frame", "oversized", "empty-map"],
)
def test_exchange_refuses_bad_replies(reply: bytes, message: str) -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(reply)
        theirs.shutdown(socket.SHUT_WR)
        with pytest.raises(ProviderError, match=message):
            exchange(ours, RandomRequest(number_of_bytes=8, nonce=NONCE), timeout=30)


def test_exchange_gives_up_when_no_answer_comes() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs, pytest.raises(ProviderError, match="provider error Timeout: no answer within"):
        exchange(ours, RandomRequest(number_of_bytes=8, nonce=NONCE), timeout=0.05)


# -- the command line ---

GOOD = ["fetch", "--enclave-cid", "16", "--pcr0", PCR0.hex()]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: command"),
        (["fetch", "--enclave-cid", "16"], "one of the arguments --pcr0 --eif-path is required"),
        ([*GOOD, "--eif-path", "x.eif"], "not allowed with argument"),
        (["fetch", "--enclave-cid", "16", "--pcr0", "zz"], "--pcr0 must be hex"),
        (["fetch", "--enclave-cid", "16", "--pcr0", "a1" * 32], "--pcr0 must be 48 bytes"),
        (
            ["fetch", "--enclave-cid", "3", "--pcr0", PCR0.hex()],
            "--enclave-cid must be an integer in 4..4294967294",
        ),
        (["fetch", "--enclave-cid", "4294967295", "--pcr0", PCR0.hex()], "--enclave-cid must be"),
        (["fetch", "--enclave-cid", "1" * 5000, "--pcr0", PCR0.hex()], "--enclave-cid must be"),
        (["fetch", "--enclave-cid", "x", "--pcr0", PCR0.hex()], "--enclave-cid must be"),
        ([*GOOD, "--bytes", "0"], "--bytes must be an integer in 1..4096"),
        ([*GOOD, "--bytes", "4097"], "--bytes must be"),
        ([*GOOD, "--port", "0"], "--port must be an integer in 1..4294967295"),
        ([*GOOD, "--root", "/nonexistent/root.pem"], "--root /nonexistent/root.pem"),
        (["fetch", "--enclave-cid", "16", "--eif-path", "/nonexistent.eif"], "--eif-path /nonexistent.eif"),
    ],
)
def test_usage_errors(
    sim_home: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.startswith("attested-random: error: ")
    assert err.count("\n") == 1


def test_sim_root_missing_is_a_usage_error(sim_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(GOOD) == 2
    assert "--root sim: no simulated PKI" in capsys.readouterr().err


def test_corrupt_eif_is_a_usage_error(sim_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = sim_home / "bad.eif"
    bad.write_bytes(b".eif" + b"\x00" * 100)
    assert main(["fetch", "--enclave-cid", "16", "--eif-path", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"attested-random: error: --eif-path {bad}: ")
    assert err.count("\n") == 1


def test_nobody_listening_is_one_line(sim_home: Path, nsm: NSM, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*GOOD, "--wait", "0"]) == 1  # tried once: not the default 30 s of retries
    err = capsys.readouterr().err
    assert err == (
        "attested-random: provider error ConnectionError: "
        "cannot connect to vsock://16:5005: No such file or directory\n"
    )


@contextlib.contextmanager
def provider_at(path: Path, nsm: NSM, *, tamper: bool = False) -> Iterator[None]:
    """A one-connection provider on ``path`` that answers with the simulated NSM (tamper: flip a bit)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                reader = FrameReader(MAX_REQUEST_BODY_BYTES)
                bodies: list[bytes] = []
                while not bodies:
                    bodies = reader.feed(conn.recv(65536))
                request = decode_request(bodies[0])
                payload = hashlib.sha512(request.nonce).digest()[: request.number_of_bytes]
                document = nsm.attestation(
                    user_data=payload_digest(payload), nonce=request.nonce, at=datetime.now(UTC)
                )
                if tamper:
                    payload = bytes([payload[0] ^ 1]) + payload[1:]
                conn.sendall(
                    encode_frame(encode_answer(Answer(payload=payload, encrypted=False, document=document)))
                )

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(30)


def test_fetch_prints_what_it_verified(sim_home: Path, nsm: NSM, capsys: pytest.CaptureFixture[str]) -> None:
    with provider_at(vsock_socket_path(16, 5005, sim_home), nsm):
        assert main([*GOOD, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["bytes"] == 32
    assert len(bytes.fromhex(out["random_hex"])) == 32
    assert base64.b64decode(out["random_b64"]).hex() == out["random_hex"]
    assert out["verified"] == {
        **out["verified"],
        "module_id": nsm.module_id,
        "pcr0": PCR0.hex(),
        "nonce_ok": True,
        "digest_ok": True,
    }
    assert out["verified"]["root"].startswith("CN=sim.aws.nitro-enclaves")


def test_fetch_text_output_and_eif_pcr0(sim_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = build_eif(kernel=b"kernel", cmdline=b"console=ttyS0", ramdisks=[b"boot", b"app"], metadata=None)
    pcr0 = read_eif(image).measurements.pcr0
    eif = sim_home / "app.eif"
    eif.write_bytes(image)
    now = datetime.now(UTC)
    pki = SimulatedPKI.load_or_create(sim_home, at=now)
    enclave = NSM(pki=pki, module_id=new_module_id(pki.instance_id, at=now), pcrs={0: pcr0})
    with provider_at(vsock_socket_path(17, 5006, sim_home), enclave):
        assert (
            main(["fetch", "--enclave-cid", "17", "--port", "5006", "--eif-path", str(eif), "--bytes", "8"])
            == 0
        )
    out = capsys.readouterr().out
    assert f"  PCR0       {pcr0.hex()} (as expected)" in out
    assert "verified   8 bytes (plaintext) from enclave" in out
    assert "  nonce      ok (32 fresh bytes of ours)" in out


def test_tampered_payload_is_refused_exit_1(
    sim_home: Path, nsm: NSM, capsys: pytest.CaptureFixture[str]
) -> None:
    with provider_at(vsock_socket_path(16, 5005, sim_home), nsm, tamper=True):
        assert main(GOOD) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "attested-random: refused: user_data check failed: "
        "user_data is not the SHA-384 of the answer's payload\n"
    )


# -- data-key and check-secret: their command lines ---

TARGET = ["--enclave-cid", "16", "--pcr0", PCR0.hex()]
KEY = ["data-key", *TARGET, "--key-id", "alias/app"]
BLOB = base64.b64encode(b"\x01\x02blob").decode()
CHECK = ["check-secret", *TARGET, "--ciphertext-blob", BLOB]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["data-key", *TARGET], "the following arguments are required: --key-id"),
        (["data-key", "--enclave-cid", "16", "--key-id", "k"], "one of the arguments --pcr0 --eif-path"),
        ([*KEY, "--key-spec", "AES_512"], "--key-spec must be one of AES_256, AES_128"),
        ([*KEY, "--key-spec", "AES-256"], "--key-spec must be one of AES_256, AES_128"),
        ([*KEY, "--encryption-context", "novalue"], "--encryption-context takes KEY=VALUE, got 'novalue'"),
        ([*KEY, "--encryption-context", "=v"], "--encryption-context takes KEY=VALUE"),
        (["data-key", "--enclave-cid", "2", "--pcr0", PCR0.hex(), "--key-id", "k"], "--enclave-cid must be"),
        ([*KEY, "--eif-path", "x.eif"], "not allowed with argument"),
        (["check-secret", *TARGET], "the following arguments are required: --ciphertext-blob"),
        (
            ["check-secret", *TARGET, "--ciphertext-blob", "not base64!"],
            "--ciphertext-blob must be base64 or fileb://PATH",
        ),
        (
            ["check-secret", *TARGET, "--ciphertext-blob", "fileb:///nonexistent/blob"],
            "--ciphertext-blob /nonexistent/blob: No such file or directory",
        ),
        ([*CHECK, "--expect-sha384", "zz"], "--expect-sha384 must be hex"),
        ([*CHECK, "--expect-sha384", "ab" * 32], "--expect-sha384 must be 96 hex digits"),
        ([*CHECK, "--encryption-context", "k"], "--encryption-context takes KEY=VALUE"),
        (["check-secret", "--enclave-cid", "16", "--ciphertext-blob", BLOB], "one of the arguments --pcr0"),
        ([*CHECK, "--port", "0"], "--port must be an integer in 1..4294967295"),
    ],
)
def test_data_commands_usage_errors(
    sim_home: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("attested-random: error: ")
    assert message in captured.err
    assert captured.err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["data-key", *TARGET, "--key-id", ""], "key_id must be a string of 1..2048 characters"),
        (["data-key", *TARGET, "--key-id", "k" * 2049], "key_id must be a string of 1..2048 characters"),
        ([*KEY, "--encryption-context", "k=" + "v" * 2048], "encryption_context is over 2048 bytes"),
        (["check-secret", *TARGET, "--ciphertext-blob", ""], "ciphertext_blob must be 1..6144 bytes, got 0"),
        (
            ["check-secret", *TARGET, "--ciphertext-blob", base64.b64encode(b"b" * 6145).decode()],
            "ciphertext_blob must be 1..6144 bytes, got 6145",
        ),
        ([*CHECK, "--encryption-context", "k=" + "v" * 2048], "encryption_context is over 2048 bytes"),
        ([*KEY, "--wait", "-1"], "--wait must be a number of seconds in 0..3600, got '-1'"),
    ],
    ids=["empty-key-id", "long-key-id", "key-context", "empty-blob", "long-blob", "check-context", "wait"],
)
def test_what_the_protocol_bounds_is_a_usage_error_before_connecting(
    sim_home: Path, nsm: NSM, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Checked (and refused) before any connection, after the root is loaded: nobody listens on CID 16 here.
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err == f"attested-random: error: {message}\n"


def test_blob_file_over_the_bound_is_a_usage_error(
    sim_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    big = sim_home / "big.bin"
    big.write_bytes(b"b" * 6145)
    assert main(["check-secret", *TARGET, "--ciphertext-blob", f"fileb://{big}"]) == 2
    assert capsys.readouterr().err == f"attested-random: error: --ciphertext-blob {big}: over 6144 bytes\n"


def test_blob_from_an_endless_device_is_bounded(capsys: pytest.CaptureFixture[str]) -> None:
    # /dev/zero has no size to stat: the read stops one byte past the bound
    assert main(["check-secret", *TARGET, "--ciphertext-blob", "fileb:///dev/zero"]) == 2
    assert capsys.readouterr().err == "attested-random: error: --ciphertext-blob /dev/zero: over 6144 bytes\n"


def test_a_context_key_given_twice_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["check-secret", *TARGET, "--ciphertext-blob", "AAAA", "--encryption-context", "a=1"]
    assert main([*argv, "--encryption-context", "a=2"]) == 2
    assert capsys.readouterr().err == "attested-random: error: --encryption-context names 'a' twice\n"


@pytest.mark.parametrize("argv", [KEY, CHECK], ids=["data-key", "check-secret"])
def test_data_commands_nobody_listening_is_one_line(
    sim_home: Path, nsm: NSM, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, "--wait", "0"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "attested-random: provider error ConnectionError: "
        "cannot connect to vsock://16:5005: No such file or directory\n"
    )
