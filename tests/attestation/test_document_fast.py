"""The decoder's fast paths (the NSM's COSE envelope sliced, remembered payload shapes) give exactly what
the strict decode gives: the same SignedDocument, or the same error, on NSM documents and on any edit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from attestation import _shapes, document
from attestation.document import (
    PROTECTED_ES384,
    AttestationDocument,
    decode_document,
    encode_document,
    encode_payload,
)
from attestation.errors import MalformedDocumentError

_KEY = ec.generate_private_key(ec.SECP384R1())
_BASE = AttestationDocument(
    module_id="i-0123456789abcdef0-enc0123456789abcdef",
    digest="SHA384",
    timestamp=1_764_417_600_000,
    pcrs={i: bytes([i]) * 48 for i in range(16)},
    certificate=b"\x30" * 640,
    cabundle=(b"\x31" * 500, b"\x32" * 700, b"\x33" * 800, b"\x34" * 900),
    public_key=b"\x30\x82" + bytes(292),
)
_TIMESTAMPS = st.integers(min_value=0, max_value=2**64 - 1)


def _envelope(payload: bytes, signature: bytes = bytes(96)) -> bytes:
    return cbor2.dumps([PROTECTED_ES384, {}, payload, signature])


def _outcome(data: bytes) -> tuple[Any, ...]:
    try:
        signed = decode_document(data)
    except MalformedDocumentError as error:
        return ("error", str(error))
    return ("ok", signed.protected, signed.payload, signed.signature, signed.document, signed.raw)


def _strict(data: bytes) -> tuple[Any, ...]:
    """The outcome with no fast path: no remembered shapes, an envelope head nothing starts with."""
    saved = dict(_shapes._TEMPLATES)
    head = document._NSM_COSE_HEAD
    _shapes._TEMPLATES.clear()
    document._NSM_COSE_HEAD = b"\x00" * 20000  # longer than any document: never a prefix
    try:
        return _outcome(data)
    finally:
        document._NSM_COSE_HEAD = head
        _shapes._TEMPLATES.clear()
        _shapes._TEMPLATES.update(saved)


@pytest.fixture(autouse=True)
def _fresh_templates() -> Iterator[None]:
    _shapes._TEMPLATES.clear()
    yield
    _shapes._TEMPLATES.clear()


def _primed() -> bytes:
    """Decode one NSM-shaped document (remembering its shape); return its payload."""
    _shapes._TEMPLATES.clear()
    data = encode_document(_BASE, _KEY)
    decode_document(data)
    assert len(_shapes._TEMPLATES) == 1
    return encode_payload(_BASE)


def test_a_new_timestamp_is_decoded_from_the_remembered_shape() -> None:
    _primed()
    later = AttestationDocument(**{**_fields(_BASE), "timestamp": _BASE.timestamp + 1234})
    data = encode_document(later, _KEY)
    payload = encode_payload(later)
    fast = _shapes.from_template(payload)
    assert fast == later
    assert _outcome(data) == _strict(data)
    assert decode_document(data).document == later


def _fields(doc: AttestationDocument) -> dict[str, Any]:
    return {name: getattr(doc, name) for name in document.FIELD_ORDER}


@settings(max_examples=300, deadline=None)
@given(timestamp=_TIMESTAMPS, head=st.integers(min_value=0, max_value=0xFF), width=st.integers(0, 9))
def test_any_timestamp_encoding_decodes_as_the_strict_way(timestamp: int, head: int, width: int) -> None:
    payload = _primed()
    key_end = payload.index(b"\x69timestamp") + 10
    value_end = key_end + len(cbor2.dumps(_BASE.timestamp))
    # A canonical integer, or an arbitrary head byte with arbitrary following bytes.
    canonical = cbor2.dumps(timestamp)
    arbitrary = bytes([head]) + timestamp.to_bytes(8, "big")[:width]
    for value in (canonical, arbitrary):
        edited = payload[:key_end] + value + payload[value_end:]
        data = _envelope(edited)
        assert _outcome(data) == _strict(data)


@settings(max_examples=400, deadline=None)
@given(
    edits=st.lists(
        st.tuples(
            st.integers(min_value=0), st.sampled_from(["set", "insert", "delete"]), st.integers(0, 255)
        ),
        min_size=1,
        max_size=3,
    ),
    outer=st.booleans(),
)
def test_edited_documents_decode_as_the_strict_way(edits: list[tuple[int, str, int]], outer: bool) -> None:
    payload = _primed()
    target = bytearray(_envelope(payload) if outer else payload)
    for position, kind, byte in edits:
        at = position % (len(target) + 1)
        if kind == "insert":
            target[at:at] = bytes([byte])
        elif at < len(target):
            if kind == "set":
                target[at] = byte
            else:
                del target[at]
    data = bytes(target) if outer else _envelope(bytes(target))
    assert _outcome(data) == _strict(data)


@settings(max_examples=100, deadline=None)
@given(
    size=st.integers(min_value=0, max_value=600),
    tail=st.binary(max_size=4),
    signature=st.binary(max_size=100),
)
def test_envelopes_near_the_nsm_shape_decode_as_the_strict_way(
    size: int, tail: bytes, signature: bytes
) -> None:
    payload = _primed()
    for data in (
        _envelope(payload[:size] + tail, signature),
        _envelope(payload, signature) + tail,
        b"\xd2" + _envelope(payload, signature),
        bytes(document._NSM_COSE_HEAD) + size.to_bytes(2, "big") + payload[:size] + b"\x58\x60" + bytes(96),
    ):
        assert _outcome(data) == _strict(data)


def test_every_prefix_of_an_nsm_envelope_decodes_as_the_strict_way() -> None:
    payload = _primed()
    data = _envelope(payload)
    for n in [*range(40), *range(len(data) - 120, len(data) + 1)]:
        assert _outcome(data[:n]) == _strict(data[:n])
    assert _outcome(data)[0] == "ok"


def test_real_documents_take_the_fast_paths_with_the_same_result(vectors: Path) -> None:
    for path in sorted((vectors / "attestation").glob("*.cbor")):
        data = path.read_bytes()
        _shapes._TEMPLATES.clear()
        first = _outcome(data)
        assert first == _strict(data)
        if first[0] != "ok":
            continue
        payload = first[2]
        doc = first[4]
        key_end = payload.find(b"\x69timestamp") + 10
        value = cbor2.dumps(doc.timestamp)
        if key_end < 10 or payload[key_end : key_end + len(value)] != value:
            continue
        edited = payload[:key_end] + cbor2.dumps(doc.timestamp + 1) + payload[key_end + len(value) :]
        data2 = _envelope(edited, first[3])
        assert _outcome(data2) == _strict(data2)
