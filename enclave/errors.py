"""The exceptions of the enclave SDK, one tree, branched by who is at fault.

    EnclaveError                        root: catch this to catch everything the SDK raises itself
    ├── ClientError                     KMS answered with an error: ``response["Error"]["Code"]`` is its
    │   └── <one class per code>        ``__type`` (AccessDeniedException, ValidationException, ...), reached
    │                                   as ``client.exceptions.<Name>`` as in boto3
    ├── TransportError                  no usable answer came back
    │   ├── EndpointConnectionError     could not connect (nobody listening, proxy refused, KMS down)
    │   ├── ConnectTimeoutError         connecting took longer than ``connect_timeout`` (or than what was
    │   │                               left of the attempt's bound, ``Config.attempt_timeout``)
    │   ├── ReadTimeoutError            the answer took longer than ``read_timeout``, or the attempt longer
    │   │                               than its bound (a peer dripping bytes)
    │   └── ProtocolError               the bytes that came back are not an HTTP/1.1 response we accept
    ├── ResponseError                   a 200 answer that breaks the contract (no CiphertextForRecipient,
    │                                   a plaintext member in the clear, bad JSON, bad base64)
    ├── CredentialsError                no usable credentials were configured ("Unable to locate
    │   │                               credentials")
    │   ├── ProfileNotFound             ``AWS_PROFILE`` names a profile no file has
    │   └── PartialCredentialsError     a key ID without its secret (or the reverse)
    ├── ParamValidationError            a parameter of the wrong type (checked before sending)
    └── EntropyError                    seeding the kernel entropy pool failed

Errors of the attestation core pass through unchanged: ``attestation.errors.DecryptionError`` when
CiphertextForRecipient does not open or opens to what the request rules out (the wrong number of bytes, a
data key pair that is not one; one message for every cause),
``NSMError`` from the NSM device.
Names follow botocore's (``botocore.exceptions``) so code written for boto3 reads the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "ClientError",
    "ClientExceptions",
    "ConnectTimeoutError",
    "CredentialsError",
    "EnclaveError",
    "EndpointConnectionError",
    "EntropyError",
    "ParamValidationError",
    "PartialCredentialsError",
    "ProfileNotFound",
    "ProtocolError",
    "ReadTimeoutError",
    "ResponseError",
    "TransportError",
    "error_class",
]


class EnclaveError(Exception):
    """Root of every error raised by the ``enclave`` package itself."""


class ClientError(EnclaveError):
    """KMS answered an error; shaped like botocore's ``ClientError`` (``response``, ``operation_name``)."""

    def __init__(self, error_response: Mapping[str, Any], operation_name: str) -> None:
        error = error_response.get("Error", {})
        code = error.get("Code", "Unknown")
        message = error.get("Message", "Unknown")
        super().__init__(f"An error occurred ({code}) when calling the {operation_name} operation: {message}")
        self.response = dict(error_response)
        self.operation_name = operation_name

    @property
    def code(self) -> str:
        """The error name KMS sent in ``__type`` (e.g. ``AccessDeniedException``)."""
        return str(self.response.get("Error", {}).get("Code", "Unknown"))


class TransportError(EnclaveError):
    """No usable answer came back from KMS."""


class EndpointConnectionError(TransportError):
    """Could not connect to the endpoint, or it closed the connection before answering."""

    def __init__(self, endpoint: str, reason: str) -> None:
        super().__init__(f'Could not connect to the endpoint URL: "{endpoint}": {reason}')
        self.endpoint = endpoint


class ConnectTimeoutError(TransportError):
    """Connecting took longer than the connect timeout."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(f'Connect timeout on endpoint URL: "{endpoint}"')
        self.endpoint = endpoint


class ReadTimeoutError(TransportError):
    """The response took longer than the read timeout, or the attempt longer than its bound."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(f'Read timeout on endpoint URL: "{endpoint}"')
        self.endpoint = endpoint


class ProtocolError(TransportError):
    """The bytes received are not an HTTP/1.1 response within our bounds."""


class ResponseError(EnclaveError):
    """A success response that breaks the contract of an attested operation."""


class CredentialsError(EnclaveError):
    """No usable AWS credentials were found."""


class ProfileNotFound(CredentialsError):  # noqa: N818 - botocore's name
    """``AWS_PROFILE`` names a profile that no credentials or config file defines (botocore's text)."""

    def __init__(self, profile: str) -> None:
        super().__init__(f"The config profile ({profile}) could not be found")
        self.profile = profile


