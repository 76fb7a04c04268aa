"""The Enclave Image File (EIF v4): build, read and measure an image, sans I/O.

Layout (aws-nitro-enclaves-image-format ``src/defs/mod.rs``, ``src/utils/mod.rs``; aws-facts.md §4), all
integers big-endian:

- a 548-byte header: magic ``.eif``, version u16 (4), flags u16 (bit 0: aarch64), default memory u64 (1 GiB)
  and CPUs u64 (2), reserved u16, the number of sections u16, 32 section offsets u64 and 32 sizes u64, an
  unused u32, and the CRC32 (IEEE) of everything in the file except that last field;
- then each section: a 12-byte header (type u16, flags u16, size u64) and its data, in nitro-cli's order:
  kernel, cmdline (no trailing NUL), metadata (JSON), the ramdisks (the bootstrap first, then the
  application), and the signature when signed. Header offsets point at the section headers.

Measurements (``EifBuilder::measure``, ``EifHasher``, ``get_pcrs``): each PCR is one extend of a zeroed
register, ``SHA-384(48 zero bytes || SHA-384(data))``, where the data is kernel || cmdline || every ramdisk
for PCR0, kernel || cmdline || the first ramdisk for PCR1, the other ramdisks for PCR2, and the DER of the
signing certificate for PCR8 (signed images only). Headers, metadata and the signature are not measured.

Signature section (``eif_signer.rs``): the CBOR (serde_cbor) of a list holding one ``PcrSignature`` map,
``{"signing_certificate": PEM, "signature": COSE_Sign1}``, where both byte vectors are CBOR arrays of small
integers (serde's encoding of a ``Vec<u8>``); the COSE_Sign1 is untagged, its protected header holds only the
algorithm, its unprotected header is empty, and its payload is the CBOR of ``{"register_index": 0,
"register_value": PCR0}`` (the value again an array of integers). We sign deterministically (RFC 6979), so a
signed build is reproducible too.

Every size and count is bounded by a named constant below; any input that breaks a rule raises
:class:`EifError` with one line. The CRC is checked by :func:`read_eif` unless the caller asks to see a
damaged image (``describe-eif`` reports ``CheckCRC: false`` as nitro-cli does).
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from types import MappingProxyType
from typing import Any

import cbor2
from cryptography import x509

from attestation._cbor import strict_loads
from attestation.errors import MalformedError

__all__ = [
    "EIF_VERSION",
    "HASH_ALGORITHM",
    "MAX_EIF_BYTES",
    "EifError",
    "EifImage",
    "Measurements",
    "Section",
    "SectionType",
    "build_eif",
    "measure",
    "pcr_of",
    "read_eif",
    "replace_signature",
]

EIF_MAGIC = b".eif"
EIF_VERSION = 4
#: The oldest version with a CRC (V1 -> V2 added it).
MIN_EIF_VERSION = 2
HEADER_BYTES = 548
SECTION_HEADER_BYTES = 12
MAX_SECTIONS = 32
#: nitro-cli's defaults in every header it writes (``EifBuilder::new``).
DEFAULT_MEMORY_BYTES = 1024 * 1024 * 1024
DEFAULT_CPUS = 2
#: Header flag bit 0: an aarch64 image (``EIF_HDR_ARCH_ARM64``).
FLAG_ARCH_ARM64 = 0x1
#: Bound on a whole image held in memory (real images are tens to hundreds of MiB).
MAX_EIF_BYTES = 2 * 1024 * 1024 * 1024
#: The kernel command line (x86's COMMAND_LINE_SIZE is 2048; aarch64's 4096).
MAX_CMDLINE_BYTES = 4096
#: The metadata section (JSON: image identity, build info, the Docker inspect output, custom metadata).
MAX_METADATA_BYTES = 1024 * 1024
#: The signature section, and the PEM certificate inside it.
MAX_SIGNATURE_BYTES = 64 * 1024
MAX_CERTIFICATE_PEM_BYTES = 16 * 1024
#: ``format!("{:?}", Sha384::new())`` as nitro-cli prints it under "HashAlgorithm".
HASH_ALGORITHM = "Sha384 { ... }"
PCR_BYTES = 48

_HEADER = struct.Struct(">4sHHQQHH32Q32QII")
_SECTION = struct.Struct(">HHQ")
assert _HEADER.size == HEADER_BYTES
assert _SECTION.size == SECTION_HEADER_BYTES


class EifError(MalformedError):
    """An EIF is truncated, corrupt, foreign, or breaks a bound; the message says which, in one line."""


class SectionType(IntEnum):
    """``EifSectionType``: the section kinds, numbered as in the format."""

    INVALID = 0
    KERNEL = 1
    CMDLINE = 2
    RAMDISK = 3
    SIGNATURE = 4
    METADATA = 5


_BOUNDS = MappingProxyType(
    {
        SectionType.CMDLINE: MAX_CMDLINE_BYTES,
        SectionType.METADATA: MAX_METADATA_BYTES,
        SectionType.SIGNATURE: MAX_SIGNATURE_BYTES,
    }
)


def pcr_of(data: bytes) -> bytes:
    """One extend of an all-zero PCR with the SHA-384 of ``data`` (``tpm_extend_finalize_reset``)."""
    return hashlib.sha384(bytes(PCR_BYTES) + hashlib.sha384(data).digest()).digest()


def _pcr_of_parts(parts: Sequence[bytes]) -> bytes:
    digest = hashlib.sha384()
    for part in parts:
        digest.update(part)
    return hashlib.sha384(bytes(PCR_BYTES) + digest.digest()).digest()


@dataclass(frozen=True, slots=True, kw_only=True)
class Measurements:
    """An image's PCRs as nitro-cli computes them; ``pcr8`` only for a signed image."""

    pcr0: bytes
    pcr1: bytes
    pcr2: bytes
    pcr8: bytes | None = None

    def to_json(self) -> dict[str, str]:
        """nitro-cli's ``Measurements`` object: keys sorted (a BTreeMap), lower-case hex."""
        out = {"HashAlgorithm": HASH_ALGORITHM, "PCR0": self.pcr0.hex(), "PCR1": self.pcr1.hex()}
        out["PCR2"] = self.pcr2.hex()
        if self.pcr8 is not None:
            out["PCR8"] = self.pcr8.hex()
        return out

    def as_pcrs(self) -> dict[int, bytes]:
        """The PCR bank entries these measurements fill, by index."""
        out = {0: self.pcr0, 1: self.pcr1, 2: self.pcr2}
        if self.pcr8 is not None:
            out[8] = self.pcr8
        return out


