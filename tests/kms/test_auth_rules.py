"""kms.auth's rules on requests signed by botocore (SigV4Auth, SigV4QueryAuth): Date headers, temporary
credentials, presigned requests, with AWS's error names and messages. Pure: time is the argument ``at``."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from attestation.sigv4 import parse_amz_date, parse_date_header
from kms.audit import claimed_credential, refused_line
from kms.auth import MAX_CLOCK_SKEW, authenticate
from kms.errors import (
    IncompleteSignatureException,
    InvalidSignatureException,
    KMSError,
    MissingAuthenticationTokenException,
    UnrecognizedClientException,
)
from kms.state import Principal

LONG_TERM = Principal(name="nitro-sim", access_key="AKIAEXAMPLEEXAMPLE01", secret_key="s" * 40)
TOKEN = "IQoJb3JpZ2luX2VjEFAaCXVzLWVhc3QtMSJHMEUCIQ//session+token/=="
TEMPORARY = Principal(
    name="temp", access_key="ASIAEXAMPLEEXAMPLE02", secret_key="t" * 40, session_token=TOKEN
)
PRINCIPALS = {p.access_key: p for p in (LONG_TERM, TEMPORARY)}
URL = "https://kms.us-east-1.amazonaws.com/"
BODY = b'{"NumberOfBytes": 32}'


def _request(headers: dict[str, str] | None = None, body: bytes = BODY) -> AWSRequest:
    base = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "TrentService.GenerateRandom"}
    return AWSRequest(method="POST", url=URL, data=body, headers={**base, **(headers or {})})


def _credentials(principal: Principal, token: str | None = None) -> Credentials:
    return Credentials(principal.access_key, principal.secret_key, token)


class BodyKeepingQueryAuth(SigV4QueryAuth):
    """botocore's presigner, with the JSON body left in the body (SigV4QueryAuth moves it to the query)."""

    def _modify_request_before_signing(self, request: AWSRequest) -> None:
        body = request.data
        request.data = ""
        super()._modify_request_before_signing(request)
        request.data = body


def _check(request: AWSRequest, *, after: timedelta = timedelta(0), body: bytes | None = None) -> Principal:
    """authenticate() the request as received ``after`` its own signing time."""
    parts = urlsplit(request.url)
    headers = [(name.lower(), value) for name, value in request.headers.items()]
    headers.append(("host", parts.netloc))
    stamp = dict(headers).get("x-amz-date")
    if "X-Amz-Date=" in parts.query:
        stamp = parts.query.split("X-Amz-Date=", 1)[1].split("&", 1)[0]
    signed_at = parse_amz_date(stamp) if stamp else parse_date_header(dict(headers)["date"])
    data = request.data if body is None else body
    return authenticate(
        "POST",
        parts.path,
        parts.query,
        headers,
        data if isinstance(data, bytes) else data.encode(),
        principals=PRINCIPALS,
        at=signed_at + after,
    )


def _refused(error: type[KMSError], fragment: str, call: Callable[[], Any]) -> None:
    with pytest.raises(error) as info:
        call()
    assert fragment in info.value.message, info.value.message
    assert "\n" not in info.value.message
    assert TOKEN not in info.value.message


# -- temporary credentials -----------------------------------------------------------------------------------


def test_a_session_token_signed_by_botocore_authenticates() -> None:
    request = _request()
    SigV4Auth(_credentials(TEMPORARY, TOKEN), "kms", "us-east-1").add_auth(request)
    assert "x-amz-security-token" in request.headers["Authorization"]
    assert _check(request) is TEMPORARY


@pytest.mark.parametrize(
    ("principal", "token"),
    [(TEMPORARY, None), (TEMPORARY, TOKEN + "x"), (TEMPORARY, TOKEN[:-1]), (LONG_TERM, TOKEN)],
    ids=["missing", "longer", "shorter", "sent-for-long-term-keys"],
)
def test_a_missing_or_unknown_token_is_an_unrecognized_client(
    principal: Principal, token: str | None
) -> None:
    request = _request()
    SigV4Auth(_credentials(principal, token), "kms", "us-east-1").add_auth(request)
    _refused(
        UnrecognizedClientException,
        "The security token included in the request is invalid.",
        lambda: _check(request),
    )


def test_an_unsigned_token_is_refused() -> None:
    request = _request()
    SigV4Auth(_credentials(TEMPORARY), "kms", "us-east-1").add_auth(request)
    request.headers["X-Amz-Security-Token"] = TOKEN  # added after signing, as some services allow
    _refused(
        InvalidSignatureException,
        "'X-Amz-Security-Token' must be a 'SignedHeader' in the AWS Authorization.",
        lambda: _check(request),
    )


def test_the_token_is_checked_after_the_signature() -> None:
    request = _request()
    SigV4Auth(Credentials(TEMPORARY.access_key, "w" * 40, "not the token"), "kms", "us-east-1").add_auth(
        request
    )
    _refused(InvalidSignatureException, "does not match", lambda: _check(request))


