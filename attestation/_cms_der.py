"""DER atoms of the CiphertextForRecipient format, shared by its writer (:mod:`attestation.cms`) and its
strict reader (:mod:`attestation._cms_parse`).

The reader compares OIDs and versions as exact encodings, so both sides must take them from one place; the
definite-length TLV writer is here because the reader also uses it, to enumerate the OAEP identifier's
encodings. Format and rules: :mod:`attestation.cms`.
"""

from __future__ import annotations

#: AES-256-CBC IV and block sizes (RFC 3565 §2.1: the IV is the 16-byte parameter).
IV_BYTES = 16
_AES_BLOCK = 16

# DER of the OIDs and the version, byte-identical to KMS's (constructed.ber).
_OID_ENVELOPED_DATA = bytes.fromhex("06092a864886f70d010703")  # 1.2.840.113549.1.7.3
_OID_DATA = bytes.fromhex("06092a864886f70d010701")  # 1.2.840.113549.1.7.1
_OID_AES256_CBC = bytes.fromhex("060960864801650304012a")  # 2.16.840.1.101.3.4.1.42
_VERSION_2 = b"\x02\x01\x02"


def _length(n: int) -> bytes:
    """DER definite length octets (X.690 §8.1.3)."""
    if n < 0x80:
        return bytes((n,))
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(raw),)) + raw


def _tlv(tag: int, content: bytes) -> bytes:
    """A definite-length element (X.690 §8.1): tag, length octets, contents."""
    return bytes((tag,)) + _length(len(content)) + content
