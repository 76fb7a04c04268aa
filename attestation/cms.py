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
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

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
_CONSTRUCTED = 0x20
#: Parser bounds: nesting of indefinite-length elements, and long-form length octets (6144 needs 2).
_MAX_DEPTH = 8
_MAX_LENGTH_OCTETS = 2

#: The PKCS#7 scheme for AES blocks; immutable (it holds the block size), so one serves every message.
_PKCS7 = sym_padding.PKCS7(algorithms.AES.block_size)
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


def _oaep_sha256_algids() -> frozenset[bytes]:
    """Every DER encoding of RSAES-OAEP(SHA-256, MGF1-SHA-256, empty label) (RFC 8017 A.2.1, RFC 4055 §4.1).

    The hash parameters may be NULL or absent (RFC 5754 §2), in both places; pSourceFunc may be absent
    (the default, an empty label) or spelled out as pSpecified with an empty OCTET STRING.
    """
    sha256 = bytes.fromhex("0609608648016503040201")
    mgf1 = bytes.fromhex("06092a864886f70d010108")
    p_specified_empty = _tlv(0x30, bytes.fromhex("06092a864886f70d010109") + _tlv(0x04, b""))
    oaep = bytes.fromhex("06092a864886f70d010107")
    out = set()
    for hash_params in (b"\x05\x00", b""):
        for mgf_params in (b"\x05\x00", b""):
            for label in (b"", _tlv(0xA2, p_specified_empty)):
                params = (
                    _tlv(0xA0, _tlv(0x30, sha256 + hash_params))
                    + _tlv(0xA1, _tlv(0x30, mgf1 + _tlv(0x30, sha256 + mgf_params)))
                    + label
                )
                out.add(_tlv(0x30, oaep + _tlv(0x30, params)))
    return frozenset(out)


_OAEP_SHA256_ALGIDS = _oaep_sha256_algids()


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


@dataclass(frozen=True, slots=True, kw_only=True)
class EnvelopeFields:
    """The parts of a parsed CiphertextForRecipient (nothing here is decrypted or authenticated)."""

    key_id: bytes
    encrypted_key: bytes
    iv: bytes
    ciphertext: bytes


def _element(blob: bytes, pos: int, end: int, depth: int = 0) -> tuple[int, int, int, int]:
    """The BER element at ``pos`` (not past ``end``): (tag, content start, content end, next position).

    X.690 §8.1: one-byte tags only (every tag here is low), definite lengths in short or long form of at
    most :data:`_MAX_LENGTH_OCTETS` octets, indefinite length only on constructed elements, whose end is
    found by walking their children (at most :data:`_MAX_DEPTH` levels) to the end-of-contents octets.
    """
    if depth > _MAX_DEPTH or end - pos < 2:
        raise ValueError("truncated or too deep")
    tag = blob[pos]
    if tag == 0 or tag & 0x1F == 0x1F:
        raise ValueError("tag")
    length = blob[pos + 1]
    pos += 2
    if length == 0x80:  # indefinite: children up to 00 00
        if not tag & _CONSTRUCTED:
            raise ValueError("indefinite primitive")
        inner = pos
        while True:
            if end - inner < 2:
                raise ValueError("no end-of-contents")
            if blob[inner] == 0:
                if blob[inner + 1] != 0:
                    raise ValueError("end-of-contents")
                return tag, pos, inner, inner + 2
            inner = _element(blob, inner, end, depth + 1)[3]
    if length > 0x80:
        octets = length & 0x7F
        if octets > _MAX_LENGTH_OCTETS or end - pos < octets:
            raise ValueError("length")
        length = int.from_bytes(blob[pos : pos + octets], "big")
        pos += octets
    if end - pos < length:
        raise ValueError("truncated")
    return tag, pos, pos + length, pos + length


