"""The NSM attestation document: model, COSE_Sign1 ES384 codec, signature check.

Wire format (aws-nitro-enclaves-nsm-api ``docs/attestation_process.md``; aws-facts.md §3)::

    COSE_Sign1 = [protected: bstr .cbor {1: -35}, unprotected: {}, payload: bstr .cbor AttestationDoc,
                  signature: bstr (96 bytes, raw r||s on P-384)]

Decoding is lenient only where real NSMs differ (tag 18 or untagged; definite or indefinite payload map;
optional fields absent, ``null`` or empty; 1 to 32 PCRs) and strict everywhere else (duplicate keys, trailing
bytes, unknown fields, wrong types, sizes past the AWS limits). Everything decoded here is **unverified**:
only :mod:`attestation.verify` turns a :class:`SignedDocument` into a trusted :class:`AttestationDocument`.

Encoding follows the newest NSM byte for byte: untagged, protected ``a1 01 38 22``, unprotected ``a0``,
payload keys in NSM order inside an indefinite-length map (2025+ NSMs; older ones used a definite map),
optional fields present as ``null`` when not requested, 96-byte raw signature.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from attestation._cbor import strict_loads
from attestation.errors import MalformedDocumentError, VerificationError

# -- Named bounds (attestation_process.md "Validation" and the CDDL; nsm-api) ------------------------------
#: COSE payload is ``bstr .size (1..16384)``.
MAX_PAYLOAD_BYTES = 16384
#: The whole COSE_Sign1: payload plus the envelope (array head, protected header, signature).
MAX_DOCUMENT_BYTES = MAX_PAYLOAD_BYTES + 256
#: ``certificate`` and each ``cabundle`` entry: ``bstr .size (1..1024)``.
MAX_CERTIFICATE_BYTES = 1024
#: ``public_key``, ``user_data``, ``nonce``: ``bstr .size (0..1024)`` in the CDDL; a real AWS document
#: carries 1024 bytes of each (test vector nitro-2024-09-07-blocky-prod-maxfields).
MAX_OPTIONAL_FIELD_BYTES = 1024
#: ``pcrs``: ``1..32`` entries with indices in ``[0, 32)``.
MAX_PCRS = 32
#: PCR values are 32, 48 or 64 bytes (SHA-256/384/512); Nitro uses SHA-384.
PCR_SIZES = frozenset({32, 48, 64})
#: cabundle length: AWS chains have 4 (root, regional, zonal, instance); leave room, but bound it.
MAX_CABUNDLE = 8
#: ``module_id`` is a non-empty text; NsmDescription keeps at most 100 bytes of it.
MAX_MODULE_ID_BYTES = 100
#: The only digest the NSM reports.
DIGEST = "SHA384"
#: COSE ``alg`` ES384 (RFC 9053 §2.1) and the byte length of its raw r||s signature on P-384.
COSE_ALG_ES384 = -35
ES384_SIGNATURE_BYTES = 96
#: COSE_Sign1 tag (RFC 9052 §4.2); real NSM output is untagged, but tagged input is accepted.
COSE_SIGN1_TAG = 18
#: The protected header every NSM emits: ``{1: -35}``.
PROTECTED_ES384 = bytes.fromhex("a1013822")

#: Payload keys in the order the NSM writes them.
FIELD_ORDER = (
    "module_id",
    "digest",
    "timestamp",
    "pcrs",
    "certificate",
    "cabundle",
    "public_key",
    "user_data",
    "nonce",
)
_REQUIRED = frozenset(FIELD_ORDER[:6])
_FIELDS = frozenset(FIELD_ORDER)
_MAX_U64 = 2**64 - 1


@dataclass(frozen=True, slots=True, kw_only=True)
class AttestationDocument:
    """The payload of an NSM attestation document. Verified only if :mod:`attestation.verify` returned it."""

    module_id: str
    digest: str
    #: Milliseconds since the UNIX epoch, as the NSM writes it.
    timestamp: int
    pcrs: Mapping[int, bytes]
    #: The leaf certificate (DER) whose key signed the document.
    certificate: bytes
    #: DER certificates, root first: ``[ROOT, INTERM_1, ..., INTERM_N]``.
    cabundle: tuple[bytes, ...]
    public_key: bytes | None = None
    user_data: bytes | None = None
    nonce: bytes | None = None

    def __post_init__(self) -> None:
        _check_fields(self)
        # Freeze the PCR map so a document can be shared between threads and cached safely.
        object.__setattr__(self, "pcrs", MappingProxyType(dict(sorted(self.pcrs.items()))))

    @property
    def issued_at(self) -> datetime:
        """``timestamp`` as an aware UTC datetime."""
        return datetime.fromtimestamp(self.timestamp / 1000, tz=UTC)

    @property
    def debug_mode(self) -> bool:
        """True when PCR0, PCR1 and PCR2 are all zero, as for an enclave run with ``--debug-mode``."""
        return all(not any(self.pcrs.get(i, b"\0")) for i in (0, 1, 2))


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedDocument:
    """A decoded COSE_Sign1 attestation document. ``document`` is UNVERIFIED until the verifier says so."""

    protected: bytes
    payload: bytes
    signature: bytes
    document: AttestationDocument
    raw: bytes = field(repr=False)


def _fail(message: str) -> MalformedDocumentError:
    return MalformedDocumentError(message)


def _check_bytes(name: str, value: object, low: int, high: int) -> bytes:
    if not isinstance(value, bytes):
        raise _fail(f"{name} must be a byte string, got {type(value).__name__}")
    if not low <= len(value) <= high:
        raise _fail(f"{name} is {len(value)} bytes, allowed {low}..{high}")
    return value


def _check_fields(doc: AttestationDocument) -> None:
    """The syntactic checks of attestation_process.md §3.2, run for decoded and constructed documents."""
    if _fields_plainly_valid(doc):
        return
    _check_fields_strictly(doc)


def _fields_plainly_valid(doc: AttestationDocument) -> bool:
    """True only if :func:`_check_fields_strictly` would pass, tested with exact built-in types.

    A decoded document holds plain ``str``/``int``/``bytes``/``dict``/``tuple`` values, so exact ``type()``
    tests (no ABC ``isinstance`` machinery) settle the common case; anything else (a subclass, a Mapping
    that is not a dict, a value out of bounds) returns False and the strict checks decide, and word, it.
    """
    module_id, timestamp, pcrs, certificate, cabundle = (
        doc.module_id,
        doc.timestamp,
        doc.pcrs,
        doc.certificate,
        doc.cabundle,
    )
    if (
        type(module_id) is not str
        or not module_id
        or not module_id.isascii()  # then its UTF-8 length is len(); others go the strict way
        or len(module_id) > MAX_MODULE_ID_BYTES
        or doc.digest != DIGEST
        or type(timestamp) is not int
        or not 0 < timestamp <= _MAX_U64
        or type(pcrs) is not dict
        or not 1 <= len(pcrs) <= MAX_PCRS
        or type(certificate) is not bytes
        or not 1 <= len(certificate) <= MAX_CERTIFICATE_BYTES
        or type(cabundle) is not tuple
        or not 1 <= len(cabundle) <= MAX_CABUNDLE
    ):
        return False
    for index, value in pcrs.items():
        if type(index) is not int or not 0 <= index < MAX_PCRS or type(value) is not bytes:
            return False
        if len(value) not in PCR_SIZES:
            return False
    for cert in cabundle:
        if type(cert) is not bytes or not 1 <= len(cert) <= MAX_CERTIFICATE_BYTES:
            return False
    for value in (doc.public_key, doc.user_data, doc.nonce):
        if value is not None and (type(value) is not bytes or len(value) > MAX_OPTIONAL_FIELD_BYTES):
            return False
    return True


def _check_fields_strictly(doc: AttestationDocument) -> None:
    if not isinstance(doc.module_id, str) or not doc.module_id:
        raise _fail("module_id must be a non-empty text string")
    if len(doc.module_id.encode()) > MAX_MODULE_ID_BYTES:
        raise _fail(f"module_id is longer than {MAX_MODULE_ID_BYTES} bytes")
    if doc.digest != DIGEST:
        raise _fail(f"digest must be {DIGEST!r}, got {doc.digest!r}")
    # "timestamp: uint .size 8" and "timestamp > 0".
    if isinstance(doc.timestamp, bool) or not isinstance(doc.timestamp, int):
        raise _fail("timestamp must be an unsigned integer")
    if not 0 < doc.timestamp <= _MAX_U64:
        raise _fail(f"timestamp must be in 1..2^64-1, got {doc.timestamp}")
    if not isinstance(doc.pcrs, Mapping) or not 1 <= len(doc.pcrs) <= MAX_PCRS:
        raise _fail(f"pcrs must be a map of 1..{MAX_PCRS} entries")
    for index, value in doc.pcrs.items():
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < MAX_PCRS:
            raise _fail(f"pcrs key {index!r} is not an index in 0..{MAX_PCRS - 1}")
        if not isinstance(value, bytes) or len(value) not in PCR_SIZES:
            size = len(value) if isinstance(value, bytes) else type(value).__name__
            raise _fail(f"pcrs[{index}] must be 32, 48 or 64 bytes, got {size}")
    _check_bytes("certificate", doc.certificate, 1, MAX_CERTIFICATE_BYTES)
    if not isinstance(doc.cabundle, tuple) or not 1 <= len(doc.cabundle) <= MAX_CABUNDLE:
        raise _fail(f"cabundle must hold 1..{MAX_CABUNDLE} certificates")
    for i, cert in enumerate(doc.cabundle):
        _check_bytes(f"cabundle[{i}]", cert, 1, MAX_CERTIFICATE_BYTES)
    for name in ("public_key", "user_data", "nonce"):
        value = getattr(doc, name)
        if value is not None:
            _check_bytes(name, value, 0, MAX_OPTIONAL_FIELD_BYTES)


# -- Decoding -----------------------------------------------------------------------------------------------


def decode_document(data: bytes) -> SignedDocument:
    """Decode an NSM attestation document (COSE_Sign1). Raises :class:`MalformedDocumentError`.

    The result is unverified: its signature, chain and freshness are for the verifier to check.
    """
    if isinstance(data, bytearray | memoryview):
        data = bytes(data)
    if isinstance(data, bytes) and len(data) > MAX_DOCUMENT_BYTES:
        raise _fail(f"document is {len(data)} bytes, over the {MAX_DOCUMENT_BYTES}-byte limit")
    outer = strict_loads(data, what="attestation document", error=MalformedDocumentError)
    if isinstance(outer, cbor2.CBORTag):
        if outer.tag != COSE_SIGN1_TAG:
            raise _fail(f"unexpected CBOR tag {outer.tag}; a COSE_Sign1 is untagged or tag 18")
        outer = outer.value
    # cbor2 6 decodes a tag's content as a tuple, an untagged array as a list: accept any sequence.
    if type(outer) is not list and (not isinstance(outer, Sequence) or isinstance(outer, str | bytes)):
        raise _fail("not a COSE_Sign1: expected an array of 4 items")
    if len(outer) != 4:
        raise _fail("not a COSE_Sign1: expected an array of 4 items")
    protected, unprotected, payload, signature = outer
    if not isinstance(protected, bytes):
        raise _fail("COSE protected header must be a byte string")
    if protected != PROTECTED_ES384:  # those four bytes are exactly {1: -35}; anything else is decoded
        _check_protected(protected)
    if type(unprotected) is not dict and not isinstance(unprotected, Mapping):
        raise _fail("COSE unprotected header must be a map")
    if not isinstance(payload, bytes) or not 1 <= len(payload) <= MAX_PAYLOAD_BYTES:
        raise _fail(f"COSE payload must be a byte string of 1..{MAX_PAYLOAD_BYTES} bytes")
    if not isinstance(signature, bytes) or len(signature) != ES384_SIGNATURE_BYTES:
        raise _fail(f"ES384 signature must be {ES384_SIGNATURE_BYTES} bytes (raw r||s)")
    document = decode_payload(payload)
    return SignedDocument(
        protected=protected, payload=payload, signature=signature, document=document, raw=bytes(data)
    )


def _check_protected(protected: bytes) -> None:
    header = strict_loads(protected, what="COSE protected header", error=MalformedDocumentError)
    # RFC 9052 §3: alg (label 1) in the protected bucket; the NSM uses exactly {1: -35}. Labels and the alg
    # value are CBOR integers: Python's True == 1 and -35.0 == -35 must not let `true` or a float through.
    if (
        not isinstance(header, Mapping)
        or dict(header) != {1: COSE_ALG_ES384}
        or any(type(k) is not int or type(v) is not int for k, v in header.items())
    ):
        raise _fail(f"COSE protected header must be {{1: -35}} (ES384), got {header!r}")


def decode_payload(payload: bytes) -> AttestationDocument:
    """Decode the CBOR payload map of an attestation document (unverified)."""
    fields = strict_loads(payload, what="attestation payload", error=MalformedDocumentError)
    # The usual shape, tested with exact types (cbor2 gives a map as dict, an array as list): if it holds,
    # every check below would pass; if not, they run and name the first fault.
    if not (
        type(fields) is dict
        and _REQUIRED <= fields.keys() <= _FIELDS
        and all(fields[name] is not None for name in FIELD_ORDER[:6])
        and type(fields["pcrs"]) is dict
        and type(fields["cabundle"]) is list
    ):
        _check_payload_shape(fields)
    pcrs = fields["pcrs"]
    cabundle = fields["cabundle"]
    try:
        return AttestationDocument(
            module_id=fields["module_id"],
            digest=fields["digest"],
            timestamp=fields["timestamp"],
            pcrs=dict(pcrs),
            certificate=fields["certificate"],
            cabundle=tuple(cabundle),
            public_key=fields.get("public_key"),
            user_data=fields.get("user_data"),
            nonce=fields.get("nonce"),
        )
    except TypeError as exc:  # unhashable keys and the like, from hostile input
        raise _fail(f"attestation payload has an ill-typed field ({exc})") from None


def _check_payload_shape(fields: object) -> None:
    """The payload map's shape: a map of known fields, the required ones present and not null."""
    if not isinstance(fields, Mapping):
        raise _fail("attestation payload must be a CBOR map")
    unknown = [k for k in fields if k not in FIELD_ORDER]
    if unknown:
        raise _fail(f"attestation payload has unknown field {unknown[0]!r}")
    missing = sorted(_REQUIRED - set(fields))
    if missing:
        raise _fail(f"attestation payload lacks required field {missing[0]!r}")
    for name in _REQUIRED:
        if fields[name] is None:
            raise _fail(f"required field {name!r} is null")
    if not isinstance(fields["pcrs"], Mapping):
        raise _fail("pcrs must be a map")
    cabundle = fields["cabundle"]
    if not isinstance(cabundle, Sequence) or isinstance(cabundle, str | bytes):
        raise _fail("cabundle must be an array")


