"""The NSM request/response wire format: pure CBOR codec, no I/O (sans-IO).

Shapes follow aws-nitro-enclaves-nsm-api ``src/api/mod.rs`` (``Request``, ``Response``, ``ErrorCode``,
``Digest``), serialized as serde does for an externally tagged enum (aws-facts.md §3, "NSM request/response
API"):

- a unit variant is its name as a text string: ``"DescribeNSM"``, ``"GetRandom"``, ``"LockPCR"``;
- a struct variant is a one-entry map from its name to a map of its fields, in declaration order:
  ``{"ExtendPCR": {"index": 16, "data": h'...'}}``;
- ``Vec<u8>``/``ByteBuf`` fields are byte strings, ``Option`` fields are ``null`` when absent;
- the newtype variant ``Error(ErrorCode)`` is ``{"Error": "InvalidIndex"}``.

Decoding is strict (one item, no trailing bytes, no duplicate or unknown keys, integer ranges of the Rust
types) except where serde itself is lenient: an ``Option`` field may be missing (read as ``None``).
Every decoding failure raises :class:`MalformedNSMMessageError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cbor2

from attestation._cbor import shown, strict_loads
from attestation._nsm_fast import (
    _ATTESTATION_REQUEST_PARTS,
    _ATTESTATION_RESPONSE_HEAD,
    _fast_attestation_request,
    _fast_attestation_response,
)
from attestation._nsm_messages import (
    DIGESTS,
    ERROR_CODES,
    Attestation,
    AttestationResponse,
    DescribeNSM,
    DescribeNSMResponse,
    DescribePCR,
    DescribePCRResponse,
    ErrorResponse,
    ExtendPCR,
    ExtendPCRResponse,
    GetRandom,
    GetRandomResponse,
    LockPCR,
    LockPCRResponse,
    LockPCRs,
    LockPCRsResponse,
    Request,
    Response,
)
from attestation.errors import MalformedNSMMessageError

__all__ = [
    "DIGESTS",
    "ERROR_CODES",
    "FRAME_HEADER_BYTES",
    "MAX_LOCKED_PCRS",
    "MAX_MODULE_ID_BYTES",
    "MAX_PCR_BYTES",
    "MAX_REQUEST_BYTES",
    "MAX_RESPONSE_BYTES",
    "MAX_U16",
    "Attestation",
    "AttestationResponse",
    "DescribeNSM",
    "DescribeNSMResponse",
    "DescribePCR",
    "DescribePCRResponse",
    "ErrorResponse",
    "ExtendPCR",
    "ExtendPCRResponse",
    "GetRandom",
    "GetRandomResponse",
    "LockPCR",
    "LockPCRResponse",
    "LockPCRs",
    "LockPCRsResponse",
    "Request",
    "Response",
    "decode_request",
    "decode_response",
    "encode_frame",
    "encode_request",
    "encode_response",
    "frame_length",
]

# -- Named bounds (nsm-api src/driver/mod.rs) ----------------------------------------------------------------
#: ``NSM_REQUEST_MAX_SIZE``: a larger request is answered with ``InputTooLarge``.
MAX_REQUEST_BYTES = 0x1000
#: ``NSM_RESPONSE_MAX_SIZE``: the response buffer the driver hands to the device.
MAX_RESPONSE_BYTES = 0x3000
#: PCR indices, lock ranges and versions are ``u16``.
MAX_U16 = 0xFFFF
#: Simulated-device framing (interfaces.md): a 4-byte big-endian length, then the CBOR body.
FRAME_HEADER_BYTES = 4
#: PCR values: a ``Vec<u8>`` of the digest's size; we accept at most SHA-512's.
MAX_PCR_BYTES = 64
#: Bound on ``module_id`` and ``locked_pcrs`` in a DescribeNSM response (the C library's NsmDescription).
MAX_MODULE_ID_BYTES = 100
MAX_LOCKED_PCRS = 64


def _fail(message: str) -> MalformedNSMMessageError:
    return MalformedNSMMessageError(message)


# -- Framing (simulated device transport) ------------------------------------------------------------------


def encode_frame(body: bytes) -> bytes:
    """One message on the simulated device's stream: 4-byte big-endian length, then the body."""
    return len(body).to_bytes(FRAME_HEADER_BYTES, "big") + body


def frame_length(header: bytes) -> int:
    """The body length announced by a 4-byte frame header."""
    if len(header) != FRAME_HEADER_BYTES:
        raise _fail(f"frame header must be {FRAME_HEADER_BYTES} bytes")
    return int.from_bytes(header, "big")


# -- Encoding ------------------------------------------------------------------------------------------------

