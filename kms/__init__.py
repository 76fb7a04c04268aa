"""KMS service (``kms-sim``): the remote party that hands out attested random bytes and keeps KMS keys.

Owns the awsJson1_1 HTTP front (ASGI), SigV4 authentication, the operations (GenerateRandom and the
custom-key-store family in kms.operations; KMS keys, aliases and key policies in kms.key_admin and kms.keys;
Encrypt, Decrypt, GenerateDataKey*, GenerateDataKeyPair*, DeriveSharedSecret in kms.crypto_ops, ReEncrypt in
kms.reencrypt, on the ciphertext format of kms.ciphertext), IAM-style and key policies with the
``kms:RecipientAttestation:*`` and ``kms:EncryptionContext*`` condition keys (kms.iam, kms.keypolicy), the
audit log and its state under ``NITRO_SIM_HOME`` (keys.db, keystores.db). It trusts nothing the host says: a
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
