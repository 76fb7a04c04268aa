"""SigV4 core against botocore's SigV4Auth (the independent implementation), byte for byte."""

from __future__ import annotations

import hmac
from datetime import UTC, datetime, timedelta, timezone

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import given, settings
from hypothesis import strategies as st

from attestation import sigv4
from attestation.errors import MalformedError

AK = "AKIDEXAMPLE"
SK = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
TOKEN = "IQoJb3JpZ2luX2VjEFAaCXVzLWVhc3QtMSJHMEUCIQ//session/token=="

CASES = {
    "kms-generate-random": (
        "POST",
        "https://kms.us-east-1.amazonaws.com/",
        {
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "TrentService.GenerateRandom",
            "Host": "kms.us-east-1.amazonaws.com",
            "User-Agent": "aws-nitro_enclaves-sdk-c/v0.4.1",
        },
        b'{"NumberOfBytes": 32}',
        None,
        "us-east-1",
    ),
    "session-token": (
        "POST",
        "https://kms.eu-west-2.amazonaws.com/",
        {
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "TrentService.GenerateRandom",
            "Content-Length": "21",
        },
        b'{"NumberOfBytes": 64}',
        TOKEN,
        "eu-west-2",
    ),
    "odd-headers": (
        "POST",
        "http://127.0.0.1:8000/",
        {
            "X-Amz-Target": "TrentService.GenerateRandom",
            "X-Custom": "  spaced   out\tvalue  ",
            "content-type": "application/x-amz-json-1.1",
            "Connection": "keep-alive",
            "X-Empty": "",
        },
        b"",
        None,
        "us-east-1",
    ),
    "path-and-query": (
        "GET",
        "https://example.amazonaws.com/a/./b/../c%20d/?Param2=value2&Param1=value%2F1&Param1=a",
        {"X-Amz-Meta": "x"},
        b"",
        TOKEN,
        "ap-southeast-2",
    ),
    "trailing-slash": (
        "GET",
        "https://example.amazonaws.com/foo/bar/",
        {},
        b"",
        None,
        "us-east-1",
    ),
}


