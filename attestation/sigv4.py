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
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
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

__all__ = [
    "ALGORITHM",
    "EMPTY_SHA256",
    "UNSIGNED_HEADERS",
    "FixedRequestSigner",
    "MalformedAuthorizationError",
    "ParsedAuthorization",
    "amz_date",
    "authorization_header",
    "canonical_headers",
    "canonical_query",
    "canonical_request",
    "canonical_uri",
    "credential_scope",
    "derive_signing_key",
    "headers_to_sign",
    "parse_amz_date",
    "parse_authorization",
    "payload_hash",
    "request_signature",
    "sign_request",
    "signature",
    "string_to_sign",
]

#: The only algorithm SigV4 defines for the Authorization header.
ALGORITHM = "AWS4-HMAC-SHA256"
#: The scope terminator, fixed by the spec.
TERMINATOR = "aws4_request"
#: ``X-Amz-Date`` format (ISO 8601 basic, UTC, seconds).
AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
#: Bound on an Authorization header we agree to parse (a real one is ~200-400 characters).
MAX_AUTHORIZATION_CHARS = 4096
#: Bound on the number of signed headers named in one Authorization header.
MAX_SIGNED_HEADERS = 64
#: Bound on the size of a signing-key cache (one entry per secret, day, region and service).
SIGNING_KEY_CACHE_SIZE = 64

# -- step 1, the canonical request, is in attestation/_sigv4_canonical.py (names re-exported above) ------


# -- step 2: string to sign ----------------------------------------------------------------------------------


def amz_date(at: datetime) -> str:
    """``X-Amz-Date`` for the aware time ``at`` (converted to UTC)."""
    if at.tzinfo is None:
        raise ValueError("SigV4 time must be timezone-aware")
    return at.astimezone(UTC).strftime(AMZ_DATE_FORMAT)


def parse_amz_date(value: str) -> datetime:
    """The aware UTC time of an ``X-Amz-Date`` value; :class:`MalformedAuthorizationError` if malformed."""
    if len(value) != 16:
        raise MalformedAuthorizationError(f"X-Amz-Date is not in the form YYYYMMDDTHHMMSSZ: {value[:32]!r}")
    try:
        return datetime.strptime(value, AMZ_DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise MalformedAuthorizationError(
            f"X-Amz-Date is not in the form YYYYMMDDTHHMMSSZ: {value!r}"
        ) from None


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


@dataclass(frozen=True, slots=True, kw_only=True)
class ParsedAuthorization:
    """The fields of a SigV4 ``Authorization`` header (UNVERIFIED: only a signature check trusts them)."""

    access_key: str
    date_stamp: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str

    @property
    def scope(self) -> str:
        """``<date>/<region>/<service>/aws4_request``."""
        return credential_scope(self.date_stamp, self.region, self.service)


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_DATE_STAMP = re.compile(r"[0-9]{8}")


def parse_authorization(value: str) -> ParsedAuthorization:
    """Parse ``AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...``.

    Raises :class:`MalformedAuthorizationError` (a ValueError) with a one-line message for anything else.
    Components may be separated by ``,`` with or without spaces, in any order, each exactly once.
    """
    if len(value) > MAX_AUTHORIZATION_CHARS:
        raise MalformedAuthorizationError(
            f"Authorization header is over {MAX_AUTHORIZATION_CHARS} characters"
        )
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise MalformedAuthorizationError(f"Authorization algorithm must be {ALGORITHM}")
    fields: dict[str, str] = {}
    for component in rest.split(","):
        key, sep, field = component.strip().partition("=")
        if not sep or key not in ("Credential", "SignedHeaders", "Signature"):
            raise MalformedAuthorizationError(
                "Authorization header requires Credential, SignedHeaders and Signature components"
            )
        if key in fields:
            raise MalformedAuthorizationError(f"Authorization header repeats {key}")
        fields[key] = field
    missing = [k for k in ("Credential", "SignedHeaders", "Signature") if k not in fields]
    if missing:
        raise MalformedAuthorizationError(f"Authorization header is missing {', '.join(missing)}")
    # Credential=<access key>/<date>/<region>/<service>/aws4_request; the access key has no "/".
    parts = fields["Credential"].split("/")
    if len(parts) != 5 or not all(parts):
        raise MalformedAuthorizationError(
            "Credential must be <access key>/<YYYYMMDD>/<region>/<service>/aws4_request"
        )
    access_key, date_stamp, region, service, terminator = parts
    if not _DATE_STAMP.fullmatch(date_stamp):
        raise MalformedAuthorizationError(f"Credential date must be YYYYMMDD, got {date_stamp[:16]!r}")
    if terminator != TERMINATOR:
        raise MalformedAuthorizationError(f"Credential scope must end with {TERMINATOR}")
    names = tuple(fields["SignedHeaders"].split(";"))
    if len(names) > MAX_SIGNED_HEADERS:
        raise MalformedAuthorizationError(f"SignedHeaders names over {MAX_SIGNED_HEADERS} headers")
    if not all(_HEADER_NAME.fullmatch(n) for n in names):
        raise MalformedAuthorizationError("SignedHeaders must be lower-case header names separated by ';'")
    if list(names) != sorted(set(names)):
        raise MalformedAuthorizationError("SignedHeaders must be sorted and without repeats")
    if "host" not in names:
        raise MalformedAuthorizationError("SignedHeaders must include host")
    if not _HEX64.fullmatch(fields["Signature"]):
        raise MalformedAuthorizationError("Signature must be 64 lower-case hex characters")
    return ParsedAuthorization(
        access_key=access_key,
        date_stamp=date_stamp,
        region=region,
        service=service,
        signed_headers=names,
        signature=fields["Signature"],
    )


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
