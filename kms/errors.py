"""The errors kms-sim answers with: one class per AWS error name, each with its HTTP status.

    KMSError                                 root: ``code`` (the ``__type``), ``status``, ``message``
    ├── client faults (HTTP 400, never retried by SDKs unless the name says throttling)
    │   ├── UnknownOperationException, SerializationException, ValidationException
    │   ├── MissingAuthenticationTokenException, IncompleteSignatureException,
    │   │   InvalidSignatureException, UnrecognizedClientException, AccessDeniedException
    │   ├── ThrottlingException
    │   └── the custom-key-store family (CustomKeyStore*, CloudHsmCluster*, Unsupported...)
    └── server faults (``fault: true`` in the KMS model, HTTP 500: SDKs retry them)
        ├── KMSInternalException
        └── DependencyTimeoutException

Sources: botocore kms service-2.json (names, fault flags), aws-facts §1 (status codes, body shape).
Messages are one line and never carry key material or plaintext.
"""

# ruff: noqa: N818 - class names are the AWS error names on the wire (``__type``)
from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AccessDeniedException",
    "AlreadyExistsException",
    "CloudHsmClusterInUseException",
    "CloudHsmClusterNotFoundException",
    "CustomKeyStoreHasCMKsException",
    "CustomKeyStoreInvalidStateException",
    "CustomKeyStoreNameInUseException",
    "CustomKeyStoreNotFoundException",
    "DependencyTimeoutException",
    "DisabledException",
    "DryRunOperationException",
    "IncompleteSignatureException",
    "IncorrectKeyException",
    "InvalidAliasNameException",
    "InvalidArnException",
    "InvalidCiphertextException",
    "InvalidGrantTokenException",
    "InvalidKeyUsageException",
    "InvalidMarkerException",
    "InvalidSignatureException",
    "KMSError",
    "KMSInternalException",
    "KMSInvalidStateException",
    "KeyUnavailableException",
    "LimitExceededException",
    "MalformedPolicyDocumentException",
    "MissingAuthenticationTokenException",
    "NotFoundException",
    "SerializationException",
    "ThrottlingException",
    "UnknownOperationException",
    "UnrecognizedClientException",
    "UnsupportedOperationException",
    "ValidationException",
]


class KMSError(Exception):
    """An error answered on the wire as ``{"__type": code, "message": message}`` with HTTP ``status``."""

    code: ClassVar[str] = "KMSError"
    status: ClassVar[int] = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls.code = cls.__name__


class UnknownOperationException(KMSError):
    """``X-Amz-Target`` names no operation we serve."""


class SerializationException(KMSError):
    """The body is not JSON, or a member has the wrong JSON type."""


class ValidationException(KMSError):
    """A member breaks a model constraint, or a Recipient's document is rejected."""


class MissingAuthenticationTokenException(KMSError):
    """No SigV4 ``Authorization`` header."""


class IncompleteSignatureException(KMSError):
    """A malformed ``Authorization`` or ``X-Amz-Date`` header."""


class InvalidSignatureException(KMSError):
    """Wrong signature, or a request outside the allowed clock skew."""


class UnrecognizedClientException(KMSError):
    """The access key is not in the credentials file."""


class AccessDeniedException(KMSError):
    """The caller's policy does not allow the action."""


class ThrottlingException(KMSError):
    """Over the configured request rate (SDKs retry this name)."""


class UnsupportedOperationException(KMSError):
    """The operation is not valid for this resource (e.g. GenerateRandom in an external key store)."""


class CustomKeyStoreNotFoundException(KMSError):
    """No custom key store has this ID or name."""


class CustomKeyStoreInvalidStateException(KMSError):
    """The key store's ConnectionState does not allow the operation."""


class CustomKeyStoreNameInUseException(KMSError):
    """Another key store has this name."""


class CustomKeyStoreHasCMKsException(KMSError):
    """The key store still holds KMS keys (never in the simulation: it holds none)."""


class CloudHsmClusterNotFoundException(KMSError):
    """The CloudHSM cluster ID is not one the simulation knows."""


class CloudHsmClusterInUseException(KMSError):
    """Another key store is already associated with this cluster."""


class LimitExceededException(KMSError):
    """Over the per-account number of custom key stores."""


class InvalidMarkerException(KMSError):
    """A pagination Marker we did not issue."""


class KMSInternalException(KMSError):
    """An internal failure (also injected on request for retry tests)."""

    status = 500


class DependencyTimeoutException(KMSError):
    """A dependency (the simulated HSM) did not answer in time."""

    status = 500


class NotFoundException(KMSError):
    """The key, alias or other resource named does not exist."""


class AlreadyExistsException(KMSError):
    """An alias of this name already exists."""


class InvalidAliasNameException(KMSError):
    """An alias name that breaks the rules (``alias/`` prefix, ``alias/aws/`` reserved)."""


class InvalidArnException(KMSError):
    """A malformed key or alias ARN."""


class MalformedPolicyDocumentException(KMSError):
    """A key policy that is not valid JSON or not in the documented shape."""


class DisabledException(KMSError):
    """The key is disabled."""


class KMSInvalidStateException(KMSError):
    """The key's state (e.g. PendingDeletion) does not allow the operation."""


class InvalidCiphertextException(KMSError):
    """A ciphertext blob that does not open: changed, another key's, or another EncryptionContext's."""


class IncorrectKeyException(KMSError):
    """The KeyId given to Decrypt is not the key that encrypted the ciphertext."""


class InvalidKeyUsageException(KMSError):
    """The key's KeyUsage or KeySpec does not allow the operation or algorithm."""


class InvalidGrantTokenException(KMSError):
    """A grant token that is not valid."""


class DryRunOperationException(KMSError):
    """A DryRun request that would have succeeded (HTTP 412)."""

    status = 412


class KeyUnavailableException(KMSError):
    """The key material is unavailable (fault: true in the model)."""

    status = 500
