"""Step (3) of the verifier: the certificate chain leaf -> cabundle reversed -> pinned root, at time ``at``.

Two ways to the same verdict (attestation_process.md §3; deps-and-costs.md §2.4):

- :func:`verify_full` runs cryptography's X.509 path validation (webpki CA policy; a leaf policy requiring
  basicConstraints CA=false and keyUsage digitalSignature) over the whole chain. It returns the verified
  CA part, :class:`CAChain`, for reuse.
- :func:`extend` checks one new leaf under a :class:`CAChain` that :func:`verify_full` already validated:
  the leaf's issuer name, validity, the leaf rules and its signature by the issuing CA. NSMs issue leaves
  often (one per document in our simulation) under CA certificates that live for days, so this link is
  what changes between documents. A CA part that carries name or policy constraints (none in AWS's chain)
  would make the leaf's checks depend on more than its issuer, so it is never offered for reuse.

Both run the same hand checks in the same order (issuer names, validity of every certificate, leaf rules)
before any signature, so a given input fails with the same step and message on either path.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, SignatureAlgorithmOID
from cryptography.x509.verification import Criticality, ExtensionPolicy, PolicyBuilder, Store
from cryptography.x509.verification import VerificationError as X509VerificationError

from attestation.document import MAX_CABUNDLE
from attestation.errors import MalformedDocumentError, VerificationError

#: Intermediates allowed between the leaf and the root (cryptography's ``max_chain_depth``). AWS chains have
#: three (regional, zonal, instance); the document format allows ``MAX_CABUNDLE - 1``.
MAX_CHAIN_DEPTH = MAX_CABUNDLE - 1
#: The leaf's critical extensions we understand (RFC 5280 §4.2: refuse a critical extension we do not).
_LEAF_CRITICAL_OK = frozenset({ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.KEY_USAGE})
#: CA extensions that constrain the leaf beyond its issuer's signature: a CA part with any is never reused.
_CONSTRAINING = frozenset(
    {ExtensionOID.NAME_CONSTRAINTS, ExtensionOID.POLICY_CONSTRAINTS, ExtensionOID.INHIBIT_ANY_POLICY}
)


def _ee_accepts(_policy: object, _cert: x509.Certificate, _value: object) -> None:
    """Extension validator for cryptography's EE policy: the rules are enforced by :func:`check_leaf`."""


# Nitro leaves have no AKI, SAN or EKU, so the webpki EE defaults reject them; the CA defaults fit AWS's CAs
# (basicConstraints with pathlen, keyCertSign) and our simulated ones alike.
_EE_POLICY = (
    ExtensionPolicy.permit_all()
    .require_present(x509.BasicConstraints, Criticality.AGNOSTIC, _ee_accepts)
    .require_present(x509.KeyUsage, Criticality.AGNOSTIC, _ee_accepts)
)
_CA_POLICY = ExtensionPolicy.webpki_defaults_ca()


@dataclass(frozen=True, slots=True, kw_only=True)
class Window:
    """One certificate's validity, and the document field it came from (``certificate``, ``cabundle[2]``)."""

    field: str
    cert: x509.Certificate  # for the subject in error messages, rendered only when one is raised
    not_before: datetime
    not_after: datetime

    @classmethod
    def of(cls, field: str, cert: x509.Certificate) -> Window:
        return cls(
            field=field, cert=cert, not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class CAChain:
    """The verified CA part of a chain (root .. issuing CA): what a new leaf needs to be checked against."""

    windows: tuple[Window, ...]
    issuer: x509.Certificate
    issuer_field: str
    reusable: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Chain:
    """A whole verified chain: every certificate's validity (re-checked per use) and the leaf's key."""

    windows: tuple[Window, ...]
    leaf_key: ec.EllipticCurvePublicKey
    #: The intersection of the windows: ``at`` inside it is exactly "every certificate is valid at ``at``".
    not_before: datetime = field(init=False)
    not_after: datetime = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "not_before", max(w.not_before for w in self.windows))
        object.__setattr__(self, "not_after", min(w.not_after for w in self.windows))

    def check_validity(self, at: datetime) -> None:
        """:func:`check_validity` of the windows: one comparison pair when all are valid, else the words."""
        if not self.not_before <= at <= self.not_after:
            check_validity(self.windows, at)


