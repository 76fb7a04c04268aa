"""The SDK's attested Decrypt / GenerateDataKey / GenerateDataKeyPair / DeriveSharedSecret against the real
kms-sim, vsock-proxy and nsm-sim (the plugin's fixtures), checked by a second implementation (boto3 against
the same kms-sim, cryptography's ECDH), and through a host that tampers with KMS's answers.

The tampering host is a test instrument: an HTTP-aware relay on vsock (3, 8001) in front of the real
vsock-proxy on (3, 8000) that rewrites each answer's JSON body with the test's function, as a hostile parent
instance could (TLS is off in these stacks, as ``NITRO_SIM_KMS_TLS=0`` says).
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

import enclave
from attestation.errors import DecryptionError
from attestation.sim import PARENT_CID, vsock_socket_path
from enclave import Config
from enclave.errors import ResponseError
from nitro_sim.stack import KmsSim

#: The harness's bound on one read (never asserted as a time).
READ_TIMEOUT = 10.0
RELAY_PORT = 8001

Rewrite = Callable[[dict[str, Any]], dict[str, Any]]


@pytest.fixture
def keys(kms_sim: KmsSim) -> dict[str, Any]:
    """A symmetric key, an ECC key-agreement key, and the boto3 client that made them."""
    boto = kms_sim.boto3_client()
    symmetric = boto.create_key(Description="attested ops")["KeyMetadata"]
    agreement = boto.create_key(KeySpec="ECC_NIST_P256", KeyUsage="KEY_AGREEMENT")["KeyMetadata"]
    return {"boto": boto, "symmetric": symmetric, "agreement": agreement}


# -- round trips with a second implementation ----------------------------------------------------------------


def test_decrypt_what_boto3_encrypted(enclave_kms: Any, keys: dict[str, Any]) -> None:
    context = {"purpose": "test"}
    blob = keys["boto"].encrypt(
        KeyId=keys["symmetric"]["KeyId"], Plaintext=b"the secret", EncryptionContext=context
    )["CiphertextBlob"]
    result = enclave_kms.decrypt(CiphertextBlob=blob, EncryptionContext=context)
    assert result["Plaintext"] == b"the secret"
    assert result["KeyId"] == keys["symmetric"]["Arn"]
    assert result["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    assert result["ResponseMetadata"]["HTTPStatusCode"] == 200
    with pytest.raises(enclave_kms.exceptions.InvalidCiphertextException):
        enclave_kms.decrypt(CiphertextBlob=blob, EncryptionContext={"purpose": "other"})


@pytest.mark.parametrize(
    ("kwargs", "length"),
    [({"KeySpec": "AES_256"}, 32), ({"KeySpec": "AES_128"}, 16), ({"NumberOfBytes": 48}, 48)],
    ids=["aes256", "aes128", "n48"],
)
def test_generate_data_key_opens_to_what_boto3_decrypts(
    enclave_kms: Any, keys: dict[str, Any], kwargs: dict[str, Any], length: int
) -> None:
    result = enclave_kms.generate_data_key(KeyId=keys["symmetric"]["KeyId"], **kwargs)
    assert len(result["Plaintext"]) == length
    assert result["KeyId"] == keys["symmetric"]["Arn"]
    assert keys["boto"].decrypt(CiphertextBlob=result["CiphertextBlob"])["Plaintext"] == result["Plaintext"]


@pytest.mark.parametrize("spec", ["ECC_NIST_P256", "RSA_2048"])
def test_generate_data_key_pair(enclave_kms: Any, keys: dict[str, Any], spec: str) -> None:
    result = enclave_kms.generate_data_key_pair(KeyId=keys["symmetric"]["KeyId"], KeyPairSpec=spec)
    private = serialization.load_der_private_key(result["PrivateKeyPlaintext"], password=None)
    assert isinstance(private, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    spki = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert spki == result["PublicKey"]
    assert result["KeyPairSpec"] == spec
    wrapped = keys["boto"].decrypt(CiphertextBlob=result["PrivateKeyCiphertextBlob"])["Plaintext"]
    assert wrapped == result["PrivateKeyPlaintext"]


def test_derive_shared_secret_is_ecdh_with_the_kms_key(enclave_kms: Any, keys: dict[str, Any]) -> None:
    peer = ec.generate_private_key(ec.SECP256R1())
    peer_spki = peer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    result = enclave_kms.derive_shared_secret(KeyId=keys["agreement"]["KeyId"], PublicKey=peer_spki)
    kms_public = serialization.load_der_public_key(
        keys["boto"].get_public_key(KeyId=keys["agreement"]["KeyId"])["PublicKey"]
    )
    assert isinstance(kms_public, ec.EllipticCurvePublicKey)
    assert result["SharedSecret"] == peer.exchange(ec.ECDH(), kms_public)
    assert result["KeyAgreementAlgorithm"] == "ECDH"


def test_kms_errors_are_their_classes(enclave_kms: Any, keys: dict[str, Any]) -> None:
    with pytest.raises(enclave_kms.exceptions.NotFoundException):
        enclave_kms.generate_data_key(KeyId="alias/no-such-key", KeySpec="AES_256")
    with pytest.raises(enclave_kms.exceptions.InvalidCiphertextException):
        enclave_kms.decrypt(CiphertextBlob=b"not a kms ciphertext blob")


def test_the_audit_log_holds_no_plaintext(enclave_kms: Any, keys: dict[str, Any], kms_sim: KmsSim) -> None:
    secret = b"audit-must-not-see-this"
    blob = keys["boto"].encrypt(KeyId=keys["symmetric"]["KeyId"], Plaintext=secret)["CiphertextBlob"]
    key = enclave_kms.generate_data_key(KeyId=keys["symmetric"]["KeyId"], KeySpec="AES_256")["Plaintext"]
    assert enclave_kms.decrypt(CiphertextBlob=blob)["Plaintext"] == secret
    text = json.dumps(kms_sim.audit())
    for value in (secret, key):
        assert base64.b64encode(value).decode() not in text
        assert value.hex() not in text
    assert secret.decode() not in text


# -- a host that tampers with the answers --------------------------------------------------------------------


class TamperingRelay:
    """vsock (3, 8001) -> the real vsock-proxy on (3, 8000); each answer's JSON body through ``rewrite``."""

    def __init__(self, rewrite: Rewrite) -> None:
        self.rewrite = rewrite
        self.path = vsock_socket_path(PARENT_CID, RELAY_PORT)
        self.upstream = vsock_socket_path(PARENT_CID, 8000)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.path))
        self.listener.listen(8)
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @staticmethod
    def _message(sock: socket.socket) -> tuple[bytes, bytes] | None:
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = sock.recv(65536)
            if not data:
                return None
            buf += data
        head, _, body = buf.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        while len(body) < length:
            body += sock.recv(65536)
        return head, body

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.conns.append(conn)
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.conns.append(upstream)
            with conn, upstream, contextlib.suppress(OSError):
                conn.settimeout(READ_TIMEOUT)
                upstream.settimeout(READ_TIMEOUT)
                upstream.connect(str(self.upstream))
                while (request := self._message(conn)) is not None:
                    upstream.sendall(request[0] + b"\r\n\r\n" + request[1])
                    answer = self._message(upstream)
                    if answer is None:
                        return
                    head, body = answer
                    if head.startswith(b"HTTP/1.1 200"):
                        body = json.dumps(self.rewrite(json.loads(body))).encode()
                    lines = [
                        line for line in head.split(b"\r\n") if not line.lower().startswith(b"content-length")
                    ]
                    conn.sendall(
                        b"\r\n".join([*lines, b"Content-Length: %d" % len(body)]) + b"\r\n\r\n" + body
                    )

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self.thread.join(timeout=READ_TIMEOUT)
        self.path.unlink(missing_ok=True)


