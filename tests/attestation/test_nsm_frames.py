"""NSM.handle_frame: the simulated device's framed answers, with the attestation fast path.

``handle_frame(request)`` must be ``encode_frame(handle(request))`` for every request: byte for byte where
the answer is deterministic, and for attestation documents (a new ECDSA signature each time) the same
frame shape and the same document fields.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attestation import nsm as nsm_module
from attestation.document import decode_document
from attestation.nsm import NSM
from attestation.nsm_wire import (
    FRAME_HEADER_BYTES,
    Attestation,
    AttestationResponse,
    DescribeNSM,
    DescribePCR,
    ExtendPCR,
    LockPCR,
    decode_response,
    encode_frame,
    encode_request,
    encode_response,
    frame_length,
)
from attestation.pki import SimulatedPKI, new_module_id

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def nsm(tmp_path_factory: pytest.TempPathFactory) -> NSM:
    home = tmp_path_factory.mktemp("nsm-frames")
    pki = SimulatedPKI.load_or_create(Path(home), at=T0)
    return NSM(pki=pki, module_id=new_module_id(pki.instance_id, at=T0))


def _body(frame: bytes) -> bytes:
    assert frame_length(frame[:FRAME_HEADER_BYTES]) == len(frame) - FRAME_HEADER_BYTES
    return frame[FRAME_HEADER_BYTES:]


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=70_000))
def test_the_attestation_answer_frame_is_the_generic_encoding(size: int) -> None:
    document = bytes(i % 251 for i in range(size))
    expected = encode_frame(encode_response(AttestationResponse(document=document)))
    assert nsm_module._frame_attestation_answer(document) == expected


@pytest.mark.parametrize("size", [0, 1, 23, 24, 255, 256, 65_535, 65_536])
def test_byte_string_head_boundaries(size: int) -> None:
    document = bytes(size)
    expected = encode_frame(encode_response(AttestationResponse(document=document)))
    assert nsm_module._frame_attestation_answer(document) == expected


@pytest.mark.parametrize(
    "request_",
    [
        DescribeNSM(),
        DescribePCR(index=3),
        DescribePCR(index=99),
        LockPCR(index=2),
        ExtendPCR(index=40, data=b""),
        Attestation(user_data=bytes(1025)),
        Attestation(public_key=bytes(1025)),
    ],
    ids=repr,
)
def test_deterministic_answers_are_the_same_bytes(nsm: NSM, request_: object) -> None:
    data = encode_request(request_)  # type: ignore[arg-type]
    assert nsm.handle_frame(data, at=T0) == encode_frame(nsm.handle(data, at=T0))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300) | st.binary(min_size=4097, max_size=4200))
def test_any_bytes_answer_as_handle_does(nsm: NSM, data: bytes) -> None:
    framed = nsm.handle_frame(data, at=T0)
    plain = nsm.handle(data, at=T0)
    answer = decode_response(_body(framed))
    if isinstance(answer, AttestationResponse):  # a valid attestation request among the bytes
        assert isinstance(decode_response(plain), AttestationResponse)
    else:
        assert _body(framed) == plain


@settings(max_examples=30, deadline=None)
@given(
    user_data=st.none() | st.binary(max_size=1024),
    nonce=st.none() | st.binary(max_size=1024),
    public_key=st.none() | st.binary(max_size=1024),
)
def test_attestation_documents_carry_the_request(
    nsm: NSM, user_data: bytes | None, nonce: bytes | None, public_key: bytes | None
) -> None:
    request = Attestation(user_data=user_data, nonce=nonce, public_key=public_key)
    answer = decode_response(_body(nsm.handle_frame(encode_request(request), at=T0)))
    assert isinstance(answer, AttestationResponse)
    document = decode_document(answer.document).document
    assert (document.user_data, document.nonce, document.public_key) == (user_data, nonce, public_key)
    assert document.timestamp == int(T0.timestamp() * 1000)
    generic = decode_response(nsm.handle(encode_request(request), at=T0))
    assert isinstance(generic, AttestationResponse)
    assert len(generic.document) == len(answer.document)  # same shape; only the signature differs


def test_a_non_canonical_attestation_request_takes_the_generic_path(nsm: NSM) -> None:
    # Same request, map keys in another order: not the fast shape, still served.
    data = cbor2.dumps({"Attestation": {"public_key": b"k", "user_data": None, "nonce": None}})
    answer = decode_response(_body(nsm.handle_frame(data, at=T0)))
    assert isinstance(answer, AttestationResponse)
    assert decode_document(answer.document).document.public_key == b"k"
