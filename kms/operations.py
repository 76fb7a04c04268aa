"""The operations kms-sim serves: input shapes (from the KMS model) and handlers.

Every handler takes the validated members, the verified Recipient (or None) and the request time, and
returns the response members; failures are KMSErrors. Shapes copy botocore kms service-2.json
(2014-11-01): lengths, ranges, enums and patterns as the model states them.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from attestation.cms import build_ciphertext_for_recipient
from kms._document_text import decode_document_text
from kms._op import (
    KEY_ENCRYPTION_ALGORITHM,
    MAX_ATTESTATION_DOCUMENT_BYTES,
    RECIPIENT_FIELD,
    AttestedRecipient,
    Backend,
    Operation,
)
from kms.crypto_ops import CRYPTO_OPERATIONS
from kms.errors import (
    CustomKeyStoreInvalidStateException,
    DependencyTimeoutException,
    InvalidMarkerException,
    UnsupportedOperationException,
    ValidationException,
)
from kms.key_admin import KEY_OPERATIONS
from kms.keys import Key, KeyRing
from kms.keystores import CLOUDHSM, EXTERNAL, KeyStore, KeyStores
from kms.protocol import Field
from kms.reencrypt import REENCRYPT_OPERATIONS

__all__ = ["OPERATIONS", "AttestedRecipient", "Operation", "Operations"]

#: GenerateRandom's NumberOfBytes range (``NumberOfBytesType``: min 1, max 1024).
MIN_RANDOM_BYTES = 1
MAX_RANDOM_BYTES = 1024
#: DescribeCustomKeyStores ``Limit``: 1..1000, default 1000 (``LimitType``).
MAX_DESCRIBE_LIMIT = 1000


_KEY_STORE_ID = Field(name="CustomKeyStoreId", kind="string", minimum=1, maximum=64)
_XKS_ACCESS_KEY = Field(
    name="AccessKeyId",
    kind="string",
    minimum=20,
    maximum=30,
    pattern="^[A-Z2-7]+$",
    sensitive=True,
    required=True,
)
_XKS_FIELDS = (
    Field(
        name="XksProxyUriEndpoint", kind="string", minimum=10, maximum=128, pattern="^https://[a-zA-Z0-9.-]+$"
    ),
    Field(
        name="XksProxyUriPath",
        kind="string",
        minimum=10,
        maximum=128,
        pattern=r"^(/[a-zA-Z0-9\/_-]+/kms/xks/v\d{1,2})$|^(/kms/xks/v\d{1,2})$",
    ),
    Field(
        name="XksProxyVpcEndpointServiceName",
        kind="string",
        minimum=20,
        maximum=64,
        pattern=r"^(com|eu)\.amazonaws\.vpce\.([a-z]+-){2,3}\d+\.vpce-svc-[0-9a-z]+$",
    ),
    Field(name="XksProxyVpcEndpointServiceOwner", kind="string", minimum=12, maximum=12, pattern="[0-9]{12}"),
    Field(
        name="XksProxyAuthenticationCredential",
        kind="structure",
        members=(
            _XKS_ACCESS_KEY,
            Field(
                name="RawSecretAccessKey",
                kind="string",
                minimum=43,
                maximum=64,
                pattern=r"^[a-zA-Z0-9\/+=]+$",
                sensitive=True,
                required=True,
            ),
        ),
    ),
    Field(name="XksProxyConnectivity", kind="string", enum=("PUBLIC_ENDPOINT", "VPC_ENDPOINT_SERVICE")),
)

GENERATE_RANDOM_FIELDS = (
    # The model has no ``required`` list, but its documentation says "This parameter is required".
    Field(
        name="NumberOfBytes",
        kind="integer",
        minimum=MIN_RANDOM_BYTES,
        maximum=MAX_RANDOM_BYTES,
        required=True,
    ),
    _KEY_STORE_ID,
    RECIPIENT_FIELD,
)


def plain_generate_random(raw: Mapping[str, object]) -> dict[str, Any] | None:
    """GenerateRandom's members as ``validate(GENERATE_RANDOM_FIELDS, raw)`` gives them, for the usual
    request (``NumberOfBytes`` in range, no key store, a well-formed Recipient or none); else None.

    Exact types only (JSON gives int, str, dict), the model's bounds, the same base64 call, and the
    members in the model's order (the audit record lists them in that order). Unknown members are
    ignored, as ``validate`` ignores them. tests/kms/test_protocol.py checks that the two agree.
    """
    number = raw.get("NumberOfBytes")
    if type(number) is not int or not MIN_RANDOM_BYTES <= number <= MAX_RANDOM_BYTES:
        return None
    if raw.get("CustomKeyStoreId") is not None:
        return None
    recipient = raw.get("Recipient")
    if recipient is None:
        return {"NumberOfBytes": number}
    if type(recipient) is not dict:
        return None
    algorithm = recipient.get("KeyEncryptionAlgorithm")
    document = recipient.get("AttestationDocument")
    if type(algorithm) is not str or algorithm != KEY_ENCRYPTION_ALGORITHM or type(document) is not str:
        return None
    blob = decode_document_text(document)
    if blob is None or not 1 <= len(blob) <= MAX_ATTESTATION_DOCUMENT_BYTES:
        return None
    return {
        "NumberOfBytes": number,
        "Recipient": {"KeyEncryptionAlgorithm": algorithm, "AttestationDocument": blob},
    }


class Operations:
    """The state every handler runs against: the custom key stores and the KMS keys (a :class:`Backend`)."""

    def __init__(self, keystores: KeyStores, keys: KeyRing) -> None:
        self._keystores = keystores
        self._keys = keys

    @property
    def keystores(self) -> KeyStores:
        return self._keystores

    @property
    def keys(self) -> KeyRing:
        return self._keys

    def close(self) -> None:
        """Release both stores' database connections."""
        self._keystores.close()
        self._keys.close()


