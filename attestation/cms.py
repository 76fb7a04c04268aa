"""CiphertextForRecipient: the CMS EnvelopedData that AWS KMS returns for a ``Recipient`` request.

Shape (aws-facts §2, checked against ``test-vectors/kms-cms/constructed.ber``)::

    ContentInfo SEQUENCE (indef)                           RFC 5652 §3
      contentType envelopedData
      [0] EXPLICIT (indef)
        EnvelopedData SEQUENCE (indef)                     RFC 5652 §6.1
          version 2
          recipientInfos SET { KeyTransRecipientInfo }     exactly one
            version 2, rid [0] subjectKeyIdentifier (32 bytes)
            keyEncryptionAlgorithm RSAES-OAEP(SHA-256, MGF1-SHA-256), no label   RFC 8017 A.2.1
            encryptedKey OCTET STRING
          EncryptedContentInfo SEQUENCE (indef)
            contentType id-data
            contentEncryptionAlgorithm aes256-CBC, IV      RFC 3565
            encryptedContent [0] constructed (indef) { OCTET STRING }

Rules:
- Building never goes through asn1crypto (4 ms per message, deps-and-costs §2.5): a tiny TLV writer
  emits the indefinite-length containers the AWS C SDK's parser requires (it walks them with
  ``CBS_get_any_ber_asn1_element``; a definite-length outer encoding fails there).
- Parsing is a strict hand-rolled BER walker for exactly this shape (definite or indefinite lengths, so
  KMS's BER, DER and openssl's ``-stream`` output; ``[0]`` encryptedContent primitive or constructed of
  OCTET STRINGs): ~10x cheaper than asn1crypto, which the package no longer needs. OIDs, versions and
  the OAEP AlgorithmIdentifier are compared as exact encodings; anything else in the structure (another
  recipient, originatorInfo, unprotectedAttrs, trailing bytes) is refused.
  The rid's value is not checked: how KMS derives its subjectKeyIdentifier is undocumented.
- Every parse, RSA-OAEP, AES and padding failure raises one :class:`DecryptionError` with one message
  (no oracle). The plaintext is never logged or put in an exception.
- The format has no integrity check (CBC, no MAC, as KMS sends it): a change to the rid, the IV or a
  non-final ciphertext block can decrypt to different bytes instead of failing. Integrity comes from TLS.

Layout: this module is the writer and the public entry points; the strict reader (BER walk and template
check) is :mod:`attestation._cms_parse`; the OIDs, sizes and TLV writer that both share are in
:mod:`attestation._cms_der`.
"""

from __future__ import annotations

import hashlib
import os

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from attestation._cms_der import (
    _AES_BLOCK,
    _OID_AES256_CBC,
    _OID_DATA,
    _OID_ENVELOPED_DATA,
    _VERSION_2,
    IV_BYTES,
    _length,
    _tlv,
)
from attestation._cms_parse import (
    MAX_CIPHERTEXT_FOR_RECIPIENT_BYTES,
    EnvelopeFields,
    _parse,
)
from attestation.errors import DecryptionError

__all__ = [
    "MAX_CIPHERTEXT_FOR_RECIPIENT_BYTES",
    "MAX_PLAINTEXT_BYTES",
    "RSA_KEY_SIZES",
    "EnvelopeFields",
    "build_ciphertext_for_recipient",
    "decrypt_ciphertext_for_recipient",
    "parse_ciphertext_for_recipient",
    "recipient_key_id",
]

#: KMS model: ``Plaintext`` is a blob of 1..4096 bytes; nothing bigger is ever wrapped.
MAX_PLAINTEXT_BYTES = 4096
#: RSA moduli we encrypt to (the AWS C SDK can make these three; KMS documents 2048).
RSA_KEY_SIZES = (2048, 3072, 4096)
#: AES-256 content-encryption key size (RFC 3565 §2.1); the IV and block sizes are in _cms_der.
CEK_BYTES = 32

