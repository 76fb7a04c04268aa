"""The enclave's KMS client: the attested KMS operations, boto3-shaped, over vsock through vsock-proxy.

Flow per ``generate_random`` (aws-nitro-enclaves-sdk-c ``source/kms.c``; aws-facts §1, §6):

1. Attestation document from the NSM with ``public_key`` = this client's RSA key (DER SubjectPublicKeyInfo);
   fresh per call (optionally made in the background while the previous call is in flight, see
   :mod:`enclave._documents`), or reused for ``attestation_reuse_seconds`` when configured.
2. ``POST /`` with ``X-Amz-Target: TrentService.GenerateRandom`` and the awsJson1_1 body
   ``{"NumberOfBytes": n, "Recipient": {"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256",
   "AttestationDocument": <base64>}}``, SigV4-signed for service ``kms``, on one persistent connection.
3. Retries as botocore's standard mode (:mod:`enclave._retry`); KMS errors raise ``client.exceptions.<Name>``.
4. ``CiphertextForRecipient`` is decrypted inside the enclave (:func:`attestation.cms`); its length must
   equal ``NumberOfBytes``, and a wrong length is the same :class:`DecryptionError` as every other
   decryption failure: under CBC without a MAC, "padding valid but length wrong" apart from "padding
   invalid" would be a padding oracle for a host that replays an earlier blob with edited blocks. A
   ``Plaintext`` that crossed the host is never accepted: without CiphertextForRecipient the call fails.

Decrypt, GenerateDataKey, GenerateDataKeyPair and DeriveSharedSecret take one path (``KMSClient._attested``,
the same for all four): the same document source (so ``attestation_reuse_seconds`` and prefetching
apply), the same ``Recipient``, retries and errors; their answer's plaintext member (``Plaintext``,
``PrivateKeyPlaintext``, ``SharedSecret``) is filled in from CiphertextForRecipient opened here, and an
answer carrying it in the clear is a ResponseError (:mod:`enclave._awsjson`). What each operation knows of
its plaintext before opening it is checked after (:mod:`enclave._attested`); a failed check is the one
DecryptionError. The response holds the model's other members (``KeyId``, ``CiphertextBlob``, ...) as
boto3 gives them, bytes for blobs, and ``ResponseMetadata``.

The RSA key pair is made once per client (2048 bits by default; 3072/4096 selectable) and never leaves it.

TLS or plain HTTP (:func:`client`; applied by :func:`enclave._endpoint.resolve_tls`), first rule that
applies wins:

1. ``use_ssl=True/False`` given explicitly;
2. an ``endpoint_url`` of ``https://...`` (TLS) or ``http://...`` (plain);
3. the environment variable ``NITRO_SIM_KMS_TLS``: ``1`` (TLS) or ``0`` (plain); any other non-empty value
   is a ValueError. This is how a simulated enclave app, ``python -m enclave.app`` or
   ``kmstool-enclave-cli`` (which have no such flag, as the real tool has none) is told how kms-sim serves;
4. outside simulation TLS; in simulation TLS exactly when kms-sim's CA file ``$NITRO_SIM_HOME/kms/tls/ca.pem``
   exists (it stays after a ``kms-sim serve --tls``, so set rule 3 when a later kms-sim serves plain HTTP).

Endpoints are named in messages as ``vsock://CID:PORT`` (the form ``endpoint_url`` accepts) or
``http(s)://HOST:PORT``.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from attestation import sigv4
from attestation.cms import decrypt_ciphertext_for_recipient
from attestation.errors import DecryptionError
from enclave import vsock
from enclave._attested import (
    Request,
    decrypt_request,
    derive_shared_secret_request,
    generate_data_key_pair_request,
    generate_data_key_request,
)
from enclave._awsjson import (
    ATTESTED_SHAPES,
    attested_answer,
    attested_body,
    ciphertext_for_recipient,
    error_code,
    generate_random_body,
    response_metadata,
)
from enclave._config import Config, Credentials, resolve_config, resolve_credentials, resolve_region
from enclave._connection import ENV_KMS_TLS, Connection, Endpoint
from enclave._documents import DocumentSource
from enclave._endpoint import SIM_CA_FILE, build_endpoint, default_ssl_context, resolve_tls
from enclave._http import Response, encode_header_fields
from enclave._retry import RetryQuota, backoff_delay, is_retryable_response
from enclave.errors import (
    ClientExceptions,
    ConnectTimeoutError,
    ParamValidationError,
    ReadTimeoutError,
    TransportError,
    error_class,
)
from enclave.nsm import open_nsm

__all__ = [
    "ENV_KMS_TLS",
    "MAX_RANDOM_BYTES",
    "RSA_KEY_SIZES",
    "SIM_CA_FILE",
    "KMSClient",
    "NSMDevice",
    "check_random_length",
    "client",
]

#: RSA key sizes the client can make (aws-nitro-enclaves-sdk-c ``enum aws_rsa_key_size``).
RSA_KEY_SIZES = (2048, 3072, 4096)
#: GenerateRandom's ``NumberOfBytes`` range (botocore model ``NumberOfBytesType``).
MAX_NUMBER_OF_BYTES = 1024
#: Bound on how long an attestation document may be reused (KMS checks freshness on its side).
MAX_ATTESTATION_REUSE_SECONDS = 300.0
#: Bound on one ``random_bytes`` call (1 MiB = 1024 GenerateRandom calls).
MAX_RANDOM_BYTES = 1024 * 1024
USER_AGENT = "attested-random-enclave-sdk/0.1.0"
JSON_CONTENT_TYPE = "application/x-amz-json-1.1"


class NSMDevice(Protocol):
    """What the client needs from the NSM (``enclave.nsm.open_nsm()`` returns one)."""

    def attestation(
        self, *, user_data: bytes | None = None, nonce: bytes | None = None, public_key: bytes | None = None
    ) -> bytes: ...

    def get_random(self) -> bytes: ...


def open_default_nsm() -> NSMDevice:
    """``enclave.nsm.open_nsm()``: the simulated device, the real ``/dev/nsm``, or a clear error."""
    return open_nsm()


class KMSClient:
    """``enclave.client("kms", ...)``; thread-safe (calls are serialized on the one connection)."""

    def __init__(
        self,
        *,
        region: str,
        credentials: Credentials,
        endpoint: Endpoint,
        config: Config,
        nsm: NSMDevice | None = None,
        rsa_key_size: int = 2048,
        attestation_reuse_seconds: float = 0.0,
        prefetch_attestation: bool = False,
        ssl_context: ssl.SSLContext | None = None,
        simulated: bool | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rsa_key_size not in RSA_KEY_SIZES:
            raise ValueError(f"rsa_key_size must be one of {RSA_KEY_SIZES}")
        if not 0 <= attestation_reuse_seconds <= MAX_ATTESTATION_REUSE_SECONDS:
            raise ValueError(f"attestation_reuse_seconds must be in 0..{MAX_ATTESTATION_REUSE_SECONDS:.0f}")
        self.exceptions = ClientExceptions()
        self.region = region
        self._credentials = credentials
        self._endpoint = endpoint
        self._config = config
        self._nsm = nsm
        self._clock = clock
        self._sleep = sleep
        self._quota = RetryQuota()
        self._lock = threading.Lock()
        self._host = f"kms.{region}.amazonaws.com"
        self._prepared: dict[str, tuple[bytes, sigv4.FixedRequestSigner]] = {}
        self._conn = Connection(
            endpoint,
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
            attempt_timeout=config.attempt_seconds,
            ssl_context=ssl_context,
            simulated=simulated,
        )
        # One key pair per client, never per request (deps-and-costs §0.5: keygen is ~29 ms).
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=rsa_key_size)
        self._public_der = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self._documents = DocumentSource(
            self._device,
            self._public_der,
            reuse_seconds=attestation_reuse_seconds,
            prefetch=prefetch_attestation,
        )

    # -- public API ----------------------------------------------------------------------------------------

    @property
    def public_key_der(self) -> bytes:
        """This client's RSA public key (DER SubjectPublicKeyInfo), the one in its attestation documents."""
        return self._public_der

    @property
    def endpoint_url(self) -> str:
        """Where requests go (e.g. ``vsock://3:8000``), in the form ``endpoint_url`` accepts."""
        return self._endpoint.url

    def generate_random(
        self,
        *,
        NumberOfBytes: int | None = None,  # noqa: N803 - boto3's parameter names
        CustomKeyStoreId: str | None = None,  # noqa: N803
    ) -> dict[str, Any]:
        """Attested GenerateRandom: ``{"Plaintext": bytes, "ResponseMetadata": {...}}``, decrypted here."""
        if NumberOfBytes is None or isinstance(NumberOfBytes, bool) or not isinstance(NumberOfBytes, int):
            raise ParamValidationError("Parameter validation failed: NumberOfBytes must be an integer")
        if CustomKeyStoreId is not None and not isinstance(CustomKeyStoreId, str):
            raise ParamValidationError("Parameter validation failed: CustomKeyStoreId must be a string")
        with self._lock:
            # (1) a document for this request; the next one is made while this request is in flight
            document = self._documents.take()
            # (2) the awsJson1_1 body (enclave._awsjson)
            body = generate_random_body(NumberOfBytes, CustomKeyStoreId, document)
            self._documents.prefetch_next()
            response, retries = self._call("GenerateRandom", body)
        plaintext = self._open(response, NumberOfBytes)
        return {"Plaintext": plaintext, "ResponseMetadata": response_metadata(response, retries)}

    def decrypt(
        self,
        *,
        CiphertextBlob: bytes | None = None,  # noqa: N803 - boto3's parameter names
        EncryptionContext: Mapping[str, str] | None = None,  # noqa: N803
        KeyId: str | None = None,  # noqa: N803
        EncryptionAlgorithm: str | None = None,  # noqa: N803
        GrantTokens: Sequence[str] | None = None,  # noqa: N803
    ) -> dict[str, Any]:
        """Attested Decrypt: ``{"Plaintext": bytes, "KeyId": ..., ...}``, the plaintext opened here."""
        request = decrypt_request(CiphertextBlob, EncryptionContext, KeyId, EncryptionAlgorithm, GrantTokens)
        return self._attested(request)

    def generate_data_key(
        self,
        *,
        KeyId: str | None = None,  # noqa: N803 - boto3's parameter names
        KeySpec: str | None = None,  # noqa: N803
        NumberOfBytes: int | None = None,  # noqa: N803
        EncryptionContext: Mapping[str, str] | None = None,  # noqa: N803
        GrantTokens: Sequence[str] | None = None,  # noqa: N803
    ) -> dict[str, Any]:
        """Attested GenerateDataKey: ``{"Plaintext", "CiphertextBlob", "KeyId", ...}``, opened here."""
        request = generate_data_key_request(KeyId, KeySpec, NumberOfBytes, EncryptionContext, GrantTokens)
        return self._attested(request)

    def generate_data_key_pair(
        self,
        *,
        KeyId: str | None = None,  # noqa: N803 - boto3's parameter names
        KeyPairSpec: str | None = None,  # noqa: N803
        EncryptionContext: Mapping[str, str] | None = None,  # noqa: N803
        GrantTokens: Sequence[str] | None = None,  # noqa: N803
    ) -> dict[str, Any]:
        """Attested GenerateDataKeyPair: ``{"PrivateKeyPlaintext" (DER PKCS#8), "PublicKey", ...}``."""
        request = generate_data_key_pair_request(KeyId, KeyPairSpec, EncryptionContext, GrantTokens)
        return self._attested(request)

    def derive_shared_secret(
        self,
        *,
        KeyId: str | None = None,  # noqa: N803 - boto3's parameter names
        KeyAgreementAlgorithm: str | None = "ECDH",  # noqa: N803
        PublicKey: bytes | None = None,  # noqa: N803
        GrantTokens: Sequence[str] | None = None,  # noqa: N803
    ) -> dict[str, Any]:
        """Attested DeriveSharedSecret: ``{"SharedSecret": bytes, "KeyId", ...}``, the secret opened here."""
        request = derive_shared_secret_request(KeyId, KeyAgreementAlgorithm, PublicKey, GrantTokens)
        return self._attested(request)

    def random_bytes(self, n: int) -> bytes:
        """``n`` attested random bytes, ``0 <= n <= MAX_RANDOM_BYTES``, in GenerateRandom calls of <= 1024."""
        check_random_length(n)
        parts = []
        while n > 0:
            size = min(n, MAX_NUMBER_OF_BYTES)
            parts.append(self.generate_random(NumberOfBytes=size)["Plaintext"])
            n -= size
        return b"".join(parts)

    def close(self) -> None:
        """Close the connection and drop any prefetched document (a later call starts afresh)."""
        with self._lock:
            self._conn.close()
            self._documents.close()

    def __enter__(self) -> KMSClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- steps ---------------------------------------------------------------------------------------------

    def _device(self) -> NSMDevice:
        if self._nsm is None:
            self._nsm = open_default_nsm()
        return self._nsm

    def _request_bytes(self, operation: str, body: bytes) -> bytes:
        # The static part of the head and the signer are made once per operation; per request only the
        # date, the body hash, the signature and the length change (one bytes join, one sendall).
        prepared = self._prepared.get(operation)
        if prepared is None:
            creds = self._credentials
            static = [
                ("Host", self._host),
                ("Content-Type", JSON_CONTENT_TYPE),
                ("X-Amz-Target", f"TrentService.{operation}"),
                ("User-Agent", USER_AGENT),
            ]
            signer = sigv4.FixedRequestSigner(
                "POST",
                "/",
                static,
                access_key=creds.access_key,
                secret_key=creds.secret_key,
                session_token=creds.token,
                region=self.region,
                service="kms",
            )
            prepared = (b"POST / HTTP/1.1\r\n" + encode_header_fields(static), signer)
            self._prepared[operation] = prepared
        head, signer = prepared
        dynamic = [*signer.sign(body, self._clock()), ("Content-Length", str(len(body)))]
        return b"".join((head, encode_header_fields(dynamic), b"\r\n", body))

    def _call(self, operation: str, body: bytes) -> tuple[Response, int]:
        # (3) send with standard-mode retries; return the 200 response and the number of retries
        attempt = 0
        retry_cost = 0
        while True:
            attempt += 1
            try:
                response = self._conn.exchange(self._request_bytes(operation, body))
            except TransportError as exc:
                timeout = isinstance(exc, ConnectTimeoutError | ReadTimeoutError)
                cost = self._quota.acquire(timeout=timeout) if attempt < self._config.max_attempts else 0
                if not cost:
                    raise
                retry_cost += cost
                self._sleep(backoff_delay(attempt))
                continue
            if response.status == 200:
                self._quota.release(retry_cost)
                return response, attempt - 1
            code, message = error_code(response)
            if is_retryable_response(response.status, code) and attempt < self._config.max_attempts:
                cost = self._quota.acquire(timeout=False)
                if cost:
                    retry_cost += cost
                    self._sleep(backoff_delay(attempt))
                    continue
            error = {
                "Error": {"Code": code, "Message": message},
                "ResponseMetadata": response_metadata(response, attempt - 1),
            }
            raise error_class(code)(error, operation)

    def _attested(self, request: Request) -> dict[str, Any]:
        # The one path of every attested operation but GenerateRandom (whose hot path is its own):
        # (1) a document from the same source, (2) the body, (3) the call, (4) the answer opened here.
        with self._lock:
            document = self._documents.take()
            body = attested_body(request.members, document)
            self._documents.prefetch_next()
            response, retries = self._call(request.operation, body)
        members = attested_answer(response, request.operation)
        plaintext = decrypt_ciphertext_for_recipient(members["CiphertextForRecipient"], self._key)
        if not request.check(plaintext, members):
            raise DecryptionError()
        members[ATTESTED_SHAPES[request.operation].plaintext] = plaintext
        members["ResponseMetadata"] = response_metadata(response, retries)
        return members

    def _open(self, response: Response, n: int) -> bytes:
        # (4) decrypt CiphertextForRecipient here; never accept a Plaintext that crossed the host
        blob = ciphertext_for_recipient(response)
        plaintext = decrypt_ciphertext_for_recipient(blob, self._key)
        if len(plaintext) != n:
            raise DecryptionError()
        return plaintext


