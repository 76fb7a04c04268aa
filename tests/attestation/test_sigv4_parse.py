"""What a SigV4 verifier reads (attestation/_sigv4_parse.py): presigned queries against botocore's
SigV4QueryAuth, Date headers against botocore's SigV4Auth and AWS's own test suite, and the refusals."""

from __future__ import annotations

import hmac
import json
from datetime import UTC, datetime
from email.utils import formatdate
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import given, settings
from hypothesis import strategies as st

from attestation import sigv4

AK = "AKIDEXAMPLE"
SK = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
TOKEN = "IQoJb3JpZ2luX2VjEFAaCXVzLWVhc3QtMSJHMEUCIQ//session+token=="
KMS_HEADERS = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "TrentService.GenerateRandom"}


class BodyKeepingQueryAuth(SigV4QueryAuth):
    """botocore's presigner, with the JSON body left in the body (SigV4QueryAuth moves it to the query)."""

    def _modify_request_before_signing(self, request: AWSRequest) -> None:
        body = request.data
        request.data = ""
        super()._modify_request_before_signing(request)
        request.data = body


def _presign(
    body: bytes = b'{"NumberOfBytes": 32}',
    *,
    token: str | None = None,
    expires: int = 3600,
    url: str = "https://kms.eu-west-1.amazonaws.com/",
) -> AWSRequest:
    request = AWSRequest(method="POST", url=url, data=body, headers=dict(KMS_HEADERS))
    BodyKeepingQueryAuth(Credentials(AK, SK, token), "kms", "eu-west-1", expires=expires).add_auth(request)
    return request


def _verify(request: AWSRequest, query: sigv4.QueryAuthorization) -> bool:
    """Our verifier-side recomputation over what botocore sent (the caller compares in constant time)."""
    parts = urlsplit(request.url)
    headers = [*request.headers.items(), ("Host", parts.netloc)]
    body = request.data if isinstance(request.data, bytes) else request.data.encode()
    recomputed = sigv4.request_signature(
        request.method,
        parts.path,
        query.signed_query,
        headers,
        sigv4.payload_hash(body),
        authorization=query.authorization,
        secret_key=SK,
        amz_date_value=query.amz_date,
    )
    return hmac.compare_digest(recomputed, query.authorization.signature)


@pytest.mark.parametrize("token", [None, TOKEN], ids=["long-term", "session-token"])
def test_presigned_request_from_botocore_parses_and_verifies(token: str | None) -> None:
    request = _presign(token=token, expires=300)
    query = urlsplit(request.url).query
    assert sigv4.has_query_authorization(query)
    parsed = sigv4.parse_query_authorization(query)
    assert parsed.authorization.access_key == AK
    assert parsed.authorization.scope.endswith("/eu-west-1/kms/aws4_request")
    assert parsed.authorization.signed_headers == ("content-type", "host", "x-amz-target")
    assert parsed.security_token == token
    assert parsed.expires_s == 300
    assert "X-Amz-Signature" not in parsed.signed_query
    assert sigv4.parse_amz_date(parsed.amz_date).tzinfo is UTC
    assert _verify(request, parsed)
    # The body is signed: another body, or the same one hashed as UNSIGNED-PAYLOAD, fails.
    request.data = b'{"NumberOfBytes": 1024}'
    assert not _verify(request, parsed)


def test_botocores_own_presigned_url_moves_the_body_into_the_query() -> None:
    # What generate_presigned_url does for KMS: the members become query parameters, the body is empty.
    request = AWSRequest(method="POST", url="https://kms/", data=b'{"NumberOfBytes": 8}', headers=KMS_HEADERS)
    SigV4QueryAuth(Credentials(AK, SK), "kms", "eu-west-1").add_auth(request)
    parsed = sigv4.parse_query_authorization(urlsplit(request.url).query)
    assert "NumberOfBytes=8" in parsed.signed_query
    assert request.data == ""
    assert _verify(request, parsed)


def test_the_signature_may_stand_anywhere_in_the_query() -> None:
    request = _presign()
    query = urlsplit(request.url).query
    items = query.split("&")
    moved = "&".join([items[-1], *items[:-1]])  # X-Amz-Signature first
    assert sigv4.parse_query_authorization(moved).signed_query == "&".join(items[:-1])


def test_percent_encoded_parameter_names_are_decoded() -> None:
    query = urlsplit(_presign().url).query.replace("X-Amz-Algorithm", "X%2DAmz-Algorithm")
    assert sigv4.has_query_authorization(query)
    assert sigv4.parse_query_authorization(query).authorization.access_key == AK