# -- Encoding -----------------------------------------------------------------------------------------------


def encode_payload(doc: AttestationDocument) -> bytes:
    """The payload map as the newest NSM writes it: indefinite-length map, NSM key order, nulls kept."""
    values: dict[str, Any] = {
        "module_id": doc.module_id,
        "digest": doc.digest,
        "timestamp": doc.timestamp,
        "pcrs": dict(doc.pcrs),
        "certificate": doc.certificate,
        "cabundle": list(doc.cabundle),
        "public_key": doc.public_key,
        "user_data": doc.user_data,
        "nonce": doc.nonce,
    }
    parts = [b"\xbf"]
    for name in FIELD_ORDER:
        parts.append(cbor2.dumps(name))
        parts.append(cbor2.dumps(values[name]))
    parts.append(b"\xff")
    return b"".join(parts)


def encode_pcrs(pcrs: Mapping[int, bytes]) -> bytes:
    """The ``pcrs`` value as :func:`encode_payload` writes it (a definite map in index order)."""
    return cbor2.dumps(dict(sorted(pcrs.items())))


#: Constant CBOR around the payload: ``Sig_structure`` up to the payload, and the COSE_Sign1 up to it.
#: A definite array is its head then its items, so these prefixes plus the encoded payload (and signature)
#: are byte for byte what ``cbor2.dumps`` of the whole list gives (checked in tests/attestation/test_nsm*).
_SIG1_PREFIX = b"\x84" + cbor2.dumps("Signature1") + cbor2.dumps(PROTECTED_ES384) + cbor2.dumps(b"")
_COSE_PREFIX = b"\x84" + cbor2.dumps(PROTECTED_ES384) + cbor2.dumps({})
#: A well-formed placeholder PCR map for validating a template's constant fields.
_SAMPLE_PCRS = MappingProxyType({0: bytes(48)})


