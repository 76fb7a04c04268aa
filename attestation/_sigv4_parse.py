"""SigV4 as a verifier reads it: the authentication fields of a received request, parsed but UNVERIFIED.

Split from :mod:`attestation.sigv4` along the spec's seam between signing and reading; every public name is
re-exported there. Nothing here checks a signature or a clock: that is the verifier's (``kms.auth``), with
time as its argument. Each parser raises only :class:`MalformedAuthorizationError`, with a one-line message.

Where the authentication information travels (IAM User Guide, "Authentication methods"; each service's API
Reference, "Common Parameters"):

- the ``Authorization`` header: ``AWS4-HMAC-SHA256 Credential=<ak>/<scope>, SignedHeaders=<a;b>,
  Signature=<hex>`` (:func:`parse_authorization`);
- or the query string, a "presigned" request: ``X-Amz-Algorithm``, ``X-Amz-Credential``, ``X-Amz-Date``,
  ``X-Amz-SignedHeaders``, ``X-Amz-Signature``, and optionally ``X-Amz-Security-Token`` and
  ``X-Amz-Expires`` (:func:`parse_query_authorization`). Every query parameter but ``X-Amz-Signature`` is
  part of the canonical query string, so the token and the expiry are signed by construction.

The request time (IAM User Guide, "Elements of an AWS API request signature", Date): "The time stamp must
be in UTC and use the following ISO 8601 format: YYYYMMDDTHHMMSSZ ... You can use a date or an x-amz-date
header, or include x-amz-date as a query parameter. If we can't find an x-amz-date header, then we look for
a date header." ``X-Amz-Date`` takes that form only (:func:`parse_amz_date`). A ``Date`` header takes it too,
or an HTTP date in UTC (:func:`parse_date_header`): botocore's ``SigV4Auth`` signs a request that carries a
``Date`` header with ``email.utils.formatdate`` (``Mon, 09 Sep 2011 23:36:00 -0000``) and no
``X-Amz-Date``, and AWS's own SigV4 test suite of 2011 signs ``Date: Mon, 09 Sep 2011 23:36:00 GMT``
(string to sign ``20110909T233600Z``), so AWS reads both; any other zone than UTC is refused, as the
documentation says UTC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import unquote

from attestation._sigv4_canonical import MalformedAuthorizationError

__all__ = [
    "ALGORITHM",
    "AMZ_DATE_FORMAT",
    "MAX_AUTHORIZATION_CHARS",
    "MAX_PRESIGNED_EXPIRES_S",
    "MAX_QUERY_CHARS",
    "MAX_SIGNED_HEADERS",
    "QUERY_AUTHORIZATION_PARAMETERS",
    "TERMINATOR",
    "ParsedAuthorization",
    "QueryAuthorization",
    "UnsupportedAlgorithmError",
    "has_query_authorization",
    "parse_amz_date",
    "parse_authorization",
    "parse_date_header",
    "parse_query_authorization",
]

#: The only algorithm SigV4 defines for the Authorization header and ``X-Amz-Algorithm``.
ALGORITHM = "AWS4-HMAC-SHA256"
#: The scope terminator, fixed by the spec.
TERMINATOR = "aws4_request"
#: ``X-Amz-Date`` format (ISO 8601 basic, UTC, seconds).
AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
#: Bound on an Authorization header we agree to parse (a real one is ~200-400 characters).
MAX_AUTHORIZATION_CHARS = 4096
#: Bound on the number of signed headers named in one Authorization header or X-Amz-SignedHeaders.
MAX_SIGNED_HEADERS = 64
#: Bound on a query string read for authentication (a presigned request with an STS session token of a
#: few KB and its six other parameters is well under it).
MAX_QUERY_CHARS = 16 * 1024
#: Largest ``X-Amz-Expires``: "The minimum value you can set is 1, and the maximum is 604800 (seven days)"
#: (Amazon S3 API Reference, "Authenticating Requests: Using Query Parameters"), as long as a signing key.
MAX_PRESIGNED_EXPIRES_S = 7 * 24 * 3600

#: The query parameters of query-string authentication, in the order AWS lists missing ones.
QUERY_AUTHORIZATION_PARAMETERS = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Signature",
    "X-Amz-SignedHeaders",
    "X-Amz-Date",
    "X-Amz-Security-Token",
    "X-Amz-Expires",
)
#: Those a presigned request must carry (X-Amz-Expires is optional: the services other than S3 do not
#: require it; dynalite and scratchstack-aws-signature record the same list from AWS's answers).
_REQUIRED_QUERY_PARAMETERS = QUERY_AUTHORIZATION_PARAMETERS[1:5]


class UnsupportedAlgorithmError(MalformedAuthorizationError):
    """``X-Amz-Algorithm`` is not ``AWS4-HMAC-SHA256`` (AWS then treats the request as unauthenticated)."""


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
        return f"{self.date_stamp}/{self.region}/{self.service}/{TERMINATOR}"


@dataclass(frozen=True, slots=True, kw_only=True)
class QueryAuthorization:
    """SigV4 authentication carried in a query string (a presigned request), UNVERIFIED.

    ``signed_query`` is the query as received without its ``X-Amz-Signature`` parameter: what the canonical
    query string is made of ("all the query parameters ... except for X-Amz-Signature").
    """

    authorization: ParsedAuthorization
    amz_date: str
    security_token: str | None
    expires_s: int | None
    signed_query: str


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_DATE_STAMP = re.compile(r"[0-9]{8}")
_DIGITS = re.compile(r"[0-9]{1,7}")


def parse_amz_date(value: str) -> datetime:
    """The aware UTC time of an ``X-Amz-Date`` value; :class:`MalformedAuthorizationError` if malformed."""
    if len(value) != 16 or not value.isascii():  # strptime's digits are any Unicode digits
        raise MalformedAuthorizationError(f"X-Amz-Date is not in the form YYYYMMDDTHHMMSSZ: {value[:32]!r}")
    try:
        return datetime.strptime(value, AMZ_DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise MalformedAuthorizationError(
            f"X-Amz-Date is not in the form YYYYMMDDTHHMMSSZ: {value!r}"
        ) from None


_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
#: RFC 9110 §5.6.7 IMF-fixdate, and RFC 5322 §3.3 with a zero offset (what ``email.utils.formatdate``
#: writes); ASCII digits only, UTC only.
_HTTP_DATE = re.compile(
    rf"({'|'.join(_WEEKDAYS)}), ([0-9]{{1,2}}) ({'|'.join(_MONTHS)}) ([0-9]{{4}}) "
    r"([0-9]{2}):([0-9]{2}):([0-9]{2}) (?:GMT|UTC|UT|[+-]0000)"
)


def parse_date_header(value: str) -> datetime:
    """The aware UTC time of a ``Date`` header used as the SigV4 request time (see the module docstring).

    ISO 8601 basic (``20110909T233600Z``) or an HTTP date in UTC (``Fri, 09 Sep 2011 23:36:00 GMT``, or
    ``-0000``, ``+0000``, ``UT``, ``UTC``); MalformedAuthorizationError otherwise. The weekday is not checked
    against the date: AWS's own test suite signs ``Mon, 09 Sep 2011``, a Friday.
    """
    match = _HTTP_DATE.fullmatch(value)
    if match is None:
        return parse_amz_date(value)
    _weekday, day, month, year, hour, minute, second = match.groups()
    try:
        at = datetime(
            int(year), _MONTHS.index(month) + 1, int(day), int(hour), int(minute), int(second), tzinfo=UTC
        )
    except ValueError:
        raise MalformedAuthorizationError(f"Date is not a valid date: {value[:40]!r}") from None
    return at


def _authorization(credential: str, signed_headers: str, signature: str) -> ParsedAuthorization:
    """The shared rules of the three fields, wherever they were carried."""
    # Credential=<access key>/<date>/<region>/<service>/aws4_request; the access key has no "/".
    parts = credential.split("/")
    if len(parts) != 5 or not all(parts):
        raise MalformedAuthorizationError(
            "Credential must be <access key>/<YYYYMMDD>/<region>/<service>/aws4_request"
        )
    access_key, date_stamp, region, service, terminator = parts
    if not _DATE_STAMP.fullmatch(date_stamp):
        raise MalformedAuthorizationError(f"Credential date must be YYYYMMDD, got {date_stamp[:16]!r}")
    if terminator != TERMINATOR:
        raise MalformedAuthorizationError(f"Credential scope must end with {TERMINATOR}")
    names = tuple(signed_headers.split(";"))
    if len(names) > MAX_SIGNED_HEADERS:
        raise MalformedAuthorizationError(f"SignedHeaders names over {MAX_SIGNED_HEADERS} headers")
    if not all(_HEADER_NAME.fullmatch(n) for n in names):
        raise MalformedAuthorizationError("SignedHeaders must be lower-case header names separated by ';'")
    if list(names) != sorted(set(names)):
        raise MalformedAuthorizationError("SignedHeaders must be sorted and without repeats")
    if "host" not in names:
        raise MalformedAuthorizationError("SignedHeaders must include host")
    if not _HEX64.fullmatch(signature):
        raise MalformedAuthorizationError("Signature must be 64 lower-case hex characters")
    return ParsedAuthorization(
        access_key=access_key,
        date_stamp=date_stamp,
        region=region,
        service=service,
        signed_headers=names,
        signature=signature,
    )


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
    return _authorization(fields["Credential"], fields["SignedHeaders"], fields["Signature"])


def _parameter_name(item: str) -> str:
    return unquote(item.partition("=")[0])


def has_query_authorization(query: str) -> bool:
    """Whether a wire-form query string carries an ``X-Amz-Algorithm`` parameter (a presigned request)."""
    if "X-Amz-Algorithm" not in query and "%" not in query:
        return False  # the common case, decided without splitting
    return any(_parameter_name(item) == "X-Amz-Algorithm" for item in query[:MAX_QUERY_CHARS].split("&"))


def parse_query_authorization(query: str) -> QueryAuthorization:
    """The authentication parameters of a presigned request's wire-form query string.

    In AWS's order: ``X-Amz-Algorithm`` must be ``AWS4-HMAC-SHA256`` (:class:`UnsupportedAlgorithmError`);
    each required parameter present and not empty, all missing ones named in AWS's words; Credential,
    SignedHeaders and Signature under the Authorization header's rules; ``X-Amz-Expires``, if sent, a whole
    number of seconds in 1..:data:`MAX_PRESIGNED_EXPIRES_S`. Names and values are percent-decoded; a repeated
    authentication parameter is refused (which of two values was meant is not ours to guess).
    """
    if len(query) > MAX_QUERY_CHARS:
        raise MalformedAuthorizationError(f"Query string is over {MAX_QUERY_CHARS} characters")
    found: dict[str, str] = {}
    kept: list[str] = []
    for item in query.split("&"):
        raw_name, _, raw_value = item.partition("=")
        name = unquote(raw_name)
        if name in QUERY_AUTHORIZATION_PARAMETERS:
            if name in found:
                raise MalformedAuthorizationError(f"{name} appears more than once in the query string")
            found[name] = unquote(raw_value)
        if name != "X-Amz-Signature":
            kept.append(item)
    if found.get("X-Amz-Algorithm") != ALGORITHM:
        raise UnsupportedAlgorithmError(f"X-Amz-Algorithm must be {ALGORITHM}")
    missing = [name for name in _REQUIRED_QUERY_PARAMETERS if not found.get(name)]
    if missing:
        named = "".join(f"AWS query-string parameters must include '{name}'. " for name in missing)
        raise MalformedAuthorizationError(f"{named}Re-examine the query-string parameters.")
    authorization = _authorization(
        found["X-Amz-Credential"], found["X-Amz-SignedHeaders"], found["X-Amz-Signature"]
    )
    expires = found.get("X-Amz-Expires")
    expires_s = None
    if expires is not None:
        if not _DIGITS.fullmatch(expires) or not 1 <= int(expires) <= MAX_PRESIGNED_EXPIRES_S:
            raise MalformedAuthorizationError(
                f"X-Amz-Expires must be a whole number of seconds from 1 to {MAX_PRESIGNED_EXPIRES_S}"
            )
        expires_s = int(expires)
    return QueryAuthorization(
        authorization=authorization,
        amz_date=found["X-Amz-Date"],
        security_token=found.get("X-Amz-Security-Token"),
        expires_s=expires_s,
        signed_query="&".join(kept),
    )