# -- the Date header -----------------------------------------------------------------------------------------


def test_a_request_timed_by_its_date_header_authenticates() -> None:
    request = _request({"Date": "placeholder"})  # botocore then signs by Date, with no X-Amz-Date
    SigV4Auth(_credentials(LONG_TERM), "kms", "us-east-1").add_auth(request)
    assert "X-Amz-Date" not in request.headers
    assert request.headers["Date"].endswith(" -0000")
    assert _check(request) is LONG_TERM
    assert _check(request, after=MAX_CLOCK_SKEW) is LONG_TERM


def test_a_date_header_is_held_to_the_same_clock() -> None:
    request = _request({"Date": "placeholder"})
    SigV4Auth(_credentials(LONG_TERM), "kms", "us-east-1").add_auth(request)
    _refused(
        InvalidSignatureException, "Signature expired: ", lambda: _check(request, after=timedelta(minutes=6))
    )
    _refused(
        InvalidSignatureException,
        "Signature not yet current: ",
        lambda: _check(request, after=-timedelta(minutes=6)),
    )


def test_x_amz_date_wins_over_a_date_header() -> None:
    request = _request()
    SigV4Auth(_credentials(LONG_TERM), "kms", "us-east-1").add_auth(request)
    request.headers["Date"] = "Thu, 01 Jan 1970 00:00:00 GMT"  # unsigned, and ignored
    assert _check(request) is LONG_TERM


@pytest.mark.parametrize(
    ("value", "echo"),
    [
        ("Fri, 09 Sep 2011 23:36:00 +0200", "Fri, 09 Sep 2011 23:36:00 +0200"),
        ("2011-09-09", "2011-09-09"),
        ("\x01\x7f\xe9" + "d" * 100, "???" + "d" * 61),
    ],
    ids=["not-utc", "iso-extended", "control-and-long"],
)
def test_a_malformed_date_header_is_an_incomplete_signature(value: str, echo: str) -> None:
    request = _request({"Date": "placeholder"})
    SigV4Auth(_credentials(LONG_TERM), "kms", "us-east-1").add_auth(request)
    at = parse_date_header(request.headers["Date"])
    del request.headers["Date"]
    request.headers["Date"] = value
    headers = [(k.lower(), v) for k, v in request.headers.items()] + [("host", "kms.us-east-1.amazonaws.com")]
    with pytest.raises(IncompleteSignatureException) as info:
        authenticate("POST", "/", "", headers, BODY, principals=PRINCIPALS, at=at)
    assert info.value.message == (
        f"Date must be in ISO-8601 'basic format'. Got '{echo}'. See http://en.wikipedia.org/wiki/ISO_8601"
    )


def test_no_time_at_all_is_an_incomplete_signature() -> None:
    request = _request()
    SigV4Auth(_credentials(LONG_TERM), "kms", "us-east-1").add_auth(request)
    del request.headers["X-Amz-Date"]
    _refused(
        IncompleteSignatureException,
        "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
        lambda: _at_now(request),
    )


def _at_now(request: AWSRequest) -> Principal:
    """authenticate() at the current time, for refusals that come before the clock is read."""
    parts = urlsplit(request.url)
    headers = [(k.lower(), v) for k, v in request.headers.items()] + [("host", parts.netloc)]
    return authenticate("POST", "/", parts.query, headers, BODY, principals=PRINCIPALS, at=datetime.now(UTC))


# -- presigned requests --------------------------------------------------------------------------------------


def _presigned(
    principal: Principal = LONG_TERM, token: str | None = None, expires: int = 3600, **headers: str
) -> AWSRequest:
    request = _request(headers)
    BodyKeepingQueryAuth(_credentials(principal, token), "kms", "us-east-1", expires=expires).add_auth(
        request
    )
    return request


@pytest.mark.parametrize(
    ("principal", "token"), [(LONG_TERM, None), (TEMPORARY, TOKEN)], ids=["long-term", "session-token"]
)
def test_a_presigned_request_authenticates(principal: Principal, token: str | None) -> None:
    request = _presigned(principal, token)
    assert "Authorization" not in request.headers
    assert _check(request) is principal


def test_a_presigned_request_signs_its_body() -> None:
    request = _presigned()
    _refused(
        InvalidSignatureException, "does not match", lambda: _check(request, body=b'{"NumberOfBytes": 1024}')
    )


def test_a_presigned_request_lives_as_long_as_the_clock_allows() -> None:
    # X-Amz-Expires=3600 (botocore's default) does not stretch it: AWS gives presigned requests to services
    # other than S3 a fixed life.
    request = _presigned(expires=3600)
    assert _check(request, after=MAX_CLOCK_SKEW) is LONG_TERM
    _refused(
        InvalidSignatureException,
        "Signature expired: ",
        lambda: _check(request, after=MAX_CLOCK_SKEW + timedelta(seconds=1)),
    )


