"""The NSM codec's fast path for the attestation messages, which are on every attested call.

``{"Attestation": {"user_data": ?, "nonce": ?, "public_key": ?}}`` and ``{"Attestation": {"document": ?}}``
are constant CBOR around their byte strings, so :mod:`attestation.nsm_wire` splices them when encoding and
these functions read them by prefix when decoding. Kept apart from the strict codec because its rule is
different: it accepts only the exact minimal encodings our own encoder writes and returns None for anything
else, which then goes through the strict decoder. So it accepts nothing the strict decoder would refuse and
reads everything the same way (tests/attestation/test_nsm_wire_fast.py checks both).
"""

from __future__ import annotations

import cbor2

from attestation._nsm_messages import Attestation, AttestationResponse

# The attestation messages are on every attested call; their CBOR around the variable byte strings is constant
# (a definite map is its head, then key, value, ... in insertion order), so they are spliced, not built.
_ATTESTATION_REQUEST_PARTS = (
    b"\xa1" + cbor2.dumps(Attestation.VARIANT) + b"\xa3" + cbor2.dumps("user_data"),
    cbor2.dumps("nonce"),
    cbor2.dumps("public_key"),
)
_ATTESTATION_RESPONSE_HEAD = (
    b"\xa1" + cbor2.dumps(AttestationResponse.VARIANT) + b"\xa1" + cbor2.dumps("document")
)

#: CBOR major type 2 (byte string) initial bytes: a length in the byte itself, or in the next 1, 2 or 4 bytes.
_BSTR = 0x40
_BSTR_LENGTH_BYTES = {0x58: 1, 0x59: 2, 0x5A: 4}
#: Smallest length each long form may carry in minimal ("preferred") CBOR.
_BSTR_MINIMAL = {1: 24, 2: 0x100, 4: 0x10000}
_NULL = 0xF6


def _splice_bstr(data: bytes, offset: int, *, nullable: bool) -> tuple[bytes | None, int] | None:
    """The byte string (or null) at ``offset`` and the offset after it; None if it is anything else.

    Only minimal-length definite encodings are taken: anything unusual goes to the full strict decoder, so
    the fast paths below accept nothing the strict decoder would refuse, and read everything the same way.
    """
    if offset >= len(data):
        return None
    initial = data[offset]
    if nullable and initial == _NULL:
        return None, offset + 1
    if _BSTR <= initial < _BSTR + 24:
        start, length = offset + 1, initial - _BSTR
    elif initial in _BSTR_LENGTH_BYTES:
        size = _BSTR_LENGTH_BYTES[initial]
        start = offset + 1 + size
        length = int.from_bytes(data[offset + 1 : start], "big")
        if start > len(data) or length < _BSTR_MINIMAL[size]:
            return None
    else:
        return None
    end = start + length
    if end > len(data):
        return None
    return data[start:end], end


def _fast_attestation_request(data: bytes) -> Attestation | None:
    """``{"Attestation": {"user_data": ?, "nonce": ?, "public_key": ?}}`` as our client sends it, or None."""
    user_data_key, nonce_key, public_key_key = _ATTESTATION_REQUEST_PARTS
    if type(data) is not bytes or not data.startswith(user_data_key):
        return None
    values: list[bytes | None] = []
    offset = len(user_data_key)
    for key in (nonce_key, public_key_key, b""):
        item = _splice_bstr(data, offset, nullable=True)
        if item is None:
            return None
        value, offset = item
        values.append(value)
        if not data.startswith(key, offset):
            return None
        offset += len(key)
    if offset != len(data):
        return None
    user_data, nonce, public_key = values
    return Attestation(user_data=user_data, nonce=nonce, public_key=public_key)


def _fast_attestation_response(data: bytes) -> AttestationResponse | None:
    """``{"Attestation": {"document": bstr}}`` with nothing after it, or None."""
    if type(data) is not bytes or not data.startswith(_ATTESTATION_RESPONSE_HEAD):
        return None
    item = _splice_bstr(data, len(_ATTESTATION_RESPONSE_HEAD), nullable=False)
    if item is None or item[0] is None or item[1] != len(data):
        return None
    return AttestationResponse(document=item[0])
