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

Chain cache: step (3) costs four P-384 signature checks against one for step (4), so successful results are
cached, keyed by exact bytes (the roots are fixed per verifier), at two levels: whole chains by (leaf,
cabundle), and verified CA parts by cabundle, so that a new leaf under known CAs costs one more signature
(see :mod:`attestation._chain`). Entries keep each certificate's validity window and every use re-checks
``at`` against them: a cached chain is never accepted outside its validity. Only successes are cached; each
level is a bounded LRU (:data:`CHAIN_CACHE_SIZE`) behind one lock, so a verifier may be shared by threads.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any, NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from attestation._chain import (
    MAX_CHAIN_DEPTH,
    CAChain,
    Chain,
    extend,
    fingerprint,
    parse_certificate,
    subject,
    verify_full,
)
from attestation.document import AttestationDocument, decode_document, verify_signature
from attestation.errors import VerificationError
from attestation.policy import Policy

__all__ = [
    "AWS_NITRO_ROOT_G1_PEM",
    "AWS_NITRO_ROOT_G1_SHA256",
    "CHAIN_CACHE_SIZE",
    "MAX_CHAIN_DEPTH",
    "CacheInfo",
    "Verifier",
    "aws_nitro_root",
    "load_certificate",
]

#: Most entries each cache level keeps (LRU). An entry holds the document's certificate bytes as its key
#: (~3-4 KB) and a few parsed objects, so both levels together stay around 10 MB however many enclaves call.
CHAIN_CACHE_SIZE = 1024

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
    if fingerprint(root) != AWS_NITRO_ROOT_G1_SHA256:  # pragma: no cover - guards the constant above
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


class CacheInfo(NamedTuple):
    chains: int  # whole chains (leaf + cabundle)
    ca_chains: int  # verified CA parts (cabundle), reused for new leaves
    maxsize: int  # the bound of each


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
        # Whole chains by (leaf, cabundle) bytes, and verified CA parts by cabundle bytes; both LRU.
        self._chains: OrderedDict[tuple[bytes, tuple[bytes, ...]], Chain] = OrderedDict()
        self._cas: OrderedDict[tuple[bytes, ...], CAChain] = OrderedDict()
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
        at = at.astimezone(UTC)  # one clock for every comparison and message
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

    def cache_info(self) -> CacheInfo:
        """How full the chain caches are."""
        with self._lock:
            return CacheInfo(chains=len(self._chains), ca_chains=len(self._cas), maxsize=self._cache_size)

    # -- step (3) -------------------------------------------------------------------------------------------

    def _chain(self, doc: AttestationDocument, at: datetime) -> ec.EllipticCurvePublicKey:
        key = (doc.certificate, doc.cabundle)
        if not self._cache_enabled:
            return self._verify_chain(doc, at, None).leaf_key
        with self._lock:
            hit = self._chains.get(key)
            if hit is not None:
                self._chains.move_to_end(key)
            ca = self._cas.get(doc.cabundle) if hit is None else None
            if ca is not None:
                self._cas.move_to_end(doc.cabundle)
        if hit is not None:
            # The same leaf and bundle verified before: only time can have changed.
            hit.check_validity(at)
            return hit.leaf_key
        chain = self._verify_chain(doc, at, ca)
        with self._lock:
            _put(self._chains, key, chain, self._cache_size)
        return chain.leaf_key

    def _verify_chain(self, doc: AttestationDocument, at: datetime, ca: CAChain | None) -> Chain:
        # (2) every certificate is DER X.509 (attestation_process.md §3.2: "DER-encoded X509 certificate").
        leaf = parse_certificate("certificate", doc.certificate)
        if ca is not None:
            # (3) a new leaf under a CA part verified before (same bytes, same pinned root): one link.
            return extend(ca, leaf, at)
        bundle = [parse_certificate(f"cabundle[{i}]", der) for i, der in enumerate(doc.cabundle)]
        # (3) the document's root must be one we pinned, byte for byte ...
        root = self._root_by_der.get(doc.cabundle[0])
        if root is None:
            raise VerificationError(
                "chain",
                f"cabundle[0] ({subject(bundle[0])}, sha256 {fingerprint(bundle[0])[:16]}...) "
                "is not a pinned root",
            )
        # ... and the whole path validates to it at `at`.
        ca, chain = verify_full(leaf, bundle, root, at)
        if self._cache_enabled and ca.reusable:
            with self._lock:
                _put(self._cas, doc.cabundle, ca, self._cache_size)
        return chain


def _put(cache: OrderedDict[Any, Any], key: Any, value: Any, bound: int) -> None:
    """Insert into an LRU dict (caller holds the lock), evicting the least recently used past ``bound``."""
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > bound:
        cache.popitem(last=False)
