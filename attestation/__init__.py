"""Attestation core: the pure library every trust boundary shares.

Owns the attestation-document model and its COSE/CBOR codec, the simulated Nitro PKI, the NSM core
(PCR bank, attestation), the verifier and its policies, the CMS ``CiphertextForRecipient`` codec, and the
simulation conventions (state home, vsock-to-path rule). It never opens a socket, starts a process or
speaks HTTP: ``enclave``, ``host`` and ``kms`` import it, never the other way round.
"""

from attestation.document import (
    AttestationDocument,
    SignedDocument,
    decode_document,
    encode_document,
    verify_signature,
)
from attestation.errors import (
    AttestationError,
    DecryptionError,
    MalformedDocumentError,
    MalformedError,
    NSMError,
    PolicyError,
    SimulationError,
    VerificationError,
)
from attestation.policy import (
    AllOf,
    AnyOf,
    MaxAge,
    Nonce,
    PCRs,
    Policy,
    RejectDebug,
    RSAPublicKey,
    UnsafeNoPolicy,
)
from attestation.verify import Verifier, aws_nitro_root

__all__ = [
    "AllOf",
    "AnyOf",
    "AttestationDocument",
    "AttestationError",
    "DecryptionError",
    "MalformedDocumentError",
    "MalformedError",
    "MaxAge",
    "NSMError",
    "Nonce",
    "PCRs",
    "Policy",
    "PolicyError",
    "RSAPublicKey",
    "RejectDebug",
    "SignedDocument",
    "SimulationError",
    "UnsafeNoPolicy",
    "VerificationError",
    "Verifier",
    "aws_nitro_root",
    "decode_document",
    "encode_document",
    "verify_signature",
]
