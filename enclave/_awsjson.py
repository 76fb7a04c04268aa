"""GenerateRandom as awsJson1_1 bytes, without I/O: the request body out; an answer's parts in.

Separate from :mod:`enclave.kms` as a codec from the client that uses it: these functions see bytes and
:class:`enclave._http.Response` objects only, never the connection, the credentials or the RSA key. The
client signs and sends the body, retries on the error code, and decrypts the CiphertextForRecipient.

- Body (aws-facts §1): ``{"NumberOfBytes": n, ["CustomKeyStoreId": s,] "Recipient":
  {"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256", "AttestationDocument": <base64>}}``.
- Bodies that do not decode (not JSON, not UTF-8, nested past the ``json`` module's recursion limit) are
  "not JSON": a ResponseError on success, the HTTP status and reason on an error.
- Error answers: ``(code, message)`` as botocore's JSON parser reads them (``__type`` or ``code``, the
  part after ``#`` and before ``:``); without a code, the HTTP status and reason.
- A success must carry a non-empty base64 ``CiphertextForRecipient``; a ``Plaintext`` is never read.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from enclave._http import Response
from enclave.errors import ResponseError

__all__ = [
    "KEY_ENCRYPTION_ALGORITHM",
    "ciphertext_for_recipient",
    "error_code",
    "generate_random_body",
    "response_metadata",
]

#: The one key encryption algorithm KMS offers for a Recipient.
KEY_ENCRYPTION_ALGORITHM = "RSAES_OAEP_SHA_256"
#: The constant middle of a GenerateRandom body, up to the document's base64.
_RECIPIENT_PREFIX = b',"Recipient":{"KeyEncryptionAlgorithm":"%s","AttestationDocument":"' % (
    KEY_ENCRYPTION_ALGORITHM.encode()
)


def generate_random_body(n: int, store: str | None, document: bytes) -> bytes:
    """The GenerateRandom body for ``n`` bytes, key store ``store`` (or none) and attestation ``document``."""
    # Built directly: the document's base64 (the only large part) is spliced between two constant byte
    # strings in one join, so its ~8 KB are copied once after encoding.
    store_part = b',"CustomKeyStoreId":' + json.dumps(store).encode() if store is not None else b""
    return b"".join(
        (
            b'{"NumberOfBytes":%d' % n,
            store_part,
            _RECIPIENT_PREFIX,
            binascii.b2a_base64(document, newline=False),
            b'"}}',
        )
    )


def error_code(response: Response) -> tuple[str, str]:
    """``(code, message)`` of an error answer, as botocore's JSON parser reads them."""
    try:
        body = json.loads(response.body) if response.body else {}
    except (ValueError, UnicodeDecodeError, RecursionError):
        body = {}
    if not isinstance(body, dict):
        body = {}
    code = body.get("__type") or body.get("code") or ""
    if not isinstance(code, str) or not code:
        return str(response.status), response.reason
    # "com.amazonaws.kms#AccessDeniedException:http://..." -> "AccessDeniedException"
    code = code.split("#")[-1].split(":")[0]
    message = body.get("message") or body.get("Message") or ""
    return code, str(message)


def ciphertext_for_recipient(response: Response) -> bytes:
    """The CiphertextForRecipient of a GenerateRandom success, base64-decoded; ResponseError otherwise."""
    try:
        body = json.loads(response.body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: "[[[[..." nested too deep
        raise ResponseError("KMS answered GenerateRandom with a body that is not JSON") from None
    blob64 = body.get("CiphertextForRecipient") if isinstance(body, dict) else None
    if not isinstance(blob64, str) or not blob64:
        raise ResponseError("KMS answered GenerateRandom without CiphertextForRecipient (Recipient ignored?)")
    try:
        return base64.b64decode(blob64, validate=True)
    except (binascii.Error, ValueError):
        raise ResponseError("CiphertextForRecipient is not valid base64") from None


def response_metadata(response: Response, retries: int) -> dict[str, Any]:
    """botocore's ``ResponseMetadata`` for an answer that came after ``retries`` retries."""
    headers = dict(response.headers)
    return {
        "RequestId": headers.get("x-amzn-requestid", ""),
        "HTTPStatusCode": response.status,
        "HTTPHeaders": headers,
        "RetryAttempts": retries,
    }
