"""The NSM wire codec: byte-exact serde shapes, round trips, strict decoding, fuzzing."""

from __future__ import annotations

import contextlib

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attestation.errors import MalformedNSMMessageError
from attestation.nsm_wire import (
    MAX_REQUEST_BYTES,
    Attestation,
    AttestationResponse,
    DescribeNSM,
    DescribeNSMResponse,
    DescribePCR,
    DescribePCRResponse,
    ErrorResponse,
    ExtendPCR,
    ExtendPCRResponse,
    GetRandom,
    GetRandomResponse,
    LockPCR,
    LockPCRResponse,
    LockPCRs,
    LockPCRsResponse,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)


def text(s: str) -> str:
    """CBOR text string head + bytes, hex (independent of cbor2: lengths < 24 only)."""
    assert len(s) < 24
    return f"{0x60 + len(s):02x}" + s.encode().hex()


# serde's externally tagged enum: unit variant = text; struct variant = {name: {fields in order}}.
EXACT_REQUESTS = [
    pytest.param(DescribeNSM(), text("DescribeNSM"), id="DescribeNSM"),
    pytest.param(GetRandom(), text("GetRandom"), id="GetRandom"),
    pytest.param(
        DescribePCR(index=3), "a1" + text("DescribePCR") + "a1" + text("index") + "03", id="DescribePCR"
    ),
    pytest.param(LockPCR(index=16), "a1" + text("LockPCR") + "a1" + text("index") + "10", id="LockPCR"),
    pytest.param(LockPCRs(range=32), "a1" + text("LockPCRs") + "a1" + text("range") + "1820", id="LockPCRs"),
    pytest.param(
        ExtendPCR(index=16, data=b"abc"),
        "a1" + text("ExtendPCR") + "a2" + text("index") + "10" + text("data") + "43616263",
        id="ExtendPCR",
    ),
    pytest.param(
        Attestation(user_data=b"\x01", nonce=None, public_key=None),
        "a1"
        + text("Attestation")
        + "a3"
        + text("user_data")
        + "4101"
        + text("nonce")
        + "f6"
        + text("public_key")
        + "f6",
        id="Attestation",
    ),
]

EXACT_RESPONSES = [
    pytest.param(LockPCRResponse(), text("LockPCR"), id="LockPCR"),
    pytest.param(LockPCRsResponse(), text("LockPCRs"), id="LockPCRs"),
    pytest.param(ErrorResponse(code="InvalidIndex"), "a1" + text("Error") + text("InvalidIndex"), id="Error"),
    pytest.param(
        DescribePCRResponse(lock=True, data=b"\0"),
        "a1" + text("DescribePCR") + "a2" + text("lock") + "f5" + text("data") + "4100",
        id="DescribePCR",
    ),
    pytest.param(
        GetRandomResponse(random=b"\xff"),
        "a1" + text("GetRandom") + "a1" + text("random") + "41ff",
        id="GetRandom",
    ),
]


@pytest.mark.parametrize(("message", "expected"), EXACT_REQUESTS)
def test_request_bytes_are_serde_shaped(message: object, expected: str) -> None:
    data = encode_request(message)  # type: ignore[arg-type]
    assert data.hex() == expected
    assert decode_request(data) == message


@pytest.mark.parametrize(("message", "expected"), EXACT_RESPONSES)
def test_response_bytes_are_serde_shaped(message: object, expected: str) -> None:
    data = encode_response(message)  # type: ignore[arg-type]
    assert data.hex() == expected
    assert decode_response(data) == message


def test_describe_nsm_round_trip_and_field_order() -> None:
    response = DescribeNSMResponse(
        version_major=1,
        version_minor=0,
        version_patch=0,
        module_id="i-0123456789abcdef0-enc0123456789abcdef",
        max_pcrs=32,
        locked_pcrs=tuple(range(16)),
        digest="SHA384",
    )
    data = encode_response(response)
    body = cbor2.loads(data)["DescribeNSM"]
    assert list(body) == [
        "version_major",
        "version_minor",
        "version_patch",
        "module_id",
        "max_pcrs",
        "locked_pcrs",
        "digest",
    ]
    assert body["locked_pcrs"] == list(range(16))
    assert decode_response(data) == response


@pytest.mark.parametrize(
    "message",
    [
        ExtendPCRResponse(data=bytes(48)),
        AttestationResponse(document=b"\x84"),
        Attestation(),
        Attestation(user_data=b"", nonce=b"n", public_key=b"k"),
    ],
    ids=repr,
)
def test_round_trip(message: object) -> None:
    if isinstance(message, Attestation):
        assert decode_request(encode_request(message)) == message
    else:
        assert decode_response(encode_response(message)) == message  # type: ignore[arg-type]


