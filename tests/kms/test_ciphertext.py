"""kms.ciphertext: the symmetric blob round-trips, names its key, and every tampering fails the same way.

The blob's AES-256-GCM layer is checked against an independent reading of docs/kms-ciphertext.md (the test
builds the associated data from the document, not from the module) and the RSA path against OpenSSL's
``pkeyutl`` (a second implementation of RSAES-OAEP).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from kms.ciphertext import (
    INVALID_CIPHERTEXT_MESSAGE,
    MAX_CIPHERTEXT_BYTES,
    MAX_CONTEXT_BYTES,
    MAX_PLAINTEXT_BYTES,
    encode_context,
    key_id_of,
    open_parsed,
    parse,
    rsa_decrypt,
    rsa_encrypt,
    rsa_max_plaintext,
    seal,
    unseal,
)
from kms.errors import InvalidCiphertextException, ValidationException

KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab"
OTHER_ID = "0987dcba-09ba-dc87-65fe-0987654321ba"
MATERIAL = bytes(range(32))
OTHER_MATERIAL = bytes(range(1, 33))

contexts = st.dictionaries(st.text(max_size=20), st.text(max_size=20), max_size=5)
plaintexts = st.binary(min_size=1, max_size=MAX_PLAINTEXT_BYTES)


def _fails(call: object, *args: object, **kwargs: object) -> None:
    assert callable(call)
    with pytest.raises(InvalidCiphertextException) as caught:
        call(*args, **kwargs)
    assert caught.value.message == INVALID_CIPHERTEXT_MESSAGE
    assert caught.value.status == 400


@settings(max_examples=60, deadline=None)
@given(plaintext=plaintexts, context=contexts)
def test_roundtrip(plaintext: bytes, context: dict[str, str]) -> None:
    blob = seal(key_id=KEY_ID, material=MATERIAL, plaintext=plaintext, context=context)
    assert len(blob) <= MAX_CIPHERTEXT_BYTES
    assert key_id_of(blob) == KEY_ID
    # The same pairs in another order are the same context (KMS compares the map, not the JSON text).
    shuffled = dict(reversed(list(context.items())))
    assert unseal(blob=blob, key_id=KEY_ID, material=MATERIAL, context=shuffled) == plaintext


@settings(max_examples=100, deadline=None)
@given(plaintext=st.binary(min_size=1, max_size=64), data=st.data())
def test_any_changed_byte_fails(plaintext: bytes, data: st.DataObject) -> None:
    blob = seal(key_id=KEY_ID, material=MATERIAL, plaintext=plaintext, context={"a": "b"})
    where = data.draw(st.integers(0, len(blob) - 1), label="where")
    flip = data.draw(st.integers(1, 255), label="flip")
    changed = bytearray(blob)
    changed[where] ^= flip
    _fails(unseal, blob=bytes(changed), key_id=KEY_ID, material=MATERIAL, context={"a": "b"})


@settings(max_examples=50, deadline=None)
@given(blob=st.binary(max_size=200))
def test_foreign_bytes_fail_the_same_way(blob: bytes) -> None:
    # A parser either reads a key ID or raises our one error; nothing else escapes.
    message = INVALID_CIPHERTEXT_MESSAGE
    try:
        key_id_of(blob)
    except InvalidCiphertextException as error:
        message = error.message
    assert message == INVALID_CIPHERTEXT_MESSAGE
    _fails(unseal, blob=blob, key_id=KEY_ID, material=MATERIAL, context=None)


def test_truncations_and_trailing_junk_fail() -> None:
    blob = seal(key_id=KEY_ID, material=MATERIAL, plaintext=b"secret", context=None)
    for size in range(len(blob)):
        _fails(unseal, blob=blob[:size], key_id=KEY_ID, material=MATERIAL, context=None)
    _fails(unseal, blob=blob + b"\x00", key_id=KEY_ID, material=MATERIAL, context=None)


@pytest.mark.parametrize(
    ("key_id", "material", "context"),
    [
        pytest.param(OTHER_ID, MATERIAL, {"purpose": "test"}, id="another-key-id"),
        pytest.param(KEY_ID, OTHER_MATERIAL, {"purpose": "test"}, id="another-key-material"),
        pytest.param(KEY_ID, MATERIAL, {"purpose": "Test"}, id="context-case-differs"),
        pytest.param(KEY_ID, MATERIAL, {"purpose": "test", "x": ""}, id="context-extra-pair"),
        pytest.param(KEY_ID, MATERIAL, {}, id="context-missing"),
        pytest.param(KEY_ID, MATERIAL, None, id="context-absent"),
    ],
)
def test_mismatch_fails(key_id: str, material: bytes, context: dict[str, str] | None) -> None:
    blob = seal(key_id=KEY_ID, material=MATERIAL, plaintext=b"secret", context={"purpose": "test"})
    _fails(unseal, blob=blob, key_id=key_id, material=material, context=context)


def test_absent_and_empty_context_are_the_same() -> None:
    blob = seal(key_id=KEY_ID, material=MATERIAL, plaintext=b"secret", context=None)
    assert unseal(blob=blob, key_id=KEY_ID, material=MATERIAL, context={}) == b"secret"


@pytest.mark.parametrize(
    ("one", "two"),
    [
        pytest.param({"ab": "c"}, {"a": "bc"}, id="split-moves"),
        pytest.param({"a": "b", "c": "d"}, {"a": "b\x00\x00\x00\x01c"}, id="pair-smuggled-in-value"),
        pytest.param({"": "x"}, {"x": ""}, id="empty-key-vs-empty-value"),
    ],
)
def test_context_encoding_is_unambiguous(one: dict[str, str], two: dict[str, str]) -> None:
    assert encode_context(one) != encode_context(two)


def test_context_encoding_matches_the_document() -> None:
    # docs/kms-ciphertext.md: count, then len(key) key len(value) value, sorted by key's UTF-8 bytes.
    def u32(n: int) -> bytes:
        return struct.pack(">I", n)

    expected = u32(2) + u32(1) + b"a" + u32(2) + b"\xc3\xa9" + u32(1) + b"b" + u32(0)
    assert encode_context({"b": "", "a": "é"}) == expected
    assert encode_context(None) == encode_context({}) == u32(0)


def test_blob_layout_matches_the_document() -> None:
    # Open a blob by the document alone: magic, version, key-ID length and ID, nonce, GCM over the rest.
    blob = seal(key_id=KEY_ID, material=MATERIAL, plaintext=b"secret", context={"k": "v"})
    assert blob[:4] == b"KSC\x01"
    size = blob[4]
    assert blob[5 : 5 + size] == KEY_ID.encode()
    header = blob[: 5 + size + 12]
    aad = header + struct.pack(">I", 1) + struct.pack(">I", 1) + b"k" + struct.pack(">I", 1) + b"v"
    assert AESGCM(MATERIAL).decrypt(header[-12:], blob[len(header) :], aad) == b"secret"
    assert len(blob) == len(header) + len(b"secret") + 16


def test_context_bound() -> None:
    encode_context({"k": "v" * (MAX_CONTEXT_BYTES - 1)})
    with pytest.raises(ValidationException, match="EncryptionContext is over 8192 bytes"):
        encode_context({"k": "v" * MAX_CONTEXT_BYTES})


def test_largest_plaintext_fits_the_blob_bound() -> None:
    longest_id = "k" * 64
    blob = seal(key_id=longest_id, material=MATERIAL, plaintext=os.urandom(MAX_PLAINTEXT_BYTES), context=None)
    assert len(blob) <= MAX_CIPHERTEXT_BYTES
    assert key_id_of(blob) == longest_id


def test_nonces_differ() -> None:
    one = seal(key_id=KEY_ID, material=MATERIAL, plaintext=b"same", context=None)
    two = seal(key_id=KEY_ID, material=MATERIAL, plaintext=b"same", context=None)
    assert one != two


def test_no_secret_in_repr_or_message() -> None:
    blob = seal(key_id=KEY_ID, material=MATERIAL, plaintext=b"top-secret", context=None)
    with pytest.raises(InvalidCiphertextException) as caught:
        unseal(blob=blob, key_id=KEY_ID, material=OTHER_MATERIAL, context=None)
    text = repr(caught.value) + str(caught.value)
    assert "top-secret" not in text
    assert MATERIAL.hex() not in text


@pytest.fixture(scope="module")
def rsa_2048() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pkcs8(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.mark.parametrize(
    ("size", "algorithm", "expected"),
    [
        (2048, "RSAES_OAEP_SHA_1", 214),
        (2048, "RSAES_OAEP_SHA_256", 190),
        (3072, "RSAES_OAEP_SHA_1", 342),
        (3072, "RSAES_OAEP_SHA_256", 318),
        (4096, "RSAES_OAEP_SHA_1", 470),
        (4096, "RSAES_OAEP_SHA_256", 446),
    ],
)
def test_rsa_limits_are_the_references(size: int, algorithm: str, expected: int) -> None:
    assert rsa_max_plaintext(size, algorithm) == expected


@pytest.mark.parametrize(
    ("algorithm", "digest"), [("RSAES_OAEP_SHA_1", "sha1"), ("RSAES_OAEP_SHA_256", "sha256")]
)
def test_rsa_matches_openssl(
    rsa_2048: rsa.RSAPrivateKey, tmp_path: Path, algorithm: str, digest: str
) -> None:
    openssl = shutil.which("openssl")
    assert openssl is not None
    material = _pkcs8(rsa_2048)
    plaintext = os.urandom(rsa_max_plaintext(2048, algorithm))
    blob = rsa_encrypt(material=material, algorithm=algorithm, plaintext=plaintext)
    assert rsa_decrypt(material=material, algorithm=algorithm, blob=blob) == plaintext
    (tmp_path / "key.der").write_bytes(material)
    (tmp_path / "blob").write_bytes(blob)
    opened = subprocess.run(
        [openssl, "pkeyutl", "-decrypt", "-inkey", str(tmp_path / "key.der"), "-keyform", "DER",
         "-in", str(tmp_path / "blob"), "-pkeyopt", "rsa_padding_mode:oaep",
         "-pkeyopt", f"rsa_oaep_md:{digest}", "-pkeyopt", f"rsa_mgf1_md:{digest}"],
        check=True, capture_output=True,
    )  # fmt: skip
    assert opened.stdout == plaintext


def test_rsa_failures_are_indistinguishable(rsa_2048: rsa.RSAPrivateKey) -> None:
    material = _pkcs8(rsa_2048)
    blob = rsa_encrypt(material=material, algorithm="RSAES_OAEP_SHA_256", plaintext=b"secret")
    _fails(rsa_decrypt, material=material, algorithm="RSAES_OAEP_SHA_1", blob=blob)
    _fails(rsa_decrypt, material=material, algorithm="RSAES_OAEP_SHA_256", blob=blob[:-1])
    _fails(rsa_decrypt, material=material, algorithm="RSAES_OAEP_SHA_256", blob=bytes(256))
    changed = bytearray(blob)
    changed[10] ^= 1
    _fails(rsa_decrypt, material=material, algorithm="RSAES_OAEP_SHA_256", blob=bytes(changed))


def test_kept_encodings_and_parses_are_the_fresh_ones() -> None:
    """encode_context keeps encodings by the pairs in order; parse keeps the last bytes object's parts."""
    import kms.ciphertext

    for context in ({"b": "2", "a": "1"}, {"a": "1", "b": "2"}, {"é": ""}):
        first = encode_context(context)
        assert encode_context(dict(context)) == first == kms.ciphertext._encode_context(context)
    too_big = {"k": "v" * MAX_CONTEXT_BYTES}
    for _ in range(2):  # a refused context is refused every time (nothing kept)
        with pytest.raises(ValidationException):
            encode_context(too_big)
    blob = seal(key_id=KEY_ID, material=MATERIAL, plaintext=b"secret", context=None)
    assert parse(blob) is parse(blob)
    assert parse(bytes(blob)) == parse(blob)
    changed = bytearray(blob)
    assert parse(changed).key_id == KEY_ID
    changed[5] = 0x20  # a space in the key ID, in the same (mutable) object: parsed again, refused
    with pytest.raises(InvalidCiphertextException):
        parse(changed)
    assert open_parsed(parse(blob), material=MATERIAL, encoded_context=encode_context(None)) == b"secret"
    with pytest.raises(InvalidCiphertextException, match=INVALID_CIPHERTEXT_MESSAGE):
        open_parsed(parse(blob), material=MATERIAL, encoded_context=encode_context({"a": "b"}))