def _expect(blob: bytes, pos: int, end: int, tag: int) -> tuple[int, int, int]:
    """The element at ``pos`` must have ``tag``: (content start, content end, next position)."""
    found, start, stop, after = _element(blob, pos, end)
    if found != tag:
        raise ValueError("unexpected element")
    return start, stop, after


def _exact(blob: bytes, pos: int, end: int, encoding: bytes) -> int:
    """The element at ``pos`` must be exactly ``encoding`` (an OID or a version); the next position."""
    after = pos + len(encoding)
    if after > end or not blob.startswith(encoding, pos):
        raise ValueError("unexpected value")
    return after


def _done(pos: int, end: int) -> None:
    if pos != end:
        raise ValueError("unexpected trailing element")


def _parse(blob: bytes) -> EnvelopeFields:
    """The parse-and-check pipeline; raises anything on bad input (callers turn it into DecryptionError).

    A blob shaped like one parsed before (same length, same bytes outside the four fields) takes the
    template check of :func:`_templated`; anything else, and the first of each shape, the full walk.
    """
    template = _TEMPLATES.get(len(blob))
    if template is not None:
        fields = template.match(blob)
        if fields is not None:
            return fields
    fields, regions = _walk(blob)
    if regions is not None and len(_TEMPLATES) < MAX_TEMPLATES and len(blob) not in _TEMPLATES:
        _TEMPLATES[len(blob)] = _Template.of(blob, regions)
    return fields


def _walk(blob: bytes) -> tuple[EnvelopeFields, tuple[tuple[int, int], ...] | None]:
    """The full BER walk: the fields, and where they lie (None when the ciphertext is in several chunks)."""
    # (1) size bound; ContentInfo is one element, nothing after it (BER or DER, see _element)
    if not 0 < len(blob) <= MAX_CIPHERTEXT_FOR_RECIPIENT_BYTES:
        raise ValueError("size")
    info_start, info_stop, after = _expect(blob, 0, len(blob), 0x30)
    _done(after, len(blob))
    # (2) ContentInfo contentType envelopedData, [0] EXPLICIT EnvelopedData version 2 (RFC 5652 §3, §6.1);
    # no originatorInfo, no unprotectedAttrs (KMS sends neither)
    pos = _exact(blob, info_start, info_stop, _OID_ENVELOPED_DATA)
    explicit_start, explicit_stop, pos = _expect(blob, pos, info_stop, 0xA0)
    _done(pos, info_stop)
    start, enveloped_end, pos = _expect(blob, explicit_start, explicit_stop, 0x30)
    _done(pos, explicit_stop)
    stop = enveloped_end
    pos = _exact(blob, start, stop, _VERSION_2)
    # (3) recipientInfos: exactly one KeyTransRecipientInfo v2 identified by [0] subjectKeyIdentifier
    set_start, set_stop, pos = _expect(blob, pos, enveloped_end, 0x31)
    ktri_start, ktri_stop, after = _expect(blob, set_start, set_stop, 0x30)
    _done(after, set_stop)
    cursor = _exact(blob, ktri_start, ktri_stop, _VERSION_2)
    rid_start, rid_stop, cursor = _expect(blob, cursor, ktri_stop, 0x80)
    # (4) RSAES-OAEP SHA-256 / MGF1-SHA-256, no label: one of the DER encodings of exactly that
    algorithm_start = cursor
    _, _, cursor = _expect(blob, cursor, ktri_stop, 0x30)
    if blob[algorithm_start:cursor] not in _OAEP_SHA256_ALGIDS:
        raise ValueError("key encryption algorithm")
    key_start, key_stop, cursor = _expect(blob, cursor, ktri_stop, 0x04)
    _done(cursor, ktri_stop)
    # (5) EncryptedContentInfo: id-data, AES-256-CBC with a 16-byte IV, then [0] encryptedContent,
    # primitive or constructed of OCTET STRINGs (openssl -stream); a non-empty whole-block ciphertext
    eci_start, eci_stop, pos = _expect(blob, pos, enveloped_end, 0x30)
    _done(pos, enveloped_end)
    cursor = _exact(blob, eci_start, eci_stop, _OID_DATA)
    algorithm_start, algorithm_stop, cursor = _expect(blob, cursor, eci_stop, 0x30)
    inner = _exact(blob, algorithm_start, algorithm_stop, _OID_AES256_CBC)
    iv_start, iv_stop, inner = _expect(blob, inner, algorithm_stop, 0x04)
    _done(inner, algorithm_stop)
    tag, content_start, content_stop, cursor = _element(blob, cursor, eci_stop)
    _done(cursor, eci_stop)
    if tag == 0x80:
        ciphertext = blob[content_start:content_stop]
        spans: list[tuple[int, int]] = [(content_start, content_stop)]
    elif tag == 0xA0:
        chunks = []
        spans = []
        while content_start < content_stop:
            chunk_start, chunk_stop, content_start = _expect(blob, content_start, content_stop, 0x04)
            chunks.append(blob[chunk_start:chunk_stop])
            spans.append((chunk_start, chunk_stop))
        ciphertext = b"".join(chunks)
    else:
        raise ValueError("encrypted content")
    if iv_stop - iv_start != IV_BYTES:
        raise ValueError("IV")
    if not ciphertext or len(ciphertext) % _AES_BLOCK:
        raise ValueError("ciphertext length")
    fields = EnvelopeFields(
        key_id=blob[rid_start:rid_stop],
        encrypted_key=blob[key_start:key_stop],
        iv=blob[iv_start:iv_stop],
        ciphertext=ciphertext,
    )
    regions = None
    if len(spans) == 1:
        regions = ((rid_start, rid_stop), (key_start, key_stop), (iv_start, iv_stop), spans[0])
    return fields, regions


