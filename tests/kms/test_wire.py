"""The awsJson1_1 front and SigV4, over raw HTTP signed by botocore's SigV4Auth (an independent signer)."""

from __future__ import annotations

import configparser
import http.client
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from attestation.sigv4 import sign_request

Server = Any


@pytest.fixture
def server(shared_server: Server) -> Server:
    """These tests change no server state (but the audit log): one server for the module."""
    return shared_server


def _credentials(server: Server) -> tuple[str, str]:
    parser = configparser.ConfigParser()
    parser.read(server.home / "kms" / "credentials")
    return parser["nitro-sim"]["aws_access_key_id"], parser["nitro-sim"]["aws_secret_access_key"]


def _send(
    server: Server,
    body: bytes,
    *,
    target: str | None = "TrentService.GenerateRandom",
    access_key: str | None = None,
    secret_key: str | None = None,
    sign: bool = True,
    at: datetime | None = None,
    service: str = "kms",
    method: str = "POST",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], dict[str, Any]]:
    """Send one request, signed as botocore signs KMS calls unless ``sign`` is false."""
    default_key, default_secret = _credentials(server)
    url = urlsplit(server.url)
    request_headers = {"Content-Type": "application/x-amz-json-1.1"}
    if target is not None:
        request_headers["X-Amz-Target"] = target
    request = AWSRequest(method=method, url=server.url + "/", data=body, headers=request_headers)
    if sign and at is None:
        credentials = Credentials(access_key or default_key, secret_key or default_secret)
        SigV4Auth(credentials, service, "eu-west-1").add_auth(request)
    sent = dict(request.headers.items())
    if sign and at is not None:  # a chosen signing time: our signer (checked against botocore's elsewhere)
        sent["Host"] = url.netloc
        sent.update(
            sign_request(
                method,
                "/",
                "",
                sent,
                body,
                access_key=access_key or default_key,
                secret_key=secret_key or default_secret,
                session_token=None,
                region="eu-west-1",
                service=service,
                at=at,
            )
        )
    sent.update(headers or {})
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        connection.request(method, "/", body=body, headers=sent)
        response = connection.getresponse()
        data = response.read()
        reply = {k.lower(): v for k, v in response.getheaders()}
        return response.status, reply, json.loads(data) if data else {}
    finally:
        connection.close()


def test_signed_request_succeeds_in_any_region(server: Server) -> None:
    status, headers, body = _send(server, b'{"NumberOfBytes": 16}')
    assert status == 200
    assert headers["content-type"] == "application/x-amz-json-1.1"
    assert headers["x-amzn-requestid"]
    assert len(body["Plaintext"]) == 24  # base64 of 16 bytes


@pytest.mark.parametrize(
    ("kwargs", "code", "fragment"),
    [
        ({"sign": False}, "MissingAuthenticationTokenException", "Missing Authentication Token"),
        ({"secret_key": "x" * 40}, "InvalidSignatureException", "does not match"),
        ({"access_key": "AKIAUNKNOWNUNKNOWN00"}, "UnrecognizedClientException", "security token"),
        ({"service": "s3"}, "InvalidSignatureException", "scoped to correct service"),
        (
            {"skew": timedelta(hours=-2)},
            "InvalidSignatureException",
            "Signature expired",
        ),
        (
            {"skew": timedelta(hours=2)},
            "InvalidSignatureException",
            "Signature not yet current",
        ),
    ],
    ids=["missing", "wrong-secret", "unknown-key", "wrong-service", "expired", "future"],
)
def test_authentication_failures(server: Server, kwargs: dict[str, Any], code: str, fragment: str) -> None:
    if "skew" in kwargs:  # the signing time is taken when the test runs, not at collection
        kwargs = {"at": datetime.now(UTC) + kwargs["skew"]}
    status, headers, body = _send(server, b'{"NumberOfBytes": 16}', **kwargs)
    assert (status, body.get("__type")) == (400, code), body
    assert fragment in body["message"]
    assert headers["x-amzn-requestid"]
    assert _send(server, b'{"NumberOfBytes": 4}')[0] == 200  # still serving


@pytest.mark.parametrize(
    "authorization",
    [
        "AWS4-HMAC-SHA256 garbage",
        "Basic dXNlcjpwYXNz",
        "AWS4-HMAC-SHA256 Credential=AKIA/20260101/us-east-1/kms/aws4_request, SignedHeaders=host",
    ],
)
def test_malformed_authorization_is_incomplete_signature(server: Server, authorization: str) -> None:
    status, _, body = _send(
        server, b"{}", sign=False, headers={"Authorization": authorization, "X-Amz-Date": "20260101T000000Z"}
    )
    assert (status, body["__type"]) == (400, "IncompleteSignatureException")


def test_missing_amz_date_is_incomplete_signature(server: Server) -> None:
    key, _ = _credentials(server)
    authorization = (
        f"AWS4-HMAC-SHA256 Credential={key}/20260101/us-east-1/kms/aws4_request, "
        f"SignedHeaders=host, Signature={'0' * 64}"
    )
    status, _, body = _send(server, b"{}", sign=False, headers={"Authorization": authorization})
    assert (status, body["__type"]) == (400, "IncompleteSignatureException")


