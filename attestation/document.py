"""The NSM attestation document: COSE_Sign1 ES384 codec and signature check (the payload's model and
field rules are in :mod:`attestation._model`, re-exported here).

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

import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from attestation._cbor import shown, strict_loads
from attestation._model import (
    DIGEST,
    FIELD_ORDER,
    KNOWN_FIELDS,
    MAX_CABUNDLE,
    MAX_CERTIFICATE_BYTES,
    MAX_MODULE_ID_BYTES,
    MAX_OPTIONAL_FIELD_BYTES,
    MAX_PCRS,
    MAX_U64,
    PCR_SIZES,
    REQUIRED_FIELDS,
    AttestationDocument,
    check_bytes,
    fail,
)
from attestation._shapes import from_template, remember
from attestation.errors import MalformedDocumentError, VerificationError

__all__ = [
    "COSE_ALG_ES384",
    "COSE_SIGN1_TAG",
    "DIGEST",
    "ES384_SIGNATURE_BYTES",
    "FIELD_ORDER",
    "MAX_CABUNDLE",
    "MAX_CERTIFICATE_BYTES",
    "MAX_DOCUMENT_BYTES",
    "MAX_MODULE_ID_BYTES",
    "MAX_OPTIONAL_FIELD_BYTES",
    "MAX_PAYLOAD_BYTES",
    "MAX_PCRS",
    "PCR_SIZES",
    "PROTECTED_ES384",
    "AttestationDocument",
    "DocumentEncoder",
    "SignedDocument",
    "decode_document",
    "decode_payload",
    "encode_document",
    "encode_payload",
    "encode_pcrs",
    "verify_signature",
]

# -- Named bounds (attestation_process.md "Validation" and the CDDL; nsm-api) ------------------------------
#: COSE payload is ``bstr .size (1..16384)``.
MAX_PAYLOAD_BYTES = 16384
#: The whole COSE_Sign1: payload plus the envelope (array head, protected header, signature).
MAX_DOCUMENT_BYTES = MAX_PAYLOAD_BYTES + 256
#: COSE ``alg`` ES384 (RFC 9053 §2.1) and the byte length of its raw r||s signature on P-384.
COSE_ALG_ES384 = -35
ES384_SIGNATURE_BYTES = 96
#: COSE_Sign1 tag (RFC 9052 §4.2); real NSM output is untagged, but tagged input is accepted.
COSE_SIGN1_TAG = 18
#: The protected header every NSM emits: ``{1: -35}``.
PROTECTED_ES384 = bytes.fromhex("a1013822")


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedDocument:
    """A decoded COSE_Sign1 attestation document. ``document`` is UNVERIFIED until the verifier says so."""

    protected: bytes
    payload: bytes
    signature: bytes
    document: AttestationDocument
    raw: bytes = field(repr=False)


# -- Decoding -----------------------------------------------------------------------------------------------


def decode_document(data: bytes) -> SignedDocument:
    """Decode an NSM attestation document (COSE_Sign1). Raises :class:`MalformedDocumentError`.

    The result is unverified: its signature, chain and freshness are for the verifier to check.
    """
    if isinstance(data, bytearray | memoryview):
        data = bytes(data)
    if type(data) is bytes and len(data) > _NSM_SIZE_END and data.startswith(_NSM_COSE_HEAD):
        # The NSM's exact envelope (see _NSM_COSE_HEAD): slicing it is what the strict decode gives.
        size = (data[_NSM_SIZE_END - 2] << 8) | data[_NSM_SIZE_END - 1]
        end = _NSM_SIZE_END + size
        if (
            _MIN_TWO_BYTE_LENGTH <= size <= MAX_PAYLOAD_BYTES
            and len(data) == end + 2 + ES384_SIGNATURE_BYTES
            and data[end : end + 2] == _SIGNATURE_HEAD
        ):
            payload = data[_NSM_SIZE_END:end]
            return SignedDocument(
                protected=PROTECTED_ES384,
                payload=payload,
                signature=data[end + 2 :],
                document=decode_payload(payload),
                raw=data,
            )
    if isinstance(data, bytes) and len(data) > MAX_DOCUMENT_BYTES:
        raise fail(f"document is {len(data)} bytes, over the {MAX_DOCUMENT_BYTES}-byte limit")
    outer = strict_loads(data, what="attestation document", error=MalformedDocumentError)
    if isinstance(outer, cbor2.CBORTag):
        if outer.tag != COSE_SIGN1_TAG:
            raise fail(f"unexpected CBOR tag {outer.tag}; a COSE_Sign1 is untagged or tag 18")
        outer = outer.value
    # cbor2 6 decodes a tag's content as a tuple, an untagged array as a list: accept any sequence.
    if type(outer) is not list and (not isinstance(outer, Sequence) or isinstance(outer, str | bytes)):
        raise fail("not a COSE_Sign1: expected an array of 4 items")
    if len(outer) != 4:
        raise fail("not a COSE_Sign1: expected an array of 4 items")
    protected, unprotected, payload, signature = outer
    if not isinstance(protected, bytes):
        raise fail("COSE protected header must be a byte string")
    if protected != PROTECTED_ES384:  # those four bytes are exactly {1: -35}; anything else is decoded
        _check_protected(protected)
    if type(unprotected) is not dict and not isinstance(unprotected, Mapping):
        raise fail("COSE unprotected header must be a map")
    if not isinstance(payload, bytes) or not 1 <= len(payload) <= MAX_PAYLOAD_BYTES:
        raise fail(f"COSE payload must be a byte string of 1..{MAX_PAYLOAD_BYTES} bytes")
    if not isinstance(signature, bytes) or len(signature) != ES384_SIGNATURE_BYTES:
        raise fail(f"ES384 signature must be {ES384_SIGNATURE_BYTES} bytes (raw r||s)")
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
        raise fail(f"COSE protected header must be {{1: -35}} (ES384), got {shown(header)}")


def decode_payload(payload: bytes) -> AttestationDocument:
    """Decode the CBOR payload map of an attestation document (unverified)."""
    if type(payload) is bytes:
        known = from_template(payload)
        if known is not None:
            return known
    fields = strict_loads(payload, what="attestation payload", error=MalformedDocumentError)
    # The usual shape, tested with exact types (cbor2 gives a map as dict, an array as list): if it holds,
    # every check below would pass; if not, they run and name the first fault.
    plain = (
        type(fields) is dict
        and REQUIRED_FIELDS <= fields.keys() <= KNOWN_FIELDS
        and None not in _required_values(fields)  # conservative: `in` tests identity, then ==
        and type(fields["pcrs"]) is dict
        and type(fields["cabundle"]) is list
    )
    if not plain:
        _check_payload_shape(fields)
    pcrs = fields["pcrs"]
    cabundle = fields["cabundle"]
    try:
        document = AttestationDocument(
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
        raise fail(f"attestation payload has an ill-typed field ({exc})") from None
    if plain and type(payload) is bytes:
        remember(payload, document)
    return document


_required_values = operator.itemgetter(*FIELD_ORDER[:6])

# -- The NSM's own envelope, sliced ------------------------------------------------------------------------

#: The untagged COSE_Sign1 the NSM writes, up to the payload's length: array(4), bstr(4) ``{1: -35}``,
#: map(0), and a bstr head with a 2-byte length; the signature follows the payload as ``58 60`` + 96 bytes.
_NSM_COSE_HEAD = b"\x84\x44" + PROTECTED_ES384 + b"\xa0\x59"
_SIGNATURE_HEAD = b"\x58\x60"
#: Where the payload's 2-byte length ends and the payload begins.
_NSM_SIZE_END = len(_NSM_COSE_HEAD) + 2
#: The least length a canonical 2-byte CBOR length carries (smaller ones have shorter heads).
_MIN_TWO_BYTE_LENGTH = 256


def _check_payload_shape(fields: object) -> None:
    """The payload map's shape: a map of known fields, the required ones present and not null."""
    if not isinstance(fields, Mapping):
        raise fail("attestation payload must be a CBOR map")
    unknown = [k for k in fields if k not in FIELD_ORDER]
    if unknown:
        raise fail(f"attestation payload has unknown field {shown(unknown[0])}")
    missing = sorted(REQUIRED_FIELDS - set(fields))
    if missing:
        raise fail(f"attestation payload lacks required field {missing[0]!r}")
    for name in REQUIRED_FIELDS:
        if fields[name] is None:
            raise fail(f"required field {name!r} is null")
    if not isinstance(fields["pcrs"], Mapping):
        raise fail("pcrs must be a map")
    cabundle = fields["cabundle"]
    if not isinstance(cabundle, Sequence) or isinstance(cabundle, str | bytes):
        raise fail("cabundle must be an array")


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
        if isinstance(timestamp, bool) or not isinstance(timestamp, int) or not 0 < timestamp <= MAX_U64:
            raise fail(f"timestamp must be in 1..2^64-1, got {timestamp}")
        for name, value in (("public_key", public_key), ("user_data", user_data), ("nonce", nonce)):
            if value is not None:
                check_bytes(name, value, 0, MAX_OPTIONAL_FIELD_BYTES)
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
            raise fail(f"payload is {len(payload)} bytes, over the {MAX_PAYLOAD_BYTES}-byte limit")
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
        raise fail(f"payload is {len(payload)} bytes, over the {MAX_PAYLOAD_BYTES}-byte limit")
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