def generate_random(
    backend: Backend,
    params: dict[str, Any],
    recipient: AttestedRecipient | None,
    at: datetime,
    key: Key | None,
) -> dict[str, Any]:
    store_id = params.get("CustomKeyStoreId")
    if store_id is not None:
        store = backend.keystores.get(store_id)
        if store.type == EXTERNAL:
            raise UnsupportedOperationException(
                f"GenerateRandom is not supported in external key store '{store_id}'."
            )
        if store.state != "CONNECTED":
            raise CustomKeyStoreInvalidStateException(
                f"Custom key store '{store_id}' is not connected; its ConnectionState is {store.state}."
            )
        if store.hsm_timeout:
            raise DependencyTimeoutException(
                f"The CloudHSM cluster of custom key store '{store_id}' did not respond in time."
            )
    plaintext = os.urandom(params["NumberOfBytes"])
    if recipient is None:
        return {"Plaintext": plaintext}
    blob = build_ciphertext_for_recipient(plaintext, recipient.public_key, key_id=recipient.key_id)
    return {"CiphertextForRecipient": blob}


def create_custom_key_store(
    backend: Backend,
    params: dict[str, Any],
    recipient: AttestedRecipient | None,
    at: datetime,
    key: Key | None,
) -> dict[str, Any]:
    store_type = params.get("CustomKeyStoreType", CLOUDHSM)
    needed: tuple[str, ...]
    if store_type == CLOUDHSM:
        needed = ("CloudHsmClusterId", "TrustAnchorCertificate", "KeyStorePassword")
    else:
        needed = (
            "XksProxyUriEndpoint",
            "XksProxyUriPath",
            "XksProxyAuthenticationCredential",
            "XksProxyConnectivity",
        )
    missing = [name for name in needed if name not in params]
    if missing:
        raise ValidationException(f"A {store_type} custom key store requires {', '.join(missing)}.")
    xks = None
    if store_type == EXTERNAL:
        xks = json.dumps(
            {
                "Connectivity": params["XksProxyConnectivity"],
                "AccessKeyId": params["XksProxyAuthenticationCredential"]["AccessKeyId"],
                "UriEndpoint": params["XksProxyUriEndpoint"],
                "UriPath": params["XksProxyUriPath"],
                "VpcEndpointServiceName": params.get("XksProxyVpcEndpointServiceName"),
                "VpcEndpointServiceOwner": params.get("XksProxyVpcEndpointServiceOwner"),
            }
        )
    store_id = backend.keystores.create(
        name=params["CustomKeyStoreName"],
        store_type=store_type,
        cluster_id=params.get("CloudHsmClusterId") if store_type == CLOUDHSM else None,
        trust_anchor=params.get("TrustAnchorCertificate") if store_type == CLOUDHSM else None,
        xks=xks,
        at=at,
    )
    return {"CustomKeyStoreId": store_id}


