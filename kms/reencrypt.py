"""ReEncrypt: decrypt a ciphertext under its source key and encrypt the plaintext under a destination
key, inside kms-sim; the plaintext never leaves it (nor goes to a log, an error or the audit record).

Shapes copy botocore's kms model (``ReEncryptRequest``/``ReEncryptResponse``); behaviour follows the
ReEncrypt reference quoted in the model's documentation:

- Authorization: "kms:ReEncryptFrom permission on the source KMS key" and "kms:ReEncryptTo permission
  on the destination KMS key" (both by key policy; ``kms:ReEncrypt*`` in a policy covers both). The
  source key is what ``resolve`` returns (SourceKeyId, else the key the blob names), authorized for
  ``kms:ReEncryptFrom``; the destination key comes from ``also``, authorized for ``kms:ReEncryptTo``.
- The decrypt half is kms.crypto_ops' Decrypt (SourceEncryptionContext, SourceEncryptionAlgorithm: one
  InvalidCiphertextException for every failure to open), the encrypt half its Encrypt
  (DestinationEncryptionContext, DestinationEncryptionAlgorithm, the RSA plaintext bounds); DryRun
  answers DryRunOperationException only once both halves' checks have passed. With DryRunModifiers
  ``IGNORE_CIPHERTEXT`` ("only authorization validation without ciphertext validation") those are the
  checks on the keys (state, usage, algorithm, context): SourceKeyId names the source key, any blob sent is
  not looked at.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from kms._op import AttestedRecipient, Backend, Operation
from kms.ciphertext import INVALID_CIPHERTEXT_MESSAGE, MAX_CIPHERTEXT_BYTES, key_id_of
from kms.crypto_ops import CRYPTO_OPERATIONS
from kms.errors import (
    DryRunOperationException,
    InvalidArnException,
    InvalidCiphertextException,
    NotFoundException,
    ValidationException,
)
from kms.keys import Key
from kms.protocol import Field

__all__ = ["REENCRYPT_OPERATIONS"]

#: ``KeyIdType``: 1..2048 characters; ``GrantTokenList``: 0..10 tokens of 1..8192 characters.
MAX_KEY_ID_CHARS = 2048
MAX_GRANT_TOKENS = 10
MAX_GRANT_TOKEN_CHARS = 8192
#: ``EncryptionAlgorithmSpec``.
_ALGORITHMS = ("SYMMETRIC_DEFAULT", "RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256", "SM2PKE")
IGNORE_CIPHERTEXT = "IGNORE_CIPHERTEXT"

_DECRYPT = CRYPTO_OPERATIONS["Decrypt"].handler
_ENCRYPT = CRYPTO_OPERATIONS["Encrypt"].handler


def _context(name: str) -> Field:
    return Field(
        name=name,
        kind="map",
        members=(Field(name="key", kind="string"), Field(name="value", kind="string")),
    )


def _key_id(name: str, *, required: bool = False) -> Field:
    return Field(name=name, kind="string", minimum=1, maximum=MAX_KEY_ID_CHARS, required=required)


#: ``ReEncryptRequest``, in the model's member order.
REENCRYPT_FIELDS = (
    Field(name="CiphertextBlob", kind="blob", minimum=1, maximum=MAX_CIPHERTEXT_BYTES),
    _context("SourceEncryptionContext"),
    _key_id("SourceKeyId"),
    _key_id("DestinationKeyId", required=True),
    _context("DestinationEncryptionContext"),
    Field(name="SourceEncryptionAlgorithm", kind="string", enum=_ALGORITHMS),
    Field(name="DestinationEncryptionAlgorithm", kind="string", enum=_ALGORITHMS),
    Field(
        name="GrantTokens",
        kind="list",
        minimum=0,
        maximum=MAX_GRANT_TOKENS,
        members=(Field(name="member", kind="string", minimum=1, maximum=MAX_GRANT_TOKEN_CHARS),),
    ),
    Field(name="DryRun", kind="boolean"),
    Field(
        name="DryRunModifiers",
        kind="list",
        members=(Field(name="member", kind="string", enum=(IGNORE_CIPHERTEXT,)),),
    ),
)


def _ignores_ciphertext(members: Mapping[str, Any]) -> bool:
    return bool(members.get("DryRun")) and IGNORE_CIPHERTEXT in members.get("DryRunModifiers", ())


def _source(backend: Backend, members: dict[str, Any], at: datetime) -> Key | None:
    """The source key: SourceKeyId if given ("Required if the ciphertext was encrypted under an
    asymmetric KMS key"), else the key the blob names (unverified until opened); a blob that names no key
    of ours is InvalidCiphertextException, as any other foreign blob."""
    blob: bytes | None = members.get("CiphertextBlob")
    if blob is None and not _ignores_ciphertext(members):
        raise ValidationException(
            "1 validation error detected: Value null at 'ciphertextBlob' failed to satisfy constraint: "
            "Member must not be null"
        )
    if "SourceKeyId" in members:
        return backend.keys.resolve(members["SourceKeyId"], at=at)
    if blob is None:
        raise ValidationException(
            "SourceKeyId is required when DryRun is true and DryRunModifiers is set to IGNORE_CIPHERTEXT."
        )
    try:
        return backend.keys.resolve(key_id_of(blob), aliases=False, at=at)
    except (NotFoundException, InvalidArnException):
        raise InvalidCiphertextException(INVALID_CIPHERTEXT_MESSAGE) from None


def _destination(backend: Backend, members: dict[str, Any], at: datetime) -> tuple[tuple[Key, str], ...]:
    return ((backend.keys.resolve(members["DestinationKeyId"], at=at), "kms:ReEncryptTo"),)


def _only(members: Mapping[str, Any], renames: Mapping[str, str]) -> dict[str, Any]:
    return {new: members[old] for old, new in renames.items() if old in members}


def reencrypt(
    backend: Backend,
    members: dict[str, Any],
    recipient: AttestedRecipient | None,
    at: datetime,
    key: Key | None,
) -> dict[str, Any]:
    destination = backend.keys.resolve(members["DestinationKeyId"], at=at)
    source_members = _only(
        members,
        {
            "CiphertextBlob": "CiphertextBlob",
            "SourceEncryptionContext": "EncryptionContext",
            "SourceEncryptionAlgorithm": "EncryptionAlgorithm",
        },
    )
    destination_members = _only(
        members,
        {
            "DestinationEncryptionContext": "EncryptionContext",
            "DestinationEncryptionAlgorithm": "EncryptionAlgorithm",
            "DryRun": "DryRun",
        },
    )
    if _ignores_ciphertext(members):  # the decrypt half's key checks (no blob), then the encrypt half's
        ignoring = {**source_members, "DryRun": True, "DryRunModifiers": [IGNORE_CIPHERTEXT]}
        with contextlib.suppress(DryRunOperationException):  # raised once the source key's checks passed
            _DECRYPT(backend, ignoring, None, at, key)
        _ENCRYPT(backend, {"Plaintext": b"\0", **destination_members}, None, at, destination)  # DryRun
    opened = _DECRYPT(backend, source_members, None, at, key)
    sealed = _ENCRYPT(
        backend, {"Plaintext": opened.pop("Plaintext"), **destination_members}, None, at, destination
    )
    result: dict[str, Any] = {
        "CiphertextBlob": sealed["CiphertextBlob"],
        "SourceKeyId": opened["KeyId"],
        "KeyId": sealed["KeyId"],
        "SourceEncryptionAlgorithm": opened["EncryptionAlgorithm"],
        "DestinationEncryptionAlgorithm": sealed["EncryptionAlgorithm"],
    }
    # Key material IDs: "present only when the operation uses a symmetric encryption KMS key".
    if "KeyMaterialId" in opened:
        result["SourceKeyMaterialId"] = opened["KeyMaterialId"]
    if destination.spec == "SYMMETRIC_DEFAULT":
        result["DestinationKeyMaterialId"] = destination.material_id
    return result


REENCRYPT_OPERATIONS: Mapping[str, Operation] = {
    "ReEncrypt": Operation(
        fields=REENCRYPT_FIELDS,
        handler=reencrypt,
        action="kms:ReEncryptFrom",
        resolve=_source,
        also=_destination,
    ),
}
