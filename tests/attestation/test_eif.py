"""The EIF codec against the format as specified (aws-facts §4), checked field by field with struct, zlib
and hashlib, and its PCR0 signature against pycose as an independent COSE implementation."""

from __future__ import annotations

import hashlib
import struct
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from pycose.keys.curves import P384
from pycose.keys.ec2 import EC2Key
from pycose.messages import Sign1Message

from attestation.eif import (
    HASH_ALGORITHM,
    HEADER_BYTES,
    EifError,
    SectionType,
    build_eif,
    decode_signature_section,
    pcr_of,
    read_eif,
    replace_signature,
)
from attestation.eif_sign import EifSigner, pcr0_payload, signature_matches

KERNEL = b"\x7fKERNEL" * 300
CMDLINE = b"reboot=k panic=30 pci=off nomodules console=ttyS0"
BOOT = b"bootstrap ramdisk" * 50
APP = b"application ramdisk" * 70
META = {"ImageName": "demo", "ImageVersion": "1.0"}


def _image(app: bytes = APP, **kw: Any) -> bytes:
    return build_eif(kernel=KERNEL, cmdline=CMDLINE, ramdisks=[BOOT, app], metadata=META, **kw)


def _extend(data: bytes) -> str:
    return hashlib.sha384(b"\0" * 48 + hashlib.sha384(data).digest()).hexdigest()


def test_header_fields_offsets_and_crc_as_specified() -> None:
    eif = _image()
    magic, version, flags, mem, cpus, _reserved, count = struct.unpack_from(">4sHHQQHH", eif)
    assert (magic, version, flags, mem, cpus, count) == (b".eif", 4, 0, 1 << 30, 2, 5)
    offsets = struct.unpack_from(">32Q", eif, 28)
    sizes = struct.unpack_from(">32Q", eif, 28 + 256)
    metadata = b'{"ImageName":"demo","ImageVersion":"1.0"}'
    order = [(1, KERNEL), (2, CMDLINE), (5, metadata), (3, BOOT), (3, APP)]
    at = HEADER_BYTES
    for index, (kind, data) in enumerate(order):
        assert offsets[index] == at
        assert sizes[index] == len(data)
        assert struct.unpack_from(">HHQ", eif, at) == (kind, 0, len(data))
        assert eif[at + 12 : at + 12 + len(data)] == data
        at += 12 + len(data)
    assert at == len(eif)
    assert offsets[5:] == (0,) * 27
    (crc,) = struct.unpack_from(">I", eif, HEADER_BYTES - 4)
    assert crc == zlib.crc32(eif[: HEADER_BYTES - 4] + eif[HEADER_BYTES:])


def test_measurements_are_nitro_clis() -> None:
    image = read_eif(_image())
    assert image.measurements.to_json() == {
        "HashAlgorithm": HASH_ALGORITHM,
        "PCR0": _extend(KERNEL + CMDLINE + BOOT + APP),
        "PCR1": _extend(KERNEL + CMDLINE + BOOT),
        "PCR2": _extend(APP),
    }
    assert pcr_of(APP).hex() == _extend(APP)
    assert image.kernel == KERNEL
    assert image.cmdline == CMDLINE
    assert image.ramdisks == (BOOT, APP)
    assert image.metadata == META
    assert image.crc_ok
    assert image.signature is None


def test_one_application_byte_moves_pcr0_and_pcr2_only() -> None:
    a = read_eif(_image()).measurements
    b = read_eif(_image(APP[:-1] + b"!")).measurements
    assert a.pcr1 == b.pcr1
    assert a.pcr0 != b.pcr0
    assert a.pcr2 != b.pcr2


def test_same_parts_same_bytes() -> None:
    assert _image() == _image()


def test_image_without_metadata_is_a_valid_eif() -> None:
    eif = build_eif(kernel=KERNEL, cmdline=CMDLINE, ramdisks=[BOOT, APP], metadata=None)
    image = read_eif(eif)
    assert image.metadata is None
    assert [s.type for s in image.sections].count(SectionType.METADATA) == 0


@pytest.mark.parametrize("where", [HEADER_BYTES + 20, -5, HEADER_BYTES - 100])
def test_a_flipped_byte_is_a_crc_error(where: int) -> None:
    eif = bytearray(_image())
    eif[where] ^= 0x01
    with pytest.raises(EifError, match="CRC mismatch"):
        read_eif(bytes(eif))
    assert not read_eif(bytes(eif), check_crc=False).crc_ok


def test_every_truncation_is_one_clear_error() -> None:
    eif = _image()
    for end in [*range(0, HEADER_BYTES + 40, 7), *range(len(eif) - 40, len(eif))]:
        with pytest.raises(EifError, match=r"truncated|magic"):
            read_eif(eif[:end])


@pytest.mark.parametrize(
    "data",
    [b"", b"\x89PNG\r\n\x1a\n" + bytes(600), bytes(2000), b"MZ" + bytes(1000)],
    ids=["empty", "png", "zeros", "exe"],
)
def test_foreign_files_are_not_eifs(data: bytes) -> None:
    with pytest.raises(EifError, match=r"not an EIF|truncated"):
        read_eif(data)


