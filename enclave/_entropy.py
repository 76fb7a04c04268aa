"""Randomness helpers: ``random_bytes`` (attested, from KMS) and ``seed_entropy`` (NSM into the kernel pool).

``seed_entropy`` follows aws-nitro-enclaves-sdk-c ``aws_nitro_enclaves_library_seed_entropy`` (aws-facts §6):
NSM GetRandom in chunks of at most 256 bytes, each credited to the kernel pool. We use the single
``RNDADDENTROPY`` ioctl (mix and credit at once), which needs CAP_SYS_ADMIN; without it the call fails
with a clear EntropyError rather than pretending the pool was seeded.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import threading
from pathlib import Path

from enclave.errors import EntropyError
from enclave.kms import KMSClient, NSMDevice, check_random_length, client, open_default_nsm

__all__ = ["random_bytes", "seed_entropy"]

#: linux/random.h: ``RNDADDENTROPY = _IOW('R', 0x03, int[2])``.
RNDADDENTROPY = 0x40085203
#: NSM GetRandom returns at most 256 bytes per call (``NSM_RANDOM_REQ_SIZE``).
MAX_NSM_RANDOM_CHUNK = 256
#: Bound on one seed_entropy call (the SDK's tools seed 1024 bytes).
MAX_SEED_BYTES = 1024 * 1024
DEFAULT_RANDOM_DEVICE = Path("/dev/random")

_default_client: KMSClient | None = None
_default_lock = threading.Lock()


def _shared_client() -> KMSClient:
    global _default_client  # noqa: PLW0603 - one lazily made client per process
    with _default_lock:
        if _default_client is None:
            _default_client = client("kms")
        return _default_client


def random_bytes(n: int, *, kms: KMSClient | None = None) -> bytes:
    """``n`` attested random bytes (``0 <= n <= MAX_RANDOM_BYTES``), in GenerateRandom calls of <= 1024.

    Uses ``kms`` or a process-wide default client (``enclave.client("kms")``, made on first use). A bad
    ``n`` is a ValueError before any client is made.
    """
    check_random_length(n)
    return (kms or _shared_client()).random_bytes(n)


def seed_entropy(n: int, *, nsm: NSMDevice | None = None, device: Path = DEFAULT_RANDOM_DEVICE) -> int:
    """Add ``n`` bytes of NSM randomness to the kernel pool (credited); return ``n``.

    Raises EntropyError with a one-line reason if the NSM gives nothing or the kernel refuses.
    """
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_SEED_BYTES:
        raise ValueError(f"n must be an integer in 0..{MAX_SEED_BYTES}")
    source = nsm or open_default_nsm()
    try:
        fd = os.open(device, os.O_WRONLY)
    except OSError as exc:
        raise EntropyError(f"cannot open {device} for writing: {exc.strerror}") from None
    try:
        left = n
        while left > 0:
            chunk = source.get_random()[: min(left, MAX_NSM_RANDOM_CHUNK)]
            if not chunk:
                raise EntropyError("the NSM returned no random bytes")
            request = struct.pack("ii", len(chunk) * 8, len(chunk)) + chunk
            try:
                fcntl.ioctl(fd, RNDADDENTROPY, request)
            except OSError as exc:
                if exc.errno == errno.EPERM:
                    raise EntropyError(
                        "adding entropy to the kernel pool is not permitted "
                        "(RNDADDENTROPY needs CAP_SYS_ADMIN)"
                    ) from None
                raise EntropyError(f"{device} refused RNDADDENTROPY: {exc.strerror}") from None
            left -= len(chunk)
    finally:
        os.close(fd)
    return n
