"""GenerateRandom's Recipient document decoded from a remembered base64 text equals the strict decode
(``base64.b64decode(text, validate=True)``): the same bytes, or None where the strict decode fails."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from attestation.document import AttestationDocument, encode_document
from kms import _document_text
from kms.operations import KEY_ENCRYPTION_ALGORITHM, plain_generate_random

_KEY = ec.generate_private_key(ec.SECP384R1())
_BASE = AttestationDocument(
    module_id="i-0123456789abcdef0-enc0123456789abcdef",
    digest="SHA384",
    timestamp=1_764_417_600_000,
    pcrs={i: bytes([i]) * 48 for i in range(16)},
    certificate=b"\x30" * 640,
    cabundle=(b"\x31" * 500, b"\x32" * 700),
    public_key=b"\x30\x82" + bytes(292),
)
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_ \n\u00e9"


def _text(timestamp: int) -> str:
    doc = AttestationDocument(**{**{n: getattr(_BASE, n) for n in _BASE.__slots__}, "timestamp": timestamp})
    return base64.b64encode(encode_document(doc, _KEY)).decode()


def _strict(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:  # binascii.Error, or a character that is not ASCII
        return None


def _members(text: str) -> dict[str, object] | None:
    return plain_generate_random(
        {
            "NumberOfBytes": 32,
            "Recipient": {"KeyEncryptionAlgorithm": KEY_ENCRYPTION_ALGORITHM, "AttestationDocument": text},
        }
    )


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    _document_text.TEXTS.clear()
    yield
    _document_text.TEXTS.clear()


_PRIMED = _text(_BASE.timestamp)


def _prime() -> None:
    _document_text.TEXTS.clear()
    assert _members(_PRIMED) is not None
    assert len(_document_text.TEXTS) == 1


def test_a_new_document_of_the_same_enclave_is_decoded_from_the_template() -> None:
    _prime()
    text = _text(_BASE.timestamp + 4321)
    fast = _document_text.from_text_template(text)
    assert fast is not None
    assert fast == base64.b64decode(text, validate=True)
    members = _members(text)
    assert members is not None
    assert members["Recipient"] == {
        "KeyEncryptionAlgorithm": KEY_ENCRYPTION_ALGORITHM,
        "AttestationDocument": fast,
    }


@settings(max_examples=400, deadline=None)
@given(
    timestamp=st.integers(min_value=1, max_value=2**64 - 1),
    edits=st.lists(
        st.tuples(
            st.integers(min_value=0), st.sampled_from(["set", "insert", "delete"]), st.sampled_from(_ALPHABET)
        ),
        max_size=3,
    ),
)
def test_edited_texts_decode_as_the_strict_way(timestamp: int, edits: list[tuple[int, str, str]]) -> None:
    _prime()
    text = list(_text(timestamp))
    for position, kind, char in edits:
        at = position % (len(text) + 1)
        if kind == "insert":
            text.insert(at, char)
        elif at < len(text):
            if kind == "set":
                text[at] = char
            else:
                del text[at]
    edited = "".join(text)
    fast = _document_text.from_text_template(edited)
    strict = _strict(edited)
    assert fast is None or fast == strict
    members = _members(edited)
    if strict is None:
        assert members is None
    else:
        assert members is not None
        assert members["Recipient"]["AttestationDocument"] == strict  # type: ignore[index]


@settings(max_examples=200, deadline=None)
@given(tail=st.text(alphabet=_ALPHABET, max_size=8), cut=st.integers(min_value=0, max_value=200))
def test_texts_ending_otherwise_decode_as_the_strict_way(tail: str, cut: int) -> None:
    _prime()
    for edited in (_PRIMED[: len(_PRIMED) - cut] + tail, _PRIMED[: len(_PRIMED) - 4 - cut % 4] + tail):
        fast = _document_text.from_text_template(edited)
        assert fast is None or fast == _strict(edited)


def test_padding_inside_the_text_is_refused_as_the_strict_way() -> None:
    _prime()
    ((first, _, start, *_),) = _document_text.TEXTS.values()
    text = _text(_BASE.timestamp + 1)
    for at in range(len(first), start, 4):  # each group between the remembered pieces
        for pad in ("==", "="):
            edited = text[: at + 4 - len(pad)] + pad + text[at + 4 :]
            assert _strict(edited) is None
            assert _document_text.from_text_template(edited) is None
            assert _members(edited) is None