def test_a_shorter_x_amz_expires_is_honoured() -> None:
    request = _presigned(expires=60)
    assert _check(request, after=timedelta(seconds=60)) is LONG_TERM
    _refused(InvalidSignatureException, " - 60 sec.)", lambda: _check(request, after=timedelta(seconds=61)))


@pytest.mark.parametrize(
    ("principal", "token"),
    [(TEMPORARY, None), (TEMPORARY, "other"), (LONG_TERM, TOKEN)],
    ids=["missing", "unknown", "sent-for-long-term-keys"],
)
def test_a_presigned_token_must_be_the_principals(principal: Principal, token: str | None) -> None:
    request = _presigned(principal, token)
    _refused(
        UnrecognizedClientException,
        "security token included in the request is invalid",
        lambda: _check(request),
    )


def test_a_presigned_request_may_not_also_carry_an_authorization_header() -> None:
    request = _presigned()
    request.headers["Authorization"] = "AWS4-HMAC-SHA256 Credential=x"
    _refused(
        InvalidSignatureException,
        "Found both 'X-Amz-Algorithm' as a query-string param and 'Authorization' as HTTP header.",
        lambda: _check(request),
    )


def test_a_presigned_request_must_sign_its_target() -> None:
    request = _request()
    del request.headers["X-Amz-Target"]
    BodyKeepingQueryAuth(_credentials(LONG_TERM), "kms", "us-east-1").add_auth(request)
    request.headers["X-Amz-Target"] = "TrentService.CreateCustomKeyStore"  # not in X-Amz-SignedHeaders
    _refused(InvalidSignatureException, "'X-Amz-Target' must be a 'SignedHeader'", lambda: _check(request))


@pytest.mark.parametrize(
    ("edit", "error", "fragment"),
    [
        (
            lambda q: q.replace("X-Amz-Algorithm=AWS4-HMAC-SHA256", "X-Amz-Algorithm=AWS4-HMAC-SHA512"),
            MissingAuthenticationTokenException,
            "Missing Authentication Token",
        ),
        (
            lambda q: "&".join(p for p in q.split("&") if not p.startswith("X-Amz-Credential=")),
            IncompleteSignatureException,
            "AWS query-string parameters must include 'X-Amz-Credential'. Re-examine the query-string "
            "parameters.",
        ),
        (
            lambda q: q.replace("X-Amz-Expires=3600", "X-Amz-Expires=604801"),
            IncompleteSignatureException,
            "X-Amz-Expires must be a whole number of seconds from 1 to 604800",
        ),
        (
            lambda q: q.replace("X-Amz-Date=", "X-Amz-Date=2"),
            IncompleteSignatureException,
            "Date must be in ISO-8601 'basic format'. Got '2",
        ),
    ],
    ids=["other-algorithm", "no-credential", "expires-over-a-week", "bad-date"],
)
def test_malformed_presigned_queries(
    edit: Callable[[str], str], error: type[KMSError], fragment: str
) -> None:
    request = _presigned()
    parts = urlsplit(request.url)
    request.url = parts._replace(query=edit(parts.query)).geturl()
    _refused(error, fragment, lambda: _at_now(request))


# -- what the audit record claims for a request refused before it was authenticated -------------------------


def test_a_presigned_requests_claimed_credential() -> None:
    request = _presigned(TEMPORARY, TOKEN)
    assert claimed_credential({}, urlsplit(request.url).query) == (TEMPORARY.access_key, "us-east-1")
    assert claimed_credential({}, "a=1") == (None, "us-east-1")
    header = {"authorization": "AWS4-HMAC-SHA256 Credential=AKIAX/20260101/eu-west-3/kms/aws4_request, S=1"}
    assert claimed_credential(header, "X-Amz-Credential=OTHER%2Fa%2Fb%2Fc%2Fd") == ("AKIAX", "eu-west-3")


def test_a_refused_line_names_what_the_request_claimed_and_nothing_secret() -> None:
    request = _presigned(TEMPORARY, TOKEN)
    target = ("/?" + urlsplit(request.url).query).encode()
    line = refused_line(
        at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        request_id="11111111-2222-4333-8444-555555555555",
        headers=[(b"x-amz-target", b"TrentService.GenerateRandom"), (b"user-agent", b"ua/1")],
        target=target,
        source_ip="192.0.2.7",
        error_code="RequestTimeoutException",
        error_message="Problems with the request at the HTTP level. Reading the Request timed out.",
    )
    record = json.loads(line)
    assert record["eventName"] == "GenerateRandom"
    assert record["userIdentity"] == {"type": "Unknown", "accessKeyId": TEMPORARY.access_key}
    assert record["errorCode"] == "RequestTimeoutException"
    assert (record["sourceIPAddress"], record["userAgent"], record["eventTime"]) == (
        "192.0.2.7",
        "ua/1",
        "2026-01-02T03:04:05Z",
    )
    assert record["requestID"] == record["eventID"] == "11111111-2222-4333-8444-555555555555"
    assert TOKEN[:20] not in line
    assert quote(TOKEN, safe="")[:20] not in line
    assert "Signature" not in line
