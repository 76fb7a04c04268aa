"""SigV4 authentication of a KMS request against the principals of the credentials file.

Where the authentication travels: the ``Authorization`` header, or the query string (a presigned request:
``X-Amz-Algorithm``, ``X-Amz-Credential``, ``X-Amz-Date``, ``X-Amz-SignedHeaders``, ``X-Amz-Signature``,
optionally ``X-Amz-Security-Token`` and ``X-Amz-Expires``; the KMS API Reference's "Common Parameters" lists
them "for signing Signature Version 4 requests with a query string"). Both are served, as AWS serves both.
A presigned KMS request is still a POST with its JSON body and ``X-Amz-Target``: the body is signed by its
SHA-256 as in the header form (``UNSIGNED-PAYLOAD`` is S3's, and would let a captured request carry any
body), and the headers named in ``X-Amz-SignedHeaders`` are signed.

The pipeline, in order, each failure with the name and message AWS gives (the messages are coral's, as
recorded by dynalite and scratchstack-aws-signature from AWS's answers, where ours are not cited otherwise):

1. Exactly one of the two: ``Authorization`` and an ``X-Amz-Algorithm`` parameter both, else
   InvalidSignatureException; neither (or an ``X-Amz-Algorithm`` other than ``AWS4-HMAC-SHA256``), else
   MissingAuthenticationTokenException.
2. It parses (``attestation.sigv4``: Credential, SignedHeaders with ``host``, Signature; the required query
   parameters) and the request has a time, else IncompleteSignatureException. The time is ``X-Amz-Date``
   (the query parameter of a presigned request, else the header), else the ``Date`` header ("If we can't
   find an x-amz-date header, then we look for a date header", IAM User Guide, "Elements of an AWS API
   request signature"): ISO 8601 basic, or for ``Date`` an HTTP date in UTC as botocore writes it, else
   IncompleteSignatureException ("Date must be in ISO-8601 'basic format'").
3. Headers that must be signed when sent, else InvalidSignatureException ("'<name>' must be a
   'SignedHeader' in the AWS Authorization."): ``X-Amz-Target`` (a captured request could otherwise be
   replayed as another operation) and ``X-Amz-Security-Token`` (the AWS docs let a service require the
   token "in the canonical (signed) request"; KMS here does, and botocore and our SDK sign it).
4. The scope names service ``kms`` (any region) and the date of the request time, else
   InvalidSignatureException.
5. The access key is known, else UnrecognizedClientException.
6. The request time is within :data:`MAX_CLOCK_SKEW` of the reception time, else InvalidSignatureException
   ("Signature expired" / "Signature not yet current"). That is a presigned request's life too: AWS services
   other than S3 give presigned requests "a fixed request signature expiration" (aws/aws-sdk-go#2224, the
   SDK's maintainers; STS ignores ``X-Amz-Expires``, aws-iam-authenticator notes). Here an ``X-Amz-Expires``
   shorter than that is honoured as well: stricter than AWS, never looser, as the signer asked for it.
7. The signature recomputed over the received request equals the sent one (constant-time compare), else
   InvalidSignatureException.
8. The session token: a principal with one (``aws_session_token`` in its profile: temporary credentials)
   must be sent exactly that token, as ``X-Amz-Security-Token`` header or query parameter; a principal
   without one must be sent none. Else UnrecognizedClientException "The security token included in the
   request is invalid." (checked after the signature, as AWS does; compared in constant time).

Time is an argument (the request's reception time); no secret, token or signature appears in a message.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from attestation.sigv4 import (
    AMZ_DATE_FORMAT,
    MalformedAuthorizationError,
    QueryAuthorization,
    UnsupportedAlgorithmError,
    amz_date,
    has_query_authorization,
    parse_date_header,
    parse_query_authorization,
)
from kms._auth_cache import amz_date_time, expected_signature, parsed_authorization
from kms.errors import (
    IncompleteSignatureException,
    InvalidSignatureException,
    MissingAuthenticationTokenException,
    UnrecognizedClientException,
)
from kms.state import Principal

__all__ = ["MAX_CLOCK_SKEW", "MAX_ECHOED_CHARS", "SERVICE", "authenticate"]

#: SigV4 rejects a request whose X-Amz-Date is more than 5 minutes from the server's clock.
MAX_CLOCK_SKEW = timedelta(minutes=5)
#: The signing name of KMS (botocore kms service-2.json ``signingName``/``endpointPrefix``).
SERVICE = "kms"
#: Bound on a caller's value quoted back in a message (and so in the audit record).
MAX_ECHOED_CHARS = 64

_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check your AWS "
    "Secret Access Key and signing method. Consult the service documentation for details."
)
_MISSING = "Missing Authentication Token"
_BOTH = "Found both 'X-Amz-Algorithm' as a query-string param and 'Authorization' as HTTP header."
_NO_DATE = "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
_BAD_TOKEN = "The security token included in the request is invalid."  # noqa: S105 - a message


def _must_be_signed(name: str) -> str:
    """Modelled on what AWS's JSON (coral) services answer for an unsigned Host: InvalidSignatureException
    "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization." (DynamoDB, as reported in
    aws/aws-sdk-php#2469; scratchstack-aws-signature words its required headers the same way)."""
    return f"'{name}' must be a 'SignedHeader' in the AWS Authorization."


def _echo(value: str) -> str:
    """A caller's value as a message quotes it: bounded, printable ASCII (one line, nothing to escape)."""
    return "".join(c if " " <= c <= "~" else "?" for c in value[:MAX_ECHOED_CHARS])


def _bad_date(value: str) -> IncompleteSignatureException:
    return IncompleteSignatureException(
        f"Date must be in ISO-8601 'basic format'. Got '{_echo(value)}'. See http://en.wikipedia.org/wiki/ISO_8601"
    )


def _same(sent: str, expected: str) -> bool:
    """Constant-time equality of two tokens (any text: a header's latin-1, a decoded query's UTF-8)."""
    return hmac.compare_digest(
        sent.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def authenticate(
    method: str,
    path: str,
    query: str,
    headers: Sequence[tuple[str, str]],
    body: bytes,
    *,
    principals: Mapping[str, Principal],
    at: datetime,
    first: Mapping[str, str] | None = None,
) -> Principal:
    """The principal that signed this request; a KMSError naming the first failed step otherwise.

    ``headers`` are (lower-case name, value) pairs as received and ``query`` the query string as on the wire;
    ``first``, if given, maps each name to its first value (what the service indexed once for all its steps).
    """
    if first is None:
        index: dict[str, str] = {}
        for name, item in headers:
            index.setdefault(name, item)
        first = index
    # (1) one way of authenticating
    value = first.get("authorization")
    presigned: QueryAuthorization | None = None
    if query and has_query_authorization(query):
        if value is not None:
            raise InvalidSignatureException(_BOTH)
        try:
            presigned = parse_query_authorization(query)
        except UnsupportedAlgorithmError:
            raise MissingAuthenticationTokenException(_MISSING) from None
        except MalformedAuthorizationError as error:  # (2)
            raise IncompleteSignatureException(str(error)) from None
    elif value is None:
        raise MissingAuthenticationTokenException(_MISSING)
    # (2) well formed, with a time
    if presigned is not None:
        parsed, sent_signature = presigned.authorization, presigned.authorization.signature
        date_value, signed_query = presigned.amz_date, presigned.signed_query
    else:
        try:
            parsed, sent_signature = parsed_authorization(value or "")
        except MalformedAuthorizationError as error:
            raise IncompleteSignatureException(str(error)) from None
        date_value, signed_query = first.get("x-amz-date", ""), query
    from_date_header = not date_value and presigned is None
    if from_date_header:  # no X-Amz-Date header: the Date header, if any
        date_value = first.get("date", "")
        if not date_value:
            raise IncompleteSignatureException(_NO_DATE)
    try:
        signed_at = parse_date_header(date_value) if from_date_header else amz_date_time(date_value)
    except MalformedAuthorizationError:
        raise _bad_date(date_value) from None
    if from_date_header:
        date_value = amz_date(signed_at)  # the string to sign has the ISO 8601 basic form
    # (3) headers that must be signed when sent
    signed = parsed.signed_headers
    if "x-amz-target" not in signed and first.get("x-amz-target") is not None:
        raise InvalidSignatureException(_must_be_signed("X-Amz-Target"))
    header_token = first.get("x-amz-security-token")
    if header_token is not None and "x-amz-security-token" not in signed:
        raise InvalidSignatureException(_must_be_signed("X-Amz-Security-Token"))
    # (4) scope
    if parsed.service != SERVICE:
        raise InvalidSignatureException(f"Credential should be scoped to correct service: '{SERVICE}'.")
    if parsed.date_stamp != date_value[:8]:
        raise InvalidSignatureException(
            f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
            f"'{parsed.date_stamp}' != '{date_value[:8]}', from '{date_value}'."
        )
    # (5) known key
    principal = principals.get(parsed.access_key)
    if principal is None:
        raise UnrecognizedClientException(_BAD_TOKEN)
    # (6) clock skew, and a presigned request's own expiry
    if signed_at < at - MAX_CLOCK_SKEW:
        raise InvalidSignatureException(
            f"Signature expired: {date_value} is now earlier than "
            f"{(at - MAX_CLOCK_SKEW).strftime(AMZ_DATE_FORMAT)} ({at.strftime(AMZ_DATE_FORMAT)} - 5 min.)"
        )
    if signed_at > at + MAX_CLOCK_SKEW:
        raise InvalidSignatureException(
            f"Signature not yet current: {date_value} is still later than "
            f"{(at + MAX_CLOCK_SKEW).strftime(AMZ_DATE_FORMAT)} ({at.strftime(AMZ_DATE_FORMAT)} + 5 min.)"
        )
    if presigned is not None and presigned.expires_s is not None:
        earliest = at - timedelta(seconds=presigned.expires_s)
        if signed_at < earliest:
            raise InvalidSignatureException(
                f"Signature expired: {date_value} is now earlier than {earliest.strftime(AMZ_DATE_FORMAT)} "
                f"({at.strftime(AMZ_DATE_FORMAT)} - {presigned.expires_s} sec.)"
            )
    # (7) signature
    try:
        expected = expected_signature(
            method,
            path,
            signed_query,
            headers,
            body,
            parsed=parsed,
            secret_key=principal.secret_key,
            amz_date_value=date_value,
            first=first,
        )
    except MalformedAuthorizationError:  # a signed header that the request does not carry
        raise InvalidSignatureException(_MISMATCH) from None
    if not hmac.compare_digest(expected, sent_signature):
        raise InvalidSignatureException(_MISMATCH)
    # (8) session token (every one sent, header and query parameter alike, must be the principal's)
    query_token = presigned.security_token if presigned is not None else None
    own_token = principal.session_token
    if own_token is None:
        if header_token is not None or query_token is not None:
            raise UnrecognizedClientException(_BAD_TOKEN)
    elif (header_token is None and query_token is None) or not all(
        _same(token, own_token) for token in (header_token, query_token) if token is not None
    ):
        raise UnrecognizedClientException(_BAD_TOKEN)
    return principal
