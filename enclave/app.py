"""The demo enclave app: attested random bytes from KMS, fetched and opened inside the enclave.

Runs as a simulated enclave's entrypoint (``NITRO_SIM_NSM`` set, as ``nitro-cli run-enclave`` or a test
sets it) or in a real enclave (``/dev/nsm``)::

    python -m enclave.app [--bytes N] [--region R] [--proxy-port P]

It prints one JSON object: the bytes (base64), who the enclave is (module id, PCR0 as its NSM reports it),
and the SHA-256 of the RSA public key KMS encrypted to. The private key never leaves this process.
On a KMS error it prints ``{"error": <AWS error name>, "message": ...}`` and exits 1.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
from collections.abc import Sequence

from attestation.errors import AttestationError
from enclave.errors import ClientError, EnclaveError
from enclave.kms import client
from enclave.nsm import open_nsm
from enclave.vsock import DEFAULT_PROXY_PORT, MAX_PORT

#: GenerateRandom's NumberOfBytes range (botocore KMS model, NumberOfBytesType).
MAX_BYTES = 1024


def _fail(exc: Exception) -> int:
    print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
    return 1


def vsock_port(text: str) -> int:
    port = int(text)
    if not 1 <= port <= MAX_PORT:
        raise ValueError(text)  # argparse says "invalid vsock_port value"
    return port


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="enclave-app", description=__doc__.splitlines()[0])
    parser.add_argument("--bytes", type=int, default=32, help="NumberOfBytes (1..1024, default 32)")
    parser.add_argument("--region", default=None, help="KMS region (default: the SDK's resolution)")
    parser.add_argument("--proxy-port", type=vsock_port, default=DEFAULT_PROXY_PORT, help="vsock-proxy port")
    args = parser.parse_args(argv)
    if not 1 <= args.bytes <= MAX_BYTES:
        parser.error(f"--bytes must be in 1..{MAX_BYTES}")
    try:
        kms = client("kms", region_name=args.region, proxy_port=args.proxy_port)
    except ValueError as exc:  # a region or port the SDK refuses: a usage error, one line
        parser.error(str(exc))
    except EnclaveError as exc:  # no credentials, say
        return _fail(exc)
    try:
        with kms:
            nsm = open_nsm()
            identity = nsm.describe_nsm()
            pcr0 = nsm.describe_pcr(0).data
            try:
                answer = kms.generate_random(NumberOfBytes=args.bytes)
            except ClientError as exc:
                error = exc.response["Error"]
                print(json.dumps({"error": error["Code"], "message": error["Message"]}))
                return 1
            key_sha256 = hashlib.sha256(kms.public_key_der).hexdigest()
    except (EnclaveError, AttestationError) as exc:  # NSM and decryption errors come from the core
        return _fail(exc)
    plaintext: bytes = answer["Plaintext"]
    print(
        json.dumps(
            {
                "bytes": len(plaintext),
                "plaintext_b64": base64.b64encode(plaintext).decode(),
                "module_id": identity.module_id,
                "pcr0": pcr0.hex(),
                "recipient_key_sha256": key_sha256,
                "request_id": answer["ResponseMetadata"].get("RequestId"),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
