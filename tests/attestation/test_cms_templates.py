"""The CMS parser's template fast path agrees with the full BER walk on every input, valid or not.

A template is made from a blob the walk accepted; a later blob of the same length is taken from the
template only if its bytes outside the four fields are equal. These tests mutate real KMS vectors and our
own blobs anywhere (fields, headers, lengths, end-of-contents octets) and compare both paths.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from attestation import _cms_parse, cms
from attestation.cms import EnvelopeFields, build_ciphertext_for_recipient, decrypt_ciphertext_for_recipient
from attestation.errors import DecryptionError


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(autouse=True)
def _fresh_templates() -> Iterator[None]:
    saved = dict(_cms_parse._TEMPLATES)
    _cms_parse._TEMPLATES.clear()
    yield
    _cms_parse._TEMPLATES.clear()
    _cms_parse._TEMPLATES.update(saved)


def _walked(blob: bytes) -> EnvelopeFields | None:
    try:
        return _cms_parse._walk(blob)[0]
    except Exception:
        return None


def _parsed(blob: bytes) -> EnvelopeFields | None:
    try:
        return _cms_parse._parse(blob)
    except Exception:
        return None


def _blobs(vectors: Path, key: rsa.RSAPrivateKey) -> list[bytes]:
    ours = [build_ciphertext_for_recipient(bytes(n), key.public_key()) for n in (1, 32, 1024)]
    real = [(vectors / "kms-cms" / f"{name}.ber").read_bytes() for name in ("constructed", "primitive")]
    return ours + real


def test_a_template_is_made_once_per_length_and_used(vectors: Path, key: rsa.RSAPrivateKey) -> None:
    blob = build_ciphertext_for_recipient(bytes(32), key.public_key())
    first = _cms_parse._parse(blob)
    assert set(_cms_parse._TEMPLATES) == {len(blob)}
    other = build_ciphertext_for_recipient(bytes(range(32)), key.public_key())  # new key, IV, ciphertext
    assert len(other) == len(blob)
    assert _cms_parse._TEMPLATES[len(blob)].match(other) == _cms_parse._walk(other)[0] != first
    assert decrypt_ciphertext_for_recipient(other, key) == bytes(range(32))


def test_a_chunked_ciphertext_makes_no_template(vectors: Path) -> None:
    blob = (vectors / "kms-cms" / "constructed.ber").read_bytes()
    fields, regions = _cms_parse._walk(blob)
    assert _cms_parse._parse(blob) == fields
    assert (len(blob) in _cms_parse._TEMPLATES) == (regions is not None)


def test_templates_are_bounded(key: rsa.RSAPrivateKey) -> None:
    for n in range(1, 16 * (_cms_parse.MAX_TEMPLATES + 8), 16):  # a new length every time
        blob = build_ciphertext_for_recipient(bytes(n % cms.MAX_PLAINTEXT_BYTES or 1), key.public_key())
        assert _cms_parse._parse(blob) == _cms_parse._walk(blob)[0]
    assert len(_cms_parse._TEMPLATES) <= _cms_parse.MAX_TEMPLATES


@settings(max_examples=300, deadline=None)
@given(
    which=st.integers(min_value=0, max_value=4),
    changes=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_mutated_blobs_parse_alike_on_both_paths(
    vectors: Path, key: rsa.RSAPrivateKey, which: int, changes: list[tuple[int, int]]
) -> None:
    blob = _blobs(vectors, key)[which]
    assert _cms_parse._parse(blob) == _cms_parse._walk(blob)[0]  # makes the template if the shape allows
    mutated = bytearray(blob)
    for position, value in changes:
        mutated[position % len(blob)] = value
    assert _parsed(bytes(mutated)) == _walked(bytes(mutated))


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0), st.integers(min_value=1, max_value=255))
def test_a_byte_flip_opens_or_fails_as_before(key: rsa.RSAPrivateKey, position: int, flip: int) -> None:
    blob = build_ciphertext_for_recipient(bytes(32), key.public_key())
    _cms_parse._parse(blob)
    mutated = bytearray(blob)
    mutated[position % len(blob)] ^= flip
    expected = _walked(bytes(mutated))
    if expected is None:
        with pytest.raises(DecryptionError, match=f"^{DecryptionError.MESSAGE}$"):
            decrypt_ciphertext_for_recipient(bytes(mutated), key)
    else:
        assert _cms_parse._parse(bytes(mutated)) == expected
