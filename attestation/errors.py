"""The exceptions of the attestation core, one tree, branched by who is at fault.

    AttestationError                 root: catch this to catch everything we raise
    ├── MalformedError               the bytes do not parse, or break a documented size or type rule
    │   ├── MalformedDocumentError   ... an attestation document (CBOR, COSE_Sign1, payload fields)
    │   └── MalformedNSMMessageError ... an NSM request or response on the wire
    ├── VerificationError            parsed fine, but not trustworthy; ``step`` names the pipeline step
    │   └── PolicyError              ... trustworthy, but the caller's policy refuses it
    ├── DecryptionError              CiphertextForRecipient could not be opened (one message for all causes)
    ├── NSMError                     the NSM answered with an error code (``code``: nsm-api ErrorCode name)
    └── SimulationError              the simulation's own state is unusable (home, PKI files, socket paths)

Exceptions of cbor2, asn1crypto and cryptography are turned into these at the boundary; theirs never
escape a public function of this package.
"""

from __future__ import annotations


class AttestationError(Exception):
    """Root of every error raised by the ``attestation`` package."""


class MalformedError(AttestationError):
    """Input bytes do not decode, or break a documented size, type or count rule."""


class MalformedDocumentError(MalformedError):
    """An attestation document is not a well-formed NSM COSE_Sign1 document."""


class MalformedNSMMessageError(MalformedError):
    """An NSM request or response is not in the nsm-api CBOR wire shape."""


class VerificationError(AttestationError):
    """A well-formed document failed verification at pipeline step ``step``."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step
        self.detail = message


class PolicyError(VerificationError):
    """A verified document does not satisfy the caller's policy."""

    def __init__(self, message: str) -> None:
        super().__init__("policy", message)


class DecryptionError(AttestationError):
    """CiphertextForRecipient could not be decrypted.

    Deliberately opaque: every CMS, RSA-OAEP, AES and padding failure raises this one type with this one
    message, so a caller cannot be used as an oracle.
    """

    MESSAGE = "unable to decrypt CiphertextForRecipient"

    def __init__(self) -> None:
        super().__init__(self.MESSAGE)


class NSMError(AttestationError):
    """The NSM answered ``Error(code)``; ``code`` is the nsm-api ErrorCode name, e.g. ``"InvalidIndex"``."""

    def __init__(self, code: str, message: str | None = None) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code


class SimulationError(AttestationError):
    """The simulation's own state (NITRO_SIM_HOME, PKI files, socket paths) is unusable."""
