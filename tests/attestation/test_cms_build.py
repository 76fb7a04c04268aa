"""The CMS builder's per-shape template equals the element-by-element encoding (cms._assemble).

The template holds the bytes between the four fields (rid, encryptedKey, IV, ciphertext) for one length
triple; these tests compare it with the reference encoding for any field contents and lengths (short and
long-form length octets included), and check what the builder emits against the real parser and openssl
in test_cms.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from unittest import mock

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from attestation import _cms_parse, cms


@pytest.fixture(autouse=True)
def _fresh_build_templates() -> Iterator[None]:
    saved = dict(cms._BUILD_TEMPLATES)
    cms._BUILD_TEMPLATES.clear()
    yield
    cms._BUILD_TEMPLATES.clear()
    cms._BUILD_TEMPLATES.update(saved)


def _templated(key_id: bytes, encrypted_key: bytes, iv: bytes, ciphertext: bytes) -> bytes:
    head, mid, before_content, content_head = cms._build_template(
        (len(key_id), len(encrypted_key), len(ciphertext))
    )
    return b"".join(
        (head, key_id, mid, encrypted_key, before_content, iv, content_head, ciphertext, cms._TAIL)
    )


@settings(max_examples=300, deadline=None)
@given(
    key_id=st.binary(min_size=0, max_size=300),
    encrypted_key=st.sampled_from((256, 384, 512)).flatmap(lambda n: st.binary(min_size=n, max_size=n))
    | st.binary(max_size=130),
    iv=st.binary(min_size=16, max_size=16),
    blocks=st.integers(min_value=1, max_value=257),
    fill=st.binary(min_size=1, max_size=16),
)
def test_template_equals_reference_encoding(
    key_id: bytes, encrypted_key: bytes, iv: bytes, blocks: int, fill: bytes
) -> None:
    ciphertext = (fill * (16 * blocks))[: 16 * blocks]
    assert _templated(key_id, encrypted_key, iv, ciphertext) == cms._assemble(
        key_id, encrypted_key, iv, ciphertext
    )


@pytest.mark.parametrize("key_size", cms.RSA_KEY_SIZES)
@pytest.mark.parametrize("size", [1, 15, 16, 17, 32, 1024, cms.MAX_PLAINTEXT_BYTES])
def test_build_equals_reference_encoding_of_its_own_fields(key_size: int, size: int) -> None:
    key = _keys(key_size)
    plaintext = os.urandom(size)
    key_id = os.urandom(32)
    blob = cms.build_ciphertext_for_recipient(plaintext, key.public_key(), key_id=key_id)
    fields = _cms_parse._walk(blob)[0]
    assert fields.key_id == key_id
    assert blob == cms._assemble(fields.key_id, fields.encrypted_key, fields.iv, fields.ciphertext)
    assert cms.decrypt_ciphertext_for_recipient(blob, key) == plaintext
    assert (len(key_id), key_size // 8, len(fields.ciphertext)) in cms._BUILD_TEMPLATES


def test_cek_and_iv_come_from_one_draw_split_in_order() -> None:
    key = _keys(2048)
    draw = bytes(range(48))
    with mock.patch.object(cms.os, "urandom", return_value=draw) as urandom:
        blob = cms.build_ciphertext_for_recipient(b"x", key.public_key())
    urandom.assert_called_once_with(cms.CEK_BYTES + cms.IV_BYTES)
    fields = _cms_parse._walk(blob)[0]
    assert fields.iv == draw[32:]
    assert key.decrypt(fields.encrypted_key, cms._OAEP) == draw[:32]


def test_the_template_cache_is_bounded() -> None:
    for n in range(cms.MAX_BUILD_TEMPLATES + 5):
        cms._build_template((n, 256, 16))
    assert len(cms._BUILD_TEMPLATES) == cms.MAX_BUILD_TEMPLATES


_KEYS: dict[int, rsa.RSAPrivateKey] = {}


def _keys(size: int) -> rsa.RSAPrivateKey:
    if size not in _KEYS:
        _KEYS[size] = rsa.generate_private_key(public_exponent=65537, key_size=size)
    return _KEYS[size]
