"""Hypothesis with the values the other fuzz tests leave out: integers of any size (CBOR bignums), semantic
tags, simple values; and mutations of the real KMS CiphertextForRecipient vectors.

- NSM messages and attestation payloads holding such values decode or raise only the package's Malformed*
  error (the ±2**64 integers of test_adversarial_fuzz.py and test_nsm_wire.py missed the bignum messages
  that raised ValueError);
- a mutated real CiphertextForRecipient parses or raises only DecryptionError, with its one message, and
  the per-shape template check never reads a blob differently from the full BER walk.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attestation import _cms_parse
from attestation.cms import parse_ciphertext_for_recipient
from attestation.document import FIELD_ORDER, decode_document, decode_payload
from attestation.errors import DecryptionError, MalformedDocumentError, MalformedNSMMessageError
from attestation.nsm_wire import decode_request, decode_response

FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

_integers = (
    st.integers(min_value=-(2**64), max_value=2**64)
    | st.integers(min_value=2**64, max_value=2**20000)
    | st.integers(min_value=-(2**20000), max_value=-(2**64))
)
_leaves = (
    st.none()
    | st.booleans()
    | _integers
    | st.floats(allow_nan=True)
    | st.binary(max_size=48)
    | st.text(max_size=12)
    | st.builds(cbor2.CBORSimpleValue, st.sampled_from([0, 19, 32, 255]))
    | st.just(cbor2.undefined)
    | st.sampled_from([*FIELD_ORDER, "Error", "InvalidIndex", 16, bytes(48)])
)
_tags = st.sampled_from([0, 1, 2, 3, 4, 5, 18, 21, 24, 30, 32, 35, 36, 37, 258, 260, 261, 55799, 1000])
hostile = st.recursive(
    _leaves,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(_integers | st.text(max_size=12), children, max_size=4)
        | st.builds(cbor2.CBORTag, _tags, children)
    ),
    max_leaves=10,
)


def _dumps(value: Any) -> bytes | None:
    try:
        return cbor2.dumps(value)
    except (cbor2.CBOREncodeError, ValueError, TypeError, OverflowError):
        return None  # some tag/value pairs cannot be written; nothing to decode then


_VARIANTS = [
    "DescribePCR",
    "ExtendPCR",
    "LockPCR",
    "LockPCRs",
    "Attestation",
    "DescribeNSM",
    "GetRandom",
    "Error",
]


@FUZZ
@given(st.sampled_from(_VARIANTS), hostile, st.booleans())
def test_nsm_messages_with_any_values_decode_or_raise_malformed(variant: str, value: Any, wrap: bool) -> None:
    data = _dumps({variant: value} if wrap else value)
    if data is None:
        return
    for decode in (decode_request, decode_response):
        with contextlib.suppress(MalformedNSMMessageError):
            decode(data)


_VALID_PAYLOAD = {
    "module_id": "i-0123456789abcdef0-enc0123456789abcdef",
    "digest": "SHA384",
    "timestamp": 1_700_000_000_000,
    "pcrs": {0: bytes(48), 1: bytes(48)},
    "certificate": b"\x30\x03\x02\x01\x01",
    "cabundle": [b"\x30\x03\x02\x01\x01"],
}


@FUZZ
@given(st.dictionaries(st.sampled_from([*FIELD_ORDER, "extra"]) | _integers, hostile, min_size=1, max_size=3))
def test_payloads_with_any_values_decode_or_raise_malformed(changes: dict[Any, Any]) -> None:
    payload = _dumps({**_VALID_PAYLOAD, **changes})
    if payload is None:
        return
    with contextlib.suppress(MalformedDocumentError):
        decode_payload(payload)
    envelope = (
        b"\x84" + cbor2.dumps(cbor2.dumps({1: -35})) + b"\xa0" + cbor2.dumps(payload) + cbor2.dumps(bytes(96))
    )
    with contextlib.suppress(MalformedDocumentError):
        decode_document(envelope)


@FUZZ
@given(hostile, hostile)
def test_cose_envelopes_with_any_values_decode_or_raise_malformed(protected: Any, unprotected: Any) -> None:
    parts = [_dumps(protected), _dumps(unprotected)]
    if None in parts:
        return
    for head in (cbor2.dumps(parts[0]), parts[0]):  # the protected header as a bstr, and bare
        envelope = (
            b"\x84" + head + parts[1] + cbor2.dumps(cbor2.dumps(_VALID_PAYLOAD)) + cbor2.dumps(bytes(96))
        )  # type: ignore[operator]
        with contextlib.suppress(MalformedDocumentError):
            decode_document(envelope)


# -- CiphertextForRecipient: mutations of the real KMS vectors ----------------------------------------------


@pytest.fixture(scope="module")
def real_blobs(vectors: Path) -> list[bytes]:
    return [(vectors / "kms-cms" / f"{name}.ber").read_bytes() for name in ("constructed", "primitive")]


_edit = st.tuples(
    st.sampled_from(["replace", "insert", "delete", "flip"]),
    st.integers(min_value=0, max_value=1 << 16),
    st.binary(min_size=1, max_size=4),
)


def _mutate(blob: bytes, edits: list[tuple[str, int, bytes]]) -> bytes:
    buf = bytearray(blob)
    for kind, pos, chunk in edits:
        i = pos % (len(buf) + 1)
        if kind == "replace":
            buf[i : i + len(chunk)] = chunk
        elif kind == "insert":
            buf[i:i] = chunk
        elif kind == "delete":
            del buf[i : i + len(chunk)]
        elif i < len(buf):
            buf[i] ^= chunk[0] | 1
    return bytes(buf)


@FUZZ
@given(st.integers(min_value=0, max_value=1), st.lists(_edit, min_size=1, max_size=3))
def test_mutated_real_cms_parses_or_raises_the_one_error(
    real_blobs: list[bytes], which: int, edits: list[tuple[str, int, bytes]]
) -> None:
    mutated = _mutate(real_blobs[which], edits)
    caught: DecryptionError | None = None
    try:
        parse_ciphertext_for_recipient(mutated)
    except DecryptionError as error:
        caught = error
    if caught is not None:  # one message, and nothing of the cause attached (no oracle in a traceback)
        assert str(caught) == DecryptionError.MESSAGE
        assert caught.__cause__ is None
        assert caught.__suppress_context__


@FUZZ
@given(
    st.integers(min_value=0, max_value=1),
    st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(1, 255)), min_size=1, max_size=3),
)
def test_template_check_reads_same_length_blobs_as_the_full_walk(
    real_blobs: list[bytes], which: int, flips: list[tuple[int, int]]
) -> None:
    # Same-length mutations of a blob whose shape is remembered: the template path (taken when the bytes
    # outside the four fields match) must accept exactly what the walk accepts, with the same fields.
    blob = real_blobs[which]
    parse_ciphertext_for_recipient(blob)  # remembers this length's template
    buf = bytearray(blob)
    for pos, mask in flips:
        buf[pos % len(buf)] ^= mask
    mutated = bytes(buf)
    try:
        walked: Any = _cms_parse._walk(mutated)[0]
    except Exception:  # the walk raises anything; the callers map it to DecryptionError
        walked = None
    try:
        parsed: Any = _cms_parse._parse(mutated)
    except Exception:
        parsed = None
    assert parsed == walked
