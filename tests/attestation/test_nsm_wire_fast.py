"""The spliced Attestation request/response codec equals the generic CBOR codec, and the fast decoders
accept only what the strict decoder reads the same way (anything else takes the strict path)."""

from __future__ import annotations

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st

from attestation._cbor import strict_loads
from attestation.errors import MalformedNSMMessageError
from attestation.nsm_wire import (
    Attestation,
    AttestationResponse,
    _fast_attestation_request,
    _fast_attestation_response,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)

_optional = st.none() | st.binary(max_size=1100)


@settings(max_examples=200, deadline=None)
@given(user_data=_optional, nonce=_optional, public_key=_optional)
def test_attestation_request_bytes_and_round_trip(
    user_data: bytes | None, nonce: bytes | None, public_key: bytes | None
) -> None:
    request = Attestation(user_data=user_data, nonce=nonce, public_key=public_key)
    data = encode_request(request)
    fields = {"user_data": user_data, "nonce": nonce, "public_key": public_key}
    assert data == cbor2.dumps({"Attestation": fields})
    assert _fast_attestation_request(data) == request
    assert decode_request(data) == request


@settings(max_examples=200, deadline=None)
@given(document=st.binary(max_size=0x3000))
def test_attestation_response_bytes_and_round_trip(document: bytes) -> None:
    response = AttestationResponse(document=document)
    data = encode_response(response)
    assert data == cbor2.dumps({"Attestation": {"document": document}})
    if len(data) <= 0x3000:
        assert decode_response(data) == response


def _agrees_with_strict(data: bytes) -> None:
    request = _fast_attestation_request(data)
    if request is not None:
        fields = {"user_data": request.user_data, "nonce": request.nonce, "public_key": request.public_key}
        assert strict_loads(data, what="x", error=MalformedNSMMessageError) == {"Attestation": fields}
    response = _fast_attestation_response(data)
    if response is not None:
        assert strict_loads(data, what="x", error=MalformedNSMMessageError) == {
            "Attestation": {"document": response.document}
        }


@settings(max_examples=400, deadline=None)
@given(
    base=st.sampled_from(
        [
            encode_request(Attestation(user_data=b"u" * 30, nonce=None, public_key=b"k" * 300)),
            encode_request(Attestation()),
            encode_response(AttestationResponse(document=b"d" * 300)),
            encode_response(AttestationResponse(document=b"d" * 5)),
        ]
    ),
    cut=st.integers(0, 400),
    insert=st.binary(max_size=4),
    drop=st.integers(0, 3),
)
def test_fast_decoders_never_disagree_with_the_strict_decoder(
    base: bytes, cut: int, insert: bytes, drop: int
) -> None:
    mutated = base[:cut] + insert + base[cut + drop :]
    _agrees_with_strict(mutated)


def test_non_minimal_and_indefinite_lengths_take_the_strict_path() -> None:
    head = cbor2.dumps({"Attestation": {"document": b""}})[:-1]
    assert _fast_attestation_response(head + b"\x58\x03abc") is None  # 3 fits the initial byte
    assert _fast_attestation_response(head + b"\x5f\x43abc\xff") is None
    assert decode_response(head + b"\x5f\x43abc\xff") == AttestationResponse(document=b"abc")
    assert _fast_attestation_response(head + b"\x43abcd") is None  # trailing byte
    assert _fast_attestation_response(head + b"\x44abc") is None  # short
