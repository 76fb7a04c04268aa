"""CBOR back-references (value sharing, string references) are refused by every decoder of hostile bytes.

A few hundred bytes of shared values (tags 28/29) decode to a DAG whose tree is exponentially large; used as
a map key, cbor2's duplicate-key check hashes it in one C call that holds the GIL: before the fix a 444-byte
NSM request froze nsm-sim for minutes. None of our formats uses these tags.
"""

from __future__ import annotations

import cbor2
import pytest

from attestation._cbor import MAX_CBOR_DEPTH, MAX_SHOWN_CHARS, REFUSED_TAGS, shown, strict_loads
from attestation.document import decode_document, decode_payload
from attestation.errors import MalformedDocumentError, MalformedError, MalformedNSMMessageError
from attestation.nsm_wire import MAX_REQUEST_BYTES, decode_request, decode_response

_SHAREABLE = b"\xd8\x1c"


def _sharedref(index: int) -> bytes:
    return b"\xd8\x1d" + (bytes([index]) if index < 24 else bytes([0x18, index]))


def _array_head(count: int) -> bytes:
    return bytes([0x80 + count]) if count < 24 else bytes([0x98, count])


def shared_dag(levels: int, width: int) -> bytes:
    """Nested shareable arrays, each holding the next one once and ``width - 1`` references to it: the
    tree has ``width ** (levels - 1)`` leaves. Tag 28 numbers values in the order they open (outermost 0)."""
    item = _SHAREABLE + _array_head(1) + b"\x00"
    for level in range(1, levels):
        refs = b"".join(_sharedref(levels - level) for _ in range(width - 1))
        item = _SHAREABLE + _array_head(width) + item + refs
    return item


def dag_key_bomb(width: int) -> bytes:
    """``{DAG: 1}``: at width 40, 732 bytes and ~4e9 tuple hashes when decoded as cbor2 does by default.

    Unit tests use a small width (cheap even if the rule regressed); the process test sends the real one."""
    return b"\xa1" + shared_dag(7, width) + b"\x01"


def test_the_bomb_is_valid_cbor_within_our_bounds() -> None:
    assert len(dag_key_bomb(40)) < 1024 < MAX_REQUEST_BYTES
    # Plain cbor2 takes it (at a small width: the real one would not finish), so refusing is our rule.
    (key,) = cbor2.loads(dag_key_bomb(3))
    assert isinstance(key, tuple)
    assert MAX_CBOR_DEPTH >= 14  # 7 tags around 7 arrays: within the depth bound, so depth does not stop it


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(bytes.fromhex("d81c8201d81d00"), id="shareable-with-cycle"),
        pytest.param(bytes.fromhex("d81d00"), id="sharedref-alone"),
        pytest.param(bytes.fromhex("d81c01"), id="shareable-alone"),
        pytest.param(bytes.fromhex("d901008363616263d81900d81900"), id="stringref"),
        pytest.param(dag_key_bomb(4), id="dag-as-map-key"),
        pytest.param(b"\x81" + dag_key_bomb(4), id="dag-nested"),
    ],
)
def test_back_references_are_malformed(data: bytes) -> None:
    with pytest.raises(MalformedError, match="back-references"):
        strict_loads(data, what="x", error=MalformedError)
    assert set(REFUSED_TAGS) == {25, 28, 29, 256, 261}


def test_nsm_messages_with_a_dag_bomb_are_malformed() -> None:
    bomb = dag_key_bomb(4)
    for body in (bomb, b"\xa1\x6bAttestation" + bomb):
        with pytest.raises(MalformedNSMMessageError):
            decode_request(body)
        with pytest.raises(MalformedNSMMessageError):
            decode_response(body)


def test_documents_with_a_dag_bomb_are_malformed() -> None:
    bomb = dag_key_bomb(4)
    protected = cbor2.dumps({1: -35})
    for document in (
        b"\x84" + cbor2.dumps(protected) + b"\xa0" + cbor2.dumps(bomb) + cbor2.dumps(bytes(96)),  # payload
        b"\x84" + cbor2.dumps(bomb) + b"\xa0" + cbor2.dumps(b"\xa0") + cbor2.dumps(bytes(96)),  # protected
        b"\x84" + cbor2.dumps(protected) + bomb + cbor2.dumps(b"\xa0") + cbor2.dumps(bytes(96)),  # unprot.
    ):
        with pytest.raises(MalformedDocumentError):
            decode_document(document)
    with pytest.raises(MalformedDocumentError):
        decode_payload(bomb)


