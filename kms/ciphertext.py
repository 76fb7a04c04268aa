"""kms-sim's ciphertext blobs, without I/O: what Encrypt and the data-key operations make, Decrypt opens.

Symmetric KMS keys (``SYMMETRIC_DEFAULT``) use our own format (docs/kms-ciphertext.md), versioned and
authenticated; AWS's is undocumented, so no byte of it is imitated, only its properties (KMS API reference,
Encrypt and Decrypt):

- the blob names its KMS key, so Decrypt finds the key without a KeyId ("KMS can get this information from
  metadata that it adds to the symmetric ciphertext blob");
- AES-256-GCM under the key's material with a fresh 96-bit nonce, the header and the EncryptionContext
  (canonical encoding, :func:`encode_context`) as associated data: a changed byte, another key, another
  context ("an exact case-sensitive match"), a truncated or foreign blob all fail the same way.

Asymmetric KMS keys (RSA_*) use the standard format, as AWS does: the raw RSAES-OAEP ciphertext, with no
metadata ("KMS cannot store metadata in ciphertext generated with asymmetric keys"), so Decrypt needs the
KeyId and the EncryptionAlgorithm.

Every failure to open a blob is one :class:`~kms.errors.InvalidCiphertextException` with one message
(:data:`INVALID_CIPHERTEXT_MESSAGE`): the caller never learns which check failed (cryptography's Fernet rule).
Key material and plaintext appear in no message and no repr.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kms.errors import InvalidCiphertextException, ValidationException

__all__ = [
    "FORMAT_VERSION",
    "INVALID_CIPHERTEXT_MESSAGE",
    "MAGIC",
    "MAX_CIPHERTEXT_BYTES",
    "MAX_CONTEXT_BYTES",
    "MAX_KEY_ID_BYTES",
    "MAX_PLAINTEXT_BYTES",
    "NONCE_BYTES",
    "RSA_ALGORITHMS",
    "SYMMETRIC_MATERIAL_BYTES",
    "TAG_BYTES",
    "Parsed",
    "encode_context",
    "key_id_of",
    "open_parsed",
    "parse",
    "rsa_decrypt",
    "rsa_encrypt",
    "rsa_max_plaintext",
    "seal",
    "unseal",
]

#: The first three bytes of every blob we make ("KSC": kms-sim ciphertext), then :data:`FORMAT_VERSION`.
MAGIC = b"KSC"
#: The one version this module writes and reads; another version byte is a foreign blob.
FORMAT_VERSION = 1
#: A KMS key ID is a 36-character UUID (a multi-Region key's "mrk-" and 32 hex digits is 36 too); 64
#: leaves room without letting a blob name an arbitrary string. One length byte holds it.
MAX_KEY_ID_BYTES = 64
#: AES-GCM's recommended nonce size (NIST SP 800-38D §8.2), drawn at random for every blob.
NONCE_BYTES = 12
#: The full 128-bit GCM tag (SP 800-38D §5.2.1.2).
TAG_BYTES = 16
#: A SYMMETRIC_DEFAULT key's material: a 256-bit AES key (KMS: "256-bit AES-GCM keys").
SYMMETRIC_MATERIAL_BYTES = 32
#: ``CiphertextType``: blob, 1..6144 bytes (botocore kms model).
MAX_CIPHERTEXT_BYTES = 6144
#: ``PlaintextType``: blob, 1..4096 bytes; Encrypt: "Encrypts plaintext of up to 4,096 bytes".
MAX_PLAINTEXT_BYTES = 4096
#: The EncryptionContext's keys and values, summed as UTF-8 bytes. The model sets no bound
#: (``EncryptionContextType`` is a plain string map); we cap it at 8192 so the associated data, the audit
#: record and the request stay small. AWS's own limit is not in the API reference.
MAX_CONTEXT_BYTES = 8192

#: The one message for every blob that does not open (AWS sends this error with no message at all).
INVALID_CIPHERTEXT_MESSAGE = (
    "The ciphertext is not valid for this request: it is corrupted, was made under another KMS key, "
    "or its encryption context does not match."
)

_LENGTH = struct.Struct(">I")
#: Encoded contexts kept by their pairs in order (an application repeats its few contexts): entries of at
#: most MAX_CONTEXT_BYTES and a little framing each.
CONTEXT_CACHE_SIZE = 256
_ENCODED_CONTEXTS: dict[tuple[tuple[str, str], ...], bytes] = {}
#: The bytes a key ID in a blob may hold: printable ASCII without space (0x21..0x7E).
_KEY_ID_BYTES = bytes(range(0x21, 0x7F))
_FIXED_HEADER = len(MAGIC) + 2  # magic, version byte, key-ID length byte
#: The smallest blob: the header with a one-byte key ID, one byte of ciphertext (Plaintext min 1), the tag.
_MIN_BLOB_BYTES = _FIXED_HEADER + 1 + NONCE_BYTES + 1 + TAG_BYTES


def _invalid() -> InvalidCiphertextException:
    return InvalidCiphertextException(INVALID_CIPHERTEXT_MESSAGE)


def encode_context(context: Mapping[str, str] | None) -> bytes:
    """The canonical bytes of an EncryptionContext: the associated data that binds it to a blob.

    ``count`` then, for each pair in order of its key's UTF-8 bytes, ``len(key) key len(value) value``; every
    count and length a 4-byte big-endian integer, so no two contexts share an encoding (a length prefix
    makes every split unambiguous; sorting makes JSON member order irrelevant, as KMS ignores it). An absent
    and an empty context encode the same. ValidationException over :data:`MAX_CONTEXT_BYTES`.
    """
    if not context:
        return _LENGTH.pack(0)
    key = tuple(context.items())
    known = _ENCODED_CONTEXTS.get(key)
    if known is None:
        known = _encode_context(context)  # ValidationException: nothing kept
        if len(_ENCODED_CONTEXTS) >= CONTEXT_CACHE_SIZE:
            del _ENCODED_CONTEXTS[next(iter(_ENCODED_CONTEXTS))]
        _ENCODED_CONTEXTS[key] = known
    return known


def _encode_context(context: Mapping[str, str]) -> bytes:
    pairs = sorted((key.encode("utf-8"), value.encode("utf-8")) for key, value in context.items())
    if sum(len(key) + len(value) for key, value in pairs) > MAX_CONTEXT_BYTES:
        raise ValidationException(
            f"EncryptionContext is over {MAX_CONTEXT_BYTES} bytes (its keys and values as UTF-8)"
        )
    parts = [_LENGTH.pack(len(pairs))]
    for key, value in pairs:
        parts += (_LENGTH.pack(len(key)), key, _LENGTH.pack(len(value)), value)
    return b"".join(parts)


def _header(key_id: str, nonce: bytes) -> bytes:
    raw_id = key_id.encode("ascii")
    if not 1 <= len(raw_id) <= MAX_KEY_ID_BYTES:
        raise ValueError(f"a key ID is 1..{MAX_KEY_ID_BYTES} ASCII characters")
    return MAGIC + bytes((FORMAT_VERSION, len(raw_id))) + raw_id + nonce


def seal(*, key_id: str, material: bytes, plaintext: bytes, context: Mapping[str, str] | None) -> bytes:
    """A blob of ``plaintext`` under the symmetric key ``key_id`` (its 32-byte ``material``), bound to
    ``context``. The caller checks Plaintext against the model (1..4096 bytes); the blob is then at most
    4096 + 17 + 64 + 16 bytes, inside ``CiphertextType``'s 6144."""
    if len(material) != SYMMETRIC_MATERIAL_BYTES:
        raise ValueError(f"symmetric key material is {SYMMETRIC_MATERIAL_BYTES} bytes")
    header = _header(key_id, os.urandom(NONCE_BYTES))
    sealed = AESGCM(material).encrypt(header[-NONCE_BYTES:], plaintext, header + encode_context(context))
    return header + sealed


