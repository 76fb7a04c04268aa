"""The cryptographic operations on KMS keys: Encrypt, Decrypt, data keys, data key pairs, key agreement."""

from __future__ import annotations

from collections.abc import Mapping

from kms._op import Operation

__all__ = ["CRYPTO_OPERATIONS"]

CRYPTO_OPERATIONS: Mapping[str, Operation] = {}
