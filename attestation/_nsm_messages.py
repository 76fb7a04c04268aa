"""The NSM request and response messages as value objects: what the codec in :mod:`attestation.nsm_wire` reads
and writes.

One frozen, keyword-only dataclass per variant of nsm-api ``src/api/mod.rs``'s ``Request`` and ``Response``
enums (``VARIANT`` is the serde variant name on the wire), plus the ``ErrorCode`` and ``Digest`` names their
fields take. Kept apart from the codec so the shapes can be read without the CBOR details; every name here is
re-exported by :mod:`attestation.nsm_wire`, which is where callers import them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

#: ``ErrorCode`` variants, in declaration order.
ERROR_CODES = (
    "Success",
    "InvalidArgument",
    "InvalidIndex",
    "InvalidResponse",
    "ReadOnlyIndex",
    "InvalidOperation",
    "BufferTooSmall",
    "InputTooLarge",
    "InternalError",
)
#: ``Digest`` variants.
DIGESTS = ("SHA256", "SHA384", "SHA512")

# -- Requests ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DescribePCR:
    VARIANT: ClassVar[str] = "DescribePCR"
    index: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ExtendPCR:
    VARIANT: ClassVar[str] = "ExtendPCR"
    index: int
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class LockPCR:
    VARIANT: ClassVar[str] = "LockPCR"
    index: int


@dataclass(frozen=True, slots=True, kw_only=True)
class LockPCRs:
    """Lock PCRs ``[0, range)``."""

    VARIANT: ClassVar[str] = "LockPCRs"
    range: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DescribeNSM:
    VARIANT: ClassVar[str] = "DescribeNSM"


@dataclass(frozen=True, slots=True, kw_only=True)
class Attestation:
    VARIANT: ClassVar[str] = "Attestation"
    user_data: bytes | None = None
    nonce: bytes | None = None
    public_key: bytes | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class GetRandom:
    VARIANT: ClassVar[str] = "GetRandom"


Request = DescribePCR | ExtendPCR | LockPCR | LockPCRs | DescribeNSM | Attestation | GetRandom

# -- Responses -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DescribePCRResponse:
    VARIANT: ClassVar[str] = "DescribePCR"
    #: True if the PCR is read-only.
    lock: bool
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class ExtendPCRResponse:
    VARIANT: ClassVar[str] = "ExtendPCR"
    #: The PCR's value after the extension.
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class LockPCRResponse:
    VARIANT: ClassVar[str] = "LockPCR"


@dataclass(frozen=True, slots=True, kw_only=True)
class LockPCRsResponse:
    VARIANT: ClassVar[str] = "LockPCRs"


@dataclass(frozen=True, slots=True, kw_only=True)
class DescribeNSMResponse:
    VARIANT: ClassVar[str] = "DescribeNSM"
    version_major: int
    version_minor: int
    version_patch: int
    module_id: str
    max_pcrs: int
    #: Sorted indices of the read-only PCRs (a ``BTreeSet<u16>`` on the wire: a sorted array).
    locked_pcrs: tuple[int, ...]
    digest: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AttestationResponse:
    VARIANT: ClassVar[str] = "Attestation"
    #: The COSE_Sign1 attestation document.
    document: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class GetRandomResponse:
    VARIANT: ClassVar[str] = "GetRandom"
    random: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorResponse:
    VARIANT: ClassVar[str] = "Error"
    #: An ``ErrorCode`` name, e.g. ``"InvalidIndex"``.
    code: str

    def __post_init__(self) -> None:
        if self.code not in ERROR_CODES:
            raise ValueError(f"unknown NSM error code {self.code!r}")


Response = (
    DescribePCRResponse
    | ExtendPCRResponse
    | LockPCRResponse
    | LockPCRsResponse
    | DescribeNSMResponse
    | AttestationResponse
    | GetRandomResponse
    | ErrorResponse
)