def _botocore(case: tuple) -> AWSRequest:
    method, url, headers, body, token, region = case
    request = AWSRequest(method=method, url=url, headers=dict(headers), data=body)
    SigV4Auth(Credentials(AK, SK, token), "kms", region).add_auth(request)
    return request


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_sign_request_matches_botocore(case: tuple) -> None:
    method, url, headers, body, token, region = case
    expected = _botocore(case)
    at = datetime.strptime(expected.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    scheme_host, _, rest = url.partition("://")[2].partition("/")
    path, _, query = ("/" + rest).partition("?")
    ours_headers = dict(headers)
    if not any(k.lower() == "host" for k in headers):
        ours_headers["Host"] = scheme_host
    added = sigv4.sign_request(
        method,
        path,
        query,
        ours_headers,
        body,
        access_key=AK,
        secret_key=SK,
        session_token=token,
        region=region,
        service="kms",
        at=at,
    )
    assert added["Authorization"] == expected.headers["Authorization"]
    assert added["X-Amz-Date"] == expected.headers["X-Amz-Date"]
    assert added.get("X-Amz-Security-Token") == expected.headers.get("X-Amz-Security-Token")


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_verifier_side_accepts_botocore_request(case: tuple) -> None:
    method, url, _headers, body, _token, region = case
    signed = _botocore(case)
    host, _, rest = url.partition("://")[2].partition("/")
    path, _, query = ("/" + rest).partition("?")
    wire_headers = [*signed.headers.items()]
    if not any(k.lower() == "host" for k, _ in wire_headers):
        wire_headers.append(("Host", host))
    parsed = sigv4.parse_authorization(signed.headers["Authorization"])
    assert parsed.access_key == AK
    assert parsed.region == region
    assert parsed.service == "kms"
    recomputed = sigv4.request_signature(
        method,
        path,
        query,
        wire_headers,
        sigv4.payload_hash(body),
        authorization=parsed,
        secret_key=SK,
        amz_date_value=signed.headers["X-Amz-Date"],
    )
    assert hmac.compare_digest(recomputed, parsed.signature)
    # A changed body or secret changes the signature.
    other = sigv4.request_signature(
        method,
        path,
        query,
        wire_headers,
        sigv4.payload_hash(body + b" "),
        authorization=parsed,
        secret_key=SK,
        amz_date_value=signed.headers["X-Amz-Date"],
    )
    assert other != parsed.signature


def test_aws_documented_signing_key() -> None:
    # IAM User Guide, "Examples of how to derive a signing key for Signature Version 4".
    key = sigv4.derive_signing_key(SK, "20120215", "us-east-1", "iam")
    assert key.hex() == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"


def test_amz_date_is_utc_and_requires_aware_time() -> None:
    at = datetime(2026, 11, 29, 12, 0, 5, tzinfo=timezone(timedelta(hours=2)))
    assert sigv4.amz_date(at) == "20261129T100005Z"
    assert sigv4.parse_amz_date("20261129T100005Z") == at
    with pytest.raises(ValueError, match="timezone-aware"):
        sigv4.amz_date(datetime(2026, 1, 1))
    with pytest.raises(sigv4.MalformedAuthorizationError):
        sigv4.parse_amz_date("2026-11-29T10:00:05Z")


def test_sign_request_requires_host() -> None:
    with pytest.raises(ValueError, match="Host"):
        sigv4.sign_request(
            "POST",
            "/",
            "",
            {"X-Amz-Target": "x"},
            b"",
            access_key=AK,
            secret_key=SK,
            session_token=None,
            region="us-east-1",
            service="kms",
            at=datetime(2026, 1, 1, tzinfo=UTC),
        )


def test_missing_signed_header_is_refused() -> None:
    parsed = sigv4.parse_authorization(
        f"AWS4-HMAC-SHA256 Credential={AK}/20261129/us-east-1/kms/aws4_request, "
        f"SignedHeaders=host;x-amz-date;x-amz-target, Signature={'0' * 64}"
    )
    with pytest.raises(sigv4.MalformedAuthorizationError, match="x-amz-target"):
        sigv4.request_signature(
            "POST",
            "/",
            "",
            {"Host": "h", "X-Amz-Date": "20261129T000000Z"},
            sigv4.EMPTY_SHA256,
            authorization=parsed,
            secret_key=SK,
            amz_date_value="20261129T000000Z",
        )


GOOD = (
    f"AWS4-HMAC-SHA256 Credential={AK}/20261129/us-east-1/kms/aws4_request, "
    f"SignedHeaders=content-type;host;x-amz-date, Signature={'ab' * 32}"
)


def test_parse_authorization_fields() -> None:
    parsed = sigv4.parse_authorization(GOOD)
    assert parsed.date_stamp == "20261129"
    assert parsed.signed_headers == ("content-type", "host", "x-amz-date")
    assert parsed.signature == "ab" * 32
    assert parsed.scope == "20261129/us-east-1/kms/aws4_request"
    # No space after the commas is accepted too (some SDKs write it that way).
    assert sigv4.parse_authorization(GOOD.replace(", ", ",")) == parsed


BAD = {
    "empty": "",
    "wrong-algorithm": GOOD.replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA512"),
    "sigv2": "AWS AKIDEXAMPLE:frJIUN8DYpKDtOLCwo//yllqDzg=",
    "missing-signature": GOOD.split(", Signature", maxsplit=1)[0],
    "repeated-component": GOOD + f", Signature={'cd' * 32}",
    "unknown-component": GOOD + ", Foo=bar",
    "short-credential": GOOD.replace("/kms/aws4_request", "/kms"),
    "bad-terminator": GOOD.replace("aws4_request", "aws4_reqest"),
    "bad-date": GOOD.replace("20261129", "2026-11-29"),
    "unsorted-headers": GOOD.replace("content-type;host", "host;content-type"),
    "upper-case-header": GOOD.replace("content-type", "Content-Type"),
    "no-host": GOOD.replace("content-type;host;", "content-type;"),
    "short-signature": GOOD.replace("ab" * 32, "ab" * 31),
    "upper-hex-signature": GOOD.replace("ab" * 32, "AB" * 32),
    "huge": GOOD + "x" * 5000,
}


@pytest.mark.parametrize("value", BAD.values(), ids=BAD.keys())
def test_parse_authorization_rejects(value: str) -> None:
    with pytest.raises(sigv4.MalformedAuthorizationError) as info:
        sigv4.parse_authorization(value)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, MalformedError)
    assert "\n" not in str(info.value)