def describe_custom_key_stores(
    backend: Backend,
    params: dict[str, Any],
    recipient: AttestedRecipient | None,
    at: datetime,
    key: Key | None,
) -> dict[str, Any]:
    if "CustomKeyStoreId" in params and "CustomKeyStoreName" in params:
        raise ValidationException("Specify either CustomKeyStoreId or CustomKeyStoreName, not both.")
    stores = backend.keystores.find(
        key_store_id=params.get("CustomKeyStoreId"), name=params.get("CustomKeyStoreName")
    )
    start = 0
    if "Marker" in params:
        marker = params["Marker"]
        # Only markers we issue (ASCII decimal offsets); str.isdigit alone also takes "²" (int() refuses
        # it: a 500) and "٣" (int() reads 3: a marker we never issued).
        if not (marker.isascii() and marker.isdigit()) or int(marker) > len(stores):
            raise InvalidMarkerException("The request was rejected because the marker is not valid.")
        start = int(marker)
    limit = params.get("Limit", MAX_DESCRIBE_LIMIT)
    page = stores[start : start + limit]
    result: dict[str, Any] = {"CustomKeyStores": [list_entry(s) for s in page], "Truncated": False}
    if start + limit < len(stores):
        result["Truncated"] = True
        result["NextMarker"] = str(start + limit)
    return result


def connect_custom_key_store(
    backend: Backend,
    params: dict[str, Any],
    recipient: AttestedRecipient | None,
    at: datetime,
    key: Key | None,
) -> dict[str, Any]:
    backend.keystores.connect(params["CustomKeyStoreId"])
    return {}


def disconnect_custom_key_store(
    backend: Backend,
    params: dict[str, Any],
    recipient: AttestedRecipient | None,
    at: datetime,
    key: Key | None,
) -> dict[str, Any]:
    backend.keystores.disconnect(params["CustomKeyStoreId"])
    return {}


def delete_custom_key_store(
    backend: Backend,
    params: dict[str, Any],
    recipient: AttestedRecipient | None,
    at: datetime,
    key: Key | None,
) -> dict[str, Any]:
    backend.keystores.delete(params["CustomKeyStoreId"])
    return {}


def list_entry(store: KeyStore) -> dict[str, Any]:
    """A CustomKeyStoresListEntry (timestamps are epoch seconds in awsJson)."""
    entry: dict[str, Any] = {
        "CustomKeyStoreId": store.id,
        "CustomKeyStoreName": store.name,
        "ConnectionState": store.state,
        "CreationDate": store.created,
        "CustomKeyStoreType": store.type,
    }
    if store.type == CLOUDHSM:
        entry["CloudHsmClusterId"] = store.cluster_id
        entry["TrustAnchorCertificate"] = store.trust_anchor
    elif store.xks is not None:
        entry["XksProxyConfiguration"] = {k: v for k, v in json.loads(store.xks).items() if v is not None}
    if store.state == "FAILED" and store.error_code:
        entry["ConnectionErrorCode"] = store.error_code
    return entry


_REQUIRED_ID = Field(name="CustomKeyStoreId", kind="string", minimum=1, maximum=64, required=True)

_OPERATIONS: Mapping[str, Operation] = {
    "GenerateRandom": Operation(
        fields=GENERATE_RANDOM_FIELDS, handler=generate_random, plain=plain_generate_random
    ),
    "CreateCustomKeyStore": Operation(
        fields=(
            Field(name="CustomKeyStoreName", kind="string", minimum=1, maximum=256, required=True),
            Field(
                name="CloudHsmClusterId",
                kind="string",
                minimum=19,
                maximum=24,
                pattern="cluster-[2-7a-zA-Z]{11,16}",
            ),
            Field(name="TrustAnchorCertificate", kind="string", minimum=1, maximum=5000),
            Field(name="KeyStorePassword", kind="string", minimum=7, maximum=32, sensitive=True),
            Field(name="CustomKeyStoreType", kind="string", enum=(CLOUDHSM, EXTERNAL)),
            *_XKS_FIELDS,
        ),
        handler=create_custom_key_store,
    ),
    "DescribeCustomKeyStores": Operation(
        fields=(
            _KEY_STORE_ID,
            Field(name="CustomKeyStoreName", kind="string", minimum=1, maximum=256),
            Field(name="Limit", kind="integer", minimum=1, maximum=MAX_DESCRIBE_LIMIT),
            Field(name="Marker", kind="string", minimum=1, maximum=1024, pattern="[\u0020-\u00ff]*"),
        ),
        handler=describe_custom_key_stores,
    ),
    "ConnectCustomKeyStore": Operation(fields=(_REQUIRED_ID,), handler=connect_custom_key_store),
    "DisconnectCustomKeyStore": Operation(fields=(_REQUIRED_ID,), handler=disconnect_custom_key_store),
    "DeleteCustomKeyStore": Operation(fields=(_REQUIRED_ID,), handler=delete_custom_key_store),
}

OPERATIONS: Mapping[str, Operation] = {
    name: dataclasses.replace(op, action=op.action or f"kms:{name}")
    for name, op in {**_OPERATIONS, **KEY_OPERATIONS, **CRYPTO_OPERATIONS, **REENCRYPT_OPERATIONS}.items()
}