#: DER of the OAEP AlgorithmIdentifier we write, byte-identical to KMS's (constructed.ber @65..127).
_OAEP_SHA256_ALGID = bytes.fromhex(
    "303c06092a864886f70d010107302fa00f300d06096086480165030402010500"
    "a11c301a06092a864886f70d010108300d06096086480165030402010500"
)
_EOC = b"\x00\x00"

#: The PKCS#7 scheme for AES blocks; immutable (it holds the block size), so one serves every message.
_PKCS7 = sym_padding.PKCS7(algorithms.AES.block_size)
_OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def _indef(tag: int, *parts: bytes) -> bytes:
    """A constructed element in BER indefinite length: tag, 0x80, contents, EOC (X.690 §8.1.3.6)."""
    return b"".join((bytes((tag, 0x80)), *parts, _EOC))


def recipient_key_id(spki_der: bytes) -> bytes:
    """The 32-byte subjectKeyIdentifier we put in ``rid``: SHA-256 of the recipient's SubjectPublicKeyInfo.

    KMS's own derivation is undocumented (aws-facts §2); nothing that opens the CMS depends on it.
    """
    return hashlib.sha256(spki_der).digest()


def build_ciphertext_for_recipient(
    plaintext: bytes, recipient: rsa.RSAPublicKey, *, key_id: bytes | None = None
) -> bytes:
    """Encrypt ``plaintext`` to ``recipient`` as KMS's CiphertextForRecipient (BER, see module docstring).

    ``key_id`` is the rid's subjectKeyIdentifier (default :func:`recipient_key_id` of the key's SPKI).
    Raises ValueError for an empty or oversized plaintext or an RSA modulus outside :data:`RSA_KEY_SIZES`.
    """
    if not 1 <= len(plaintext) <= MAX_PLAINTEXT_BYTES:
        raise ValueError(f"plaintext must be 1..{MAX_PLAINTEXT_BYTES} bytes, got {len(plaintext)}")
    if recipient.key_size not in RSA_KEY_SIZES:
        raise ValueError(f"recipient RSA key must be one of {RSA_KEY_SIZES} bits, got {recipient.key_size}")
    if key_id is None:
        spki = recipient.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        key_id = recipient_key_id(spki)
    cek_iv = os.urandom(CEK_BYTES + IV_BYTES)  # one syscall for both (each is fresh, independent bytes)
    cek = cek_iv[:CEK_BYTES]
    iv = cek_iv[CEK_BYTES:]
    pad = _AES_BLOCK - len(plaintext) % _AES_BLOCK  # PKCS#7 (RFC 5652 §6.3): always 1..16 bytes
    encryptor = Cipher(algorithms.AES(cek), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(plaintext + _PADS[pad]) + encryptor.finalize()
    encrypted_key = recipient.encrypt(cek, _OAEP)
    shape = (len(key_id), len(encrypted_key), len(ciphertext))
    head, mid, before_content, content_head = _BUILD_TEMPLATES.get(shape) or _build_template(shape)
    return b"".join((head, key_id, mid, encrypted_key, before_content, iv, content_head, ciphertext, _TAIL))


_PADS = tuple(bytes((n,)) * n for n in range(_AES_BLOCK + 1))
#: After the ciphertext: the end-of-contents octets of [0] encryptedContent, EncryptedContentInfo,
#: EnvelopedData, [0] EXPLICIT and ContentInfo, in that order (see :func:`_assemble`).
_TAIL = _EOC * 5
#: Bound on the build templates kept: one per (rid, encryptedKey, ciphertext) length triple; KMS builds
#: for 3 key sizes and 1..4096-byte plaintexts (256 ciphertext lengths), one rid length.
MAX_BUILD_TEMPLATES = 1024
_BUILD_TEMPLATES: dict[tuple[int, int, int], tuple[bytes, bytes, bytes, bytes]] = {}


def _assemble(key_id: bytes, encrypted_key: bytes, iv: bytes, ciphertext: bytes) -> bytes:
    """The CiphertextForRecipient around its four fields, element by element (the reference encoding)."""
    ktri = _tlv(0x30, _VERSION_2 + _tlv(0x80, key_id) + _OAEP_SHA256_ALGID + _tlv(0x04, encrypted_key))
    content_algorithm = _tlv(0x30, _OID_AES256_CBC + _tlv(0x04, iv))
    encrypted_content_info = _indef(0x30, _OID_DATA, content_algorithm, _indef(0xA0, _tlv(0x04, ciphertext)))
    enveloped_data = _indef(0x30, _VERSION_2, _tlv(0x31, ktri), encrypted_content_info)
    return _indef(0x30, _OID_ENVELOPED_DATA, _indef(0xA0, enveloped_data))


def _build_template(shape: tuple[int, int, int]) -> tuple[bytes, bytes, bytes, bytes]:
    """The constant bytes :func:`_assemble` puts between the fields for these field lengths (IV: 16 bytes).

    Every length octet in the message depends only on the fields' lengths, so for a given
    (rid, encryptedKey, ciphertext) length triple everything outside the four fields is constant:
    ``head rid mid encryptedKey before_content IV content_head ciphertext _TAIL`` (equal to
    :func:`_assemble`, hypothesis-checked in tests).
    """
    key_id_len, encrypted_key_len, ciphertext_len = shape
    ktri_head = _VERSION_2 + b"\x80" + _length(key_id_len)
    mid = _OAEP_SHA256_ALGID + b"\x04" + _length(encrypted_key_len)
    ktri_content_len = len(ktri_head) + key_id_len + len(mid) + encrypted_key_len
    ktri_prefix = b"\x30" + _length(ktri_content_len)
    head = b"".join(
        (
            b"\x30\x80",  # ContentInfo
            _OID_ENVELOPED_DATA,
            b"\xa0\x80",  # [0] EXPLICIT
            b"\x30\x80",  # EnvelopedData
            _VERSION_2,
            b"\x31" + _length(len(ktri_prefix) + ktri_content_len),  # recipientInfos SET
            ktri_prefix,
            ktri_head,
        )
    )
    algorithm_content = _OID_AES256_CBC + b"\x04" + _length(IV_BYTES)
    before_content = b"\x30\x80" + _OID_DATA + b"\x30" + _length(len(algorithm_content) + IV_BYTES)
    before_content += algorithm_content
    content_head = b"\xa0\x80\x04" + _length(ciphertext_len)
    template = (head, mid, before_content, content_head)
    if len(_BUILD_TEMPLATES) < MAX_BUILD_TEMPLATES:
        _BUILD_TEMPLATES[shape] = template
    return template


def parse_ciphertext_for_recipient(blob: bytes) -> EnvelopeFields:
    """Parse and check a CiphertextForRecipient without decrypting; DecryptionError on any failure."""
    try:
        return _parse(blob)
    except Exception:
        raise DecryptionError() from None


def _open(blob: bytes, private_key: rsa.RSAPrivateKey) -> bytes:
    fields = _parse(blob)
    # (6) unwrap the content-encryption key; it must be an AES-256 key
    cek = private_key.decrypt(fields.encrypted_key, _OAEP)
    if len(cek) != CEK_BYTES:
        raise ValueError("CEK size")
    # (7) AES-256-CBC decrypt and strip PKCS#7 padding (constant-time unpadder)
    decryptor = Cipher(algorithms.AES(cek), modes.CBC(fields.iv)).decryptor()
    padded = decryptor.update(fields.ciphertext) + decryptor.finalize()
    unpadder = _PKCS7.unpadder()  # a fresh unpadding context per message
    return unpadder.update(padded) + unpadder.finalize()


def decrypt_ciphertext_for_recipient(blob: bytes, private_key: rsa.RSAPrivateKey) -> bytes:
    """Open a CiphertextForRecipient (KMS's BER, either ``[0]`` form, or DER) with the recipient's key.

    Raises :class:`DecryptionError` (one message) on every failure, whatever its cause.
    """
    try:
        return _open(blob, private_key)
    except Exception:
        raise DecryptionError() from None
