"""Recipient verification: an attestation document in, the enclave's identity and RSA key out.

Pipeline (the verifier's own numbered steps live in ``attestation.verify``):

1. ``Verifier.verify``: decode, limits, certificate chain to one of the trusted roots at the request time
   (chain verification cached by the verifier), COSE ES384 signature.
2. Policy: the document is at most ``max_age`` old at the request time (and not from the future), and its
   ``public_key`` is an RSA 2048/3072/4096 SubjectPublicKeyInfo (RecipientRequest.md names RSA-2048; the
   SDK can make all three).
3. The RSA key is loaded once (by the same check); the CMS ``rid`` is SHA-256 of the SPKI bytes.

Every rejection is a ValidationException naming what failed; nothing from the document is trusted before
step 1 passes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta

from cryptography import x509

from attestation.cms import RSA_KEY_SIZES
from attestation.errors import AttestationError, MalformedError, PolicyError, VerificationError
from attestation.policy import MaxAge, load_rsa_public_key
from attestation.verify import Verifier
from kms.errors import ValidationException
from kms.operations import AttestedRecipient

__all__ = ["DEFAULT_MAX_DOC_AGE", "RecipientCheck"]

#: How old a Recipient document may be. KMS publishes no rule (aws-facts §1); the SDK makes a fresh
#: document per request, so minutes are plenty.
DEFAULT_MAX_DOC_AGE = timedelta(minutes=5)

_WHAT = "Recipient.AttestationDocument"


class RecipientCheck:
    """Callable ``(document bytes, request time) -> AttestedRecipient``; ValidationException on rejection."""

    def __init__(
        self, *, roots: Sequence[bytes | x509.Certificate], max_age: timedelta = DEFAULT_MAX_DOC_AGE
    ) -> None:
        self._verifier = Verifier(roots=roots, chain_cache=True)
        self._policy = MaxAge(max_age)

    def __call__(self, data: bytes, at: datetime) -> AttestedRecipient:
        # (1) + (2)
        try:
            document = self._verifier.verify(data, at=at, policy=self._policy)
            public_key = load_rsa_public_key(document.public_key, sizes=RSA_KEY_SIZES)
        except MalformedError as error:
            raise ValidationException(f"{_WHAT} is malformed: {error}") from None
        except PolicyError as error:
            raise ValidationException(f"{_WHAT} was rejected: {error.detail}") from None
        except VerificationError as error:
            raise ValidationException(f"{_WHAT} failed verification ({error.step}): {error.detail}") from None
        except AttestationError as error:
            raise ValidationException(f"{_WHAT} could not be verified: {error}") from None
        # (3) load_rsa_public_key checked that public_key is exactly a DER SPKI, so it is not None here
        spki = document.public_key or b""
        return AttestedRecipient(
            module_id=document.module_id,
            pcrs=document.pcrs,
            public_key=public_key,
            key_id=hashlib.sha256(spki).digest(),
        )