def test_canonical_pieces() -> None:
    assert sigv4.canonical_uri("") == "/"
    assert sigv4.canonical_uri("/a/b/../c/./") == "/a/c/"
    assert sigv4.canonical_query("b=2&a=1&a=0") == "a=0&a=1&b=2"
    block = sigv4.canonical_headers([("X-A", " 1  2 "), ("x-a", "3"), ("Host", "h")], ["host", "x-a"])
    assert block == "host:h\nx-a:1 2,3\n"
    assert sigv4.headers_to_sign({"User-Agent": "u", "Host": "h", "Expect": "100-continue"}) == ("host",)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_parse_authorization_never_raises_anything_else(value: str) -> None:
    try:
        sigv4.parse_authorization(value)
    except sigv4.MalformedAuthorizationError as exc:
        message = str(exc)
    else:
        return
    assert "\n" not in message


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,15}", fullmatch=True),
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
        max_size=6,
    ),
    st.binary(max_size=64),
)
def test_random_headers_sign_like_botocore(headers: dict[str, str], body: bytes) -> None:
    headers = {k: v for k, v in headers.items() if k.lower() not in ("host", "authorization", "x-amz-date")}
    case = ("POST", "https://kms.us-east-1.amazonaws.com/", headers, body, None, "us-east-1")
    expected = _botocore(case)
    at = datetime.strptime(expected.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    added = sigv4.sign_request(
        "POST",
        "/",
        "",
        {**headers, "Host": "kms.us-east-1.amazonaws.com"},
        body,
        access_key=AK,
        secret_key=SK,
        session_token=None,
        region="us-east-1",
        service="kms",
        at=at,
    )
    assert added["Authorization"] == expected.headers["Authorization"]


@settings(max_examples=100, deadline=None)
@given(
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 1, 1), timezones=st.just(UTC)),
    st.binary(max_size=128),
    st.one_of(st.none(), st.text(alphabet="abcXYZ019+/=", min_size=1, max_size=40)),
)
def test_fixed_signer_equals_sign_request(at: datetime, body: bytes, token: str | None) -> None:
    headers = [
        ("Host", "kms.eu-west-1.amazonaws.com"),
        ("Content-Type", "application/x-amz-json-1.1"),
        ("X-Amz-Target", "TrentService.GenerateRandom"),
        ("User-Agent", "ua"),
    ]
    creds = {
        "access_key": AK,
        "secret_key": SK,
        "session_token": token,
        "region": "eu-west-1",
        "service": "kms",
    }
    signer = sigv4.FixedRequestSigner("POST", "/", headers, **creds)
    expected = sigv4.sign_request("POST", "/", "", headers, body, at=at, **creds)
    assert dict(signer.sign(body, at)) == expected


def test_fixed_signer_matches_botocore() -> None:
    case = CASES["session-token"]
    expected = _botocore(case)
    at = datetime.strptime(expected.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    headers = {**case[2], "Host": "kms.eu-west-2.amazonaws.com"}
    signer = sigv4.FixedRequestSigner(
        "POST",
        "/",
        headers,
        access_key=AK,
        secret_key=SK,
        session_token=TOKEN,
        region="eu-west-2",
        service="kms",
    )
    assert dict(signer.sign(case[3], at))["Authorization"] == expected.headers["Authorization"]


_ZONES = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.datetimes(
            min_value=datetime(2000, 1, 1),
            max_value=datetime(2099, 1, 1),
            timezones=st.sampled_from(
                [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
            ),
        ),
        min_size=1,
        max_size=6,
    ),
    st.lists(st.integers(min_value=-2_000_000, max_value=2_000_000), min_size=1, max_size=6),
)
def test_one_fixed_signer_over_a_series_of_times_equals_sign_request(
    starts: list[datetime], steps_us: list[int]
) -> None:
    # The signer keeps the last X-Amz-Date (per whole second) and the day's key: series that stay within a
    # second, cross a second, a day, or go back in time, in several time zones, must all sign as from scratch.
    headers = [("Host", "kms.eu-west-1.amazonaws.com"), ("X-Amz-Target", "TrentService.GenerateRandom")]
    creds = {
        "access_key": AK,
        "secret_key": SK,
        "session_token": None,
        "region": "eu-west-1",
        "service": "kms",
    }
    signer = sigv4.FixedRequestSigner("POST", "/", headers, **creds)
    for start in starts:
        at = start
        for step in steps_us:
            at = at + timedelta(microseconds=step)
            expected = sigv4.sign_request("POST", "/", "", headers, b"{}", at=at, **creds)
            assert dict(signer.sign(b"{}", at)) == expected


def test_fixed_signer_refuses_a_naive_time() -> None:
    signer = sigv4.FixedRequestSigner(
        "POST",
        "/",
        [("Host", "h")],
        access_key=AK,
        secret_key=SK,
        session_token=None,
        region="r",
        service="kms",
    )
    with pytest.raises(ValueError, match="timezone-aware"):
        signer.sign(b"", datetime(2026, 1, 1))
