"""Strict CBOR decoding at our boundary: one call, our errors, no trailing bytes, no duplicate keys.

cbor2 accepts duplicate map keys (last wins) and ignores trailing bytes by default; both would let two
parties read one document differently, so every decode here forbids them (deps-and-costs.md §2.1).
"""

from __future__ import annotations

import io
from typing import Any

import cbor2

from attestation.errors import MalformedError

#: Deepest nesting any of our CBOR messages needs (COSE array → payload map → pcrs map) plus headroom.
MAX_CBOR_DEPTH = 16


def strict_loads(data: bytes, *, what: str, error: type[MalformedError]) -> Any:
    """Decode exactly one CBOR item from ``data``; raise ``error`` naming ``what`` on any problem."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise error(f"{what}: expected bytes, got {type(data).__name__}")
    if not data:
        raise error(f"{what}: empty input")
    fp = io.BytesIO(data)
    try:
        value = cbor2.CBORDecoder(fp, allow_duplicate_keys=False, max_depth=MAX_CBOR_DEPTH).decode()
    except Exception as exc:  # cbor2 raises CBORDecodeError, ValueError, TypeError, OverflowError, ...
        raise error(f"{what}: invalid CBOR ({_reason(exc)})") from None
    if fp.tell() != len(data):
        raise error(f"{what}: {len(data) - fp.tell()} trailing bytes after the CBOR item")
    return value


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