def test_missing_option_fields_read_as_none_like_serde() -> None:
    assert decode_request(cbor2.dumps({"Attestation": {}})) == Attestation()
    assert decode_request(cbor2.dumps({"Attestation": {"nonce": b"x"}})) == Attestation(nonce=b"x")


BAD_REQUESTS = [
    pytest.param(b"", "empty input", id="empty"),
    pytest.param(cbor2.dumps("Nope"), "unknown NSM request 'Nope'", id="unknown-unit"),
    pytest.param(cbor2.dumps({"Nope": {}}), "unknown NSM request 'Nope'", id="unknown-struct"),
    pytest.param(cbor2.dumps({"DescribeNSM": None}), "takes no fields", id="unit-as-map"),
    pytest.param(cbor2.dumps({"DescribePCR": {"index": 1, "x": 2}}), "unknown field 'x'", id="extra-field"),
    pytest.param(cbor2.dumps({"DescribePCR": {}}), "missing field 'index'", id="missing-field"),
    pytest.param(cbor2.dumps({"DescribePCR": {"index": True}}), "must be an integer", id="bool-index"),
    pytest.param(cbor2.dumps({"DescribePCR": {"index": 65536}}), "must be an integer", id="index-over-u16"),
    pytest.param(cbor2.dumps({"DescribePCR": {"index": -1}}), "must be an integer", id="negative-index"),
    pytest.param(
        cbor2.dumps({"ExtendPCR": {"index": 16, "data": "abc"}}), "must be a byte string", id="text-data"
    ),
    pytest.param(cbor2.dumps({"DescribePCR": [1]}), "fields must be a map", id="fields-not-map"),
    pytest.param(cbor2.dumps({"A": 1, "B": 2}), "one-entry map", id="two-variants"),
    pytest.param(cbor2.dumps(7), "one-entry map", id="integer"),
    pytest.param(cbor2.dumps("GetRandom") + b"\x00", "trailing bytes", id="trailing"),
    pytest.param(bytes.fromhex("a2616101616102"), "invalid CBOR", id="duplicate-keys"),
    pytest.param(
        cbor2.dumps({"ExtendPCR": {"index": 16, "data": bytes(5000)}}), "4096-byte limit", id="too-large"
    ),
]


@pytest.mark.parametrize(("data", "message"), BAD_REQUESTS)
def test_bad_requests_raise_one_error_type(data: bytes, message: str) -> None:
    with pytest.raises(MalformedNSMMessageError, match=message):
        decode_request(data)


BAD_RESPONSES = [
    pytest.param(cbor2.dumps({"Error": "Nope"}), "unknown error code", id="unknown-code"),
    pytest.param(cbor2.dumps({"DescribePCR": {"lock": 1, "data": b""}}), "boolean", id="lock-int"),
    pytest.param(cbor2.dumps({"ExtendPCR": {"data": bytes(65)}}), "64-byte limit", id="pcr-too-long"),
    pytest.param(
        cbor2.dumps(
            {
                "DescribeNSM": {
                    "version_major": 1,
                    "version_minor": 0,
                    "version_patch": 0,
                    "module_id": "m",
                    "max_pcrs": 32,
                    "locked_pcrs": [2, 1],
                    "digest": "SHA384",
                }
            }
        ),
        "sorted",
        id="unsorted-locked",
    ),
    pytest.param(cbor2.dumps({"GetRandom": {"random": bytes(1), "x": 1}}), "unknown field", id="extra"),
    pytest.param(cbor2.dumps({"LockPCR": {}}), "takes no fields", id="unit-as-map"),
    pytest.param(b"\x00" * 12289, "12288-byte limit", id="too-large"),
]


@pytest.mark.parametrize(("data", "message"), BAD_RESPONSES)
def test_bad_responses_raise_one_error_type(data: bytes, message: str) -> None:
    with pytest.raises(MalformedNSMMessageError, match=message):
        decode_response(data)


def test_error_response_needs_a_known_code() -> None:
    with pytest.raises(ValueError, match="unknown NSM error code"):
        ErrorResponse(code="Oops")


def test_request_bound_is_the_driver_constant() -> None:
    assert MAX_REQUEST_BYTES == 4096


_cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.binary(max_size=64) | st.text(max_size=16),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=200)
    | _cbor_values.map(cbor2.dumps)
    | _cbor_values.map(lambda v: cbor2.dumps({"Attestation": v}))
)
def test_fuzz_decoders_raise_only_our_error(data: bytes) -> None:
    for decode in (decode_request, decode_response):
        with contextlib.suppress(MalformedNSMMessageError):
            decode(data)
