"""CiphertextForRecipient: real KMS vectors, openssl interop both ways, KMS's exact shape, tampering."""

from __future__ import annotations

import json
import re
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from attestation.cms import (
    MAX_PLAINTEXT_BYTES,
    build_ciphertext_for_recipient,
    decrypt_ciphertext_for_recipient,
    parse_ciphertext_for_recipient,
    recipient_key_id,
)
from attestation.errors import DecryptionError

PLAINTEXT = bytes(range(32))


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def openssl_files(key: rsa.RSAPrivateKey, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """key.pem and a self-signed cert.pem whose subjectKeyIdentifier is the rid we write."""
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "enclave")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectKeyIdentifier(recipient_key_id(spki)), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("openssl")
    key_pem = directory / "key.pem"
    cert_pem = directory / "cert.pem"
    key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_pem, cert_pem


def _openssl(*args: str, stdin: bytes = b"") -> bytes:
    result = subprocess.run(["openssl", *args], input=stdin, capture_output=True, check=False)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


@pytest.mark.parametrize("name", ["constructed", "primitive"])
def test_real_kms_vectors_parse_to_expected_fields(vectors: Path, name: str) -> None:
    blob = (vectors / "kms-cms" / f"{name}.ber").read_bytes()
    expected = json.loads((vectors / "kms-cms" / f"{name}.expected.json").read_text())
    fields = parse_ciphertext_for_recipient(blob)
    assert fields.encrypted_key.hex() == expected["encrypted_key"]
    assert fields.iv.hex() == expected["iv"]
    assert fields.ciphertext.hex() == expected["ciphertext"]
    assert len(fields.key_id) == 32


@pytest.mark.parametrize("name", ["constructed", "primitive"])
def test_real_vector_with_the_wrong_key_is_the_one_error(
    vectors: Path, name: str, key: rsa.RSAPrivateKey
) -> None:
    blob = (vectors / "kms-cms" / f"{name}.ber").read_bytes()
    with pytest.raises(DecryptionError, match=f"^{DecryptionError.MESSAGE}$"):
        decrypt_ciphertext_for_recipient(blob, key)


@pytest.mark.parametrize("size", [1, 15, 16, 32, 1024, MAX_PLAINTEXT_BYTES])
def test_round_trip(key: rsa.RSAPrivateKey, size: int) -> None:
    plaintext = bytes(i % 251 for i in range(size))
    blob = build_ciphertext_for_recipient(plaintext, key.public_key())
    assert decrypt_ciphertext_for_recipient(blob, key) == plaintext


@pytest.mark.parametrize("size", [0, MAX_PLAINTEXT_BYTES + 1])
def test_build_rejects_plaintext_out_of_bounds(key: rsa.RSAPrivateKey, size: int) -> None:
    with pytest.raises(ValueError, match="plaintext must be"):
        build_ciphertext_for_recipient(b"\0" * size, key.public_key())


def test_build_rejects_small_rsa_key() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ValueError, match="RSA key"):
        build_ciphertext_for_recipient(PLAINTEXT, small.public_key())


def test_fresh_key_and_iv_per_message(key: rsa.RSAPrivateKey) -> None:
    first = parse_ciphertext_for_recipient(build_ciphertext_for_recipient(PLAINTEXT, key.public_key()))
    second = parse_ciphertext_for_recipient(build_ciphertext_for_recipient(PLAINTEXT, key.public_key()))
    assert first.iv != second.iv
    assert first.ciphertext != second.ciphertext


def test_openssl_decrypts_what_we_build(key: rsa.RSAPrivateKey, openssl_files: tuple[Path, Path]) -> None:
    key_pem, cert_pem = openssl_files
    blob = build_ciphertext_for_recipient(PLAINTEXT, key.public_key())
    # -recip makes openssl select the recipient by the certificate's subjectKeyIdentifier: our rid.
    out = _openssl(
        "cms", "-decrypt", "-inform", "DER", "-recip", str(cert_pem), "-inkey", str(key_pem), stdin=blob
    )
    assert out == PLAINTEXT


