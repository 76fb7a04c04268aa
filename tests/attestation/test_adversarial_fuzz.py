"""Hypothesis: decoding and verifying arbitrary input raise nothing but our documented error types, and
every valid document round-trips through the codec."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attestation.document import (
    FIELD_ORDER,
    PROTECTED_ES384,
    AttestationDocument,
    decode_document,
    encode_document,
    encode_payload,
    verify_signature,
)
from attestation.errors import AttestationError, MalformedDocumentError
from attestation.verify import Verifier

T0 = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)  # the fixtures' reference time (conftest.T0)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# CBOR values of the kinds an attacker can put anywhere in a document.
_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.floats(allow_nan=True)
    | st.binary(max_size=64)
    | st.text(max_size=16)
    | st.sampled_from([*FIELD_ORDER, b"\x00" * 48, 18, -35, 1])
)
cbor_values = st.recursive(
    _leaves,
    lambda children: (
        st.lists(children, max_size=6)
        | st.dictionaries(
            st.integers(min_value=-2, max_value=40) | st.sampled_from(FIELD_ORDER), children, max_size=9
        )
        | st.builds(cbor2.CBORTag, st.sampled_from([18, 24, 1, 0]), children)
    ),
    max_leaves=30,
)


def _decode_or_malformed(data: bytes) -> None:
    with contextlib.suppress(MalformedDocumentError):
        decode_document(data)


@FUZZ
@given(st.binary(max_size=2048))
def test_decode_arbitrary_bytes(data: bytes) -> None:
    _decode_or_malformed(data)


@FUZZ
@given(cbor_values)
def test_decode_arbitrary_cbor(value: Any) -> None:
    _decode_or_malformed(cbor2.dumps(value))


@settings(FUZZ, max_examples=60)  # generating nested CBOR is the slow part
@given(
    st.dictionaries(st.sampled_from(FIELD_ORDER) | st.text(max_size=4), cbor_values, max_size=10),
    st.binary(min_size=96, max_size=96),
    st.booleans(),
)
def test_decode_cose_shaped_with_arbitrary_payload(fields: dict[str, Any], sig: bytes, tagged: bool) -> None:
    data = cbor2.dumps([PROTECTED_ES384, {}, cbor2.dumps(fields), sig])
    _decode_or_malformed(b"\xd2" + data if tagged else data)


@pytest.fixture(scope="module")
def valid(chain: Any) -> tuple[Verifier, bytes]:
    verifier = Verifier(roots=[chain.root])
    data = chain.sign(nonce=b"nonce", user_data=b"user data", public_key=b"key")
    verifier.verify(data, at=T0)
    return verifier, data


_edit = st.tuples(
    st.sampled_from(["replace", "insert", "delete"]),
    st.integers(min_value=0),
    st.binary(min_size=1, max_size=8),
)


@settings(FUZZ, max_examples=400)  # the cheap one, and the one closest to an attacker
@given(st.lists(_edit, min_size=1, max_size=4))
def test_verify_mutated_document_raises_only_our_errors(
    valid: tuple[Verifier, bytes], edits: list[tuple[str, int, bytes]]
) -> None:
    verifier, data = valid
    buf = bytearray(data)
    for kind, pos, chunk in edits:
        i = pos % (len(buf) + 1)
        if kind == "replace":
            buf[i : i + len(chunk)] = chunk
        elif kind == "insert":
            buf[i:i] = chunk
        else:
            del buf[i : i + len(chunk)]
    mutated = bytes(buf)
    try:
        doc = verifier.verify(mutated, at=T0)
    except AttestationError:
        return
    # Accepted only if the signed content is unchanged (e.g. a replace that wrote the same bytes back,
    # or a change confined to the unsigned envelope that still decodes to the same signed parts).
    assert decode_document(mutated).payload == decode_document(data).payload
    assert doc == decode_document(data).document


@settings(FUZZ, max_examples=60)
@given(st.dictionaries(st.sampled_from(FIELD_ORDER), cbor_values, max_size=9))
def test_verify_payload_fields_overwritten_and_resigned(
    chain: Any, valid: tuple[Verifier, bytes], changes: dict[str, Any]
) -> None:
    # Signed by the genuine leaf key: whatever the fields say, the verifier answers with our errors only.
    verifier, data = valid
    fields = dict(cbor2.loads(encode_payload(decode_document(data).document)))
    fields.update(changes)
    payload = cbor2.dumps(fields)
    sig = chain.leaf_key.sign(
        cbor2.dumps(["Signature1", PROTECTED_ES384, b"", payload]), ec.ECDSA(hashes.SHA384())
    )
    r, s = decode_dss_signature(sig)
    doc = cbor2.dumps([PROTECTED_ES384, {}, payload, r.to_bytes(48, "big") + s.to_bytes(48, "big")])
    with contextlib.suppress(AttestationError):
        verifier.verify(doc, at=T0)


_pcr_value = st.sampled_from([32, 48, 64]).flatmap(lambda n: st.binary(min_size=n, max_size=n))
_optional = st.none() | st.binary(max_size=1024)
documents = st.builds(
    AttestationDocument,
    module_id=st.text(min_size=1, max_size=25),
    digest=st.just("SHA384"),
    timestamp=st.integers(min_value=1, max_value=2**64 - 1),
    pcrs=st.dictionaries(st.integers(min_value=0, max_value=31), _pcr_value, min_size=1, max_size=32),
    certificate=st.binary(min_size=1, max_size=1024),
    cabundle=st.lists(st.binary(min_size=1, max_size=1024), min_size=1, max_size=8).map(tuple),
    public_key=_optional,
    user_data=_optional,
    nonce=_optional,
)


@pytest.fixture(scope="module")
def signing_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@settings(FUZZ, max_examples=100)
@given(documents)
def test_any_valid_document_round_trips(
    signing_key: ec.EllipticCurvePrivateKey, doc: AttestationDocument
) -> None:
    data = encode_document(doc, signing_key)
    signed = decode_document(data)
    assert signed.document == doc
    verify_signature(signed, signing_key.public_key())
    assert decode_document(b"\xd2" + data).document == doc  # tag 18 as well
