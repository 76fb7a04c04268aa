"""SigV4 completeness against the real kms-sim process: temporary credentials through boto3, a request timed
by its Date header, presigned requests, each refusal with AWS's name, HTTP status and message."""

from __future__ import annotations

import base64
import configparser
import http.client
import json
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError, EndpointConnectionError

Server = Any

TEMP_KEY = "ASIAEXAMPLEEXAMPLE02"
TEMP_SECRET = "t" * 40
TOKEN = "IQoJb3JpZ2luX2VjEFAaCXVzLWVhc3QtMSJHMEUCIQ//live+session/token=="
#: How long the fixture waits for the server to re-read its edited credentials and policy files.
RELOAD_WAIT_S = 30
BODY = b'{"NumberOfBytes": 32}'
HEADERS = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "TrentService.GenerateRandom"}


def _replace(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` by an atomic rename (the mode of the file it replaces kept)."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text)
    temp.chmod(path.stat().st_mode & 0o777)
    os.replace(temp, path)


@pytest.fixture(scope="module")
def server(shared_server: Server) -> Server:
    """This module's kms-sim, with a second principal holding temporary credentials (profile ``temp``)."""
    kms = shared_server.home / "kms"
    # Each file is replaced whole (a rename), so the server never reads one half written (it would keep
    # its previous content and read it again at the next look: see tests/kms/test_reload_rewrite.py).
    _replace(
        kms / "credentials",
        (kms / "credentials").read_text()
        + f"\n[temp]\naws_access_key_id = {TEMP_KEY}\naws_secret_access_key = {TEMP_SECRET}\n"
        f"aws_session_token = {TOKEN}\n",
    )
    policy = json.loads((kms / "policy.json").read_text())
    policy["temp"] = policy["nitro-sim"]
    _replace(kms / "policy.json", json.dumps(policy))
    deadline = time.monotonic() + RELOAD_WAIT_S  # the server re-reads changed files within a second
    while True:
        try:
            shared_server.client("temp").generate_random(NumberOfBytes=1)
            break
        except ClientError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
        except EndpointConnectionError:  # the server is gone: say what it said before it went
            pytest.fail(f"kms-sim is not running; its output:\n{shared_server.stderr[-3000:]}", pytrace=False)
    return shared_server


def _keys(server: Server) -> tuple[str, str]:
    parser = configparser.ConfigParser()
    parser.read(server.home / "kms" / "credentials")
    return parser["nitro-sim"]["aws_access_key_id"], parser["nitro-sim"]["aws_secret_access_key"]


def _last_record(server: Server) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((server.home / "kms" / "audit.jsonl").read_text().splitlines()[-1])
    return record


def _client(server: Server, key: str, secret: str, token: str | None) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "kms",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        aws_session_token=token,
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
    )


def _post(server: Server, request: AWSRequest) -> tuple[int, dict[str, Any]]:
    """Send a botocore-signed request as it stands (headers, query and body) over plain HTTP."""
    url = urlsplit(server.url)
    target = urlsplit(request.url)
    path = target.path + (f"?{target.query}" if target.query else "")
    body = request.data if isinstance(request.data, bytes) else request.data.encode()
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        connection.request("POST", path, body=body, headers=dict(request.headers.items()))
        response = connection.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else {}
    finally:
        connection.close()


# -- temporary credentials -----------------------------------------------------------------------------------


def test_boto3_with_temporary_credentials_end_to_end(server: Server) -> None:
    reply = server.client("temp").generate_random(NumberOfBytes=32)
    assert len(reply["Plaintext"]) == 32
    record = _last_record(server)
    assert record["userIdentity"]["userName"] == "temp"
    assert record["userIdentity"]["accessKeyId"] == TEMP_KEY
    assert "errorCode" not in record


@pytest.mark.parametrize(
    "token", [None, TOKEN + "x", "AQoDYXdzEJr//unknown"], ids=["missing", "longer", "other"]
)
def test_temporary_keys_without_their_token_are_an_unrecognized_client(
    server: Server, token: str | None
) -> None:
    with pytest.raises(ClientError) as raised:
        _client(server, TEMP_KEY, TEMP_SECRET, token).generate_random(NumberOfBytes=8)
    error = raised.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert error["Error"] == {
        "Code": "UnrecognizedClientException",
        "Message": "The security token included in the request is invalid.",
    }
    assert _last_record(server)["errorCode"] == "UnrecognizedClientException"


def test_a_token_sent_with_long_term_keys_is_an_unrecognized_client(server: Server) -> None:
    key, secret = _keys(server)
    with pytest.raises(ClientError) as raised:
        _client(server, key, secret, TOKEN).generate_random(NumberOfBytes=8)
    assert raised.value.response["Error"]["Code"] == "UnrecognizedClientException"


def test_an_unsigned_token_is_an_invalid_signature(server: Server) -> None:
    request = AWSRequest(method="POST", url=server.url + "/", data=BODY, headers=dict(HEADERS))
    SigV4Auth(Credentials(TEMP_KEY, TEMP_SECRET), "kms", "us-east-1").add_auth(request)
    request.headers["X-Amz-Security-Token"] = TOKEN  # after signing
    status, reply = _post(server, request)
    assert (status, reply) == (
        400,
        {
            "__type": "InvalidSignatureException",
            "message": "'X-Amz-Security-Token' must be a 'SignedHeader' in the AWS Authorization.",
        },
    )


# -- the Date header -----------------------------------------------------------------------------------------


def test_boto3_signing_by_a_date_header(server: Server) -> None:
    client = server.client()
    sent: list[dict[str, str]] = []

    def add_date(request: AWSRequest, **_: Any) -> None:
        request.headers["Date"] = "replaced by botocore's signer"

    def record(request: Any, **_: Any) -> None:  # the prepared request: values may be bytes
        sent.append({k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()})

    client.meta.events.register("before-sign.kms.GenerateRandom", add_date)
    client.meta.events.register("before-send.kms.GenerateRandom", record)
    assert len(client.generate_random(NumberOfBytes=16)["Plaintext"]) == 16
    assert "X-Amz-Date" not in sent[0]
    assert sent[0]["Date"].endswith(" -0000")
    assert "date;" in sent[0]["Authorization"]


def test_a_date_header_in_another_form_is_an_incomplete_signature(server: Server) -> None:
    key, secret = _keys(server)
    request = AWSRequest(method="POST", url=server.url + "/", data=BODY, headers={**HEADERS, "Date": "x"})
    SigV4Auth(Credentials(key, secret), "kms", "us-east-1").add_auth(request)
    del request.headers["Date"]
    request.headers["Date"] = "Friday, 09-Sep-11 23:36:00 GMT"
    status, reply = _post(server, request)
    assert (status, reply["__type"]) == (400, "IncompleteSignatureException")
    assert reply["message"] == (
        "Date must be in ISO-8601 'basic format'. Got 'Friday, 09-Sep-11 23:36:00 GMT'. "
        "See http://en.wikipedia.org/wiki/ISO_8601"
    )


# -- presigned requests --------------------------------------------------------------------------------------


class BodyKeepingQueryAuth(SigV4QueryAuth):
    """botocore's presigner, with the JSON body left in the body (SigV4QueryAuth moves it to the query)."""

    def _modify_request_before_signing(self, request: AWSRequest) -> None:
        body = request.data
        request.data = ""
        super()._modify_request_before_signing(request)
        request.data = body


@pytest.mark.parametrize("profile", ["nitro-sim", "temp"])
def test_a_presigned_request_is_served(server: Server, profile: str) -> None:
    credentials = (
        Credentials(*_keys(server)) if profile == "nitro-sim" else Credentials(TEMP_KEY, TEMP_SECRET, TOKEN)
    )
    request = AWSRequest(method="POST", url=server.url + "/", data=BODY, headers=dict(HEADERS))
    BodyKeepingQueryAuth(credentials, "kms", "us-east-1", expires=60).add_auth(request)
    assert "Authorization" not in request.headers
    status, reply = _post(server, request)
    assert status == 200, reply
    assert len(base64.b64decode(reply["Plaintext"])) == 32
    assert _last_record(server)["userIdentity"]["userName"] == profile


def test_a_presigned_request_with_another_body_is_refused(server: Server) -> None:
    request = AWSRequest(method="POST", url=server.url + "/", data=BODY, headers=dict(HEADERS))
    BodyKeepingQueryAuth(Credentials(*_keys(server)), "kms", "us-east-1").add_auth(request)
    request.data = b'{"NumberOfBytes": 1024}'
    status, reply = _post(server, request)
    assert (status, reply["__type"]) == (400, "InvalidSignatureException")
    assert reply["message"].startswith("The request signature we calculated does not match")


def test_botocores_presigned_url_authenticates_but_carries_no_body(server: Server) -> None:
    # generate_presigned_url moves the members into the query string, which KMS's JSON protocol does not
    # read: the request authenticates (its principal is in the record) and has no NumberOfBytes.
    url = server.client().generate_presigned_url("generate_random", Params={"NumberOfBytes": 8}, ExpiresIn=60)
    assert "NumberOfBytes=8" in url
    request = AWSRequest(method="POST", url=url, data=b"", headers=dict(HEADERS))
    status, reply = _post(server, request)
    assert status == 400
    assert reply["__type"] == "ValidationException"
    assert _last_record(server)["userIdentity"]["type"] == "IAMUser"


def test_both_ways_at_once_are_an_invalid_signature(server: Server) -> None:
    request = AWSRequest(method="POST", url=server.url + "/", data=BODY, headers=dict(HEADERS))
    BodyKeepingQueryAuth(Credentials(*_keys(server)), "kms", "us-east-1").add_auth(request)
    SigV4Auth(Credentials(*_keys(server)), "kms", "us-east-1").add_auth(request)
    status, reply = _post(server, request)
    assert (status, reply) == (
        400,
        {
            "__type": "InvalidSignatureException",
            "message": "Found both 'X-Amz-Algorithm' as a query-string param and 'Authorization' as HTTP "
            "header.",
        },
    )
    record = _last_record(server)
    assert record["userIdentity"]["type"] == "Unknown"
    assert record["userIdentity"]["accessKeyId"] == _keys(server)[0]


def test_no_token_or_secret_reached_the_logs(server: Server) -> None:
    # Last in the module: every request above, accepted or refused, is in the audit log by now.
    kms = server.home / "kms"
    assert len((kms / "audit.jsonl").read_text().splitlines()) > 10
    for text in ((kms / "audit.jsonl").read_text(), server.stderr):
        assert TOKEN not in text
        assert quote(TOKEN, safe="") not in text
        assert TEMP_SECRET not in text
