"""The SDK's attested Decrypt / GenerateDataKey / GenerateDataKeyPair / DeriveSharedSecret against a scripted
peer on vsock (3, 8000): what goes on the wire, and what it accepts from a host that may lie.

The peer is a test instrument (the host in between, or a KMS that breaks the contract): it reads one
request, records its target and JSON body, and answers what the test computes from them, e.g. a
CiphertextForRecipient to the client's own key holding the wrong number of bytes. The same operations
against the real kms-sim are in test_kms_attested_ops_live.py.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

import enclave
from attestation.cms import build_ciphertext_for_recipient
from attestation.errors import DecryptionError
from attestation.sim import PARENT_CID, vsock_socket_path
from enclave import Config
from enclave.errors import ParamValidationError, ResponseError

#: The harness's bound on one read (never asserted as a time).
READ_TIMEOUT = 5.0
KEY_ARN = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"

#: (operation, JSON body) -> the answer's JSON object (status 200), or raw HTTP bytes.
Script = Callable[[str, dict[str, Any]], "dict[str, Any] | bytes"]


class ScriptedPeer:
    """Serves vsock (3, 8000): each request's target and body are recorded and answered by ``script``."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self.conns: list[socket.socket] = []
        self.path = vsock_socket_path(PARENT_CID, 8000)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.path))
        self.listener.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.conns.append(conn)
            with conn, contextlib.suppress(OSError):
                conn.settimeout(READ_TIMEOUT)
                while True:
                    request = self._read(conn)
                    if request is None:
                        break
                    self.seen.append(request)
                    answer = self.script(*request)
                    if isinstance(answer, dict):
                        body = json.dumps(answer).encode()
                        answer = (
                            b"HTTP/1.1 200 OK\r\nx-amzn-RequestId: r-1\r\nContent-Length: %d\r\n\r\n%s"
                            % (
                                len(body),
                                body,
                            )
                        )
                    conn.sendall(answer)

    @staticmethod
    def _read(conn: socket.socket) -> tuple[str, dict[str, Any]] | None:
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = conn.recv(65536)
            if not data:
                return None
            buf += data
        head, _, body = buf.partition(b"\r\n\r\n")
        headers = {
            k.strip().lower(): v.strip()
            for k, _, v in (line.partition(b":") for line in head.split(b"\r\n")[1:])
        }
        length = int(headers[b"content-length"])
        while len(body) < length:
            body += conn.recv(65536)
        target = headers[b"x-amz-target"].decode().removeprefix("TrentService.")
        return target, json.loads(body)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for conn in self.conns:  # wakes the thread waiting for a next request on a kept-alive connection
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self.thread.join(timeout=READ_TIMEOUT * 2)
        self.path.unlink(missing_ok=True)


class _StubNSM:
    def attestation(
        self, *, user_data: bytes | None = None, nonce: bytes | None = None, public_key: bytes | None = None
    ) -> bytes:
        return b"DOC:" + (public_key or b"")

    def get_random(self) -> bytes:
        return b"\x01" * 256


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
            connect_timeout=READ_TIMEOUT, read_timeout=READ_TIMEOUT, retries={"total_max_attempts": 1}
        ),
    )
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def peer(kms: enclave.KMSClient) -> Iterator[Callable[[Script], ScriptedPeer]]:
    peers: list[ScriptedPeer] = []

    def start(script: Script) -> ScriptedPeer:
        peers.append(ScriptedPeer(script))
        return peers[-1]

    try:
        yield start
    finally:
        for p in peers:
            p.close()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _to_recipient(body: dict[str, Any], plaintext: bytes) -> str:
    """CiphertextForRecipient of ``plaintext`` to the key in the request's (stub) document."""
    document = base64.b64decode(body["Recipient"]["AttestationDocument"])
    key = load_der_public_key(document.removeprefix(b"DOC:"))
    assert isinstance(key, rsa.RSAPublicKey)
    return _b64(build_ciphertext_for_recipient(plaintext, key))


