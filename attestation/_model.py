"""The attestation document's payload: its model and the syntactic rules every document must meet.

A :class:`AttestationDocument` is checked when it is made, whether decoded (:mod:`attestation.document`)
or constructed (the NSM simulator): types, non-emptiness and the AWS size limits of
``attestation_process.md`` §3.2 (aws-facts.md §3). Nothing here says a document is authentic; only
:mod:`attestation.verify` does. :mod:`attestation.document` re-exports everything public here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from itertools import repeat
from operator import attrgetter
from types import MappingProxyType

from attestation._cbor import shown
from attestation.errors import MalformedDocumentError

# -- Named bounds (attestation_process.md "Validation" and the CDDL; nsm-api) ------------------------------
#: ``certificate`` and each ``cabundle`` entry: ``bstr .size (1..1024)``.
MAX_CERTIFICATE_BYTES = 1024
#: ``public_key``, ``user_data``, ``nonce``: ``bstr .size (0..1024)`` in the CDDL; a real AWS document
#: carries 1024 bytes of each (test vector nitro-2024-09-07-blocky-prod-maxfields).
MAX_OPTIONAL_FIELD_BYTES = 1024
#: ``pcrs``: ``1..32`` entries with indices in ``[0, 32)``.
MAX_PCRS = 32
#: PCR values are 32, 48 or 64 bytes (SHA-256/384/512); Nitro uses SHA-384.
PCR_SIZES = frozenset({32, 48, 64})
#: cabundle length: AWS chains have 4 (root, regional, zonal, instance); leave room, but bound it.
MAX_CABUNDLE = 8
#: ``module_id`` is a non-empty text; NsmDescription keeps at most 100 bytes of it.
MAX_MODULE_ID_BYTES = 100
#: The only digest the NSM reports.
DIGEST = "SHA384"
#: Payload keys in the order the NSM writes them.
FIELD_ORDER = (
    "module_id",
    "digest",
    "timestamp",
    "pcrs",
    "certificate",
    "cabundle",
    "public_key",
    "user_data",
    "nonce",
)
REQUIRED_FIELDS = frozenset(FIELD_ORDER[:6])
KNOWN_FIELDS = frozenset(FIELD_ORDER)
MAX_U64 = 2**64 - 1


@dataclass(frozen=True, slots=True, kw_only=True)
class AttestationDocument:
    """The payload of an NSM attestation document. Verified only if :mod:`attestation.verify` returned it."""

    module_id: str
    digest: str
    #: Milliseconds since the UNIX epoch, as the NSM writes it.
    timestamp: int
    pcrs: Mapping[int, bytes]
    #: The leaf certificate (DER) whose key signed the document.
    certificate: bytes
    #: DER certificates, root first: ``[ROOT, INTERM_1, ..., INTERM_N]``.
    cabundle: tuple[bytes, ...]
    public_key: bytes | None = None
    user_data: bytes | None = None
    nonce: bytes | None = None

    def __post_init__(self) -> None:
        check_fields(self)
        # Freeze the PCR map so a document can be shared between threads and cached safely.
        object.__setattr__(self, "pcrs", MappingProxyType(dict(sorted(self.pcrs.items()))))

    @property
    def issued_at(self) -> datetime:
        """``timestamp`` as an aware UTC datetime."""
        return datetime.fromtimestamp(self.timestamp / 1000, tz=UTC)

    @property
    def debug_mode(self) -> bool:
        """True when PCR0, PCR1 and PCR2 are all zero, as for an enclave run with ``--debug-mode``."""
        return all(not any(self.pcrs.get(i, b"\0")) for i in (0, 1, 2))


_SET = object.__setattr__
_NAMES = tuple(f.name for f in fields(AttestationDocument))
_VALUES = attrgetter(*_NAMES)


def with_timestamp(doc: AttestationDocument, timestamp: int) -> AttestationDocument:
    """``doc`` with another ``timestamp``, without re-running the checks ``doc`` passed when it was made.

    Only for a ``timestamp`` already known to be an ``int`` in ``1..MAX_U64`` (the one field that
    changes); every other field is ``doc``'s own (immutable) object, so the result is exactly what
    ``AttestationDocument(**fields, timestamp=timestamp)`` would build. The slots are set by C-level
    passes, as the frozen dataclass's ``__init__`` sets them (``object.__setattr__``).
    """
    new = object.__new__(AttestationDocument)
    any(map(_SET, repeat(new), _NAMES, _VALUES(doc)))  # each call returns None: all of them run
    _SET(new, "timestamp", timestamp)
    return new


def fail(message: str) -> MalformedDocumentError:
    return MalformedDocumentError(message)


def check_bytes(name: str, value: object, low: int, high: int) -> bytes:
    if not isinstance(value, bytes):
        raise fail(f"{name} must be a byte string, got {type(value).__name__}")
    if not low <= len(value) <= high:
        raise fail(f"{name} is {len(value)} bytes, allowed {low}..{high}")
    return value


def check_fields(doc: AttestationDocument) -> None:
    """The syntactic checks of attestation_process.md §3.2, run for decoded and constructed documents."""
    if fields_plainly_valid(doc):
        return
    check_fields_strictly(doc)


_INT = frozenset({int})
_BYTES = frozenset({bytes})


def fields_plainly_valid(doc: AttestationDocument) -> bool:
    """True only if :func:`check_fields_strictly` would pass, tested with exact built-in types.

    A decoded document holds plain ``str``/``int``/``bytes``/``dict``/``tuple`` values, so exact ``type()``
    tests (no ABC ``isinstance`` machinery) settle the common case; anything else (a subclass, a Mapping
    that is not a dict, a value out of bounds) returns False and the strict checks decide and word the error.
    """
    module_id, timestamp, pcrs, certificate, cabundle = (
        doc.module_id,
        doc.timestamp,
        doc.pcrs,
        doc.certificate,
        doc.cabundle,
    )
    if (
        type(module_id) is not str
        or not module_id
        or not module_id.isascii()  # then its UTF-8 length is len(); others go the strict way
        or len(module_id) > MAX_MODULE_ID_BYTES
        or doc.digest != DIGEST
        or type(timestamp) is not int
        or not 0 < timestamp <= MAX_U64
        or type(pcrs) is not dict
        or not 1 <= len(pcrs) <= MAX_PCRS
        or type(certificate) is not bytes
        or not 1 <= len(certificate) <= MAX_CERTIFICATE_BYTES
        or type(cabundle) is not tuple
        or not 1 <= len(cabundle) <= MAX_CABUNDLE
    ):
        return False
    # Element checks as C-level passes (map/set/min/max) rather than a bytecode loop per PCR and cert.
    values = pcrs.values()
    return (
        set(map(type, pcrs)) == _INT
        and min(pcrs) >= 0
        and max(pcrs) < MAX_PCRS
        and set(map(type, values)) == _BYTES
        and set(map(len, values)) <= PCR_SIZES
        and set(map(type, cabundle)) == _BYTES
        and min(map(len, cabundle)) >= 1
        and max(map(len, cabundle)) <= MAX_CERTIFICATE_BYTES
        and _optional_plainly_valid(doc.public_key)
        and _optional_plainly_valid(doc.user_data)
        and _optional_plainly_valid(doc.nonce)
    )


def _optional_plainly_valid(value: object) -> bool:
    return value is None or (type(value) is bytes and len(value) <= MAX_OPTIONAL_FIELD_BYTES)


def check_fields_strictly(doc: AttestationDocument) -> None:
    if not isinstance(doc.module_id, str) or not doc.module_id:
        raise fail("module_id must be a non-empty text string")
    if len(doc.module_id.encode()) > MAX_MODULE_ID_BYTES:
        raise fail(f"module_id is longer than {MAX_MODULE_ID_BYTES} bytes")
    if doc.digest != DIGEST:
        raise fail(f"digest must be {DIGEST!r}, got {shown(doc.digest)}")
    # "timestamp: uint .size 8" and "timestamp > 0".
    if isinstance(doc.timestamp, bool) or not isinstance(doc.timestamp, int):
        raise fail("timestamp must be an unsigned integer")
    if not 0 < doc.timestamp <= MAX_U64:
        raise fail(f"timestamp must be in 1..2^64-1, got {shown(doc.timestamp)}")
    if not isinstance(doc.pcrs, Mapping) or not 1 <= len(doc.pcrs) <= MAX_PCRS:
        raise fail(f"pcrs must be a map of 1..{MAX_PCRS} entries")
    for index, value in doc.pcrs.items():
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < MAX_PCRS:
            raise fail(f"pcrs key {shown(index)} is not an index in 0..{MAX_PCRS - 1}")
        if not isinstance(value, bytes) or len(value) not in PCR_SIZES:
            size = len(value) if isinstance(value, bytes) else type(value).__name__
            raise fail(f"pcrs[{index}] must be 32, 48 or 64 bytes, got {size}")
    check_bytes("certificate", doc.certificate, 1, MAX_CERTIFICATE_BYTES)
    if not isinstance(doc.cabundle, tuple) or not 1 <= len(doc.cabundle) <= MAX_CABUNDLE:
        raise fail(f"cabundle must hold 1..{MAX_CABUNDLE} certificates")
    for i, cert in enumerate(doc.cabundle):
        check_bytes(f"cabundle[{i}]", cert, 1, MAX_CERTIFICATE_BYTES)
    for name in ("public_key", "user_data", "nonce"):
        value = getattr(doc, name)
        if value is not None:
            check_bytes(name, value, 0, MAX_OPTIONAL_FIELD_BYTES)
