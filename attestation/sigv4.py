"""AWS Signature Version 4 as pure functions, shared by the signer (enclave) and the verifier (kms).

Written against the AWS specification ("Create a signed AWS API request", IAM User Guide,
docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html) and checked in tests against
botocore's ``SigV4Auth`` byte for byte. Sans-IO: strings and bytes in, strings out; time is an argument.

The steps, as the spec numbers them:

1. Canonical request::

       METHOD \\n canonical-URI \\n canonical-query \\n canonical-headers \\n signed-headers \\n
       hex(SHA256(body))

   where every canonical header line is ``lowercase(name):trimall(value)`` followed by ``\\n`` (so the block
   ends with an empty line), repeated headers are joined with ``,``, and names are sorted.
2. String to sign: ``AWS4-HMAC-SHA256 \\n <amz-date> \\n <date>/<region>/<service>/aws4_request \\n
   hex(SHA256(canonical request))``.
3. Signing key: ``HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")``.
4. Signature: ``hex(HMAC(signing key, string to sign))``, carried in the ``Authorization`` header as
   ``AWS4-HMAC-SHA256 Credential=<ak>/<scope>, SignedHeaders=<a;b;c>, Signature=<hex>``.

Choices that follow botocore where the spec leaves room (so both sides agree with every AWS SDK):
the query string is taken as it appears on the wire (already percent-encoded) and its ``key=value`` pairs
are sorted, not re-encoded; the path is normalized (dot segments removed) and percent-encoded once more
with ``/`` and ``~`` kept; hop-by-hop headers and ``User-Agent`` are never signed.

A verifier reads the fields back with :func:`parse_authorization`, or :func:`parse_query_authorization`
for a presigned request (the same fields as ``X-Amz-*`` query parameters), and the request time with
:func:`parse_amz_date` or, from a ``Date`` header, :func:`parse_date_header` (attestation/_sigv4_parse.py
states where each may travel and in which forms); :func:`request_signature` recomputes the signature.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import lru_cache

from attestation._sigv4_canonical import (
    EMPTY_SHA256,
    UNSIGNED_HEADERS,
    Headers,
    MalformedAuthorizationError,
    _items,
    canonical_headers,
    canonical_query,
    canonical_request,
    canonical_uri,
    headers_to_sign,
    payload_hash,
)
from attestation._sigv4_parse import (
    ALGORITHM,
    AMZ_DATE_FORMAT,
    MAX_AUTHORIZATION_CHARS,
    MAX_PRESIGNED_EXPIRES_S,
    MAX_QUERY_CHARS,
    MAX_SIGNED_HEADERS,
    QUERY_AUTHORIZATION_PARAMETERS,
    TERMINATOR,
    ParsedAuthorization,
    QueryAuthorization,
    UnsupportedAlgorithmError,
    has_query_authorization,
    parse_amz_date,
    parse_authorization,
    parse_date_header,
    parse_query_authorization,
)

__all__ = [
    "ALGORITHM",
    "AMZ_DATE_FORMAT",
    "EMPTY_SHA256",
    "MAX_AUTHORIZATION_CHARS",
    "MAX_PRESIGNED_EXPIRES_S",
    "MAX_QUERY_CHARS",
    "MAX_SIGNED_HEADERS",
    "QUERY_AUTHORIZATION_PARAMETERS",
    "TERMINATOR",
    "UNSIGNED_HEADERS",
    "FixedRequestSigner",
    "MalformedAuthorizationError",
    "ParsedAuthorization",
    "QueryAuthorization",
    "UnsupportedAlgorithmError",
    "amz_date",
    "authorization_header",
    "canonical_headers",
    "canonical_query",
    "canonical_request",
    "canonical_uri",
    "credential_scope",
    "derive_signing_key",
    "has_query_authorization",
    "headers_to_sign",
    "parse_amz_date",
    "parse_authorization",
    "parse_date_header",
    "parse_query_authorization",
    "payload_hash",
    "request_signature",
    "sign_request",
    "signature",
    "string_to_sign",
]

#: Bound on the size of a signing-key cache (one entry per secret, day, region and service).
SIGNING_KEY_CACHE_SIZE = 64

# -- step 1, the canonical request, is in attestation/_sigv4_canonical.py; what a verifier reads from a
# -- request (Authorization header, query string, dates) is in attestation/_sigv4_parse.py (both re-exported)


# -- step 2: string to sign ----------------------------------------------------------------------------------


def amz_date(at: datetime) -> str:
    """``X-Amz-Date`` for the aware time ``at`` (converted to UTC)."""
    if at.tzinfo is None:
        raise ValueError("SigV4 time must be timezone-aware")
    return at.astimezone(UTC).strftime(AMZ_DATE_FORMAT)


def credential_scope(date_stamp: str, region: str, service: str) -> str:
    """``<YYYYMMDD>/<region>/<service>/aws4_request``."""
    return f"{date_stamp}/{region}/{service}/{TERMINATOR}"


def string_to_sign(amz_date_value: str, scope: str, canonical: str) -> str:
    """Step 2: the string to sign for a canonical request."""
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{amz_date_value}\n{scope}\n{digest}"


# -- steps 3 and 4: key and signature ------------------------------------------------------------------------


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.digest(key, message.encode("utf-8"), "sha256")


@lru_cache(maxsize=SIGNING_KEY_CACHE_SIZE)
def derive_signing_key(secret_key: str, date_stamp: str, region: str, service: str) -> bytes:
    """Step 3: the signing key (valid for one day, region and service; cached, as it is four HMACs)."""
    key = _hmac(f"AWS4{secret_key}".encode(), date_stamp)
    key = _hmac(key, region)
    key = _hmac(key, service)
    return _hmac(key, TERMINATOR)


def signature(signing_key: bytes, to_sign: str) -> str:
    """Step 4: hex(HMAC-SHA256(signing key, string to sign))."""
    return hmac.digest(signing_key, to_sign.encode("utf-8"), "sha256").hex()


def authorization_header(access_key: str, scope: str, signed_headers: Sequence[str], sig: str) -> str:
    """The ``Authorization`` header value, in the order and spacing every AWS SDK writes it."""
    names = ";".join(signed_headers)
    return f"{ALGORITHM} Credential={access_key}/{scope}, SignedHeaders={names}, Signature={sig}"


def sign_request(
    method: str,
    path: str,
    query: str,
    headers: Headers,
    body: bytes,
    *,
    access_key: str,
    secret_key: str,
    session_token: str | None,
    region: str,
    service: str,
    at: datetime,
) -> dict[str, str]:
    """Sign a request; return the headers to add: ``X-Amz-Date``, ``X-Amz-Security-Token`` and
    ``Authorization``.

    ``headers`` must include ``Host`` (the spec requires it signed). ``X-Amz-Date`` and the session token
    are signed too, as botocore does. Headers already named ``Authorization`` are not signed.
    """
    date_value = amz_date(at)
    added = {"X-Amz-Date": date_value}
    if session_token:
        added["X-Amz-Security-Token"] = session_token
    items = [(n, v) for n, v in _items(headers) if n.lower() not in ("authorization", "x-amz-date")]
    if session_token:
        items = [(n, v) for n, v in items if n.lower() != "x-amz-security-token"]
    items.extend(added.items())
    names = headers_to_sign(items)
    if "host" not in names:
        raise ValueError("SigV4 requires a Host header to sign")
    scope = credential_scope(date_value[:8], region, service)
    canonical = canonical_request(
        method, path, query, items, signed_headers=names, body_sha256=payload_hash(body)
    )
    sig = signature(
        derive_signing_key(secret_key, date_value[:8], region, service),
        string_to_sign(date_value, scope, canonical),
    )
    added["Authorization"] = authorization_header(access_key, scope, names, sig)
    return added


# -- the verifier's side -------------------------------------------------------------------------------------


def request_signature(
    method: str,
    path: str,
    query: str,
    headers: Headers,
    body_sha256: str,
    *,
    authorization: ParsedAuthorization,
    secret_key: str,
    amz_date_value: str,
) -> str:
    """The signature a request should carry, recomputed by a verifier from what it received.

    The verifier compares it with ``authorization.signature`` using :func:`hmac.compare_digest`. It must
    also check, itself, that ``amz_date_value`` (the ``X-Amz-Date`` header) starts with the scope's date
    and lies within its allowed clock skew.
    """
    scope = authorization.scope
    canonical = canonical_request(
        method, path, query, headers, signed_headers=authorization.signed_headers, body_sha256=body_sha256
    )
    key = derive_signing_key(
        secret_key, authorization.date_stamp, authorization.region, authorization.service
    )
    return signature(key, string_to_sign(amz_date_value, scope, canonical))


class FixedRequestSigner:
    """SigV4 for a stream of requests that differ only in body and time (same method, path, headers).

    Precomputes the canonical request around the two varying lines (``x-amz-date`` and the payload hash)
    and caches the day's signing key; produces exactly what :func:`sign_request` produces for the same
    input (tested). For the KMS client, which sends thousands of identical-looking POSTs.
    """

    __slots__ = (
        "_access_key",
        "_date",
        "_head",
        "_key_day",
        "_region",
        "_secret_key",
        "_service",
        "_signed",
        "_tail",
        "_token",
    )

    def __init__(
        self,
        method: str,
        path: str,
        headers: Headers,
        *,
        access_key: str,
        secret_key: str,
        session_token: str | None,
        region: str,
        service: str,
    ) -> None:
        items = [(n, v) for n, v in _items(headers) if n.lower() not in ("authorization", "x-amz-date")]
        items = [(n, v) for n, v in items if n.lower() != "x-amz-security-token"]
        if session_token:
            items.append(("X-Amz-Security-Token", session_token))
        names = (*headers_to_sign(items), "x-amz-date")
        self._signed = tuple(sorted(names))
        if "host" not in self._signed:
            raise ValueError("SigV4 requires a Host header to sign")
        marker = "\x00DATE\x00"
        block = canonical_headers([*items, ("X-Amz-Date", marker)], self._signed)
        before, _, after = block.partition(marker)
        self._head = f"{method.upper()}\n{canonical_uri(path)}\n\n{before}"
        self._tail = f"{after}\n{';'.join(self._signed)}\n"
        self._access_key = access_key
        self._secret_key = secret_key
        self._token = session_token or None
        self._region = region
        self._service = service
        self._key_day: tuple[str, bytes, str] = ("", b"", "")
        #: The last ``X-Amz-Date`` made and the whole second (POSIX) it stands for.
        self._date: tuple[int, str] = (-1, "")

    def sign(self, body: bytes, at: datetime) -> list[tuple[str, str]]:
        """The headers to add (``X-Amz-Date``, ``X-Amz-Security-Token``, ``Authorization``), in that order."""
        if at.tzinfo is None:
            raise ValueError("SigV4 time must be timezone-aware")
        # X-Amz-Date has whole seconds: requests within one second share it (formatting costs ~3 us).
        second = math.floor(at.timestamp())
        if self._date[0] == second:
            date_value = self._date[1]
        else:
            date_value = amz_date(at)
            self._date = (second, date_value)
        day = date_value[:8]
        if self._key_day[0] != day:
            scope_of_day = f"{day}/{self._region}/{self._service}/{TERMINATOR}"
            key = derive_signing_key(self._secret_key, day, self._region, self._service)
            self._key_day = (day, key, scope_of_day)
        canonical = f"{self._head}{date_value}{self._tail}{payload_hash(body)}"
        scope = self._key_day[2]
        sig = signature(self._key_day[1], string_to_sign(date_value, scope, canonical))
        added = [("X-Amz-Date", date_value)]
        if self._token:
            added.append(("X-Amz-Security-Token", self._token))
        added.append(("Authorization", authorization_header(self._access_key, scope, self._signed, sig)))
        return added
