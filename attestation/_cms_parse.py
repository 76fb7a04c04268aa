"""The strict reader of a CiphertextForRecipient: a hand-rolled BER walker for exactly KMS's shape, and a
per-shape template check that skips the walk for blobs shaped like one already walked.

Kept apart from :mod:`attestation.cms` (the writer and the decrypting entry points) because reading is its
own problem with its own bounds: lengths, depth, and a cache whose soundness argument (on
:class:`_Template`) concerns only the walk. Everything here raises plain exceptions on bad input; the
callers in :mod:`attestation.cms` turn every one into the single :class:`DecryptionError`. Format and rules:
that module's docstring.
"""

from __future__ import annotations

from dataclasses import dataclass

from attestation._cms_der import (
    _AES_BLOCK,
    _OID_AES256_CBC,
    _OID_DATA,
    _OID_ENVELOPED_DATA,
    _VERSION_2,
    IV_BYTES,
    _tlv,
)

#: KMS model: ``CiphertextForRecipient`` is a blob of 1..6144 bytes (botocore kms service-2.json).
MAX_CIPHERTEXT_FOR_RECIPIENT_BYTES = 6144
_CONSTRUCTED = 0x20
#: Parser bounds: nesting of indefinite-length elements, and long-form length octets (6144 needs 2).
_MAX_DEPTH = 8
_MAX_LENGTH_OCTETS = 2


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
