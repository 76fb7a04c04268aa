"""Strict CBOR decoding at our boundary: one call, our errors, no trailing bytes, no duplicate keys.

cbor2 accepts duplicate map keys (last wins) and ignores trailing bytes by default; both would let two
parties read one document differently, so every decode here forbids them (deps-and-costs.md §2.1).

Back-references are refused too: value sharing (tags 28/29, "shareable"/"sharedref") and string references
(tags 256/25). None of the formats we read uses them (nsm-api, COSE_Sign1, the NSM payload), and value
sharing turns a few hundred bytes into a DAG whose tree is exponentially large: a map key built that way
costs an exponential ``hash`` (one C call holding the GIL: the whole process freezes), and so does any
``==`` or ``repr`` of such a value.

So is tag 261 (IP network), in no format of ours either: when its content holds an integer past 4300 digits,
cbor2's decoder fails to format its own error message and writes that failure to stderr as an "Exception
ignored" traceback (before raising), so a hostile request put a traceback in a server's log.
"""

from __future__ import annotations

import io
from typing import Any, NoReturn

import cbor2

from attestation.errors import MalformedError

#: Longest rendering of a decoded value in an error message (see :func:`shown`).
MAX_SHOWN_CHARS = 80
#: Deepest nesting any of our CBOR messages needs (COSE array → payload map → pcrs map) plus headroom.
MAX_CBOR_DEPTH = 16
#: Tags refused: the back-references stringref (25) and its namespace (256), shareable (28) and sharedref
#: (29); and IP network (261), whose cbor2 decoder can print a traceback (see the module docstring).
REFUSED_TAGS = (25, 28, 29, 256, 261)


def _refuse_reference(*_: object) -> NoReturn:
    raise cbor2.CBORDecodeError("back-references (tags 25, 28, 29, 256) are not allowed")


def _refuse_ip_network(*_: object) -> NoReturn:
    raise cbor2.CBORDecodeError("IP network (tag 261) is not allowed")


_REFUSE = {**dict.fromkeys(REFUSED_TAGS[:4], _refuse_reference), 261: _refuse_ip_network}


def strict_loads(data: bytes, *, what: str, error: type[MalformedError]) -> Any:
    """Decode exactly one CBOR item from ``data``; raise ``error`` naming ``what`` on any problem."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise error(f"{what}: expected bytes, got {type(data).__name__}")
    if not data:
        raise error(f"{what}: empty input")
    fp = io.BytesIO(data)
    try:
        decoder = cbor2.CBORDecoder(
            fp, allow_duplicate_keys=False, max_depth=MAX_CBOR_DEPTH, semantic_decoders=_REFUSE
        )
        value = decoder.decode()
    except Exception as exc:  # cbor2 raises CBORDecodeError, ValueError, TypeError, OverflowError, ...
        raise error(f"{what}: invalid CBOR ({_reason(exc)})") from None
    if fp.tell() != len(data):
        raise error(f"{what}: {len(data) - fp.tell()} trailing bytes after the CBOR item")
    return value


def shown(value: object) -> str:
    """A short ``repr`` of a decoded (hostile) value, safe to put in an error message.

    An integer past 64 bits is described by its size: a CBOR bignum decodes to any size, and ``repr`` of an
    int of over 4300 digits raises ValueError (so did every message that showed one). Anything else whose
    ``repr`` fails is named by its type; long renderings are cut to :data:`MAX_SHOWN_CHARS`.
    """
    if isinstance(value, int) and value.bit_length() > 64:
        return f"<integer of {value.bit_length()} bits>"
    try:
        text = repr(value)
    except ValueError:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= MAX_SHOWN_CHARS else text[: MAX_SHOWN_CHARS - 3] + "..."


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
