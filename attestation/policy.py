"""Policies: what a *verified* attestation document must say for the caller to act on it.

Each policy is a small frozen object with one method, ``check(doc, *, at) -> None``, that raises
:class:`~attestation.errors.PolicyError` naming the field at fault; compose them with :class:`AllOf` and
:class:`AnyOf`. Rules (sigstore-python ``verify/policy.py`` is the model):

- A policy only ever sees a document the verifier has already authenticated (steps 1-4).
- An empty ``AllOf()`` or ``AnyOf()`` fails closed; the policy that accepts everything is called
  :class:`UnsafeNoPolicy` and logs a warning each time it is used.
- Time is an argument: :class:`MaxAge` compares ``timestamp`` with the caller's ``at``.
- Byte comparisons of expected values are constant-time (``hmac.compare_digest``).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Protocol, runtime_checkable

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from attestation.document import MAX_OPTIONAL_FIELD_BYTES, MAX_PCRS, PCR_SIZES, AttestationDocument
from attestation.errors import PolicyError

__all__ = [
    "CLOCK_SKEW",
    "PCRS_BY_CONDITION_KEY",
    "RSA_KEY_SIZES",
    "AllOf",
    "AnyOf",
    "MaxAge",
    "Nonce",
    "PCRs",
    "Policy",
    "RSAPublicKey",
    "RejectDebug",
    "UnsafeNoPolicy",
    "image_sha384",
    "load_rsa_public_key",
]

_log = logging.getLogger(__name__)

#: How far in the future of ``at`` a document's ``timestamp`` may lie before MaxAge rejects it (clocks of
#: the NSM and the verifier differ a little; a document from further ahead was not made "now").
CLOCK_SKEW = timedelta(seconds=60)
#: The RSA sizes KMS accepts for a Recipient public key (KMS GenerateRandom / Decrypt "Recipient").
RSA_KEY_SIZES = (2048, 3072, 4096)
#: KMS condition keys naming PCRs: ``kms:RecipientAttestation:ImageSha384`` is PCR0 (KMS developer guide,
#: "Condition keys for AWS Nitro Enclaves"); ``...:PCR<N>`` is PCR N.
PCRS_BY_CONDITION_KEY: Mapping[str, int] = MappingProxyType(
    {"ImageSha384": 0, **{f"PCR{i}": i for i in range(MAX_PCRS)}}
)


@runtime_checkable
class Policy(Protocol):
    """Anything with ``check(doc, *, at)`` that raises PolicyError to refuse a verified document."""

    def check(self, doc: AttestationDocument, *, at: datetime) -> None: ...


@dataclass(frozen=True, slots=True)
class PCRs:
    """Every listed PCR is present in the document and equals the expected value."""

    expected: Mapping[int, bytes]

    def __post_init__(self) -> None:
        # An empty expectation would accept every document: refuse to build it.
        if not self.expected:
            raise ValueError("PCRs needs at least one expected PCR value")
        for index, value in self.expected.items():
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < MAX_PCRS:
                raise ValueError(f"PCR index {index!r} is not in 0..{MAX_PCRS - 1}")
            if not isinstance(value, bytes) or len(value) not in PCR_SIZES:
                raise ValueError(f"expected PCR{index} must be 32, 48 or 64 bytes")
        object.__setattr__(self, "expected", MappingProxyType(dict(sorted(self.expected.items()))))

    def check(self, doc: AttestationDocument, *, at: datetime) -> None:
        for index, want in self.expected.items():
            got = doc.pcrs.get(index)
            if got is None:
                raise PolicyError(f"pcrs[{index}] is absent; the policy expects {want.hex()}")
            if not hmac.compare_digest(got, want):
                raise PolicyError(f"pcrs[{index}] is {got.hex()}; the policy expects {want.hex()}")


def image_sha384(value: bytes) -> PCRs:
    """``kms:RecipientAttestation:ImageSha384``: PCR0, the measurement of the enclave image file."""
    return PCRs({0: value})


@dataclass(frozen=True, slots=True)
class RejectDebug:
    """Refuse enclaves run with ``--debug-mode``: their PCR0, PCR1 and PCR2 are all zero (aws-facts §3)."""

    def check(self, doc: AttestationDocument, *, at: datetime) -> None:
        if doc.debug_mode:
            raise PolicyError("pcrs: the enclave runs in debug mode (PCR0, PCR1 and PCR2 are zero)")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class MaxAge:
    """``timestamp`` is at most ``max_age`` before ``at``, and at most :data:`CLOCK_SKEW` after it."""

    max_age: timedelta
    skew: timedelta = CLOCK_SKEW

    def __post_init__(self) -> None:
        if self.max_age < timedelta(0) or self.skew < timedelta(0):
            raise ValueError("max_age and skew must not be negative")

    def check(self, doc: AttestationDocument, *, at: datetime) -> None:
        # In integer microseconds: exact, and a timestamp past year 9999 (the CDDL allows up to 2^64-1 ms),
        # which no datetime holds, is simply far after ``at``.
        age_us = (at - _EPOCH) // _MICROSECOND - doc.timestamp * 1000
        if age_us > self.max_age // _MICROSECOND:
            raise PolicyError(
                f"timestamp: the document is {age_us / 1e6:.3f} s old, "
                f"over the maximum age of {self.max_age.total_seconds():g} s"
            )
        if -age_us > self.skew // _MICROSECOND:
            raise PolicyError(
                f"timestamp: the document is dated {-age_us / 1e6:.3f} s after the "
                f"verification time (allowed skew {self.skew.total_seconds():g} s)"
            )


@dataclass(frozen=True, slots=True)
class Nonce:
    """The document carries exactly the nonce the verifier asked for (freshness by challenge)."""

    expected: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.expected, bytes) or not 1 <= len(self.expected) <= MAX_OPTIONAL_FIELD_BYTES:
            raise ValueError(f"an expected nonce must be 1..{MAX_OPTIONAL_FIELD_BYTES} bytes")

    def check(self, doc: AttestationDocument, *, at: datetime) -> None:
        if doc.nonce is None:
            raise PolicyError("nonce is absent; the policy expects one")
        if not hmac.compare_digest(doc.nonce, self.expected):
            raise PolicyError("nonce does not match the expected value")


@dataclass(frozen=True, slots=True)
class RSAPublicKey:
    """``public_key`` is a DER SubjectPublicKeyInfo of an RSA key of an accepted size (KMS Recipient)."""

    sizes: tuple[int, ...] = RSA_KEY_SIZES

    def __post_init__(self) -> None:
        if not self.sizes or any(s not in RSA_KEY_SIZES for s in self.sizes):
            raise ValueError(f"RSA key sizes must be chosen from {RSA_KEY_SIZES}")

    def check(self, doc: AttestationDocument, *, at: datetime) -> None:
        load_rsa_public_key(doc.public_key, sizes=self.sizes)


def load_rsa_public_key(
    public_key: bytes | None, *, sizes: Iterable[int] = RSA_KEY_SIZES
) -> rsa.RSAPublicKey:
    """Parse ``public_key`` as the RSA SubjectPublicKeyInfo a KMS Recipient needs, or raise PolicyError."""
    allowed = tuple(sizes)
    if public_key is None:
        raise PolicyError("public_key is absent; an RSA SubjectPublicKeyInfo is required")
    try:
        key = serialization.load_der_public_key(public_key)
    except (ValueError, TypeError):
        raise PolicyError("public_key is not a DER SubjectPublicKeyInfo") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise PolicyError(f"public_key is not an RSA key ({type(key).__name__.removeprefix('_')})")
    # Exactly the DER SPKI: cryptography also accepts a bare PKCS#1 RSAPublicKey, which KMS does not.
    spki = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if spki != public_key:
        raise PolicyError("public_key is not a DER-encoded SubjectPublicKeyInfo")
    if key.key_size not in allowed:
        raise PolicyError(f"public_key is RSA-{key.key_size}; allowed sizes are {allowed}")
    return key


@dataclass(frozen=True, slots=True, init=False)
class AllOf:
    """Every child policy holds. Empty fails closed."""

    policies: tuple[Policy, ...] = field(default=())

    def __init__(self, *policies: Policy) -> None:
        object.__setattr__(self, "policies", tuple(policies))

    def check(self, doc: AttestationDocument, *, at: datetime) -> None:
        if not self.policies:
            raise PolicyError("an empty AllOf() accepts nothing (fail closed)")
        for policy in self.policies:
            policy.check(doc, at=at)


@dataclass(frozen=True, slots=True, init=False)
class AnyOf:
    """At least one child policy holds; otherwise the error lists why each failed. Empty fails closed."""

    policies: tuple[Policy, ...] = field(default=())

    def __init__(self, *policies: Policy) -> None:
        object.__setattr__(self, "policies", tuple(policies))

    def check(self, doc: AttestationDocument, *, at: datetime) -> None:
        if not self.policies:
            raise PolicyError("an empty AnyOf() accepts nothing (fail closed)")
        reasons = []
        for policy in self.policies:
            try:
                policy.check(doc, at=at)
            except PolicyError as exc:
                reasons.append(exc.detail)
            else:
                return
        raise PolicyError("none of the alternatives holds: " + "; ".join(reasons))


@dataclass(frozen=True, slots=True)
class UnsafeNoPolicy:
    """Accepts every verified document. Only for tools and tests; logs a warning each time."""

    def check(self, doc: AttestationDocument, *, at: datetime) -> None:
        _log.warning("UnsafeNoPolicy: accepting attestation document of %s without a policy", doc.module_id)
