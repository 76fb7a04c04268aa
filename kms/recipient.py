"""Recipient verification: an attestation document in, the enclave's identity and RSA key out.

Pipeline (the verifier's own numbered steps live in ``attestation.verify``):

1. ``Verifier.verify``: decode, limits, certificate chain to one of the trusted roots at the request time
   (chain verification cached by the verifier), COSE ES384 signature.
2. ``public_key`` is an RSA 2048/3072/4096 SubjectPublicKeyInfo (RecipientRequest.md names RSA-2048; the
   SDK can make all three); the key is loaded once and the CMS ``rid`` is SHA-256 of the SPKI bytes.
3. Freshness, on every request: the document is at most ``max_age`` old at the request time (and not
   from the future).

Exact-document cache: steps (1)-(2) depend only on the bytes, except the certificates' validity windows.
So the outcome for a document that passed them is kept (bounded LRU, keyed by the bytes themselves)
with the intersection of its certificates' windows; a later request with the same bytes re-checks that
window and step (3) at its own time, and falls back to the full pipeline outside the window. Rejected
documents are never cached. This saves the ES384 verification (~0.3 ms) when a client reuses a document.

The SDK's default sends a new document per call, under the same CA bundle, the same leaf (the NSM reuses
it for hours) and the same RSA key (made once per enclave). So two more bounded caches, keyed by exact
bytes, take the per-document Python work off that path: the validity window of each (leaf, cabundle) pair
(no X.509 parse per document), and each RSA SubjectPublicKeyInfo's loaded key and rid (no key load per
document).
Both hold only what a successful parse produced; a failing key is re-parsed (and rejected) every time.

Every rejection is a ValidationException naming what failed; nothing from the document is trusted before
step 1 passes.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from attestation.cms import RSA_KEY_SIZES
from attestation.document import AttestationDocument
from attestation.errors import AttestationError, MalformedError, PolicyError, VerificationError
from attestation.policy import MaxAge, load_rsa_public_key
from attestation.verify import Verifier
from kms._op import AttestedRecipient
from kms.errors import ValidationException

__all__ = ["DEFAULT_MAX_DOC_AGE", "RecipientCheck"]

#: How old a Recipient document may be. KMS publishes no rule (aws-facts §1); the SDK makes a fresh
#: document per request, so minutes are plenty.
DEFAULT_MAX_DOC_AGE = timedelta(minutes=5)

#: Bound on the exact-document cache. An entry is keyed by the document's bytes (a dict compares them
#: whole, so no digest is computed and no collision is possible; only verified documents are stored, so
#: at most MAX_DOCUMENT_BYTES, ~5 KB in practice) and holds the decoded document (~5 KB).
DOCUMENT_CACHE_SIZE = 1024
#: Bound on the chain-window cache (entries: a leaf and its cabundle, ~3.5 KB of DER, and two datetimes).
CERTIFICATE_WINDOW_CACHE_SIZE = 1024
#: Bound on the recipient-key cache (entries: an SPKI, <= ~0.6 KB, its loaded key and its rid).
RECIPIENT_KEY_CACHE_SIZE = 256

_WHAT = "Recipient.AttestationDocument"

_K = TypeVar("_K")
_V = TypeVar("_V")


@dataclass(frozen=True, slots=True, kw_only=True)
class _Verified:
    """Steps (1)-(2) passed for these exact bytes; valid to reuse while ``not_before <= at <= not_after``."""

    document: AttestationDocument
    recipient: AttestedRecipient
    not_before: datetime
    not_after: datetime


def _certificate_window(der: bytes) -> tuple[datetime, datetime]:
    certificate = x509.load_der_x509_certificate(der)
    return certificate.not_valid_before_utc, certificate.not_valid_after_utc


def _put(cache: OrderedDict[_K, _V], key: _K, value: _V, bound: int) -> None:
    cache[key] = value
    if len(cache) > bound:
        cache.popitem(last=False)


class RecipientCheck:
    """Callable ``(document bytes, request time) -> AttestedRecipient``; ValidationException on rejection."""

    def __init__(
        self,
        *,
        roots: Sequence[bytes | x509.Certificate],
        max_age: timedelta = DEFAULT_MAX_DOC_AGE,
        at: datetime | None = None,
    ) -> None:
        #: A fixed instant to check every document at (``--attestation-time``), instead of the request's.
        self._at = at
        self._verifier = Verifier(roots=roots, chain_cache=True)
        self._policy = MaxAge(max_age)
        # One per worker process; the ASGI app calls the service from its event loop thread only.
        self._cache: OrderedDict[bytes, _Verified] = OrderedDict()
        self._windows: OrderedDict[tuple[bytes, tuple[bytes, ...]], tuple[datetime, datetime]] = OrderedDict()
        self._keys: OrderedDict[bytes, tuple[rsa.RSAPublicKey, bytes]] = OrderedDict()
        self._last_recipient: AttestedRecipient | None = None

    def __call__(self, data: bytes, at: datetime) -> AttestedRecipient:
        if self._at is not None:
            at = self._at
        verified = self._cache.get(data)
        if verified is not None and verified.not_before <= at <= verified.not_after:
            self._cache.move_to_end(data)
        else:
            verified = self._verify(data, at)
            _put(self._cache, data, verified, DOCUMENT_CACHE_SIZE)
        # (3)
        try:
            self._policy.check(verified.document, at=at)
        except PolicyError as error:
            raise ValidationException(f"{_WHAT} was rejected: {error.detail}") from None
        return verified.recipient

    def _window(self, document: AttestationDocument) -> tuple[datetime, datetime]:
        """The times at which every certificate the document carries is valid (an intersection)."""
        key = (document.certificate, document.cabundle)  # the verifier hashed these bytes already
        window = self._windows.get(key)
        if window is None:
            windows = [_certificate_window(der) for der in (document.certificate, *document.cabundle)]
            window = max(w[0] for w in windows), min(w[1] for w in windows)
            _put(self._windows, key, window, CERTIFICATE_WINDOW_CACHE_SIZE)
        return window

    def _recipient_key(self, spki: bytes | None) -> tuple[rsa.RSAPublicKey, bytes]:
        """The loaded RSA key of a ``public_key`` field and its rid (PolicyError if it is not one)."""
        known = self._keys.get(spki) if spki is not None else None
        if known is not None:
            return known
        public_key = load_rsa_public_key(spki, sizes=RSA_KEY_SIZES)
        # load_rsa_public_key checked that spki is exactly a DER SPKI, so it is not None here
        spki = spki or b""
        loaded = (public_key, hashlib.sha256(spki).digest())
        _put(self._keys, spki, loaded, RECIPIENT_KEY_CACHE_SIZE)
        return loaded

    def _verify(self, data: bytes, at: datetime) -> _Verified:
        # (1) + (2)
        try:
            document = self._verifier.verify(data, at=at)
            public_key, key_id = self._recipient_key(document.public_key)
            not_before, not_after = self._window(document)
        except MalformedError as error:
            raise ValidationException(f"{_WHAT} is malformed: {error}") from None
        except PolicyError as error:
            raise ValidationException(f"{_WHAT} was rejected: {error.detail}") from None
        except VerificationError as error:
            raise ValidationException(f"{_WHAT} failed verification ({error.step}): {error.detail}") from None
        except AttestationError as error:
            raise ValidationException(f"{_WHAT} could not be verified: {error}") from None
        # The enclave's documents share these very objects (attestation.document remembers its payload
        # shape), so its last recipient is reused when each is the same object; the entry keeps them alive.
        recipient = self._last_recipient
        if (
            recipient is None
            or recipient.module_id is not document.module_id
            or recipient.pcrs is not document.pcrs
            or recipient.public_key is not public_key
            or recipient.key_id is not key_id
        ):
            recipient = AttestedRecipient(
                module_id=document.module_id, pcrs=document.pcrs, public_key=public_key, key_id=key_id
            )
            self._last_recipient = recipient
        return _Verified(document=document, recipient=recipient, not_before=not_before, not_after=not_after)
