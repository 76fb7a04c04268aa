"""An NSM's payloads decoded from a remembered shape, without the generic CBOR decoder.

An NSM's documents differ from one another in the timestamp and the signature only (a fresh document per
call keeps the module ID, PCRs, certificate, cabundle and key), so once one payload has been decoded the
strict way, the next ones are recognized by their bytes: the same head up to the ``timestamp`` key, one
CBOR unsigned integer, the same tail. CBOR is read front to back, so equal bytes before and after one
complete integer item decode to equal items around it: the result is the remembered document with the
new timestamp, exactly what the strict decode gives (tests/attestation/test_document_fast.py compares
them on arbitrary inputs). Anything else goes the strict way.
"""

from __future__ import annotations

import contextlib

import cbor2

from attestation._model import MAX_MODULE_ID_BYTES, AttestationDocument, with_timestamp

#: Bound on remembered payload shapes (entries: the head (~80 bytes), the tail (~4.5 KB) and a document).
PAYLOAD_TEMPLATE_CACHE_SIZE = 64
#: Where the ``timestamp`` key may start: after the map head and the module ID and digest entries.
_TIMESTAMP_SEARCH_BYTES = 1 + 10 + 3 + MAX_MODULE_ID_BYTES + 7 + 7
_TIMESTAMP_KEY = b"\x69timestamp"
#: CBOR major type 0 heads: additional information 24..27 is followed by 1, 2, 4 or 8 bytes of value.
_UINT_FOLLOWING = {0x18: 1, 0x19: 2, 0x1A: 4, 0x1B: 8}
#: Head (map start .. ``timestamp`` key) -> (tail after the timestamp's value, the document decoded).
_TEMPLATES: dict[bytes, tuple[bytes, AttestationDocument]] = {}


def from_template(payload: bytes) -> AttestationDocument | None:
    """The decoded document if ``payload`` has a remembered shape; None otherwise (decode it strictly)."""
    end = payload.find(_TIMESTAMP_KEY, 0, _TIMESTAMP_SEARCH_BYTES) + len(_TIMESTAMP_KEY)
    if end < len(_TIMESTAMP_KEY):
        return None
    known = _TEMPLATES.get(payload[:end])
    if known is None or end >= len(payload):
        return None
    tail, document = known
    head = payload[end]
    if head < 0x18:
        stop, timestamp = end + 1, head
    else:
        following = _UINT_FOLLOWING.get(head)
        if following is None:
            return None
        stop = end + 1 + following
        timestamp = int.from_bytes(payload[end + 1 : stop], "big")
    if timestamp == 0 or len(payload) != stop + len(tail) or not payload.endswith(tail):
        return None  # the strict way words the error, or decodes another shape
    return with_timestamp(document, timestamp)


def remember(payload: bytes, document: AttestationDocument) -> None:
    """Keep ``payload``'s shape if its head is exactly map, module ID, digest, ``timestamp`` key."""
    head = b"".join(
        (
            payload[:1],
            cbor2.dumps("module_id"),
            cbor2.dumps(document.module_id),
            cbor2.dumps("digest"),
            cbor2.dumps(document.digest),
            _TIMESTAMP_KEY,
        )
    )
    # An indefinite map or a definite one of 6..9 entries (the required fields and up to three optional).
    if payload[0] not in b"\xbf\xa6\xa7\xa8\xa9" or not payload.startswith(head):
        return
    end = len(head)
    value = cbor2.dumps(document.timestamp)  # the canonical encoding, as the NSM writes it
    if payload[end : end + len(value)] != value:
        return
    if len(_TEMPLATES) >= PAYLOAD_TEMPLATE_CACHE_SIZE:
        with contextlib.suppress(KeyError, RuntimeError, StopIteration):  # another thread evicted first
            del _TEMPLATES[next(iter(_TEMPLATES))]
    _TEMPLATES[head] = (payload[end + len(value) :], document)