def check_random_length(n: object) -> None:
    """Raise ValueError unless ``n`` is an integer in ``0..MAX_RANDOM_BYTES``."""
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_RANDOM_BYTES:
        shown = repr(n) if isinstance(n, int) else type(n).__name__
        raise ValueError(f"n must be an integer in 0..{MAX_RANDOM_BYTES} (1 MiB), got {shown}")


def client(
    service_name: str,
    *,
    region_name: str | None = None,
    aws_access_key_id: str | None = None,
    aws_secret_access_key: str | None = None,
    aws_session_token: str | None = None,
    endpoint_url: str | None = None,
    proxy_port: int = vsock.DEFAULT_PROXY_PORT,
    use_ssl: bool | None = None,
    verify: str | Path | None = None,
    config: Config | None = None,
    nsm: NSMDevice | None = None,
    rsa_key_size: int = 2048,
    attestation_reuse_seconds: float = 0.0,
    prefetch_attestation: bool = False,
    environ: Mapping[str, str] | None = None,
) -> KMSClient:
    """``enclave.client("kms", region_name=..., aws_access_key_id=..., ...)``, as ``boto3.client``.

    By default requests go to vsock ``(3, proxy_port)``, the parent's vsock-proxy. Whether TLS (server name
    ``kms.<region>.amazonaws.com``) is used follows the rules in the module docstring (explicit
    ``use_ssl``, the endpoint's scheme, ``NITRO_SIM_KMS_TLS``, then the CA-file heuristic); ``verify``
    names a CA bundle.
    """
    if service_name != "kms":
        raise ValueError(f"the enclave SDK provides only the 'kms' client, not {service_name!r}")
    simulated = vsock.is_simulated(environ)
    region = resolve_region(region_name, environ=environ)
    credentials = resolve_credentials(
        aws_access_key_id, aws_secret_access_key, aws_session_token, simulated=simulated, environ=environ
    )
    resolved_config = resolve_config(config, environ=environ)
    ca_file = Path(verify) if verify is not None else None
    tls = resolve_tls(use_ssl, endpoint_url, simulated=simulated, environ=environ)
    endpoint = build_endpoint(endpoint_url, region=region, proxy_port=proxy_port, tls=tls)
    context = default_ssl_context(ca_file, simulated=simulated) if endpoint.tls else None
    return KMSClient(
        region=region,
        credentials=credentials,
        endpoint=endpoint,
        config=resolved_config,
        nsm=nsm,
        rsa_key_size=rsa_key_size,
        attestation_reuse_seconds=attestation_reuse_seconds,
        prefetch_attestation=prefetch_attestation,
        ssl_context=context,
        simulated=simulated,
    )