class DocumentEncoder:
    """Encodes and signs documents that share a module id, a leaf, its chain and key (one NSM's signer).

    The constant fields are checked and CBOR-encoded once; each document then costs the variable fields'
    encoding, one join and the signature. The bytes equal :func:`encode_document` of the same
    :class:`AttestationDocument` (tests/attestation/test_nsm.py compares them field by field and whole).
    """

    __slots__ = ("_chain", "_head", "_key", "_tail")

    def __init__(
        self,
        *,
        module_id: str,
        certificate: bytes,
        cabundle: tuple[bytes, ...],
        signing_key: ec.EllipticCurvePrivateKey,
    ) -> None:
        if not isinstance(signing_key.curve, ec.SECP384R1):
            raise TypeError("ES384 needs a P-384 signing key")
        # Same checks as a constructed document: a bad constant part fails here, once.
        AttestationDocument(
            module_id=module_id,
            digest=DIGEST,
            timestamp=1,
            pcrs=_SAMPLE_PCRS,
            certificate=certificate,
            cabundle=cabundle,
        )
        dumps = cbor2.dumps
        self._head = b"".join(
            (
                b"\xbf",
                dumps("module_id"),
                dumps(module_id),
                dumps("digest"),
                dumps(DIGEST),
                dumps("timestamp"),
            )
        )
        self._chain = b"".join(
            (dumps("certificate"), dumps(certificate), dumps("cabundle"), dumps(list(cabundle)))
        )
        self._tail = b"\xff"
        self._key = signing_key

    def payload(
        self,
        *,
        timestamp: int,
        pcrs_cbor: bytes,
        public_key: bytes | None = None,
        user_data: bytes | None = None,
        nonce: bytes | None = None,
    ) -> bytes:
        """The payload; ``pcrs_cbor`` must come from :func:`encode_pcrs` of a valid PCR map."""
        if isinstance(timestamp, bool) or not isinstance(timestamp, int) or not 0 < timestamp <= _MAX_U64:
            raise _fail(f"timestamp must be in 1..2^64-1, got {timestamp}")
        for name, value in (("public_key", public_key), ("user_data", user_data), ("nonce", nonce)):
            if value is not None:
                _check_bytes(name, value, 0, MAX_OPTIONAL_FIELD_BYTES)
        dumps = cbor2.dumps
        return b"".join(
            (
                self._head,
                dumps(timestamp),
                b"\x64pcrs",
                pcrs_cbor,
                self._chain,
                b"\x6apublic_key",
                dumps(public_key),
                b"\x69user_data",
                dumps(user_data),
                b"\x65nonce",
                dumps(nonce),
                self._tail,
            )
        )

    def sign(self, payload: bytes) -> bytes:
        """The untagged COSE_Sign1 ES384 of ``payload``, as :func:`encode_document` builds it."""
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise _fail(f"payload is {len(payload)} bytes, over the {MAX_PAYLOAD_BYTES}-byte limit")
        encoded = cbor2.dumps(payload)
        der = self._key.sign(_SIG1_PREFIX + encoded, _ES384)
        r, s = decode_dss_signature(der)
        return b"".join((_COSE_PREFIX, encoded, b"\x58\x60", r.to_bytes(48, "big"), s.to_bytes(48, "big")))


