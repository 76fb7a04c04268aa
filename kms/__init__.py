"""KMS service (``kms-sim``): the remote party that hands out attested random bytes.

Owns the awsJson1_1 HTTP front (ASGI), SigV4 authentication, the operations (GenerateRandom and the
custom-key-store family), IAM-style policy with the ``kms:RecipientAttestation:*`` condition keys, key
stores, the audit log and its state under ``NITRO_SIM_HOME``. It trusts nothing the host says: a
Recipient's attestation document is verified against pinned roots before anything is encrypted to it.
"""

from kms.app import KMSApp, create_app
from kms.errors import KMSError
from kms.server import Settings, build_service
from kms.service import Request, Response, Service

__all__ = [
    "KMSApp",
    "KMSError",
    "Request",
    "Response",
    "Service",
    "Settings",
    "build_service",
    "create_app",
]