# -- bignums in error messages -------------------------------------------------------------------------------

#: A CBOR bignum (tag 2) of 2000 bytes: ~4800 decimal digits, past int()'s 4300-digit str/repr limit.
_BIG = 1 << (8 * 2000)
_PAYLOAD = {
    "module_id": "i-0",
    "digest": "SHA384",
    "timestamp": 1,
    "pcrs": {0: bytes(48)},
    "certificate": b"c",
    "cabundle": [b"c"],
}


@pytest.mark.parametrize(
    "change",
    [
        {"timestamp": _BIG},
        {"timestamp": -_BIG},
        {"pcrs": {_BIG: bytes(48)}},
        {"digest": [_BIG]},
        {_BIG: 1},
    ],
    ids=["timestamp", "negative-timestamp", "pcr-index", "digest", "unknown-field"],
)
def test_a_bignum_in_a_payload_is_malformed_not_a_value_error(change: dict[object, object]) -> None:
    # Before the fix each message's f-string raised ValueError (kms-sim answered 500 to such a Recipient).
    payload = cbor2.dumps({**_PAYLOAD, **change})
    with pytest.raises(MalformedDocumentError) as info:
        decode_payload(payload)
    assert len(str(info.value)) < 200
    document = (
        b"\x84" + cbor2.dumps(cbor2.dumps({1: -35})) + b"\xa0" + cbor2.dumps(payload) + cbor2.dumps(bytes(96))
    )
    with pytest.raises(MalformedDocumentError):
        decode_document(document)


def test_a_bignum_in_a_protected_header_is_malformed() -> None:
    document = (
        b"\x84"
        + cbor2.dumps(cbor2.dumps({1: _BIG}))
        + b"\xa0"
        + cbor2.dumps(b"\xa0")
        + cbor2.dumps(bytes(96))
    )
    with pytest.raises(MalformedDocumentError, match=r"\(ES384\), got <dict>$"):
        decode_document(document)


@pytest.mark.parametrize(
    ("decode", "message"),
    [
        (decode_request, {"ExtendPCR": {_BIG: 1}}),
        (decode_response, {"ExtendPCR": {_BIG: 1}}),
        (decode_response, {"Error": _BIG}),
        (decode_response, {"Error": [_BIG]}),
    ],
    ids=["request-field", "response-field", "error-code", "error-code-in-array"],
)
def test_a_bignum_in_an_nsm_message_is_malformed_not_a_value_error(decode: object, message: object) -> None:
    with pytest.raises(MalformedNSMMessageError) as info:
        decode(cbor2.dumps(message))  # type: ignore[operator]
    assert len(str(info.value)) < 200


def test_shown_is_short_and_never_raises() -> None:
    assert shown("module_id") == "'module_id'"
    assert shown(2**64 - 1) == str(2**64 - 1)
    assert shown(_BIG) == "<integer of 16001 bits>"
    assert shown([_BIG]) == "<list>"
    assert shown("x" * 500) == repr("x" * 500)[: MAX_SHOWN_CHARS - 3] + "..."
    assert len(shown(b"\x00" * 500)) == MAX_SHOWN_CHARS


@pytest.mark.parametrize(
    "content",
    [b"\xa1\x61x\x81" + cbor2.dumps(_BIG), b"\xa1\x44\x7f\x00\x00\x01\xa1" + cbor2.dumps(_BIG) + b"\x00"],
    ids=["mask-list", "mask-map"],
)
def test_an_ip_network_tag_is_refused_without_a_traceback_on_stderr(
    content: bytes, capfd: pytest.CaptureFixture[str]
) -> None:
    # cbor2's tag-261 decoder wrote "Exception ignored in: <object repr() failed> Traceback ... ValueError" to
    # stderr for these (its error message showed the bignum), then raised; the server's log got a traceback.
    with pytest.raises(MalformedError, match="IP network"):
        strict_loads(b"\xd9\x01\x05" + content, what="x", error=MalformedError)
    assert capfd.readouterr().err == ""