_ES384 = ec.ECDSA(hashes.SHA384())


def _sig_structure(protected: bytes, payload: bytes) -> bytes:
    # RFC 9052 §4.4: Sig_structure = ["Signature1", body_protected, external_aad, payload].
    return cbor2.dumps(["Signature1", protected, b"", payload])


def encode_document(document: AttestationDocument, signing_key: ec.EllipticCurvePrivateKey) -> bytes:
    """Sign ``document`` with ``signing_key`` (P-384) as an untagged COSE_Sign1 ES384, as the NSM does."""
    if not isinstance(signing_key.curve, ec.SECP384R1):
        raise TypeError("ES384 needs a P-384 signing key")
    payload = encode_payload(document)
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise _fail(f"payload is {len(payload)} bytes, over the {MAX_PAYLOAD_BYTES}-byte limit")
    der = signing_key.sign(_sig_structure(PROTECTED_ES384, payload), ec.ECDSA(hashes.SHA384()))
    r, s = decode_dss_signature(der)
    signature = r.to_bytes(48, "big") + s.to_bytes(48, "big")
    return cbor2.dumps([PROTECTED_ES384, {}, payload, signature])


def verify_signature(signed: SignedDocument, public_key: ec.EllipticCurvePublicKey) -> None:
    """Check the COSE_Sign1 ES384 signature of ``signed`` with ``public_key``; raise VerificationError."""
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
        public_key.curve, ec.SECP384R1
    ):
        raise VerificationError("signature", "the signing certificate does not hold a P-384 key")
    half = ES384_SIGNATURE_BYTES // 2
    r = int.from_bytes(signed.signature[:half], "big")
    s = int.from_bytes(signed.signature[half:], "big")
    if signed.protected == PROTECTED_ES384:  # the NSM's header: the constant prefix, as in sign()
        to_verify = _SIG1_PREFIX + cbor2.dumps(signed.payload)
    else:
        to_verify = _sig_structure(signed.protected, signed.payload)
    try:
        public_key.verify(encode_dss_signature(r, s), to_verify, _ES384)
    except (InvalidSignature, ValueError):
        raise VerificationError("signature", "COSE_Sign1 signature does not verify") from None