class Parsed(NamedTuple):
    """A blob in our format cut into its parts, before any cryptography (``key_id`` UNVERIFIED)."""

    key_id: str
    header: bytes  # magic, version, key-ID length, key ID, nonce: authenticated as associated data
    sealed: bytes  # GCM ciphertext and tag


#: The last blob parsed and its parts: Decrypt's resolve step and its handler see the same bytes object.
_LAST_PARSED: tuple[bytes, Parsed] | None = None


def parse(blob: bytes) -> Parsed:
    """A blob's parts; InvalidCiphertextException, with the one message, for a blob not in our format.

    The same ``bytes`` object as the last call's (an immutable object, kept alive by the entry: the same
    content) is not parsed again.
    """
    global _LAST_PARSED  # noqa: PLW0603 - a one-entry cache (one tuple, replaced whole)
    last = _LAST_PARSED
    if last is not None and last[0] is blob:
        return last[1]
    parsed = _parse(blob)
    if type(blob) is bytes:  # not a bytearray or memoryview, which could change under the entry
        _LAST_PARSED = (blob, parsed)
    return parsed


def _parse(blob: bytes) -> Parsed:
    # (1) size: CiphertextType's bound, and at least the smallest blob we can have made
    if not _MIN_BLOB_BYTES <= len(blob) <= MAX_CIPHERTEXT_BYTES:
        raise _invalid()
    # (2) magic and version: anything else is not ours (or a version we do not read)
    if blob[: len(MAGIC)] != MAGIC or blob[len(MAGIC)] != FORMAT_VERSION:
        raise _invalid()
    # (3) the key ID: its length in range, printable ASCII, and room left for nonce, one byte and tag
    size = blob[len(MAGIC) + 1]
    end = _FIXED_HEADER + size
    if not 1 <= size <= MAX_KEY_ID_BYTES or len(blob) < end + NONCE_BYTES + 1 + TAG_BYTES:
        raise _invalid()
    raw_id = blob[_FIXED_HEADER:end]
    if raw_id.translate(None, _KEY_ID_BYTES):  # a byte left once every allowed one is deleted (C loop)
        raise _invalid()
    header_end = end + NONCE_BYTES
    return Parsed(raw_id.decode("ascii"), blob[:header_end], blob[header_end:])