def _query(**change: str | None) -> str:
    params = {
        "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
        "X-Amz-Credential": f"{AK}%2F20261129%2Fus-east-1%2Fkms%2Faws4_request",
        "X-Amz-Date": "20261129T140506Z",
        "X-Amz-SignedHeaders": "host%3Bx-amz-target",
        "X-Amz-Signature": "ab" * 32,
    }
    params.update({k.replace("_", "-"): v for k, v in change.items()})
    return "&".join(f"{k}={v}" for k, v in params.items() if v is not None)


BAD_QUERIES = {
    "no-credential": (_query(X_Amz_Credential=None), "must include 'X-Amz-Credential'. Re-examine"),
    "empty-signature": (_query(X_Amz_Signature=""), "must include 'X-Amz-Signature'."),
    "two-missing": (
        _query(X_Amz_Date=None, X_Amz_SignedHeaders=None),
        "AWS query-string parameters must include 'X-Amz-SignedHeaders'. AWS query-string parameters must "
        "include 'X-Amz-Date'. Re-examine the query-string parameters.",
    ),
    "repeated": (_query() + "&X-Amz-Date=20261129T140507Z", "X-Amz-Date appears more than once"),
    "four-part-credential": (_query(X_Amz_Credential=f"{AK}%2F20261129%2Fkms%2Faws4_request"), "Credential"),
    "no-host": (_query(X_Amz_SignedHeaders="x-amz-target"), "must include host"),
    "upper-hex": (_query(X_Amz_Signature="AB" * 32), "Signature"),
    "expires-zero": (_query(X_Amz_Expires="0"), "X-Amz-Expires"),
    "expires-over-a-week": (_query(X_Amz_Expires="604801"), "X-Amz-Expires"),
    "expires-float": (_query(X_Amz_Expires="1e3"), "X-Amz-Expires"),
    "expires-negative": (_query(X_Amz_Expires="-5"), "X-Amz-Expires"),
    "expires-arabic-digits": (_query(X_Amz_Expires="\u0663\u0660"), "X-Amz-Expires"),
    "huge": (_query() + "&x=" + "a" * sigv4.MAX_QUERY_CHARS, "over"),
}


@pytest.mark.parametrize(("query", "fragment"), BAD_QUERIES.values(), ids=BAD_QUERIES.keys())
def test_bad_presigned_queries_are_refused(query: str, fragment: str) -> None:
    with pytest.raises(sigv4.MalformedAuthorizationError) as info:
        sigv4.parse_query_authorization(query)
    assert not isinstance(info.value, sigv4.UnsupportedAlgorithmError)
    assert fragment in str(info.value)


@pytest.mark.parametrize("algorithm", ["AWS4-HMAC-SHA512", "AWS4-ECDSA-P256-SHA256", ""])
def test_another_algorithm_is_its_own_error(algorithm: str) -> None:
    with pytest.raises(sigv4.UnsupportedAlgorithmError):
        sigv4.parse_query_authorization(_query(X_Amz_Algorithm=algorithm))


def test_a_good_hand_made_query_parses() -> None:
    parsed = sigv4.parse_query_authorization(_query(X_Amz_Expires="604800", X_Amz_Security_Token="a%2Bb%3D"))
    assert parsed.expires_s == sigv4.MAX_PRESIGNED_EXPIRES_S
    assert parsed.security_token == "a+b="
    assert parsed.authorization.signed_headers == ("host", "x-amz-target")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", False),
        ("Action=ListKeys", False),
        ("x=X-Amz-Algorithm", False),  # a value, not a name
        ("X-Amz-Algorithm", True),  # present without a value: then refused as the wrong algorithm
        ("a=1&X-Amz-Algorithm=AWS4-HMAC-SHA256", True),
        ("x-amz-algorithm=AWS4-HMAC-SHA256", False),  # names are case-sensitive
    ],
)
def test_has_query_authorization(query: str, expected: bool) -> None:
    assert sigv4.has_query_authorization(query) is expected


_NAMES = st.sampled_from([*sigv4.QUERY_AUTHORIZATION_PARAMETERS, "a", "X%2DAmz-Date", ""])
_VALUES = st.sampled_from(
    ["AWS4-HMAC-SHA256", f"{AK}%2F20261129%2Fus-east-1%2Fkms%2Faws4_request", "20261129T140506Z", "host",
     "host%3Bx-amz-target", "ab" * 32, "60", "%0A", "%", "%FF", "", "=", "a/b/c/d/e"]
)  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(_NAMES, _VALUES), max_size=10))
def test_parse_query_authorization_raises_only_its_error(pairs: list[tuple[str, str]]) -> None:
    query = "&".join(f"{name}={value}" for name, value in pairs)
    try:
        parsed = sigv4.parse_query_authorization(query)
    except sigv4.MalformedAuthorizationError as exc:
        message = str(exc)
    else:
        assert parsed.authorization.signed_headers[0] == "host"
        return
    assert "\n" not in message