def _data_key_answer(plaintext: bytes, **extra: Any) -> Script:
    def script(op: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = {"CiphertextBlob": _b64(b"blob"), "KeyId": KEY_ARN, "Plaintext": None}
        answer["CiphertextForRecipient"] = _to_recipient(body, plaintext)
        return answer | extra

    return script


# -- what goes on the wire -----------------------------------------------------------------------------------


def test_generate_data_key_request_and_answer(
    kms: enclave.KMSClient, peer: Callable[[Script], ScriptedPeer]
) -> None:
    seen = peer(_data_key_answer(b"k" * 32)).seen
    result = kms.generate_data_key(KeyId="alias/app", KeySpec="AES_256", EncryptionContext={"app": "demo"})
    op, body = seen[0]
    assert op == "GenerateDataKey"
    assert body["KeyId"] == "alias/app"
    assert body["KeySpec"] == "AES_256"
    assert body["EncryptionContext"] == {"app": "demo"}
    assert body["Recipient"]["KeyEncryptionAlgorithm"] == "RSAES_OAEP_SHA_256"
    assert base64.b64decode(body["Recipient"]["AttestationDocument"]) == b"DOC:" + kms.public_key_der
    assert result["Plaintext"] == b"k" * 32
    assert result["CiphertextBlob"] == b"blob"
    assert result["KeyId"] == KEY_ARN
    assert result["ResponseMetadata"]["RequestId"] == "r-1"


def test_decrypt_sends_the_blob_in_base64(
    kms: enclave.KMSClient, peer: Callable[[Script], ScriptedPeer]
) -> None:
    def script(op: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"KeyId": KEY_ARN, "CiphertextForRecipient": _to_recipient(body, b"secret")}

    seen = peer(script).seen
    result = kms.decrypt(CiphertextBlob=b"\x01\x02", KeyId="k", EncryptionAlgorithm="SYMMETRIC_DEFAULT")
    assert seen[0][0] == "Decrypt"
    assert seen[0][1]["CiphertextBlob"] == "AQI="
    assert seen[0][1]["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    assert result["Plaintext"] == b"secret"
    assert "EncryptionContext" not in seen[0][1]


# -- what is refused -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "length"),
    [
        ({"KeySpec": "AES_256"}, 16),
        ({"KeySpec": "AES_128"}, 32),
        ({"NumberOfBytes": 24}, 23),
    ],
    ids=["aes256-gets-16", "aes128-gets-32", "n24-gets-23"],
)
def test_data_key_of_the_wrong_length_is_the_one_decryption_error(
    kms: enclave.KMSClient, peer: Callable[[Script], ScriptedPeer], kwargs: dict[str, Any], length: int
) -> None:
    peer(_data_key_answer(b"k" * length))
    with pytest.raises(DecryptionError) as refused:
        kms.generate_data_key(KeyId="k", **kwargs)
    assert str(refused.value) == DecryptionError.MESSAGE


@pytest.mark.parametrize("plaintext", ["a2V5", "AAAA" * 8])
def test_plaintext_in_the_clear_is_refused(
    kms: enclave.KMSClient, peer: Callable[[Script], ScriptedPeer], plaintext: str
) -> None:
    peer(_data_key_answer(b"k" * 32, Plaintext=plaintext))
    with pytest.raises(ResponseError, match="Plaintext in the clear"):
        kms.generate_data_key(KeyId="k", KeySpec="AES_256")


def test_plaintext_instead_of_the_ciphertext_is_refused(
    kms: enclave.KMSClient, peer: Callable[[Script], ScriptedPeer]
) -> None:
    peer(lambda op, body: {"KeyId": KEY_ARN, "Plaintext": _b64(b"k" * 32)})
    with pytest.raises(ResponseError, match="in the clear"):
        kms.decrypt(CiphertextBlob=b"x")


def test_no_ciphertext_for_recipient_is_refused(
    kms: enclave.KMSClient, peer: Callable[[Script], ScriptedPeer]
) -> None:
    peer(lambda op, body: {"KeyId": KEY_ARN, "CiphertextBlob": _b64(b"b")})
    with pytest.raises(ResponseError, match="without CiphertextForRecipient"):
        kms.generate_data_key(KeyId="k", KeySpec="AES_128")


def test_a_flipped_byte_is_the_one_decryption_error(
    kms: enclave.KMSClient, peer: Callable[[Script], ScriptedPeer]
) -> None:
    def script(op: str, body: dict[str, Any]) -> dict[str, Any]:
        blob = bytearray(base64.b64decode(_to_recipient(body, b"secret")))
        blob[-20] ^= 0x01
        return {"KeyId": KEY_ARN, "CiphertextForRecipient": _b64(bytes(blob))}

    peer(script)
    with pytest.raises(DecryptionError):
        kms.decrypt(CiphertextBlob=b"x")


@pytest.mark.parametrize(
    ("member", "value"),
    [("CiphertextBlob", "!!"), ("CiphertextBlob", 7), ("KeyId", 7), ("KeyId", "")],
    ids=["blob-not-base64", "blob-not-string", "keyid-number", "keyid-empty"],
)
def test_members_that_break_the_model_are_refused(
    kms: enclave.KMSClient, peer: Callable[[Script], ScriptedPeer], member: str, value: object
) -> None:
    peer(_data_key_answer(b"k" * 32, **{member: value}))
    with pytest.raises(ResponseError):
        kms.generate_data_key(KeyId="k", KeySpec="AES_256")


# -- data key pairs and shared secrets -----------------------------------------------------------------------


def _pkcs8(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _spki(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _pair_answer(private: bytes, public: bytes) -> Script:
    def script(op: str, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "KeyId": KEY_ARN,
            "KeyPairSpec": body["KeyPairSpec"],
            "PublicKey": _b64(public),
            "PrivateKeyCiphertextBlob": _b64(b"wrapped"),
            "CiphertextForRecipient": _to_recipient(body, private),
        }

    return script


def test_data_key_pair_is_checked_against_its_public_key(
    kms: enclave.KMSClient, peer: Callable[[Script], ScriptedPeer]
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    scripted = peer(_pair_answer(_pkcs8(key), _spki(key)))
    result = kms.generate_data_key_pair(KeyId="k", KeyPairSpec="ECC_NIST_P256")
    assert result["PrivateKeyPlaintext"] == _pkcs8(key)
    assert result["PublicKey"] == _spki(key)
    assert result["PrivateKeyCiphertextBlob"] == b"wrapped"
    sec1 = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    for private, public, spec in (
        (_pkcs8(key), _spki(other), "ECC_NIST_P256"),  # another pair's public key
        (_pkcs8(key), _spki(key), "ECC_NIST_P384"),  # not the curve asked for
        (sec1, _spki(key), "ECC_NIST_P256"),  # not PKCS#8
        (b"\x30" * 40, _spki(key), "ECC_NIST_P256"),  # not a key at all
    ):
        scripted.script = _pair_answer(private, public)
        with pytest.raises(DecryptionError):
            kms.generate_data_key_pair(KeyId="k", KeyPairSpec=spec)


def test_shared_secret_length_follows_the_peer_curve(
    kms: enclave.KMSClient, peer: Callable[[Script], ScriptedPeer]
) -> None:
    lengths = iter([48, 32])
    peer(
        lambda op, body: (
            {"KeyId": KEY_ARN, "KeyAgreementAlgorithm": "ECDH", "KeyOrigin": "AWS_KMS"}
            | {"CiphertextForRecipient": _to_recipient(body, b"s" * next(lengths))}
        )
    )
    p384 = _spki(ec.generate_private_key(ec.SECP384R1()))
    result = kms.derive_shared_secret(KeyId="k", PublicKey=p384)
    assert result["SharedSecret"] == b"s" * 48
    assert result["KeyAgreementAlgorithm"] == "ECDH"
    with pytest.raises(DecryptionError):
        kms.derive_shared_secret(KeyId="k", PublicKey=p384)


# -- parameters ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda k: k.decrypt(), 'Missing required parameter in input: "CiphertextBlob"'),
        (lambda k: k.decrypt(CiphertextBlob="text"), "CiphertextBlob must be bytes"),
        (lambda k: k.decrypt(CiphertextBlob=b"x" * 6145), "CiphertextBlob must be 1..6144 bytes"),
        (lambda k: k.decrypt(CiphertextBlob=b"x", EncryptionContext={"a": 1}), "EncryptionContext must be"),
        (lambda k: k.decrypt(CiphertextBlob=b"x", GrantTokens=["t"] * 11), "GrantTokens: at most 10"),
        (lambda k: k.generate_data_key(KeySpec="AES_256"), 'Missing required parameter in input: "KeyId"'),
        (lambda k: k.generate_data_key(KeyId=7), "KeyId must be a string"),
        (lambda k: k.generate_data_key(KeyId="k", NumberOfBytes="32"), "NumberOfBytes must be an integer"),
        (lambda k: k.generate_data_key_pair(KeyId="k"), 'Missing required parameter in input: "KeyPairSpec"'),
        (lambda k: k.derive_shared_secret(KeyId="k"), 'Missing required parameter in input: "PublicKey"'),
    ],
    ids=[
        "decrypt-no-blob",
        "decrypt-str-blob",
        "decrypt-blob-too-long",
        "decrypt-context-int",
        "decrypt-11-tokens",
        "gdk-no-key",
        "gdk-key-int",
        "gdk-n-str",
        "gdkp-no-spec",
        "dss-no-public-key",
    ],
)
def test_parameters_are_checked_before_anything_is_sent(
    kms: enclave.KMSClient, call: Callable[[enclave.KMSClient], object], message: str
) -> None:
    with pytest.raises(ParamValidationError) as refused:
        call(kms)
    assert str(refused.value) == f"Parameter validation failed: {message}" or message in str(refused.value)
    assert "\n" not in str(refused.value)
