"""Enclave SDK: what runs inside the (simulated or real) Nitro Enclave.

Owns the vsock transport, the NSM client (simulated device or real ``/dev/nsm``), the KMS client
(SigV4, HTTP, GenerateRandom with an attested Recipient, decryption of CiphertextForRecipient), the demo
enclave app and ``kmstool-enclave-cli``. It holds no key but its own RSA key pair, which never leaves it.
"""

__all__: list[str] = []