def check_validity(windows: Sequence[Window], at: datetime) -> None:
    """attestation_process.md §3: every certificate, root included, is inside its validity at ``at``."""
    for w in windows:
        if at < w.not_before:
            what = f"is not valid before {iso(w.not_before)}"
        elif at > w.not_after:
            what = f"expired at {iso(w.not_after)}"
        else:
            continue
        raise VerificationError("chain", f"{w.field} ({subject(w.cert)}) {what}; checked at {iso(at)}")


def check_leaf(leaf: x509.Certificate) -> ec.EllipticCurvePublicKey:
    """The target certificate's rules (attestation_process.md §3; aws-facts.md §3); returns its P-384 key."""
    # The target is not a CA and has no pathLen.
    try:
        bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise VerificationError("chain", "certificate lacks basicConstraints") from None
    if bc.ca or bc.path_length is not None:
        raise VerificationError(
            "chain", "certificate is a CA (basicConstraints must say CA=false, no pathLen)"
        )
    # The target has keyUsage digitalSignature.
    try:
        ku = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise VerificationError("chain", "certificate lacks keyUsage") from None
    if not ku.digital_signature:
        raise VerificationError("chain", "certificate lacks keyUsage digitalSignature")
    for ext in leaf.extensions:
        if ext.critical and ext.oid not in _LEAF_CRITICAL_OK:
            raise VerificationError(
                "chain", f"certificate has an unknown critical extension {ext.oid.dotted_string}"
            )
    # All Nitro certificates are ecdsa-with-SHA384 on P-384; the leaf key signs ES384.
    if leaf.signature_algorithm_oid != SignatureAlgorithmOID.ECDSA_WITH_SHA384:
        raise VerificationError("chain", "certificate is not signed with ecdsa-with-SHA384")
    key = leaf.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        raise VerificationError("chain", "certificate does not hold a P-384 public key")
    return key


def _check_order(ordered: Sequence[x509.Certificate], names: Sequence[str]) -> None:
    # The documented order: cabundle = [ROOT, INTERM_1, ..., INTERM_N], then the leaf signed by INTERM_N.
    for i in range(1, len(ordered)):
        if ordered[i].issuer != ordered[i - 1].subject:
            raise VerificationError(
                "chain",
                f"{names[i]} ({subject(ordered[i])}) is not issued by {names[i - 1]} "
                f"({subject(ordered[i - 1])}); cabundle must be ordered root first",
            )


def verify_full(
    leaf: x509.Certificate, bundle: Sequence[x509.Certificate], root: x509.Certificate, at: datetime
) -> tuple[CAChain, Chain]:
    """Validate leaf -> bundle[-1] -> ... -> bundle[0] == ``root`` (already matched to a pinned root)."""
    ordered = [*bundle, leaf]
    names = [f"cabundle[{i}]" for i in range(len(bundle))] + ["certificate"]
    _check_order(ordered, names)
    windows = tuple(Window.of(name, cert) for name, cert in zip(names, ordered, strict=True))
    check_validity(windows, at)
    leaf_key = check_leaf(leaf)
    # PKIX path validation against the pinned root at `at`: signatures, basicConstraints and pathlen, CA key
    # usages (webpki CA policy). No CRL: AWS disables it.
    verifier = (
        PolicyBuilder()
        .store(Store([root]))
        .time(at)
        .max_chain_depth(MAX_CHAIN_DEPTH)
        .extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICY)
        .build_client_verifier()
    )
    try:
        result = verifier.verify(leaf, list(reversed(bundle[1:])))
    except (X509VerificationError, ValueError) as exc:
        raise VerificationError("chain", f"certificate chain does not verify: {exc}") from None
    # The path built is exactly the document's bundle, nothing skipped or substituted.
    if list(result.chain) != list(reversed(ordered)):
        raise VerificationError("chain", "the verified path is not the document's cabundle")
    reusable = not any(ext.oid in _CONSTRAINING for cert in bundle for ext in cert.extensions)
    ca = CAChain(windows=windows[:-1], issuer=bundle[-1], issuer_field=names[-2], reusable=reusable)
    return ca, Chain(windows=windows, leaf_key=leaf_key)