@pytest.mark.parametrize(
    ("body", "target", "code"),
    [
        (b'{"NumberOfBytes": 16}', "TrentService.GetKeyRotationStatus", "UnknownOperationException"),
        (b'{"NumberOfBytes": 16}', "NotTrent.GenerateRandom", "UnknownOperationException"),
        (b'{"NumberOfBytes": 16}', None, "UnknownOperationException"),
        (b'{"NumberOfBytes": 16', "TrentService.GenerateRandom", "SerializationException"),
        (b"[1, 2]", "TrentService.GenerateRandom", "SerializationException"),
        (b'{"NumberOfBytes": "16"}', "TrentService.GenerateRandom", "SerializationException"),
        (b'{"NumberOfBytes": 1.5}', "TrentService.GenerateRandom", "SerializationException"),
        (b'{"NumberOfBytes": true}', "TrentService.GenerateRandom", "SerializationException"),
        (b'{"NumberOfBytes": 8, "Recipient": "x"}', "TrentService.GenerateRandom", "SerializationException"),
        (
            b'{"NumberOfBytes": 8, "Recipient": {"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256", '
            b'"AttestationDocument": "not base64!"}}',
            "TrentService.GenerateRandom",
            "SerializationException",
        ),
        (
            b'{"NumberOfBytes": 8, "Recipient": {"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256"}}',
            "TrentService.GenerateRandom",
            "ValidationException",
        ),
        (
            b'{"NumberOfBytes": 8, "CustomKeyStoreId": ""}',
            "TrentService.GenerateRandom",
            "ValidationException",
        ),
        (
            b'{"NumberOfBytes": 8, "CustomKeyStoreId": 5}',
            "TrentService.GenerateRandom",
            "SerializationException",
        ),
        (b"\xff\xfe", "TrentService.GenerateRandom", "SerializationException"),
    ],
)
def test_bad_requests_get_real_error_names(
    server: Server, body: bytes, target: str | None, code: str
) -> None:
    status, headers, reply = _send(server, body, target=target)
    assert (status, reply["__type"]) == (400, code)
    assert reply["message"]
    assert headers["content-type"] == "application/x-amz-json-1.1"
    assert _send(server, b'{"NumberOfBytes": 4}')[0] == 200


def test_two_violations_are_listed_together(server: Server) -> None:
    status, _, reply = _send(server, b'{"NumberOfBytes": 0, "CustomKeyStoreId": ""}')
    assert status == 400
    assert reply["message"].startswith("2 validation errors detected: ")
    assert "'numberOfBytes'" in reply["message"]
    assert "'customKeyStoreId'" in reply["message"]


def test_oversized_body_is_a_validation_error(server: Server) -> None:
    big = b'{"NumberOfBytes": 8, "Pad": "' + b"a" * (500 * 1024) + b'"}'
    status, _, reply = _send(server, big)
    assert (status, reply["__type"]) == (400, "ValidationException")
    assert _send(server, b'{"NumberOfBytes": 4}')[0] == 200


def test_get_is_a_json_error_not_html(server: Server) -> None:
    status, headers, reply = _send(server, b"", method="GET", sign=False)
    assert status == 400
    assert headers["content-type"] == "application/x-amz-json-1.1"
    assert reply["__type"] == "MissingAuthenticationTokenException"


def test_unknown_members_are_ignored(server: Server) -> None:
    status, _, reply = _send(server, b'{"NumberOfBytes": 8, "FutureMember": {"a": 1}}')
    assert status == 200
    assert "Plaintext" in reply


def test_refused_requests_are_audited(server: Server) -> None:
    key, _ = _credentials(server)
    _send(server, b'{"NumberOfBytes": 16}', sign=False)
    record = json.loads((server.home / "kms" / "audit.jsonl").read_text().splitlines()[-1])
    assert record["eventName"] == "GenerateRandom"
    assert record["errorCode"] == "MissingAuthenticationTokenException"
    assert record["userIdentity"] == {"type": "Unknown", "accessKeyId": None}
    _send(server, b'{"NumberOfBytes": 16}', secret_key="w" * 40)
    record = json.loads((server.home / "kms" / "audit.jsonl").read_text().splitlines()[-1])
    assert record["errorCode"] == "InvalidSignatureException"
    assert record["userIdentity"]["accessKeyId"] == key
    assert record["awsRegion"] == "eu-west-1"


def test_audit_source_address_cannot_be_forged_with_x_forwarded_for(server: Server) -> None:
    status, _, _ = _send(server, b'{"NumberOfBytes": 4}', headers={"X-Forwarded-For": "203.0.113.9"})
    assert status == 200
    record = json.loads((server.home / "kms" / "audit.jsonl").read_text().splitlines()[-1])
    assert record["sourceIPAddress"] == "127.0.0.1"
