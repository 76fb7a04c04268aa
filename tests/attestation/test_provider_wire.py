"""The provider's wire codec: round trips, every bound, hostile frames (whole, byte by byte, truncated)."""

from __future__ import annotations

import contextlib
import hashlib
from datetime import UTC, datetime
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given
from hypothesis import strategies as st

from attestation.document import MAX_DOCUMENT_BYTES, decode_document
from attestation.errors import MalformedError, PolicyError
from attestation.nsm import simulate_document
from attestation.provider_wire import (
    FRAME_HEADER_BYTES,
    MAX_ANSWER_BODY_BYTES,
    MAX_ERROR_MESSAGE_CHARS,
    MAX_NONCE_BYTES,
    MAX_RANDOM_BYTES,
    MAX_REQUEST_BODY_BYTES,
    MIN_NONCE_BYTES,
    Answer,
    ErrorAnswer,
    FrameReader,
    FrameTooLargeError,
    MalformedProviderMessageError,
    PayloadDigest,
    RandomRequest,
    decode_answer,
    decode_request,
    encode_answer,
    encode_frame,
    encode_request,
    payload_digest,
)

NONCE = bytes(range(32))


def _spki(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture(scope="module")
def rsa_spki() -> bytes:
    return _spki(rsa.generate_private_key(public_exponent=65537, key_size=2048))


# -- round trips ---


@pytest.mark.parametrize("n", [1, 32, MAX_RANDOM_BYTES])
@pytest.mark.parametrize("nonce_size", [MIN_NONCE_BYTES, MAX_NONCE_BYTES])
def test_request_round_trip(n: int, nonce_size: int) -> None:
    request = RandomRequest(number_of_bytes=n, nonce=b"\x07" * nonce_size)
    body = encode_request(request)
    assert cbor2.loads(body) == {"bytes": n, "nonce": b"\x07" * nonce_size}
    assert decode_request(body) == request


def test_request_with_key_round_trip(rsa_spki: bytes) -> None:
    request = RandomRequest(number_of_bytes=32, nonce=NONCE, public_key=rsa_spki)
    body = encode_request(request)
    assert len(body) <= MAX_REQUEST_BODY_BYTES
    assert decode_request(body) == request


@pytest.mark.parametrize("encrypted", [False, True], ids=["random", "ciphertext"])
def test_answer_round_trip(encrypted: bool) -> None:
    answer = Answer(payload=b"\x01" * 48, encrypted=encrypted, document=b"\x84doc")
    body = encode_answer(answer)
    assert set(cbor2.loads(body)) == {"ciphertext" if encrypted else "random", "document"}
    assert decode_answer(body) == answer


def test_error_round_trip() -> None:
    error = ErrorAnswer(error="AccessDeniedException", message="no")
    assert cbor2.loads(encode_answer(error)) == {"error": "AccessDeniedException", "message": "no"}
    assert decode_answer(encode_answer(error)) == error


def test_largest_answer_fits_its_bound() -> None:
    answer = Answer(payload=b"\x00" * 6144, encrypted=True, document=b"\x00" * MAX_DOCUMENT_BYTES)
    assert len(encode_answer(answer)) <= MAX_ANSWER_BODY_BYTES


def test_error_answer_of_makes_one_bounded_line() -> None:
    error = ErrorAnswer.of("X", "line one\nline two " + "z" * 2 * MAX_ERROR_MESSAGE_CHARS)
    assert "\n" not in error.message
    assert error.message.startswith("line one line two")
    assert len(error.message) == MAX_ERROR_MESSAGE_CHARS


# -- bounds and shapes ---


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"bytes": 0, "nonce": NONCE}, "bytes must be an integer in 1..4096"),
        ({"bytes": MAX_RANDOM_BYTES + 1, "nonce": NONCE}, "bytes must be an integer in 1..4096"),
        ({"bytes": -1, "nonce": NONCE}, "bytes must be"),
        ({"bytes": True, "nonce": NONCE}, "bytes must be"),
        ({"bytes": 2.0, "nonce": NONCE}, "bytes must be"),
        ({"bytes": 2**200, "nonce": NONCE}, "integer of 201 bits"),
        ({"bytes": 8, "nonce": b"\x00" * (MIN_NONCE_BYTES - 1)}, "nonce must be 16..1024 bytes, got 15"),
        ({"bytes": 8, "nonce": b"\x00" * (MAX_NONCE_BYTES + 1)}, "nonce must be 16..1024 bytes"),
        ({"bytes": 8, "nonce": "text nonce, not bytes"}, "nonce must be a byte string"),
        ({"bytes": 8, "nonce": NONCE, "public_key": b"\x30\x00"}, "public_key is not a DER"),
        ({"bytes": 8, "nonce": NONCE, "public_key": b"\x00" * 1025}, "public_key must be 1..1024 bytes"),
        ({"bytes": 8, "nonce": NONCE, "public_key": None}, "public_key must be a byte string"),
        ({"bytes": 8}, "request has no 'nonce'"),
        ({"nonce": NONCE}, "request has no 'bytes'"),
        ({"bytes": 8, "nonce": NONCE, "extra": 1}, "unknown key 'extra'"),
        ({1: 8, "nonce": NONCE}, "keys must be text"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_requests(fields: object, message: str) -> None:
    with pytest.raises(MalformedProviderMessageError, match=r"^request") as info:
        decode_request(cbor2.dumps(fields))
    assert message in str(info.value)


def test_request_keys_must_be_kms_recipient_keys() -> None:
    small = _spki(rsa.generate_private_key(public_exponent=65537, key_size=1024))
    curve = _spki(ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(MalformedProviderMessageError, match="RSA-1024; allowed sizes"):
        decode_request(cbor2.dumps({"bytes": 8, "nonce": NONCE, "public_key": small}))
    with pytest.raises(MalformedProviderMessageError, match="not an RSA key"):
        decode_request(cbor2.dumps({"bytes": 8, "nonce": NONCE, "public_key": curve}))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty input"),
        (b"\xff", "invalid CBOR"),
        (cbor2.dumps([1, 2]), "must be a CBOR map, got list"),
        (cbor2.dumps({"bytes": 8, "nonce": NONCE}) + b"\x00", "1 trailing bytes"),
        (b"\xa2\x65bytes\x08\x65bytes\x09", "invalid CBOR"),  # duplicate key
        (b"\xd8\x1c\xa0", "invalid CBOR"),  # shareable: a back-reference tag
        (b"\x40" * (MAX_REQUEST_BODY_BYTES + 1), f"over the {MAX_REQUEST_BODY_BYTES}-byte bound"),
    ],
    ids=["empty", "garbage", "list", "trailing", "duplicate", "backref", "oversized"],
)
def test_malformed_request_bodies(body: bytes, message: str) -> None:
    with pytest.raises(MalformedProviderMessageError, match=message):
        decode_request(body)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"random": b"", "document": b"d"}, "random must be 1..4096 bytes"),
        ({"random": b"x" * (MAX_RANDOM_BYTES + 1), "document": b"d"}, "random must be 1..4096 bytes"),
        ({"ciphertext": b"x" * 6145, "document": b"d"}, "ciphertext must be 1..6144 bytes"),
        ({"random": b"x", "document": b"d" * (MAX_DOCUMENT_BYTES + 1)}, "document must be"),
        ({"random": b"x"}, "answer has no 'document'"),
        ({"random": b"x", "ciphertext": b"x", "document": b"d"}, "unknown key 'random'"),
        ({"error": "Bad Name", "message": "m"}, "error must be an ASCII identifier"),
        ({"error": "É", "message": "m"}, "error must be an ASCII identifier"),
        ({"error": "E" * 129, "message": "m"}, "at most 128 characters"),
        ({"error": "E", "message": "m" * (MAX_ERROR_MESSAGE_CHARS + 1)}, "message must be a string"),
        ({"error": "E", "message": b"bytes"}, "message must be a string"),
        ({"error": "E"}, "error answer has no 'message'"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_answers(fields: object, message: str) -> None:
    with pytest.raises(MalformedProviderMessageError, match=r"^(error )?answer") as info:
        decode_answer(cbor2.dumps(fields))
    assert message in str(info.value)


def test_every_truncation_of_a_request_is_refused(rsa_spki: bytes) -> None:
    body = encode_request(RandomRequest(number_of_bytes=32, nonce=NONCE, public_key=rsa_spki))
    for cut in range(len(body)):
        with pytest.raises(MalformedProviderMessageError):
            decode_request(body[:cut])


@given(st.binary(max_size=256))
def test_request_decoder_raises_only_its_error(body: bytes) -> None:
    with contextlib.suppress(MalformedProviderMessageError):
        decode_request(body)


@given(st.binary(max_size=256))
def test_answer_decoder_raises_only_its_error(body: bytes) -> None:
    with contextlib.suppress(MalformedProviderMessageError):
        decode_answer(body)


# -- framing ---


def test_frames_fed_byte_by_byte() -> None:
    bodies = [b"first", b"", b"third body"]
    stream = b"".join(encode_frame(b) for b in bodies)
    reader = FrameReader(64)
    got = []
    for i in range(len(stream)):
        got += reader.feed(stream[i : i + 1])
        assert reader.at_boundary == (
            stream[: i + 1] in {b"".join(map(encode_frame, bodies[:k])) for k in range(4)}
        )
    assert got == bodies


def test_frames_fed_whole_with_a_partial_tail() -> None:
    stream = encode_frame(b"a") + encode_frame(b"bb") + encode_frame(b"ccc")[:5]
    reader = FrameReader(64)
    assert reader.feed(stream) == [b"a", b"bb"]
    assert not reader.at_boundary
    assert reader.feed(b"cc") == [b"ccc"]
    assert reader.at_boundary


def test_oversized_frame_breaks_the_reader_for_good() -> None:
    reader = FrameReader(MAX_REQUEST_BODY_BYTES)
    with pytest.raises(
        FrameTooLargeError, match=f"frame of 1195725856 bytes is over the {MAX_REQUEST_BODY_BYTES}-byte bound"
    ):
        reader.feed(b"GET / HTTP/1.1\r\n\r\n")
    assert reader.broken
    with pytest.raises(RuntimeError, match="cannot be read further"):
        reader.feed(encode_frame(b"ok"))


def test_frame_at_the_bound_is_read() -> None:
    reader = FrameReader(16)
    assert reader.feed(encode_frame(b"x" * 16)) == [b"x" * 16]
    with pytest.raises(FrameTooLargeError):
        reader.feed((17).to_bytes(FRAME_HEADER_BYTES, "big"))


@pytest.mark.parametrize("bound", [0, 2**32])
def test_frame_reader_bound_is_checked(bound: int) -> None:
    with pytest.raises(ValueError, match="max_body"):
        FrameReader(bound)


def test_malformed_errors_are_in_the_package_tree() -> None:
    assert issubclass(FrameTooLargeError, MalformedProviderMessageError)
    assert issubclass(MalformedProviderMessageError, MalformedError)


# -- the digest binding ---


def test_payload_digest_policy(sim_home: Path) -> None:
    at = datetime.now(UTC)
    payload = b"attested bytes"
    assert payload_digest(payload) == hashlib.sha384(payload).digest()
    bound = decode_document(simulate_document(sim_home, at=at, user_data=payload_digest(payload))).document
    PayloadDigest(payload).check(bound, at=at)
    with pytest.raises(PolicyError, match="user_data is not the SHA-384 of the answer's payload"):
        PayloadDigest(payload + b"!").check(bound, at=at)
    unbound = decode_document(simulate_document(sim_home, at=at)).document
    with pytest.raises(PolicyError, match="user_data is absent"):
        PayloadDigest(payload).check(unbound, at=at)