def test_trailing_bytes_and_a_lying_section_table_are_refused() -> None:
    eif = _image()
    with pytest.raises(EifError, match="after the 5 sections"):
        read_eif(eif + b"junk" * 4, check_crc=False)
    forged = bytearray(eif)
    struct.pack_into(">Q", forged, 28 + 8, 999)  # section 1's offset
    with pytest.raises(EifError, match="section table"):
        read_eif(bytes(forged), check_crc=False)
    newer = bytearray(eif)
    struct.pack_into(">H", newer, 4, 9)
    with pytest.raises(EifError, match="version 9"):
        read_eif(bytes(newer))


def _signer(
    curve: ec.EllipticCurve | None = None,
) -> tuple[EifSigner, x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(curve or ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "eif signer")])
    now = datetime(2026, 1, 1, tzinfo=UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=365))
        .sign(key, hashes.SHA384())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return EifSigner.from_pem(cert.public_bytes(serialization.Encoding.PEM), key_pem), cert, key


def _signed() -> tuple[bytes, x509.Certificate, ec.EllipticCurvePrivateKey]:
    signer, cert, key = _signer()
    unsigned = read_eif(_image())
    return replace_signature(unsigned, signer.sign_pcr0(unsigned.measurements.pcr0)), cert, key


def test_signed_image_has_pcr8_of_the_certificate_der_and_checks() -> None:
    eif, cert, _ = _signed()
    image = read_eif(eif)
    assert image.sections[-1].type == SectionType.SIGNATURE
    assert image.measurements.pcr8 is not None
    assert image.measurements.pcr8.hex() == _extend(cert.public_bytes(serialization.Encoding.DER))
    assert image.measurements.pcr0 == read_eif(_image()).measurements.pcr0
    assert signature_matches(image)


def test_signature_section_is_serde_cbor_with_byte_arrays() -> None:
    eif, cert, _ = _signed()
    section = cbor2.loads(read_eif(eif).signature or b"")
    assert isinstance(section, list)
    assert len(section) == 1
    assert list(section[0]) == ["signing_certificate", "signature"]
    assert bytes(section[0]["signing_certificate"]) == cert.public_bytes(serialization.Encoding.PEM)
    assert all(isinstance(b, int) for b in section[0]["signature"])


def test_pycose_verifies_the_pcr0_signature() -> None:
    eif, _, key = _signed()
    image = read_eif(eif)
    cose = decode_signature_section(image.signature or b"")[0].cose_sign1
    message = Sign1Message.from_cose_obj(list(cbor2.loads(cose)), True)
    numbers = key.public_key().public_numbers()
    message.key = EC2Key(crv=P384, x=numbers.x.to_bytes(48, "big"), y=numbers.y.to_bytes(48, "big"))
    assert message.verify_signature()
    assert message.payload == pcr0_payload(image.measurements.pcr0)
    assert cbor2.loads(message.payload) == {
        "register_index": 0,
        "register_value": list(image.measurements.pcr0),
    }


def test_signing_is_deterministic_and_replaces_the_old_signature() -> None:
    signer, _, _ = _signer()
    image = read_eif(_image())
    once = replace_signature(image, signer.sign_pcr0(image.measurements.pcr0))
    twice = replace_signature(read_eif(once), signer.sign_pcr0(image.measurements.pcr0))
    assert once == twice
    assert [s.type for s in read_eif(twice).sections].count(SectionType.SIGNATURE) == 1


def test_a_signature_over_another_pcr0_does_not_check() -> None:
    signer, _, _ = _signer()
    image = read_eif(_image())
    other = read_eif(_image(APP + b"x")).measurements.pcr0
    assert not signature_matches(read_eif(replace_signature(image, signer.sign_pcr0(other))))


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP521R1()], ids=["p256", "p521"])
def test_other_curves_sign_and_check(curve: ec.EllipticCurve) -> None:
    signer, _, _ = _signer(curve)
    image = read_eif(_image())
    assert signature_matches(read_eif(replace_signature(image, signer.sign_pcr0(image.measurements.pcr0))))


def test_signer_refuses_a_mismatched_or_wrong_key() -> None:
    _, cert, _ = _signer()
    pem = cert.public_bytes(serialization.Encoding.PEM)
    other = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(EifError, match="does not match"):
        EifSigner.from_pem(pem, other)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(EifError, match="EC key"):
        EifSigner.from_pem(pem, rsa_key)
    with pytest.raises(EifError, match="PEM"):
        EifSigner.from_pem(b"not a certificate", other)


@pytest.mark.parametrize(
    "section",
    [
        cbor2.dumps([]),
        cbor2.dumps([{"signing_certificate": b"bytes-not-array", "signature": [1]}]),
        cbor2.dumps([{"signing_certificate": [1, 256], "signature": [1]}]),
        cbor2.dumps([{"signature": [1]}]),
        b"\xff\x00",
    ],
    ids=["empty", "bstr", "out-of-range", "missing-key", "garbage"],
)
def test_malformed_signature_sections_are_refused(section: bytes) -> None:
    image = read_eif(_image())
    with pytest.raises(EifError):
        read_eif(replace_signature(image, section))