@pytest.fixture
def tampered(enclave_kms: Any) -> Iterator[Callable[[Rewrite], enclave.KMSClient]]:
    """An SDK client whose answers pass through a TamperingRelay with the given rewrite (one relay and one
    client per test: a second call changes the rewrite)."""
    made: list[tuple[TamperingRelay, enclave.KMSClient]] = []

    def make(rewrite: Rewrite) -> enclave.KMSClient:
        if made:
            made[0][0].rewrite = rewrite
            return made[0][1]
        relay = TamperingRelay(rewrite)
        client = enclave.client(
            "kms",
            endpoint_url=f"vsock://{PARENT_CID}:{RELAY_PORT}",
            use_ssl=False,
            config=Config(retries={"total_max_attempts": 1}),
        )
        made.append((relay, client))
        return client

    try:
        yield make
    finally:
        for relay, client in made:
            client.close()
            relay.close()


def _flip(body: dict[str, Any]) -> dict[str, Any]:
    blob = bytearray(base64.b64decode(body["CiphertextForRecipient"]))
    blob[-24] ^= 0x80  # inside the last AES block
    return body | {"CiphertextForRecipient": base64.b64encode(bytes(blob)).decode()}


def test_a_flipped_byte_of_ciphertext_for_recipient_is_refused(
    tampered: Callable[[Rewrite], enclave.KMSClient], keys: dict[str, Any]
) -> None:
    kms = tampered(_flip)
    with pytest.raises(DecryptionError) as refused:
        kms.generate_data_key(KeyId=keys["symmetric"]["KeyId"], KeySpec="AES_256")
    assert str(refused.value) == DecryptionError.MESSAGE


def test_a_plaintext_put_in_by_the_host_is_refused(
    tampered: Callable[[Rewrite], enclave.KMSClient], keys: dict[str, Any]
) -> None:
    chosen = base64.b64encode(b"\x00" * 32).decode()
    kms = tampered(lambda body: body | {"Plaintext": chosen})
    with pytest.raises(ResponseError, match="Plaintext in the clear"):
        kms.generate_data_key(KeyId=keys["symmetric"]["KeyId"], KeySpec="AES_256")
    kms = tampered(
        lambda body: {k: v for k, v in body.items() if k != "CiphertextForRecipient"} | {"Plaintext": chosen}
    )
    blob = keys["boto"].encrypt(KeyId=keys["symmetric"]["KeyId"], Plaintext=b"x")["CiphertextBlob"]
    with pytest.raises(ResponseError):
        kms.decrypt(CiphertextBlob=blob)


def test_an_untouched_relay_changes_nothing(
    tampered: Callable[[Rewrite], enclave.KMSClient], keys: dict[str, Any]
) -> None:
    kms = tampered(lambda body: body)
    result = kms.generate_data_key(KeyId=keys["symmetric"]["KeyId"], KeySpec="AES_128")
    assert keys["boto"].decrypt(CiphertextBlob=result["CiphertextBlob"])["Plaintext"] == result["Plaintext"]