_UNIT_REQUESTS: dict[str, type[DescribeNSM | GetRandom]] = {
    DescribeNSM.VARIANT: DescribeNSM,
    GetRandom.VARIANT: GetRandom,
}
_UNIT_RESPONSES: dict[str, type[LockPCRResponse | LockPCRsResponse]] = {
    LockPCRResponse.VARIANT: LockPCRResponse,
    LockPCRsResponse.VARIANT: LockPCRsResponse,
}


def _body(message: Request | Response) -> Any:
    if isinstance(message, DescribePCR | LockPCR):
        return {"index": message.index}
    if isinstance(message, ExtendPCR):
        return {"index": message.index, "data": message.data}
    if isinstance(message, LockPCRs):
        return {"range": message.range}
    if isinstance(message, Attestation):
        return {"user_data": message.user_data, "nonce": message.nonce, "public_key": message.public_key}
    if isinstance(message, DescribePCRResponse):
        return {"lock": message.lock, "data": message.data}
    if isinstance(message, ExtendPCRResponse):
        return {"data": message.data}
    if isinstance(message, DescribeNSMResponse):
        return {
            "version_major": message.version_major,
            "version_minor": message.version_minor,
            "version_patch": message.version_patch,
            "module_id": message.module_id,
            "max_pcrs": message.max_pcrs,
            "locked_pcrs": sorted(message.locked_pcrs),
            "digest": message.digest,
        }
    if isinstance(message, AttestationResponse):
        return {"document": message.document}
    if isinstance(message, GetRandomResponse):
        return {"random": message.random}
    if isinstance(message, ErrorResponse):
        return message.code
    raise TypeError(f"not an NSM message: {type(message).__name__}")


# The attestation messages are spliced around their byte strings (the constant parts are in _nsm_fast).
def _encode(message: Request | Response) -> bytes:
    if type(message) is AttestationResponse:
        return _ATTESTATION_RESPONSE_HEAD + cbor2.dumps(message.document)
    if type(message) is Attestation:
        user_data_key, nonce_key, public_key_key = _ATTESTATION_REQUEST_PARTS
        return b"".join(
            (
                user_data_key,
                cbor2.dumps(message.user_data),
                nonce_key,
                cbor2.dumps(message.nonce),
                public_key_key,
                cbor2.dumps(message.public_key),
            )
        )
    if isinstance(message, DescribeNSM | GetRandom | LockPCRResponse | LockPCRsResponse):
        return cbor2.dumps(message.VARIANT)
    return cbor2.dumps({message.VARIANT: _body(message)})


def encode_request(request: Request) -> bytes:
    """CBOR bytes of ``request`` as nsm-api's client sends them."""
    return _encode(request)


def encode_response(response: Response) -> bytes:
    """CBOR bytes of ``response`` as the NSM answers."""
    return _encode(response)


# -- Decoding ------------------------------------------------------------------------------------------------


#: Marks a message sent as a bare variant name (a unit variant), as opposed to a map whose value is null.
_UNIT = object()


def _split(data: bytes, *, what: str, limit: int) -> tuple[str, Any]:
    if isinstance(data, bytes | bytearray | memoryview) and len(data) > limit:
        raise _fail(f"{what} is {len(data)} bytes, over the {limit}-byte limit")
    value = strict_loads(data, what=what, error=MalformedNSMMessageError)
    if isinstance(value, str):
        return value, _UNIT
    if isinstance(value, Mapping) and len(value) == 1:
        ((variant, body),) = value.items()
        if isinstance(variant, str):
            return variant, body
    raise _fail(f"{what} must be a variant name or a one-entry map from a variant name to its fields")


