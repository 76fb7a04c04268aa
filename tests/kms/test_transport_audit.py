"""Requests refused by kms-sim's HTTP shell (kms/transport.py) before the service saw them get their
CloudTrail-shaped audit record too, against the real process: a head over its bound, a request the
deadline cut; and exactly one record, never two, for a body over its bound answered while it still came in."""

from __future__ import annotations

import contextlib
import json
import re
import select
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kms.protocol import MAX_REQUEST_BODY_BYTES
from kms.transport import MAX_REQUEST_HEAD_BYTES, REQUEST_TIMEOUT_CODE, REQUEST_TIMEOUT_MESSAGE

Server = Any

#: How long a test waits on a socket for the server (a safety net, not a measurement).
WAIT_S = 30
#: The claimed identity of the requests below (never a known key: these are refused before authentication).
CLAIMED = "AKIACLAIMEDCLAIMED00"
HEAD = (
    b"POST / HTTP/1.1\r\nHost: kms\r\nX-Amz-Target: TrentService.GenerateRandom\r\n"
    b"User-Agent: transport-audit/1\r\nContent-Type: application/x-amz-json-1.1\r\n"
    b"Authorization: AWS4-HMAC-SHA256 Credential="
    + CLAIMED.encode()
    + b"/20260101/eu-north-1/kms/aws4_request, "
    b"SignedHeaders=host, Signature=" + b"0" * 64 + b"\r\n"
)


def _records(home: Path) -> list[dict[str, Any]]:
    path = home / "kms" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _connect(server: Server) -> socket.socket:
    url = urlsplit(server.url)
    assert url.hostname is not None
    assert url.port is not None
    return socket.create_connection((url.hostname, url.port), timeout=WAIT_S)


def _read_to_close(sock: socket.socket) -> bytes:
    chunks = []
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _assert_claimed(record: dict[str, Any], code: str, message: str) -> None:
    """The record of a refused request: CloudTrail's shape, what the request claimed, the error."""
    assert record["eventName"] == "GenerateRandom"
    assert record["eventSource"] == "kms.amazonaws.com"
    assert record["userIdentity"] == {"type": "Unknown", "accessKeyId": CLAIMED}
    assert record["awsRegion"] == "eu-north-1"
    assert record["userAgent"] == "transport-audit/1"
    assert record["sourceIPAddress"] == "127.0.0.1"
    assert (record["errorCode"], record["errorMessage"]) == (code, message)
    assert record["requestParameters"] is None
    assert re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", record["requestID"])
    assert "Signature" not in json.dumps(record)


def test_a_head_over_the_bound_is_audited(shared_server: Server) -> None:
    before = len(_records(shared_server.home))
    line = b"X-Filler: " + b"f" * 8000 + b"\r\n"
    with _connect(shared_server) as sock:
        sock.sendall(HEAD)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the server may close first
            for _ in range(4 * (MAX_REQUEST_HEAD_BYTES + 256 * 1024) // len(line)):
                sock.sendall(line)
                if select.select([sock], [], [], 0.01)[0]:
                    break
        reply = _read_to_close(sock)
    assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    records = _records(shared_server.home)[before:]
    assert len(records) == 1
    message = f"Request head is over the {MAX_REQUEST_HEAD_BYTES}-byte limit"
    _assert_claimed(records[0], "ValidationException", message)
    # The record and the answer share the request ID.
    assert f"x-amzn-requestid: {records[0]['requestID']}\r\n".encode() in reply
    assert shared_server.client().generate_random(NumberOfBytes=4)["Plaintext"]


def test_requests_cut_by_the_deadline_are_audited_and_idle_connections_are_not(
    start_server: Callable[..., Server],
) -> None:
    server = start_server("--request-timeout", "0.5")
    before = len(_records(server.home))
    with _connect(server) as sock:  # connects and sends nothing: no request, no record
        assert _read_to_close(sock) == b""
    assert len(_records(server.home)) == before
    with _connect(server) as sock:  # a head that stops in the middle of a field
        sock.sendall(HEAD + b"X-Partial: never end")
        assert _read_to_close(sock) == b""
    with _connect(server) as sock:  # a whole head, and a body that stops
        sock.sendall(HEAD + b"Content-Length: 100\r\n\r\n" + b'{"NumberOfBytes": ')
        assert _read_to_close(sock) == b""
    records = _records(server.home)[before:]
    assert len(records) == 2
    for record in records:
        _assert_claimed(record, REQUEST_TIMEOUT_CODE, REQUEST_TIMEOUT_MESSAGE)
    assert server.client().generate_random(NumberOfBytes=4)["Plaintext"]
    assert len(_records(server.home)) == before + 3  # that request's own record, and no other


def test_a_body_over_the_bound_answered_while_it_came_in_is_audited_once(
    start_server: Callable[..., Server],
) -> None:
    # The service answers once it has read past the bound; the rest of the body never comes and the
    # deadline closes the connection: that request already has its record, and gets no second one.
    server = start_server("--request-timeout", "0.5")
    before = len(_records(server.home))
    declared = MAX_REQUEST_BODY_BYTES + 100 * 1024
    with _connect(server) as sock:
        sock.sendall(HEAD + f"Content-Length: {declared}\r\n\r\n".encode())
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b"a" * (MAX_REQUEST_BODY_BYTES + 1024))
        reply = _read_to_close(sock)
    assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    records = _records(server.home)[before:]
    assert [r["errorCode"] for r in records] == ["ValidationException"]
    assert records[0]["errorMessage"] == f"Request body is over the {MAX_REQUEST_BODY_BYTES}-byte limit"