@pytest.mark.parametrize("stream", [True, False], ids=["ber-stream", "der"])
def test_we_decrypt_what_openssl_builds(
    key: rsa.RSAPrivateKey, openssl_files: tuple[Path, Path], stream: bool
) -> None:
    _, cert_pem = openssl_files
    args = ["cms", "-encrypt", "-binary", "-outform", "DER", "-keyid", "-recip", str(cert_pem)]
    args += ["-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha256"]
    args += ["-keyopt", "rsa_mgf1_md:sha256", "-aes-256-cbc"]
    if stream:
        args.append("-stream")
    blob = _openssl(*args, stdin=PLAINTEXT * 3)
    assert blob[1] == (0x80 if stream else 0x82)  # indefinite (BER) vs definite (DER) outer length
    assert decrypt_ciphertext_for_recipient(blob, key) == PLAINTEXT * 3


def _asn1_shape(blob: bytes) -> list[str]:
    """``openssl asn1parse`` lines without the hex dumps (the values differ, the structure must not)."""
    text = _openssl("asn1parse", "-inform", "DER", "-i", stdin=blob).decode()
    return [re.sub(r"\[HEX DUMP\]:[0-9A-F]+", "[HEX DUMP]", line.rstrip()) for line in text.splitlines()]


def test_our_structure_matches_kms_field_for_field(vectors: Path, key: rsa.RSAPrivateKey) -> None:
    real = (vectors / "kms-cms" / "constructed.ber").read_bytes()
    ours = build_ciphertext_for_recipient(PLAINTEXT, key.public_key())  # 32 bytes -> 48, as in the vector
    assert len(ours) == len(real)
    assert _asn1_shape(ours) == _asn1_shape(real)
    assert ours[:31] == real[:31]  # every header up to the rid value is byte-identical
    assert ours[65:131] == real[65:131]  # OAEP AlgorithmIdentifier and encryptedKey header


def test_every_single_byte_change_fails_or_only_changes_malleable_parts(key: rsa.RSAPrivateKey) -> None:
    """CBC without a MAC (KMS's choice): a change may decrypt only in the rid, the IV or the ciphertext.

    A flip in the final block turns it into random bytes, which still end in valid PKCS#7 padding about
    once in 256: then it opens, to other bytes. Headers, OIDs and the OAEP-wrapped key never do.
    """
    blob = build_ciphertext_for_recipient(PLAINTEXT, key.public_key())
    fields = parse_ciphertext_for_recipient(blob)
    rid = range(blob.index(fields.key_id), blob.index(fields.key_id) + 32)
    iv_start = blob.index(fields.iv)
    malleable = {*rid, *range(iv_start, iv_start + 16)}
    ct_start = blob.index(fields.ciphertext)
    malleable |= set(range(ct_start, ct_start + len(fields.ciphertext)))
    messages: set[str] = set()
    for index in range(len(blob)):
        mutated = bytearray(blob)
        mutated[index] ^= 0x01
        try:
            opened = decrypt_ciphertext_for_recipient(bytes(mutated), key)
        except DecryptionError as error:
            messages.add(str(error))
        else:
            assert index in malleable, f"byte {index} changed and still decrypted"
            assert (opened == PLAINTEXT) == (index in rid)
    assert messages == {DecryptionError.MESSAGE}


def test_truncation_and_trailing_junk_fail(key: rsa.RSAPrivateKey) -> None:
    blob = build_ciphertext_for_recipient(PLAINTEXT, key.public_key())
    for end in range(len(blob)):
        with pytest.raises(DecryptionError):
            decrypt_ciphertext_for_recipient(blob[:end], key)
    with pytest.raises(DecryptionError):
        decrypt_ciphertext_for_recipient(blob + b"\0", key)


def test_wrong_key_fails(key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey) -> None:
    blob = build_ciphertext_for_recipient(PLAINTEXT, key.public_key())
    with pytest.raises(DecryptionError, match=f"^{DecryptionError.MESSAGE}$"):
        decrypt_ciphertext_for_recipient(blob, other_key)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_decryption_error(data: bytes) -> None:
    with pytest.raises(DecryptionError):
        parse_ciphertext_for_recipient(data)