class PartialCredentialsError(CredentialsError):
    """Only part of a credential pair was found (botocore's text: provider and the missing variable)."""

    def __init__(self, provider: str, missing: str) -> None:
        super().__init__(f"Partial credentials found in {provider}, missing: {missing}")
        self.provider = provider
        self.missing = missing


class EntropyError(EnclaveError):
    """Seeding the kernel entropy pool failed (no NSM, or not permitted)."""


class ParamValidationError(EnclaveError):
    """A request parameter has the wrong type (checked client-side, as botocore does)."""


#: The error names KMS answers with (botocore kms service-2.json shapes plus the common AWS errors).
KMS_ERROR_CODES = (
    "AccessDeniedException",
    "AlreadyExistsException",
    "CloudHsmClusterInUseException",
    "CloudHsmClusterInvalidConfigurationException",
    "CloudHsmClusterNotActiveException",
    "CloudHsmClusterNotFoundException",
    "CloudHsmClusterNotRelatedException",
    "ConflictException",
    "CustomKeyStoreHasCMKsException",
    "CustomKeyStoreInvalidStateException",
    "CustomKeyStoreNameInUseException",
    "CustomKeyStoreNotFoundException",
    "DependencyTimeoutException",
    "DisabledException",
    "DryRunOperationException",
    "ExpiredImportTokenException",
    "IncompleteSignatureException",
    "IncorrectKeyException",
    "IncorrectKeyMaterialException",
    "IncorrectTrustAnchorException",
    "InvalidAliasNameException",
    "InvalidArnException",
    "InvalidCiphertextException",
    "InvalidGrantIdException",
    "InvalidGrantTokenException",
    "InvalidImportTokenException",
    "InvalidKeyUsageException",
    "InvalidMarkerException",
    "InvalidSignatureException",
    "KMSInternalException",
    "KMSInvalidMacException",
    "KMSInvalidSignatureException",
    "KMSInvalidStateException",
    "KeyUnavailableException",
    "LimitExceededException",
    "MalformedPolicyDocumentException",
    "MissingAuthenticationTokenException",
    "NotFoundException",
    "RequestExpired",
    "SerializationException",
    "TagException",
    "ThrottlingException",
    "UnknownOperationException",
    "UnrecognizedClientException",
    "UnsupportedOperationException",
    "ValidationException",
    "XksKeyAlreadyInUseException",
    "XksKeyInvalidConfigurationException",
    "XksKeyNotFoundException",
)
#: Bound on the length of an error name we turn into a class.
MAX_ERROR_CODE_CHARS = 128
#: Bound on the classes made for error names (KMS's own names are created first): an endpoint answering a
#: new name on every call must not grow this table without end; past it, unknown names raise ClientError.
MAX_ERROR_CLASSES = 256

_ERROR_CLASSES: dict[str, type[ClientError]] = {}


def error_class(code: str, *, bounded: bool = True) -> type[ClientError]:
    """The ClientError subclass for error name ``code`` (one class per name, created once).

    Names from answers (``bounded``) make new classes only while fewer than :data:`MAX_ERROR_CLASSES`
    exist; past that, an unknown name raises plain ClientError. A name the program itself asks for
    (``client.exceptions.Name``) always gets its own class: if it got ClientError, an
    ``except client.exceptions.Name`` would catch every error once a hostile peer had filled the table.
    """
    cls = _ERROR_CLASSES.get(code)
    if cls is None:
        if (
            not code.isidentifier()
            or len(code) > MAX_ERROR_CODE_CHARS
            or (bounded and len(_ERROR_CLASSES) >= MAX_ERROR_CLASSES)
        ):
            return ClientError
        cls = type(code, (ClientError,), {"__module__": "enclave.errors", "__doc__": f"KMS error {code}."})
        _ERROR_CLASSES[code] = cls
    return cls


for _code in KMS_ERROR_CODES:
    error_class(_code)


_ClientErrorType = type[ClientError]


class ClientExceptions:
    """``client.exceptions``: ``client.exceptions.AccessDeniedException`` etc., plus ``ClientError``."""

    ClientError: _ClientErrorType = ClientError

    def __getattr__(self, name: str) -> _ClientErrorType:
        if name.startswith("_") or not name.isidentifier() or len(name) > MAX_ERROR_CODE_CHARS:
            raise AttributeError(name)
        return error_class(name, bounded=False)

    def from_code(self, code: str) -> _ClientErrorType:
        """The class raised for error name ``code``."""
        return error_class(code)
