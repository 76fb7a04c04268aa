"""The document codec on every real AWS document, and the byte layout of what we encode."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attestation._model import check_fields_strictly, fields_plainly_valid
from attestation.document import (
    FIELD_ORDER,
    PROTECTED_ES384,
    AttestationDocument,
    decode_document,
    encode_document,
    verify_signature,
)
from attestation.errors import MalformedDocumentError, VerificationError

_VECTORS = Path(
    os.environ.get("ATTESTED_RANDOM_VECTORS", Path(__file__).resolve().parents[3] / "shared/test-vectors")
)
REAL = sorted(p.name for p in (_VECTORS / "attestation").glob("*.cbor"))
assert REAL, f"no real attestation documents under {_VECTORS}"


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@pytest.mark.parametrize("name", REAL)
def test_real_document_decodes_and_its_signature_verifies(vectors: Path, name: str) -> None:
    raw = (vectors / "attestation" / name).read_bytes()
    for data in (raw, b"\xd2" + raw):  # untagged as the NSM emits it, and tag 18
        signed = decode_document(data)
        leaf = x509.load_der_x509_certificate(signed.document.certificate)
        verify_signature(signed, leaf.public_key())  # type: ignore[arg-type]
        assert signed.protected == PROTECTED_ES384
        assert len(signed.document.cabundle) == 4


def test_real_layout_facts(vectors: Path) -> None:
    d = decode_document((vectors / "attestation/nitro-2025-04-29-marlin-prod-17pcrs.cbor").read_bytes())
    assert len(d.document.pcrs) == 17
    assert d.document.user_data == b""  # empty, not null
    assert d.document.nonce is None
    assert not d.document.debug_mode
    dbg = decode_document((vectors / "attestation/nitro-2024-11-14-sui-debug-pcr34.cbor").read_bytes())
    assert dbg.document.debug_mode
    assert any(dbg.document.pcrs[3])
    assert any(dbg.document.pcrs[4])


def test_encoding_has_the_nsm_layout(vectors: Path, key: ec.EllipticCurvePrivateKey) -> None:
    real = decode_document((vectors / "attestation/nitro-2024-11-14-sui-debug-pcr34.cbor").read_bytes())
    ours = encode_document(real.document, key)
    assert ours[:6] == bytes.fromhex("8444a1013822")  # untagged array(4), bstr(4) {1: -35}
    assert ours[6] == 0xA0  # empty unprotected map
    outer = cbor2.loads(ours)
    assert len(outer[3]) == 96
    assert outer[2][0] == 0xBF
    assert outer[2][-1] == 0xFF
    assert list(cbor2.loads(outer[2])) == list(FIELD_ORDER) == list(cbor2.loads(real.payload))
    again = decode_document(ours)
    assert again.document == real.document
    verify_signature(again, key.public_key())


def test_signature_from_another_key_fails(vectors: Path, key: ec.EllipticCurvePrivateKey) -> None:
    real = decode_document((vectors / "attestation/nitro-2024-11-14-sui-debug-pcr34.cbor").read_bytes())
    with pytest.raises(VerificationError, match="signature"):
        verify_signature(real, key.public_key())


def _doc(**changes: object) -> AttestationDocument:
    fields: dict[str, object] = {
        "module_id": "i-0123456789abcdef0-enc0123456789abcdef",
        "digest": "SHA384",
        "timestamp": 1_700_000_000_000,
        "pcrs": {i: bytes(48) for i in range(16)},
        "certificate": b"\x30" * 10,
        "cabundle": (b"\x30" * 10,),
    }
    fields.update(changes)
    return AttestationDocument(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"module_id": ""}, "module_id"),
        ({"digest": "SHA256"}, "digest"),
        ({"timestamp": 0}, "timestamp"),
        ({"pcrs": {}}, "pcrs"),
        ({"pcrs": {32: bytes(48)}}, "pcrs key"),
        ({"pcrs": {0: bytes(47)}}, r"pcrs\[0\]"),
        ({"certificate": b"x" * 1025}, "certificate"),
        ({"cabundle": ()}, "cabundle"),
        ({"public_key": b"x" * 1025}, "public_key"),
        ({"nonce": "text"}, "nonce"),
    ],
)
def test_field_rules(changes: dict[str, object], message: str) -> None:
    with pytest.raises(MalformedDocumentError, match=message):
        _doc(**changes)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\x01\x02", "trailing"),
        (cbor2.dumps([1, 2, 3]), "array of 4"),
        (cbor2.dumps(cbor2.CBORTag(98, [])), "tag 98"),
        (cbor2.dumps([bytes.fromhex("a1013823"), {}, b"x", bytes(96)]), "ES384"),
        (cbor2.dumps([PROTECTED_ES384, {}, b"x", bytes(64)]), "96 bytes"),
        (cbor2.dumps([PROTECTED_ES384, {}, bytes.fromhex("a201020103"), bytes(96)]), "invalid CBOR"),
        (cbor2.dumps([PROTECTED_ES384, {}, cbor2.dumps({"module_id": "x"}), bytes(96)]), "lacks"),
        (cbor2.dumps([PROTECTED_ES384, {}, cbor2.dumps({"extra": 1}), bytes(96)]), "unknown field"),
    ],
)
def test_malformed_documents(data: bytes, message: str) -> None:
    with pytest.raises(MalformedDocumentError, match=message):
        decode_document(data)


# -- the exact-type shortcut of the field checks agrees with the strict checks -----------------------------

_BYTES_OR_NOT = st.one_of(
    st.binary(max_size=4),
    st.binary(min_size=1020, max_size=1030),
    st.none(),
    st.integers(),
    st.text(max_size=2),
)
_PCRS = st.one_of(
    st.dictionaries(
        st.one_of(st.integers(-1, 33), st.booleans(), st.text(max_size=1)),
        st.one_of(st.binary(min_size=31, max_size=33), st.binary(min_size=48, max_size=48), st.none()),
        max_size=34,
    ),
    st.none(),
    st.lists(st.binary(max_size=2), max_size=2),
)
KNOWN_FIELDS = st.fixed_dictionaries(
    {
        "module_id": st.one_of(st.text(max_size=3), st.text(min_size=99, max_size=101), st.integers()),
        "digest": st.sampled_from(["SHA384", "SHA256", b"SHA384", None]),
        "timestamp": st.one_of(st.integers(-1, 2**64), st.booleans(), st.floats(), st.none()),
        "pcrs": _PCRS,
        "certificate": _BYTES_OR_NOT,
        "cabundle": st.one_of(
            st.lists(_BYTES_OR_NOT, max_size=9).map(tuple), st.lists(st.binary(min_size=1, max_size=3))
        ),
        "public_key": _BYTES_OR_NOT,
        "user_data": _BYTES_OR_NOT,
        "nonce": _BYTES_OR_NOT,
    }
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(KNOWN_FIELDS)
def test_plain_field_check_never_passes_what_the_strict_one_refuses(fields: dict[str, object]) -> None:
    doc = SimpleNamespace(**fields)
    if fields_plainly_valid(doc):  # type: ignore[arg-type]
        check_fields_strictly(doc)  # type: ignore[arg-type]  # must not raise


def test_plain_field_check_takes_a_real_document(vectors: Path) -> None:
    for name in REAL:
        document = decode_document((vectors / "attestation" / name).read_bytes()).document
        plain = SimpleNamespace(
            **{name: getattr(document, name) for name in FIELD_ORDER} | {"pcrs": dict(document.pcrs)}
        )
        assert fields_plainly_valid(plain)  # type: ignore[arg-type]