def extend(ca: CAChain, leaf: x509.Certificate, at: datetime) -> Chain:
    """Validate a new leaf under an already verified CA part: same checks, one signature."""
    _check_order([ca.issuer, leaf], [ca.issuer_field, "certificate"])
    windows = (*ca.windows, Window.of("certificate", leaf))
    check_validity(windows, at)
    leaf_key = check_leaf(leaf)
    try:
        leaf.verify_directly_issued_by(ca.issuer)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        raise VerificationError(
            "chain", f"certificate chain does not verify: certificate is not signed by {ca.issuer_field}"
        ) from None
    return Chain(windows=windows, leaf_key=leaf_key)


def parse_certificate(field: str, der: bytes) -> x509.Certificate:
    """Parse one DER certificate from the document; every failure is a MalformedDocumentError."""
    # RFC 5280 §4.1.2.2: the serial number MUST be a positive integer. cryptography only *warns* on a
    # non-positive one (a future release will refuse it), and a warning is not an answer: refuse it here.
    if _serial_sign(der) == "non-positive":
        raise MalformedDocumentError(f"{field} has a serial number that is not positive (RFC 5280 §4.1.2.2)")
    try:
        cert = x509.load_der_x509_certificate(der)
        # cryptography parses some parts lazily; touch every part we use so a bad one fails here, once.
        _ = (cert.subject, cert.issuer, cert.not_valid_before_utc, cert.not_valid_after_utc)
        _ = (cert.extensions, cert.public_key(), cert.signature_algorithm_oid)
    except UnsupportedAlgorithm as exc:
        raise MalformedDocumentError(f"{field} has an unsupported public key ({exc})") from None
    except Exception as exc:  # ValueError, InvalidVersion, DuplicateExtension, ...: theirs never escape
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise MalformedDocumentError(f"{field} is not a DER X.509 certificate ({reason})") from None
    return cert


def subject(cert: x509.Certificate) -> str:
    try:
        return cert.subject.rfc4514_string()
    except ValueError:  # a name that does not render; keep the message one line
        return "<unprintable subject>"


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _tlv(der: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER element at ``pos``; IndexError/ValueError if truncated."""
    tag, first = der[pos], der[pos + 1]
    start = pos + 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if not 1 <= n <= 4 or start + n > len(der):
            raise ValueError("bad DER length")
        length = int.from_bytes(der[start : start + n], "big")
        start += n
    if start + length > len(der):
        raise ValueError("truncated DER element")
    return tag, start, start + length


def _serial_sign(der: bytes) -> str:
    """Whether the certificate's serialNumber is "positive", "non-positive" or "unknown" (let X.509 decide).

    Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber INTEGER, ...
    """
    try:
        _, cert_start, _ = _tlv(der, 0)
        _, tbs_start, _ = _tlv(der, cert_start)
        tag, start, end = _tlv(der, tbs_start)
        if tag == 0xA0:  # explicit [0] version
            tag, start, end = _tlv(der, end)
    except (IndexError, ValueError):
        return "unknown"
    if tag != 0x02 or start == end:
        return "unknown"
    serial = der[start:end]
    return "non-positive" if serial[0] & 0x80 or not any(serial) else "positive"
