"""Enclave SDK: what runs inside the (simulated or real) Nitro Enclave.

Owns the vsock transport, the NSM client (simulated device or real ``/dev/nsm``), the KMS client
(SigV4, HTTP; GenerateRandom, Decrypt, GenerateDataKey(Pair) and DeriveSharedSecret with an attested
Recipient, decryption of CiphertextForRecipient), the demo enclave app and ``kmstool-enclave-cli``. It
holds no key but its own RSA key pair, which never leaves it.

    import enclave
    kms = enclave.client("kms", region_name="us-east-1")
    kms.generate_random(NumberOfBytes=32)["Plaintext"]    # decrypted here, never seen by the host
    kms.decrypt(CiphertextBlob=blob)["Plaintext"]          # attested too, as are generate_data_key,
                                                           # generate_data_key_pair, derive_shared_secret
    enclave.random_bytes(5000)                             # up to 1 MiB, in <= 1024-byte calls
    enclave.seed_entropy(1024)                             # NSM randomness into the kernel pool
"""

from enclave._config import Config, Credentials
from enclave._entropy import random_bytes, seed_entropy
from enclave.errors import ClientError, EnclaveError
from enclave.kms import KMSClient, client

__all__ = [
    "ClientError",
    "Config",
    "Credentials",
    "EnclaveError",
    "KMSClient",
    "client",
    "random_bytes",
    "seed_entropy",
]
