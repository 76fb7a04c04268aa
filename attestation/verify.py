"""The attestation-document verifier: one numbered pipeline, AWS's procedure, roots pinned by the caller.

Pipeline (aws-nitro-enclaves-nsm-api ``docs/attestation_process.md`` §3; aws-facts.md §3 "Verification
procedure"); every step raises, none returns a bool:

    (1) decode       COSE_Sign1 and payload map (:func:`attestation.document.decode_document`)
                     -> MalformedDocumentError
    (2) syntax       field types and AWS limits (decode), every certificate parses as DER X.509
                     -> MalformedDocumentError
    (3) chain        leaf -> cabundle reversed -> a pinned root, built and checked by cryptography's X.509
                     verifier at the caller's time ``at``: every certificate (root included) inside its
                     validity period, basicConstraints/pathlen, CA keyCertSign, leaf CA=false with
                     digitalSignature, no CRL (AWS disables it) -> VerificationError(step="chain")
    (4) signature    COSE_Sign1 ES384 with the leaf key -> VerificationError(step="signature")
    (5) policy       the caller's :mod:`attestation.policy` object -> PolicyError (step="policy")

What is trusted: only the roots given to :class:`Verifier`. ``cabundle[0]`` must be byte-identical to one of
them (the document's copy of the root is never trusted by itself), and the bundle must be in the documented
order ``[ROOT, INTERM_1, ..., INTERM_N]`` (a chain builder would accept any order; we do not).

Chain cache: step (3) costs ~1.4 ms (four P-384 signatures) against ~0.3 ms for step (4), so successful
chain results are cached, keyed by the exact bytes of the leaf and the cabundle (the roots are fixed per
verifier). An entry stores each certificate's validity window, and every hit re-checks ``at`` against them:
a cached chain is never accepted outside its validity. Only successes are cached; the cache is a bounded LRU
(:data:`CHAIN_CACHE_SIZE`) behind a lock, so one verifier may be shared by threads.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
)
from cryptography.x509.verification import VerificationError as X509VerificationError

from attestation.document import MAX_CABUNDLE, AttestationDocument, decode_document, verify_signature
from attestation.errors import MalformedDocumentError, VerificationError
from attestation.policy import Policy

__all__ = [
    "AWS_NITRO_ROOT_G1_PEM",
    "AWS_NITRO_ROOT_G1_SHA256",
    "CHAIN_CACHE_SIZE",
    "MAX_CHAIN_DEPTH",
    "Verifier",
    "aws_nitro_root",
    "load_certificate",
]

#: Most chain results a verifier keeps (LRU). An entry is ~1 KB (keys are the certificate bytes, ~3.3 KB,
#: shared with nothing else), so the bound keeps the cache under ~5 MB however many enclaves call.
CHAIN_CACHE_SIZE = 1024
#: Intermediates allowed between the leaf and the root (cryptography's ``max_chain_depth``). AWS chains have
#: three (regional, zonal, instance); the document format allows ``MAX_CABUNDLE - 1``.
MAX_CHAIN_DEPTH = MAX_CABUNDLE - 1

#: The AWS Nitro Enclaves Root-G1 (aws-facts.md §3 "Root certificate"; AWS publishes it in
#: AWS_NitroEnclaves_Root-G1.zip, sha256 8cf60e2b...faff7c). Public data: pinned below by fingerprint.
AWS_NITRO_ROOT_G1_PEM = b"""-----BEGIN CERTIFICATE-----
MIICETCCAZagAwIBAgIRAPkxdWgbkK/hHUbMtOTn+FYwCgYIKoZIzj0EAwMwSTEL
MAkGA1UEBhMCVVMxDzANBgNVBAoMBkFtYXpvbjEMMAoGA1UECwwDQVdTMRswGQYD
VQQDDBJhd3Mubml0cm8tZW5jbGF2ZXMwHhcNMTkxMDI4MTMyODA1WhcNNDkxMDI4
MTQyODA1WjBJMQswCQYDVQQGEwJVUzEPMA0GA1UECgwGQW1hem9uMQwwCgYDVQQL
DANBV1MxGzAZBgNVBAMMEmF3cy5uaXRyby1lbmNsYXZlczB2MBAGByqGSM49AgEG
BSuBBAAiA2IABPwCVOumCMHzaHDimtqQvkY4MpJzbolL//Zy2YlES1BR5TSksfbb
48C8WBoyt7F2Bw7eEtaaP+ohG2bnUs990d0JX28TcPQXCEPZ3BABIeTPYwEoCWZE
h8l5YoQwTcU/9KNCMEAwDwYDVR0TAQH/BAUwAwEB/zAdBgNVHQ4EFgQUkCW1DdkF
R+eWw5b6cp3PmanfS5YwDgYDVR0PAQH/BAQDAgGGMAoGCCqGSM49BAMDA2kAMGYC
MQCjfy+Rocm9Xue4YnwWmNJVA44fA0P5W2OpYow9OYCVRaEevL8uO1XYru5xtMPW
rfMCMQCi85sWBbJwKKXdS6BptQFuZbT73o/gBh1qUxl/nNr12UO8Yfwr6wPLb+6N
IwLz3/Y=
-----END CERTIFICATE-----
"""
#: SHA-256 of the root's DER (aws-facts.md §3, re-verified there).
AWS_NITRO_ROOT_G1_SHA256 = "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"


@cache
def aws_nitro_root() -> x509.Certificate:
    """The AWS Nitro Enclaves Root-G1 certificate, checked against its pinned fingerprint."""
    root = x509.load_pem_x509_certificate(AWS_NITRO_ROOT_G1_PEM)
    if _fingerprint(root) != AWS_NITRO_ROOT_G1_SHA256:  # pragma: no cover - guards the constant above
        raise AssertionError("embedded AWS Nitro root does not match its pinned fingerprint")
    return root


def load_certificate(value: bytes | x509.Certificate) -> x509.Certificate:
    """A root given as a certificate object, PEM bytes or DER bytes; ValueError if it is none of them."""
    if isinstance(value, x509.Certificate):
        return value
    if not isinstance(value, bytes | bytearray):
        raise TypeError(f"a root must be bytes (PEM or DER) or x509.Certificate, got {type(value).__name__}")
    data = bytes(value)
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise ValueError(f"not a PEM or DER X.509 certificate ({exc})") from None


def _fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


# -- The X.509 policies (deps-and-costs.md §2.4) ------------------------------------------------------------


def _leaf_not_ca(_policy: object, _cert: x509.Certificate, bc: x509.BasicConstraints | None) -> None:
    # attestation_process.md §3: "the target certificate ... must not be a CA" (basicConstraints CA=false).
    if bc is None or bc.ca:
        raise ValueError("leaf certificate is a CA (basicConstraints CA must be false)")
    if bc.path_length is not None:
        raise ValueError("leaf certificate carries a pathLenConstraint")


def _leaf_signs(_policy: object, _cert: x509.Certificate, ku: x509.KeyUsage | None) -> None:
    # attestation_process.md §3: the target certificate must have keyUsage digitalSignature.
    if ku is None or not ku.digital_signature:
        raise ValueError("leaf certificate lacks keyUsage digitalSignature")


# Nitro leaves have no AKI, SAN or EKU, so the webpki EE defaults reject them; the CA defaults fit AWS's CAs
# (basicConstraints with pathlen, keyCertSign) and our simulated ones alike.
_EE_POLICY = (
    ExtensionPolicy.permit_all()
    .require_present(x509.BasicConstraints, Criticality.AGNOSTIC, _leaf_not_ca)
    .require_present(x509.KeyUsage, Criticality.AGNOSTIC, _leaf_signs)
)
_CA_POLICY = ExtensionPolicy.webpki_defaults_ca()


# -- Chain cache --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _Window:
    field: str  # "certificate", "cabundle[2]": the document field the certificate came from
    subject: str
    not_before: datetime
    not_after: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class _Chain:
    """A chain that verified once: the leaf's key and every certificate's validity, to re-check per use."""

    windows: tuple[_Window, ...]
    leaf_key: ec.EllipticCurvePublicKey


def _check_validity(windows: Sequence[_Window], at: datetime) -> None:
    # attestation_process.md §3: every certificate, root included, must be valid at the verification time.
    for w in windows:
        if at < w.not_before:
            raise VerificationError(
                "chain",
                f"{w.field} ({w.subject}) is not valid before {_iso(w.not_before)}; checked at {_iso(at)}",
            )
        if at > w.not_after:
            raise VerificationError(
                "chain", f"{w.field} ({w.subject}) expired at {_iso(w.not_after)}; checked at {_iso(at)}"
            )


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


class Verifier:
    """Verifies NSM attestation documents against pinned roots. Thread-safe; cheap to share.

    ``roots``: the trust anchors (``x509.Certificate`` or PEM/DER bytes), e.g. the simulated root, the real
    AWS root (:func:`aws_nitro_root`), or both. ``chain_cache``: cache successful chain results (see the
    module docstring); turn it off only to measure what it saves.
    """

    def __init__(
        self,
        *,
        roots: Sequence[bytes | x509.Certificate],
        chain_cache: bool = True,
        cache_size: int = CHAIN_CACHE_SIZE,
    ) -> None:
        if isinstance(roots, bytes | bytearray | x509.Certificate):
            raise TypeError("roots must be a sequence of certificates, not one certificate")
        loaded = tuple(load_certificate(r) for r in roots)
        if not loaded:
            raise ValueError("a verifier needs at least one pinned root")
        if cache_size < 1:
            raise ValueError("cache_size must be at least 1")
        self._roots = loaded
        self._root_by_der = {r.public_bytes(serialization.Encoding.DER): r for r in loaded}
        self._cache_enabled = chain_cache
        self._cache_size = cache_size
        self._cache: OrderedDict[tuple[bytes, tuple[bytes, ...]], _Chain] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def roots(self) -> tuple[x509.Certificate, ...]:
        """The pinned roots, as given."""
        return self._roots

    def verify(self, data: bytes, *, at: datetime, policy: Policy | None = None) -> AttestationDocument:
        """Run the pipeline on the document bytes ``data`` at time ``at``; return the verified document.

        ``policy=None`` runs steps (1)-(4) only: the document is authentic, but nothing about *what* it
        attests (PCRs, debug mode, freshness, nonce, key) has been checked; callers deciding access pass a
        policy. Raises MalformedDocumentError, VerificationError (``step`` "chain" or "signature") or
        PolicyError.
        """
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError("at must be a timezone-aware datetime")
        # (1) decode, and (2) syntax and limits of every field (done by the codec's model).
        signed = decode_document(data)
        doc = signed.document
        # (2)+(3) certificates parse, and the chain reaches a pinned root, valid at `at`.
        leaf_key = self._chain(doc, at)
        # (4) COSE_Sign1 ES384 signature with the leaf certificate's key.
        verify_signature(signed, leaf_key)
        # (5) the caller's policy, on the now-verified document.
        if policy is not None:
            policy.check(doc, at=at)
        return doc

    def cache_info(self) -> tuple[int, int]:
        """(entries, bound) of the chain cache."""
        with self._lock:
            return len(self._cache), self._cache_size

    # -- step (3) -------------------------------------------------------------------------------------------

    def _chain(self, doc: AttestationDocument, at: datetime) -> ec.EllipticCurvePublicKey:
        key = (doc.certificate, doc.cabundle)
        if self._cache_enabled:
            with self._lock:
                hit = self._cache.get(key)
                if hit is not None:
                    self._cache.move_to_end(key)
            if hit is not None:
                _check_validity(hit.windows, at)
                return hit.leaf_key
        chain = self._build_chain(doc, at)
        if self._cache_enabled:
            with self._lock:
                self._cache[key] = chain
                self._cache.move_to_end(key)
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return chain.leaf_key

    def _build_chain(self, doc: AttestationDocument, at: datetime) -> _Chain:
        # (2) every certificate is DER X.509 (attestation_process.md §3.2: "DER-encoded X509 certificate").
        leaf = _parse("certificate", doc.certificate)
        bundle = [_parse(f"cabundle[{i}]", der) for i, der in enumerate(doc.cabundle)]
        # (3a) the document's root must be one we pinned, byte for byte.
        root = self._root_by_der.get(doc.cabundle[0])
        if root is None:
            raise VerificationError(
                "chain",
                f"cabundle[0] ({_subject(bundle[0])}, sha256 {_fingerprint(bundle[0])[:16]}...) "
                "is not a pinned root",
            )
        # (3b) the documented order: cabundle = [ROOT, INTERM_1, ..., INTERM_N], then the leaf.
        ordered = [*bundle, leaf]
        names = [f"cabundle[{i}]" for i in range(len(bundle))] + ["certificate"]
        for i in range(1, len(ordered)):
            if ordered[i].issuer != ordered[i - 1].subject:
                raise VerificationError(
                    "chain",
                    f"{names[i]} ({_subject(ordered[i])}) is not issued by {names[i - 1]} "
                    f"({_subject(ordered[i - 1])}); cabundle must be ordered root first",
                )
        # (3c) every certificate, root included, valid at `at` (checked here too, to name the field).
        windows = tuple(
            _Window(
                field=name,
                subject=_subject(cert),
                not_before=cert.not_valid_before_utc,
                not_after=cert.not_valid_after_utc,
            )
            for name, cert in zip(names, ordered, strict=True)
        )
        _check_validity(windows, at)
        # (3d) the leaf must hold a P-384 key: it signs ES384.
        leaf_key = leaf.public_key()
        if not isinstance(leaf_key, ec.EllipticCurvePublicKey) or not isinstance(
            leaf_key.curve, ec.SECP384R1
        ):
            raise VerificationError("chain", "certificate does not hold a P-384 public key")
        # (3e) PKIX path validation against the pinned root at `at`: signatures, basicConstraints and
        # pathlen, key usages, leaf policy (deps-and-costs.md §2.4). No CRL, as AWS.
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
        # (3f) the path built is exactly the document's bundle, nothing skipped or substituted.
        if list(result.chain) != list(reversed(ordered)):
            raise VerificationError("chain", "the verified path is not the document's cabundle")
        return _Chain(windows=windows, leaf_key=leaf_key)


def _parse(field: str, der: bytes) -> x509.Certificate:
    # RFC 5280 §4.1.2.2: the serial number MUST be a positive integer. cryptography only *warns* on a
    # non-positive one (a future release will refuse it), and a warning is not an answer: refuse it here.
    if _serial_sign(der) == "non-positive":
        raise MalformedDocumentError(f"{field} has a serial number that is not positive (RFC 5280 §4.1.2.2)")
    try:
        cert = x509.load_der_x509_certificate(der)
        # cryptography parses some parts lazily; touch every part we use so a bad one fails here, once.
        _ = (cert.subject, cert.issuer, cert.not_valid_before_utc, cert.not_valid_after_utc)
        _ = (cert.extensions, cert.public_key())
    except UnsupportedAlgorithm as exc:
        raise MalformedDocumentError(f"{field} has an unsupported public key ({exc})") from None
    except Exception as exc:  # ValueError, InvalidVersion, DuplicateExtension, ...: theirs never escape
        reason = str(exc).splitlines()[0][:160] if str(exc) else "parse error"
        raise MalformedDocumentError(f"{field} is not a DER X.509 certificate ({reason})") from None
    return cert


def _subject(cert: x509.Certificate) -> str:
    try:
        return cert.subject.rfc4514_string()
    except ValueError:  # a name that does not render; keep the message one line
        return "<unprintable subject>"


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
