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
- Parsing uses asn1crypto, which takes BER (indefinite, constructed or primitive ``[0]``) and DER alike.
  The rid's value is not checked: how KMS derives its subjectKeyIdentifier is undocumented.
- Every parse, RSA-OAEP, AES and padding failure raises one :class:`DecryptionError` with one message
  (no oracle). The plaintext is never logged or put in an exception.
- The format has no integrity check (CBC, no MAC, as KMS sends it): a change to the rid, the IV or a
  non-final ciphertext block can decrypt to different bytes instead of failing. Integrity comes from TLS.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from asn1crypto import cms as asn1_cms
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

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

#: KMS model: ``CiphertextForRecipient`` is a blob of 1..6144 bytes (botocore kms service-2.json).
MAX_CIPHERTEXT_FOR_RECIPIENT_BYTES = 6144
#: KMS model: ``Plaintext`` is a blob of 1..4096 bytes; nothing bigger is ever wrapped.
MAX_PLAINTEXT_BYTES = 4096
#: RSA moduli we encrypt to (the AWS C SDK can make these three; KMS documents 2048).
RSA_KEY_SIZES = (2048, 3072, 4096)
#: AES-256 content-encryption key and CBC IV sizes (RFC 3565 §2.1: the IV is the 16-byte parameter).
CEK_BYTES = 32
IV_BYTES = 16
_AES_BLOCK = 16

# DER of the OIDs and of the OAEP AlgorithmIdentifier, byte-identical to KMS's (constructed.ber @65..127).
_OID_ENVELOPED_DATA = bytes.fromhex("06092a864886f70d010703")  # 1.2.840.113549.1.7.3
_OID_DATA = bytes.fromhex("06092a864886f70d010701")  # 1.2.840.113549.1.7.1
_OID_AES256_CBC = bytes.fromhex("060960864801650304012a")  # 2.16.840.1.101.3.4.1.42
_OAEP_SHA256_ALGID = bytes.fromhex(
    "303c06092a864886f70d010107302fa00f300d06096086480165030402010500"
    "a11c301a06092a864886f70d010108300d06096086480165030402010500"
)
_VERSION_2 = b"\x02\x01\x02"
_EOC = b"\x00\x00"

_OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def _length(n: int) -> bytes:
    """DER definite length octets (X.690 §8.1.3)."""
    if n < 0x80:
        return bytes((n,))
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(raw),)) + raw


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes((tag,)) + _length(len(content)) + content


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
    cek = os.urandom(CEK_BYTES)
    iv = os.urandom(IV_BYTES)
    pad = _AES_BLOCK - len(plaintext) % _AES_BLOCK  # PKCS#7 (RFC 5652 §6.3): always 1..16 bytes
    encryptor = Cipher(algorithms.AES(cek), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(plaintext + bytes((pad,)) * pad) + encryptor.finalize()
    encrypted_key = recipient.encrypt(cek, _OAEP)

    ktri = _tlv(0x30, _VERSION_2 + _tlv(0x80, key_id) + _OAEP_SHA256_ALGID + _tlv(0x04, encrypted_key))
    content_algorithm = _tlv(0x30, _OID_AES256_CBC + _tlv(0x04, iv))
    encrypted_content_info = _indef(0x30, _OID_DATA, content_algorithm, _indef(0xA0, _tlv(0x04, ciphertext)))
    enveloped_data = _indef(0x30, _VERSION_2, _tlv(0x31, ktri), encrypted_content_info)
    return _indef(0x30, _OID_ENVELOPED_DATA, _indef(0xA0, enveloped_data))


def _check_oaep(algorithm: asn1_cms.KeyEncryptionAlgorithm) -> None:
    """RSAES-OAEP with SHA-256, MGF1-SHA-256 and an empty label (RFC 8017 A.2.1), else ValueError."""
    if algorithm.dump() == _OAEP_SHA256_ALGID:  # the common case: KMS's exact encoding
        return
    if algorithm["algorithm"].native != "rsaes_oaep":
        raise ValueError("key encryption algorithm")
    params = algorithm["parameters"]
    mgf = params["mask_gen_algorithm"]
    if (
        params["hash_algorithm"]["algorithm"].native != "sha256"
        or params["hash_algorithm"]["parameters"].native is not None  # NULL or absent (RFC 5754 §2)
        or mgf["algorithm"].native != "mgf1"
        or mgf["parameters"]["algorithm"].native != "sha256"
        or mgf["parameters"]["parameters"].native is not None
        or params["p_source_algorithm"]["algorithm"].native != "p_specified"
        or params["p_source_algorithm"]["parameters"].native != b""
    ):
        raise ValueError("OAEP parameters")


@dataclass(frozen=True, slots=True, kw_only=True)
class EnvelopeFields:
    """The parts of a parsed CiphertextForRecipient (nothing here is decrypted or authenticated)."""

    key_id: bytes
    encrypted_key: bytes
    iv: bytes
    ciphertext: bytes


def _parse(blob: bytes) -> EnvelopeFields:
    """The parse-and-check pipeline; raises anything on bad input (callers turn it into DecryptionError)."""
    # (1) size bound and BER/DER parse (strict: no trailing bytes)
    if not 0 < len(blob) <= MAX_CIPHERTEXT_FOR_RECIPIENT_BYTES:
        raise ValueError("size")
    content_info = asn1_cms.ContentInfo.load(blob, strict=True)
    # (2) ContentInfo contentType envelopedData; EnvelopedData version 2 (RFC 5652 §6.1)
    if content_info["content_type"].native != "enveloped_data":
        raise ValueError("content type")
    enveloped = content_info["content"]
    if enveloped["version"].native != "v2":
        raise ValueError("EnvelopedData version")
    # (3) exactly one recipient, a KeyTransRecipientInfo v2 identified by subjectKeyIdentifier
    recipients = enveloped["recipient_infos"]
    if len(recipients) != 1 or recipients[0].name != "ktri":
        raise ValueError("recipients")
    ktri = recipients[0].chosen
    if ktri["version"].native != "v2" or ktri["rid"].name != "subject_key_identifier":
        raise ValueError("recipient version")
    # (4) RSAES-OAEP SHA-256 / MGF1-SHA-256, no label
    _check_oaep(ktri["key_encryption_algorithm"])
    # (5) id-data, AES-256-CBC with a 16-byte IV, non-empty whole-block ciphertext
    eci = enveloped["encrypted_content_info"]
    if eci["content_type"].native != "data":
        raise ValueError("inner content type")
    cea = eci["content_encryption_algorithm"]
    if cea["algorithm"].native != "aes256_cbc":
        raise ValueError("content encryption algorithm")
    iv = cea["parameters"].native
    ciphertext = eci["encrypted_content"].native
    if not isinstance(iv, bytes) or len(iv) != IV_BYTES:
        raise ValueError("IV")
    if not isinstance(ciphertext, bytes) or not ciphertext or len(ciphertext) % _AES_BLOCK:
        raise ValueError("ciphertext length")
    return EnvelopeFields(
        key_id=ktri["rid"].chosen.native,
        encrypted_key=ktri["encrypted_key"].native,
        iv=iv,
        ciphertext=ciphertext,
    )


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
    unpadder = sym_padding.PKCS7(algorithms.AES.block_size).unpadder()
    return unpadder.update(padded) + unpadder.finalize()


def decrypt_ciphertext_for_recipient(blob: bytes, private_key: rsa.RSAPrivateKey) -> bytes:
    """Open a CiphertextForRecipient (KMS's BER, either ``[0]`` form, or DER) with the recipient's key.

    Raises :class:`DecryptionError` (one message) on every failure, whatever its cause.
    """
    try:
        return _open(blob, private_key)
    except Exception:
        raise DecryptionError() from None