def measure(
    kernel: bytes, cmdline: bytes, ramdisks: Sequence[bytes], certificate_der: bytes | None = None
) -> Measurements:
    """PCR0, PCR1, PCR2 (and PCR8 when a signing certificate is given) of an image's parts."""
    if not ramdisks:
        raise EifError("an image needs at least one ramdisk (the bootstrap)")
    return Measurements(
        pcr0=_pcr_of_parts([kernel, cmdline, *ramdisks]),
        pcr1=_pcr_of_parts([kernel, cmdline, ramdisks[0]]),
        pcr2=_pcr_of_parts(ramdisks[1:]),
        pcr8=None if certificate_der is None else pcr_of(certificate_der),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class PcrSignature:
    """One entry of the signature section: the signer's PEM certificate and its COSE_Sign1 over a PCR."""

    certificate_pem: bytes
    cose_sign1: bytes

    def certificate(self) -> x509.Certificate:
        try:
            return x509.load_pem_x509_certificate(self.certificate_pem)
        except ValueError:
            raise EifError("the signature section's certificate is not a PEM X.509 certificate") from None

    def certificate_der(self) -> bytes:
        """The certificate's DER, what PCR8 measures."""
        from cryptography.hazmat.primitives.serialization import Encoding  # noqa: PLC0415 - rarely used

        return self.certificate().public_bytes(Encoding.DER)


def _byte_vector(value: object, what: str) -> bytes:
    """serde's CBOR for a ``Vec<u8>``: an array of integers 0..255."""
    if not isinstance(value, list) or not all(type(b) is int and 0 <= b <= 255 for b in value):
        raise EifError(f"the signature section's {what} is not a byte vector (a CBOR array of 0..255)")
    return bytes(value)


def encode_signature_section(signatures: Sequence[PcrSignature]) -> bytes:
    """The signature section (serde_cbor of ``Vec<PcrSignature>``, byte vectors as integer arrays)."""
    items = [
        {"signing_certificate": list(s.certificate_pem), "signature": list(s.cose_sign1)} for s in signatures
    ]
    raw = cbor2.dumps(items)
    if len(raw) > MAX_SIGNATURE_BYTES:
        raise EifError(f"the signature section is over the {MAX_SIGNATURE_BYTES}-byte bound")
    return raw


def decode_signature_section(raw: bytes) -> list[PcrSignature]:
    """The entries of a signature section; at least one (nitro-cli reads the first, PCR0's)."""
    items = strict_loads(raw, what="signature section", error=EifError)
    if not isinstance(items, list) or not items or len(items) > MAX_SECTIONS:
        raise EifError("the signature section is not a non-empty CBOR list of PCR signatures")
    out = []
    for item in items:
        if not isinstance(item, dict) or set(item) != {"signing_certificate", "signature"}:
            raise EifError("a signature entry must be a map of signing_certificate and signature")
        pem = _byte_vector(item["signing_certificate"], "signing_certificate")
        if len(pem) > MAX_CERTIFICATE_PEM_BYTES:
            raise EifError(f"the signing certificate is over the {MAX_CERTIFICATE_PEM_BYTES}-byte bound")
        out.append(PcrSignature(certificate_pem=pem, cose_sign1=_byte_vector(item["signature"], "signature")))
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Section:
    """One section as found in the file: its type, flags, offset of its header, and data."""

    type: SectionType
    flags: int
    offset: int
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class EifImage:
    """A parsed image. ``crc_ok`` says whether the stored CRC matches the contents."""

    version: int
    flags: int
    default_mem: int
    default_cpus: int
    sections: tuple[Section, ...]
    crc: int
    crc_ok: bool
    measurements: Measurements

    def _only(self, kind: SectionType) -> bytes | None:
        found = [s.data for s in self.sections if s.type == kind]
        return found[0] if found else None

    @property
    def kernel(self) -> bytes:
        return self._only(SectionType.KERNEL) or b""

    @property
    def cmdline(self) -> bytes:
        return self._only(SectionType.CMDLINE) or b""

    @property
    def ramdisks(self) -> tuple[bytes, ...]:
        return tuple(s.data for s in self.sections if s.type == SectionType.RAMDISK)

    @property
    def signature(self) -> bytes | None:
        """The raw signature section, or None for an unsigned image."""
        return self._only(SectionType.SIGNATURE)

    @property
    def metadata(self) -> dict[str, Any] | None:
        """The metadata section's JSON object (``EifIdentityInfo``), or None when the image has none."""
        raw = self._only(SectionType.METADATA)
        return None if raw is None else _metadata_object(raw)


def _metadata_object(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        raise EifError("the metadata section is not JSON") from None
    if not isinstance(value, dict):
        raise EifError("the metadata section is not a JSON object")
    return value


def encode_metadata(metadata: Mapping[str, Any]) -> bytes:
    """The metadata section as nitro-cli writes it (``serde_json::to_vec``: compact, UTF-8, order kept)."""
    raw = json.dumps(metadata, separators=(",", ":"), ensure_ascii=False).encode()
    if len(raw) > MAX_METADATA_BYTES:
        raise EifError(f"metadata is {len(raw)} bytes, over the {MAX_METADATA_BYTES}-byte bound")
    return raw


def _assemble(sections: Sequence[tuple[SectionType, bytes]], *, flags: int) -> bytes:
    if len(sections) > MAX_SECTIONS:
        raise EifError(f"{len(sections)} sections, over the {MAX_SECTIONS}-section bound")
    offsets = [0] * MAX_SECTIONS
    sizes = [0] * MAX_SECTIONS
    body = bytearray()
    for index, (kind, data) in enumerate(sections):
        offsets[index] = HEADER_BYTES + len(body)
        sizes[index] = len(data)
        body += _SECTION.pack(kind, 0, len(data)) + data
    if HEADER_BYTES + len(body) > MAX_EIF_BYTES:
        raise EifError(f"the image would be over the {MAX_EIF_BYTES}-byte bound")
    fields = (EIF_MAGIC, EIF_VERSION, flags, DEFAULT_MEMORY_BYTES, DEFAULT_CPUS, 0, len(sections))
    header = _HEADER.pack(*fields, *offsets, *sizes, 0, 0)[:-4]
    crc = zlib.crc32(body, zlib.crc32(header))
    return header + struct.pack(">I", crc) + bytes(body)


def build_eif(
    *,
    kernel: bytes,
    cmdline: bytes,
    ramdisks: Sequence[bytes],
    metadata: Mapping[str, Any] | None,
    signature: bytes | None = None,
    flags: int = 0,
) -> bytes:
    """The EIF of these parts, laid out as nitro-cli lays it out.

    ``signature`` is a ready signature section (:func:`attestation.eif_sign.sign_pcr0`), whose PCR0 must be
    this image's (it cannot depend on the signature: no section it measures does).
    """
    if len(cmdline) > MAX_CMDLINE_BYTES or b"\x00" in cmdline:
        raise EifError(f"the kernel command line must be under {MAX_CMDLINE_BYTES} bytes without NUL")
    if not ramdisks:
        raise EifError("an image needs at least one ramdisk (the bootstrap)")
    if signature is not None and len(signature) > MAX_SIGNATURE_BYTES:
        raise EifError(f"the signature section is over the {MAX_SIGNATURE_BYTES}-byte bound")
    sections: list[tuple[SectionType, bytes]] = [(SectionType.KERNEL, kernel), (SectionType.CMDLINE, cmdline)]
    if metadata is not None:
        sections.append((SectionType.METADATA, encode_metadata(metadata)))
    sections += [(SectionType.RAMDISK, ramdisk) for ramdisk in ramdisks]
    if signature is not None:
        sections.append((SectionType.SIGNATURE, signature))
    return _assemble(sections, flags=flags)


def replace_signature(image: EifImage, signature: bytes) -> bytes:
    """``image`` re-written with ``signature`` as its signature section (added, or replacing the old one)."""
    if len(signature) > MAX_SIGNATURE_BYTES:
        raise EifError(f"the signature section is over the {MAX_SIGNATURE_BYTES}-byte bound")
    sections = [(s.type, s.data) for s in image.sections if s.type != SectionType.SIGNATURE]
    return _assemble([*sections, (SectionType.SIGNATURE, signature)], flags=image.flags)


def _parse_header(data: bytes) -> tuple[int, int, int, int, int, tuple[int, ...], tuple[int, ...], int]:
    if len(data) < HEADER_BYTES:
        if not EIF_MAGIC.startswith(data[:4]):
            raise EifError("not an EIF: bad magic (expected '.eif')")
        raise EifError(f"truncated: {len(data)} bytes, shorter than the {HEADER_BYTES}-byte EIF header")
    fields = _HEADER.unpack_from(data)
    magic, version, flags, default_mem, default_cpus, _reserved, count = fields[:7]
    if magic != EIF_MAGIC:
        raise EifError("not an EIF: bad magic (expected '.eif')")
    if not MIN_EIF_VERSION <= version <= EIF_VERSION:
        raise EifError(f"EIF version {version} is not supported (this reader takes {MIN_EIF_VERSION}..4)")
    if count > MAX_SECTIONS:
        raise EifError(f"the header lists {count} sections, over the {MAX_SECTIONS}-section bound")
    offsets = fields[7 : 7 + MAX_SECTIONS]
    sizes = fields[7 + MAX_SECTIONS : 7 + 2 * MAX_SECTIONS]
    return version, flags, default_mem, default_cpus, count, offsets, sizes, fields[-1]


def read_eif(data: bytes, *, check_crc: bool = True) -> EifImage:
    """Parse and measure an EIF; raise EifError on anything malformed (and on a CRC mismatch if asked)."""
    if len(data) > MAX_EIF_BYTES:
        raise EifError(f"the file is over the {MAX_EIF_BYTES}-byte bound of an EIF")
    version, flags, default_mem, default_cpus, count, offsets, sizes, stored_crc = _parse_header(data)
    crc = zlib.crc32(memoryview(data)[: HEADER_BYTES - 4])
    sections: list[Section] = []
    offset = HEADER_BYTES
    while offset < len(data):
        index = len(sections)
        if index == count:
            raise EifError(f"{len(data) - offset} bytes after the {count} sections the header lists")
        if offset + SECTION_HEADER_BYTES > len(data):
            raise EifError(f"truncated: section {index}'s header runs past the end of the file")
        kind, section_flags, size = _SECTION.unpack_from(data, offset)
        end = offset + SECTION_HEADER_BYTES + size
        if end > len(data):
            raise EifError(f"truncated: section {index} ({size} bytes) runs past the end of the file")
        if kind not in SectionType.__members__.values() or kind == SectionType.INVALID:
            raise EifError(f"section {index} has an invalid type {kind}")
        if offsets[index] != offset or sizes[index] != size:
            raise EifError(f"section {index} is not where the header's section table puts it")
        crc = zlib.crc32(memoryview(data)[offset:end], crc)
        sections.append(
            Section(type=SectionType(kind), flags=section_flags, offset=offset, data=data[offset + 12 : end])
        )
        offset = end
    if len(sections) != count:
        raise EifError(f"truncated: the header lists {count} sections, the file holds {len(sections)}")
    if check_crc and crc != stored_crc:
        raise EifError(f"CRC mismatch: the header says {stored_crc:08x}, the contents give {crc:08x}")
    kinds = [s.type for s in sections]
    for kind in (SectionType.KERNEL, SectionType.CMDLINE):
        if kinds.count(kind) != 1:
            raise EifError(
                f"an image needs exactly one {kind.name.lower()} section, this one has {kinds.count(kind)}"
            )
    for kind in (SectionType.METADATA, SectionType.SIGNATURE):
        if kinds.count(kind) > 1:
            raise EifError(f"more than one {kind.name.lower()} section")
    by_kind = {s.type: s.data for s in sections}
    for kind, bound in _BOUNDS.items():
        if len(by_kind.get(kind, b"")) > bound:
            raise EifError(f"the {kind.name.lower()} section is over its {bound}-byte bound")
    ramdisks = [s.data for s in sections if s.type == SectionType.RAMDISK]
    signature = by_kind.get(SectionType.SIGNATURE)
    certificate = None if signature is None else decode_signature_section(signature)[0].certificate_der()
    return EifImage(
        version=version,
        flags=flags,
        default_mem=default_mem,
        default_cpus=default_cpus,
        sections=tuple(sections),
        crc=stored_crc,
        crc_ok=crc == stored_crc,
        measurements=measure(
            by_kind[SectionType.KERNEL], by_kind[SectionType.CMDLINE], ramdisks, certificate
        ),
    )