def _definite(blob: bytes) -> bytes:
    """Our BER re-encoded by openssl with definite lengths (DER)."""
    return _openssl("cms", "-cmsout", "-inform", "DER", "-outform", "DER", stdin=blob)


def test_definite_length_reencoding_decrypts(key: rsa.RSAPrivateKey) -> None:
    blob = build_ciphertext_for_recipient(PLAINTEXT, key.public_key())
    der = _definite(blob)
    assert der[1] != 0x80
    assert decrypt_ciphertext_for_recipient(der, key) == PLAINTEXT


# KMS's OAEP AlgorithmIdentifier, and the same with both NULL hash parameters left out and an explicit
# empty pSpecified label: equivalent DER encodings of RSAES-OAEP(SHA-256, MGF1-SHA-256, no label).
_KMS_OAEP = bytes.fromhex(
    "303c06092a864886f70d010107302fa00f300d06096086480165030402010500"
    "a11c301a06092a864886f70d010108300d06096086480165030402010500"
)
_OAEP_NO_NULLS_EXPLICIT_LABEL = bytes.fromhex(
    "304906092a864886f70d010107303ca00d300b0609608648016503040201"
    "a11a301806092a864886f70d010108300b0609608648016503040201"
    "a20f300d06092a864886f70d0101090400"
)


def _replace_algid(blob: bytes, new: bytes) -> bytes:
    """Swap the OAEP AlgorithmIdentifier (lengths of the enclosing KTRI and SET fixed up: both long form)."""
    at = blob.index(_KMS_OAEP)
    out = bytearray(blob[:at] + new + blob[at + len(_KMS_OAEP) :])
    delta = len(new) - len(_KMS_OAEP)
    for header in (20, 24):  # SET and KeyTransRecipientInfo, each 0x3x 0x82 hi lo
        size = int.from_bytes(out[header + 2 : header + 4], "big") + delta
        out[header + 2 : header + 4] = size.to_bytes(2, "big")
    return bytes(out)


def test_equivalent_oaep_encodings_are_accepted(key: rsa.RSAPrivateKey) -> None:
    blob = build_ciphertext_for_recipient(PLAINTEXT, key.public_key())
    variant = _replace_algid(blob, _OAEP_NO_NULLS_EXPLICIT_LABEL)
    assert decrypt_ciphertext_for_recipient(variant, key) == PLAINTEXT


@pytest.mark.parametrize(
    "algid",
    [
        # SHA-1 hash (the OAEP default) instead of SHA-256
        "302f06092a864886f70d0101073022a00b300906052b0e03021a0500a113301106092a864886f70d010108300406"
        "052b0e03021a",
        # a non-empty label
        "304a06092a864886f70d010107303da00d300b0609608648016503040201a11a301806092a864886f70d010108"
        "300b0609608648016503040201a210300e06092a864886f70d010109040100",
    ],
    ids=["sha1", "label"],
)
def test_other_oaep_parameters_are_refused(key: rsa.RSAPrivateKey, algid: str) -> None:
    blob = build_ciphertext_for_recipient(PLAINTEXT, key.public_key())
    with pytest.raises(DecryptionError):
        decrypt_ciphertext_for_recipient(_replace_algid(blob, bytes.fromhex(algid)), key)


def test_extra_elements_are_refused(key: rsa.RSAPrivateKey) -> None:
    blob = build_ciphertext_for_recipient(PLAINTEXT, key.public_key())
    # unprotectedAttrs [1] after EncryptedContentInfo: insert an empty [1] before the EnvelopedData's EOC
    end_of_eci = len(blob) - 6  # ... EOC(eci) | EOC(enveloped) EOC([0]) EOC(ContentInfo)
    with_attrs = blob[:end_of_eci] + b"\xa1\x00" + blob[end_of_eci:]
    with pytest.raises(DecryptionError):
        decrypt_ciphertext_for_recipient(with_attrs, key)
    assert decrypt_ciphertext_for_recipient(blob, key) == PLAINTEXT