def _fields(
    variant: str, body: Any, required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> dict[str, Any]:
    if not isinstance(body, Mapping):
        raise _fail(f"{variant}: fields must be a map")
    unknown = [k for k in body if k not in required and k not in optional]
    if unknown:
        raise _fail(f"{variant}: unknown field {shown(unknown[0])}")
    missing = [k for k in required if k not in body]
    if missing:
        raise _fail(f"{variant}: missing field {missing[0]!r}")
    out = dict(body)
    for name in optional:
        out.setdefault(name, None)
    return out


def _u16(variant: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_U16:
        raise _fail(f"{variant}.{name} must be an integer in 0..{MAX_U16}")
    return value


def _bytes(variant: str, name: str, value: Any, *, optional: bool = False, limit: int | None = None) -> Any:
    if value is None and optional:
        return None
    if not isinstance(value, bytes):
        raise _fail(f"{variant}.{name} must be a byte string")
    if limit is not None and len(value) > limit:
        raise _fail(f"{variant}.{name} is {len(value)} bytes, over the {limit}-byte limit")
    return value


def decode_request(data: bytes) -> Request:
    """Parse an NSM request; raise :class:`MalformedNSMMessageError` if it is not one."""
    if type(data) is bytes and len(data) <= MAX_REQUEST_BYTES:
        fast = _fast_attestation_request(data)
        if fast is not None:
            return fast
    variant, body = _split(data, what="NSM request", limit=MAX_REQUEST_BYTES)
    if body is _UNIT:
        if variant in _UNIT_REQUESTS:
            return _UNIT_REQUESTS[variant]()
        raise _fail(f"unknown NSM request {variant!r}")
    if variant in ("DescribePCR", "LockPCR"):
        f = _fields(variant, body, ("index",))
        index = _u16(variant, "index", f["index"])
        return DescribePCR(index=index) if variant == "DescribePCR" else LockPCR(index=index)
    if variant == "ExtendPCR":
        f = _fields(variant, body, ("index", "data"))
        return ExtendPCR(index=_u16(variant, "index", f["index"]), data=_bytes(variant, "data", f["data"]))
    if variant == "LockPCRs":
        f = _fields(variant, body, ("range",))
        return LockPCRs(range=_u16(variant, "range", f["range"]))
    if variant == "Attestation":
        f = _fields(variant, body, (), ("user_data", "nonce", "public_key"))
        return Attestation(
            user_data=_bytes(variant, "user_data", f["user_data"], optional=True),
            nonce=_bytes(variant, "nonce", f["nonce"], optional=True),
            public_key=_bytes(variant, "public_key", f["public_key"], optional=True),
        )
    if variant in _UNIT_REQUESTS:
        raise _fail(f"{variant} takes no fields: it is sent as the text {variant!r}")
    raise _fail(f"unknown NSM request {variant!r}")


def decode_response(data: bytes) -> Response:
    """Parse an NSM response; raise :class:`MalformedNSMMessageError` if it is not one."""
    if type(data) is bytes and len(data) <= MAX_RESPONSE_BYTES:
        fast = _fast_attestation_response(data)
        if fast is not None:
            return fast
    variant, body = _split(data, what="NSM response", limit=MAX_RESPONSE_BYTES)
    if body is _UNIT:
        if variant in _UNIT_RESPONSES:
            return _UNIT_RESPONSES[variant]()
        raise _fail(f"unknown NSM response {variant!r}")
    if variant == "Error":
        if not isinstance(body, str) or body not in ERROR_CODES:
            raise _fail(f"Error: unknown error code {shown(body)}")
        return ErrorResponse(code=body)
    if variant == "DescribePCR":
        f = _fields(variant, body, ("lock", "data"))
        if not isinstance(f["lock"], bool):
            raise _fail("DescribePCR.lock must be a boolean")
        return DescribePCRResponse(
            lock=f["lock"], data=_bytes(variant, "data", f["data"], limit=MAX_PCR_BYTES)
        )
    if variant == "ExtendPCR":
        f = _fields(variant, body, ("data",))
        return ExtendPCRResponse(data=_bytes(variant, "data", f["data"], limit=MAX_PCR_BYTES))
    if variant == "DescribeNSM":
        names = ("version_major", "version_minor", "version_patch", "module_id", "max_pcrs", "locked_pcrs")
        f = _fields(variant, body, (*names, "digest"))
        module_id = f["module_id"]
        if not isinstance(module_id, str) or len(module_id.encode()) > MAX_MODULE_ID_BYTES:
            raise _fail(f"DescribeNSM.module_id must be text of at most {MAX_MODULE_ID_BYTES} bytes")
        locked = f["locked_pcrs"]
        if not isinstance(locked, list | tuple) or len(locked) > MAX_LOCKED_PCRS:
            raise _fail(f"DescribeNSM.locked_pcrs must be an array of at most {MAX_LOCKED_PCRS} indices")
        indices = tuple(_u16(variant, "locked_pcrs", i) for i in locked)
        if list(indices) != sorted(set(indices)):
            raise _fail("DescribeNSM.locked_pcrs must be sorted and without duplicates (a BTreeSet)")
        if f["digest"] not in DIGESTS:
            raise _fail(f"DescribeNSM.digest must be one of {', '.join(DIGESTS)}")
        return DescribeNSMResponse(
            version_major=_u16(variant, "version_major", f["version_major"]),
            version_minor=_u16(variant, "version_minor", f["version_minor"]),
            version_patch=_u16(variant, "version_patch", f["version_patch"]),
            module_id=module_id,
            max_pcrs=_u16(variant, "max_pcrs", f["max_pcrs"]),
            locked_pcrs=indices,
            digest=f["digest"],
        )
    if variant == "Attestation":
        f = _fields(variant, body, ("document",))
        return AttestationResponse(document=_bytes(variant, "document", f["document"]))
    if variant == "GetRandom":
        f = _fields(variant, body, ("random",))
        return GetRandomResponse(random=_bytes(variant, "random", f["random"]))
    if variant in _UNIT_RESPONSES:
        raise _fail(f"{variant} takes no fields: it is sent as the text {variant!r}")
    raise _fail(f"unknown NSM response {variant!r}")
