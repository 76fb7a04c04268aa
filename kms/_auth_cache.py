"""The SigV4 verifier's hot path: kms.auth's parses and recomputations, each cached for repeat callers.

An enclave sends thousands of requests that differ only in body, time and signature: the ``Authorization``
header up to its signature, the ``X-Amz-Date`` of a second and the canonical request up to the body's hash
repeat, so each is computed once and kept (bounded caches, exact keys). Every answer equals the plain
computation's (tests/kms/test_auth.py compares them on arbitrary input): ``attestation.sigv4``'s
``parse_authorization``, ``parse_amz_date`` and ``request_signature``. The service runs on one event-loop
thread per process, so the caches need no lock. Split from kms/auth.py, which decides what each failure
means.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from attestation.sigv4 import (
    ALGORITHM,
    MAX_AUTHORIZATION_CHARS,
    TERMINATOR,
    MalformedAuthorizationError,
    ParsedAuthorization,
    canonical_query,
    canonical_uri,
    derive_signing_key,
    parse_amz_date,
    parse_authorization,
    payload_hash,
)

__all__ = [
    "CANONICAL_CACHE_SIZE",
    "PARSED_AUTHORIZATION_CACHE_SIZE",
    "amz_date_time",
    "expected_signature",
    "parsed_authorization",
]

#: Bound on the cache of parsed Authorization headers (entries: ~200 characters and a small dataclass).
PARSED_AUTHORIZATION_CACHE_SIZE = 256
_PARSED: dict[str, ParsedAuthorization] = {}
_SIGNATURE = "Signature="
_HEX64 = re.compile(r"[0-9a-f]{64}")


#: The last well-formed X-Amz-Date seen and its time: a client sends the same value all through a second.
_LAST_AMZ_DATE: tuple[str, datetime] = ("", datetime.min.replace(tzinfo=UTC))


def amz_date_time(value: str) -> datetime:
    """``parse_amz_date`` without strptime (~8 us) for the well-formed case; it decides everything else."""
    global _LAST_AMZ_DATE  # noqa: PLW0603 - a one-entry cache of a pure function
    last_value, last_time = _LAST_AMZ_DATE
    if value == last_value:
        return last_time
    parsed = _parse_amz_date(value)
    _LAST_AMZ_DATE = (value, parsed)
    return parsed


def _parse_amz_date(value: str) -> datetime:
    if (
        len(value) == 16
        and value[8] == "T"
        and value[15] == "Z"
        and value[:8].isascii()
        and value[:8].isdigit()
        and value[9:15].isascii()
        and value[9:15].isdigit()
    ):
        try:
            return datetime(
                int(value[0:4]),
                int(value[4:6]),
                int(value[6:8]),
                int(value[9:11]),
                int(value[11:13]),
                int(value[13:15]),
                tzinfo=UTC,
            )
        except ValueError:
            pass
    return parse_amz_date(value)  # the slow path's answer, or its one-line error


def parsed_authorization(value: str) -> tuple[ParsedAuthorization, str]:
    """``parse_authorization(value)`` and the signature it carries, with the parse cached per client.

    A client's headers differ only in the trailing ``Signature=<64 hex>``; everything before it is parsed
    once and kept (bounded, by exact text). The answer is the same as a fresh parse: the rest of the
    header is identical, and the signature component is checked here exactly as the parser checks it.
    Only headers that parsed, with the signature last, are kept.
    """
    head, separator, signature = value.rpartition(_SIGNATURE)
    if separator and len(value) <= MAX_AUTHORIZATION_CHARS:
        known = _PARSED.get(head)
        if known is not None and _HEX64.fullmatch(signature):
            return known, signature
    parsed = parse_authorization(value)
    if separator and signature == parsed.signature:
        _PARSED[head] = parsed
        if len(_PARSED) > PARSED_AUTHORIZATION_CACHE_SIZE:
            del _PARSED[next(iter(_PARSED))]
    return parsed, parsed.signature


#: Bound on the cache of canonical requests up to the body's hash (entries: ~0.5 KB of text and a key).
#: Keyed by every input but the body, exact values: a client's requests within one second of X-Amz-Date
#: share an entry (the service runs on one event-loop thread per process).
CANONICAL_CACHE_SIZE = 256
_CANONICAL: dict[tuple[object, ...], tuple[str, str, bytes]] = {}


def _all_lower(names: Mapping[str, str]) -> bool:
    joined = "".join(names)
    return joined.lower() == joined


def expected_signature(
    method: str,
    path: str,
    query: str,
    headers: Sequence[tuple[str, str]],
    body: bytes,
    *,
    parsed: ParsedAuthorization,
    secret_key: str,
    amz_date_value: str,
    first: Mapping[str, str] | None = None,
) -> str:
    """``attestation.sigv4.request_signature`` over the received request, the verifier's way round.

    The same canonical request, byte for byte (tests/kms/test_auth.py compares the two on arbitrary
    requests), with less string churn: the signed names are already sorted and unique (the parser
    refused anything else), so the header block is built in their order from one pass over the headers,
    and the common ``/`` path with no query needs no canonicalization. The day's signing key is cached
    (``derive_signing_key``). MalformedAuthorizationError if a signed header is absent. ``first`` (each
    name's first value) lets a request whose names are distinct and lower-case skip the scan, and its
    canonical request up to the body's hash (and the string to sign up to the digest) come from
    :data:`_CANONICAL` when the same values were seen before (the X-Amz-Date value changes once a second).
    """
    signed = parsed.signed_headers
    found: dict[str, str] = {}
    key: tuple[object, ...] | None = None
    if first is not None and len(first) == len(headers) and _all_lower(first):
        # Every name once and already lower-case: each signed header's one value is in ``first``, and
        # everything but the body's hash is a function of this key (one entry per client and second).
        values = tuple(map(first.get, signed))
        key = (secret_key, method, path, query, amz_date_value, signed, parsed.date_stamp, parsed.region,
               parsed.service, values)  # fmt: skip
        known = _CANONICAL.get(key)
        if known is not None:
            return _signature(*known, body)
        if None in values:
            key = None  # a signed header is absent: the scan below says which
        for name in signed:
            value = first.get(name)
            if value is not None:
                found[name] = " ".join(value.split())  # Trimall
        headers = ()
    for raw_name, raw_value in headers:
        name = raw_name.lower()  # the Request's names are lower-case already; the rule is the spec's
        if name in signed:
            value = " ".join(raw_value.split())  # Trimall
            earlier = found.get(name)
            found[name] = value if earlier is None else f"{earlier},{value}"
    if len(found) != len(signed):
        missing = next(name for name in signed if name not in found)
        raise MalformedAuthorizationError(f"signed header {missing!r} is not in the request")
    block = "".join([f"{name}:{found[name]}\n" for name in signed])
    uri = "/" if path == "/" else canonical_uri(path)
    canonical_head = f"{method.upper()}\n{uri}\n{canonical_query(query)}\n{block}\n{';'.join(signed)}\n"
    scope = f"{parsed.date_stamp}/{parsed.region}/{parsed.service}/{TERMINATOR}"
    to_sign_head = f"{ALGORITHM}\n{amz_date_value}\n{scope}\n"
    signing_key = derive_signing_key(secret_key, parsed.date_stamp, parsed.region, parsed.service)
    if key is not None:
        if len(_CANONICAL) >= CANONICAL_CACHE_SIZE:
            del _CANONICAL[next(iter(_CANONICAL))]
        _CANONICAL[key] = (canonical_head, to_sign_head, signing_key)
    return _signature(canonical_head, to_sign_head, signing_key, body)


def _signature(canonical_head: str, to_sign_head: str, signing_key: bytes, body: bytes) -> str:
    """The signature of a canonical request whose last line, the body's hash, is still to come."""
    digest = hashlib.sha256(f"{canonical_head}{payload_hash(body)}".encode()).hexdigest()
    return hmac.digest(signing_key, f"{to_sign_head}{digest}".encode(), "sha256").hex()