# -- the Date header ---------------------------------------------------------------------------------------

AT = datetime(2011, 9, 9, 23, 36, tzinfo=UTC)


@pytest.mark.parametrize(
    "value",
    [
        "20110909T233600Z",  # the documented form
        "Mon, 09 Sep 2011 23:36:00 GMT",  # AWS's 2011 test suite (9 Sep 2011 was a Friday; not checked)
        "Fri, 09 Sep 2011 23:36:00 GMT",  # RFC 9110 IMF-fixdate
        formatdate(AT.timestamp()),  # botocore's SigV4Auth: "Fri, 09 Sep 2011 23:36:00 -0000"
        "Fri, 9 Sep 2011 23:36:00 +0000",
        "Fri, 09 Sep 2011 23:36:00 UT",
    ],
)
def test_date_header_forms(value: str) -> None:
    assert sigv4.parse_date_header(value) == AT


@pytest.mark.parametrize(
    "value",
    [
        "Fri, 09 Sep 2011 23:36:00 +0200",  # not UTC
        "Fri, 09 Sep 11 23:36:00 GMT",  # two-digit year
        "Friday, 09-Sep-11 23:36:00 GMT",  # RFC 850
        "Fri Sep  9 23:36:00 2011",  # asctime
        "Fri, 31 Feb 2011 23:36:00 GMT",  # no such day
        "Fri, 09 Sep 2011 23:36:00 GMT ",
        "Fri, \u0660\u0669 Sep 2011 23:36:00 GMT",  # Arabic-Indic digits
        "2011-09-09T23:36:00Z",  # ISO 8601 extended
        "\u0662\u0660110909T233600Z",
        "",
    ],
)
def test_other_date_header_forms_are_refused(value: str) -> None:
    with pytest.raises(sigv4.MalformedAuthorizationError):
        sigv4.parse_date_header(value)


@pytest.mark.parametrize(
    ("query", "signature"),
    [
        ("", "b27ccfbfa7df52a200ff74193ca6e32d4b48b8856fab7ebf1c595d0670a7e470"),
        ("a=foo&b=foo", "0dc122f3b28b831ab48ba65cb47300de53fbe91b577fe113edac383730254a3b"),
    ],
    ids=["get-vanilla", "get-vanilla-query-order-key"],
)
def test_aws_test_suite_signs_a_date_header(query: str, signature: str) -> None:
    # AWS Signature Version 4 test suite (aws4_testsuite, 2011): a request timed by its Date header alone;
    # the string to sign carries that time in ISO 8601 basic form.
    date = "Mon, 09 Sep 2011 23:36:00 GMT"
    authorization = sigv4.parse_authorization(
        f"AWS4-HMAC-SHA256 Credential={AK}/20110909/us-east-1/host/aws4_request, "
        f"SignedHeaders=date;host, Signature={signature}"
    )
    recomputed = sigv4.request_signature(
        "GET",
        "/",
        query,
        [("Date", date), ("Host", "host.foo.com")],
        sigv4.EMPTY_SHA256,
        authorization=authorization,
        secret_key=SK,
        amz_date_value=sigv4.amz_date(sigv4.parse_date_header(date)),
    )
    assert recomputed == signature


def test_botocore_signs_a_request_with_a_date_header_by_it() -> None:
    request = AWSRequest(
        method="POST",
        url="https://kms.us-east-1.amazonaws.com/",
        data=json.dumps({"NumberOfBytes": 8}).encode(),
        headers={**KMS_HEADERS, "Date": "anything: botocore rewrites it"},
    )
    SigV4Auth(Credentials(AK, SK), "kms", "us-east-1").add_auth(request)
    assert "X-Amz-Date" not in request.headers
    signed_at = sigv4.parse_date_header(request.headers["Date"])
    authorization = sigv4.parse_authorization(request.headers["Authorization"])
    assert "date" in authorization.signed_headers
    recomputed = sigv4.request_signature(
        "POST",
        "/",
        "",
        [*request.headers.items(), ("Host", "kms.us-east-1.amazonaws.com")],
        sigv4.payload_hash(request.data),
        authorization=authorization,
        secret_key=SK,
        amz_date_value=sigv4.amz_date(signed_at),
    )
    assert recomputed == authorization.signature


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_parse_date_header_raises_only_its_error(value: str) -> None:
    try:
        at = sigv4.parse_date_header(value)
    except sigv4.MalformedAuthorizationError:
        return
    assert at.tzinfo is UTC