@dataclass(frozen=True, slots=True)
class _Template:
    """The constant bytes of one parsed blob around its four fields (rid, encryptedKey, IV, ciphertext).

    Why a match is as good as the full walk: the walk reads only tags, lengths, end-of-contents octets and
    the exact-value elements (OIDs, versions, the OAEP identifier); it never reads inside the four fields,
    which are primitive contents, except for their lengths (encoded outside them). A blob of the same
    length with the same bytes outside the fields is therefore walked identically, and yields its own
    bytes at the same places. The checks on the fields' sizes (IV 16 bytes, ciphertext whole blocks)
    hold because the sizes are those of the blob the template was made from.
    """

    constants: tuple[tuple[int, bytes], ...]
    regions: tuple[tuple[int, int], ...]

    @classmethod
    def of(cls, blob: bytes, regions: tuple[tuple[int, int], ...]) -> _Template:
        constants = []
        cursor = 0
        for start, stop in regions:  # in the order they appear in the blob
            constants.append((cursor, blob[cursor:start]))
            cursor = stop
        constants.append((cursor, blob[cursor:]))
        return cls(constants=tuple(constants), regions=regions)

    def match(self, blob: bytes) -> EnvelopeFields | None:
        """The fields of ``blob`` (of this template's length) if its constant bytes are equal, else None."""
        for start, constant in self.constants:
            if not blob.startswith(constant, start):
                return None
        (rid_start, rid_stop), (key_start, key_stop), (iv_start, iv_stop), (ct_start, ct_stop) = self.regions
        return EnvelopeFields(
            key_id=blob[rid_start:rid_stop],
            encrypted_key=blob[key_start:key_stop],
            iv=blob[iv_start:iv_stop],
            ciphertext=blob[ct_start:ct_stop],
        )


#: Blob shapes seen, by length (a GenerateRandom answer's length follows from NumberOfBytes and the key
#: size, so a client sees a handful); bounded, filled only from blobs the full walk accepted.
MAX_TEMPLATES = 256
_TEMPLATES: dict[int, _Template] = {}


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
