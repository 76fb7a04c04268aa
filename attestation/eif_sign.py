"""Signing an EIF's PCR0 and checking that signature as nitro-cli does (``eif_signer.rs``, ``eif_reader.rs``).

The signer holds an EC private key and the PEM certificate of its public key. The signature is a COSE_Sign1
(untagged; protected header ``{1: alg}``, empty unprotected header) whose payload is the serde_cbor of
``PcrInfo {register_index: 0, register_value: PCR0}``, the value an array of integers. The algorithm follows
the key's curve as the aws-nitro-enclaves-cose crate chooses it: P-256 ES256, P-384 ES384, P-521 ES512. We
sign deterministically (RFC 6979), so the same key and image give the same bytes.

Checking (``describe-eif``'s ``SignatureCheck``): the COSE signature verifies under the certificate's key and
its payload is exactly this image's PCR0 entry. The certificate's validity period is checked against a
reference time the caller passes, never the clock read here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from attestation._cbor import strict_loads
from attestation.eif import (
    MAX_CERTIFICATE_PEM_BYTES,
    EifError,
    EifImage,
    PcrSignature,
    decode_signature_section,
    encode_signature_section,
)

__all__ = ["MAX_KEY_PEM_BYTES", "EifSigner", "pcr0_payload", "signature_matches"]

#: Bound on a private key file in PEM.
MAX_KEY_PEM_BYTES = 16 * 1024
#: COSE algorithm and hash per curve (RFC 9053 §2.1), and the raw r||s width of each.
_ALGORITHMS: dict[str, tuple[int, hashes.HashAlgorithm, int]] = {
    "secp256r1": (-7, hashes.SHA256(), 32),
    "secp384r1": (-35, hashes.SHA384(), 48),
    "secp521r1": (-36, hashes.SHA512(), 66),
}


def pcr0_payload(pcr0: bytes) -> bytes:
    """The COSE payload nitro-cli signs: serde_cbor of ``PcrInfo {register_index: 0, register_value}``."""
    return cbor2.dumps({"register_index": 0, "register_value": list(pcr0)})


def _sig_structure(protected: bytes, payload: bytes) -> bytes:
    # RFC 9052 §4.4: Sig_structure = ["Signature1", body_protected, external_aad, payload].
    return cbor2.dumps(["Signature1", protected, b"", payload])


def _algorithm(
    key: ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey,
) -> tuple[int, hashes.HashAlgorithm, int]:
    try:
        return _ALGORITHMS[key.curve.name]
    except KeyError:
        raise EifError(f"signing keys must be on P-256, P-384 or P-521, not {key.curve.name}") from None


@dataclass(frozen=True, slots=True)
class EifSigner:
    """A private key and the certificate of its public key, checked to belong together."""

    certificate_pem: bytes
    private_key: ec.EllipticCurvePrivateKey

    @classmethod
    def from_pem(cls, certificate_pem: bytes, key_pem: bytes) -> EifSigner:
        """Load both from PEM; raise EifError naming what is wrong in one line."""
        if len(certificate_pem) > MAX_CERTIFICATE_PEM_BYTES:
            raise EifError(f"the signing certificate is over the {MAX_CERTIFICATE_PEM_BYTES}-byte bound")
        if len(key_pem) > MAX_KEY_PEM_BYTES:
            raise EifError(f"the private key is over the {MAX_KEY_PEM_BYTES}-byte bound")
        certificate = PcrSignature(certificate_pem=certificate_pem, cose_sign1=b"").certificate()
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError):
            raise EifError("the private key is not an unencrypted PEM private key") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise EifError("the private key must be an EC key (P-256, P-384 or P-521)")
        _algorithm(key)
        if certificate.public_key() != key.public_key():
            raise EifError("the private key does not match the signing certificate's public key")
        return cls(certificate_pem, key)

    def sign_pcr0(self, pcr0: bytes) -> bytes:
        """The signature section for an image whose PCR0 is ``pcr0``."""
        alg, digest, width = _algorithm(self.private_key)
        protected = cbor2.dumps({1: alg})
        payload = pcr0_payload(pcr0)
        der = self.private_key.sign(
            _sig_structure(protected, payload), ec.ECDSA(digest, deterministic_signing=True)
        )
        r, s = decode_dss_signature(der)
        cose = cbor2.dumps([protected, {}, payload, r.to_bytes(width, "big") + s.to_bytes(width, "big")])
        return encode_signature_section([PcrSignature(certificate_pem=self.certificate_pem, cose_sign1=cose)])


def signature_matches(image: EifImage) -> bool:
    """True when the image's first PCR signature verifies and signs this image's PCR0 (``SignatureCheck``).

    Raises EifError when the image is unsigned or its signature is not a COSE_Sign1 at all.
    """
    if image.signature is None:
        raise EifError("the image is not signed")
    entry = decode_signature_section(image.signature)[0]
    public_key = entry.certificate().public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise EifError("the signing certificate does not hold an EC key")
    alg, digest, width = _algorithm(public_key)
    message = strict_loads(entry.cose_sign1, what="PCR0 signature", error=EifError)
    if not (
        isinstance(message, list) and len(message) == 4 and all(isinstance(m, bytes) for m in message[::2])
    ):
        raise EifError("the PCR0 signature is not a COSE_Sign1")
    protected, _unprotected, payload, signature = message
    if strict_loads(protected, what="COSE protected header", error=EifError) != {1: alg}:
        return False
    if len(signature) != 2 * width:
        return False
    r, s = int.from_bytes(signature[:width], "big"), int.from_bytes(signature[width:], "big")
    try:
        public_key.verify(encode_dss_signature(r, s), _sig_structure(protected, payload), ec.ECDSA(digest))
    except InvalidSignature:
        return False
    return bool(payload == pcr0_payload(image.measurements.pcr0))


def certificate_valid_at(certificate: x509.Certificate, at: datetime) -> bool:
    """Whether ``at`` (timezone-aware) is inside the certificate's validity period."""
    return certificate.not_valid_before_utc <= at <= certificate.not_valid_after_utc