def key_id_of(blob: bytes) -> str:
    """The KMS key ID a blob names, read without decrypting (UNVERIFIED until :func:`unseal` succeeds).

    For Decrypt's resolve step: the key whose policy authorizes the request. InvalidCiphertextException,
    with the one message, for a blob that is not in our format.
    """
    return parse(blob).key_id


def open_parsed(parsed: Parsed, *, material: bytes, encoded_context: bytes) -> bytes:
    """The plaintext of a parsed blob under the key ``material``, with the context already encoded
    (:func:`encode_context`). The caller has checked that ``parsed.key_id`` is that key's ID.
    InvalidCiphertextException, with the one message, for every failure."""
    if len(material) != SYMMETRIC_MATERIAL_BYTES:
        raise _invalid()
    try:
        return AESGCM(material).decrypt(
            parsed.header[-NONCE_BYTES:], parsed.sealed, parsed.header + encoded_context
        )
    except InvalidTag:
        raise _invalid() from None


def unseal(*, blob: bytes, key_id: str, material: bytes, context: Mapping[str, str] | None) -> bytes:
    """The plaintext of a blob made by :func:`seal` under ``key_id`` with this ``context``.

    InvalidCiphertextException, with the one message, for every failure: not our format, another key's
    blob, a changed byte anywhere, another context.
    """
    parsed = parse(blob)
    if parsed.key_id != key_id:
        raise _invalid()
    return open_parsed(parsed, material=material, encoded_context=encode_context(context))


#: EncryptionAlgorithmSpec values for RSA keys and their OAEP hash (MGF1 with the same hash, empty label).
RSA_ALGORITHMS: Mapping[str, type[hashes.HashAlgorithm]] = {
    "RSAES_OAEP_SHA_1": hashes.SHA1,
    "RSAES_OAEP_SHA_256": hashes.SHA256,
}


def _oaep(algorithm: str) -> padding.OAEP:
    hash_type = RSA_ALGORITHMS[algorithm]
    return padding.OAEP(mgf=padding.MGF1(algorithm=hash_type()), algorithm=hash_type(), label=None)


def rsa_max_plaintext(key_size: int, algorithm: str) -> int:
    """The most bytes RSAES-OAEP takes: k - 2*hLen - 2 (RFC 8017 §7.1.1). The Encrypt reference lists the
    results: RSA_2048 214 (SHA-1) / 190 (SHA-256), RSA_3072 342 / 318, RSA_4096 470 / 446."""
    return key_size // 8 - 2 * RSA_ALGORITHMS[algorithm]().digest_size - 2


def _private_key(material: bytes) -> rsa.RSAPrivateKey:
    key = serialization.load_der_private_key(material, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise TypeError("not an RSA key")
    return key


def rsa_encrypt(*, material: bytes, algorithm: str, plaintext: bytes) -> bytes:
    """The raw RSAES-OAEP ciphertext of ``plaintext`` under the public half of an RSA KMS key (``material``:
    PKCS#8 DER of its private key). The caller checks the length against :func:`rsa_max_plaintext`."""
    return _private_key(material).public_key().encrypt(plaintext, _oaep(algorithm))


def rsa_decrypt(*, material: bytes, algorithm: str, blob: bytes) -> bytes:
    """The plaintext of a raw RSAES-OAEP ciphertext; InvalidCiphertextException (the one message) for any
    failure: wrong length, another key, another algorithm, a changed byte."""
    key = _private_key(material)
    if len(blob) != key.key_size // 8:
        raise _invalid()
    try:
        return key.decrypt(blob, _oaep(algorithm))
    except ValueError:
        raise _invalid() from None
