"""Hostile input to kms-sim and its command line (session 4): each a clear error, never a traceback or a 500.

Process-level findings run the real ``kms-sim`` (``shared_server`` or ``python -m kms.cli``); pure parsers are
called directly.
"""

from __future__ import annotations

import configparser
import contextlib
import json
import os
import re
import select
import socket
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from attestation.errors import SimulationError
from attestation.sigv4 import sign_request
from kms.cli import main as kms_main
from kms.iam import PolicyFileError, load_policies
from kms.state import load_principals
from kms.transport import MAX_REQUEST_HEAD_BYTES

Server = Any

#: The member a rejected document's message names.
_RECIPIENT = "Recipient.AttestationDocument"

#: How long a test waits for a process it started.
WAIT_S = 30


def _kms_sim(home: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """``kms-sim ARGV`` expected to stop at once (a server that started would time out here)."""
    return subprocess.run(
        [sys.executable, "-m", "kms.cli", *argv],
        env={**os.environ, "NITRO_SIM_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
    )


def _one_line_error(result: subprocess.CompletedProcess[str], code: int, fragment: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("kms-sim: error: ")
    assert result.stderr.count("\n") == 1, result.stderr
    assert fragment in result.stderr
    assert result.stdout == ""


# --- DescribeCustomKeyStores Marker: only the ASCII offsets we issue ---------------------------------------


@pytest.mark.parametrize(
    "marker", ["\u00b2", "\u0660", "\uff10", "\u00b9\u00b2"], ids=["sup2", "arabic0", "fw0", "sup12"]
)
def test_marker_of_non_ascii_digits_is_invalid_marker(shared_server: Server, marker: str) -> None:
    # "\u00b2".isdigit() is True but int() refuses it (was HTTP 500); int("\u0660") is 0 (was accepted).
    client = shared_server.client()
    with pytest.raises(client.exceptions.InvalidMarkerException):
        client.describe_custom_key_stores(Marker=marker)
    assert len(client.generate_random(NumberOfBytes=8)["Plaintext"]) == 8
    assert "internal error" not in shared_server.stderr


# --- files the operator hands kms-sim ---------------------------------------------------------------------


def test_deeply_nested_policy_file_is_a_policy_error(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text("[" * 100_000 + "]" * 100_000)  # under the 1 MiB bound, deeper than the stack
    with pytest.raises(PolicyFileError, match="nested too deeply"):
        load_policies(path)


def test_deeply_nested_policy_file_stops_serve_in_one_line(aws_env: Path) -> None:
    path = aws_env / "deep.json"
    path.write_text("{" + '"a":{' * 50_000 + "}" * 50_001)
    _one_line_error(_kms_sim(aws_env, "serve", "--policy", str(path)), 1, "nested too deeply")


def test_credentials_file_without_sections_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "credentials"
    path.write_text("aws_access_key_id = x\n")
    with pytest.raises(SimulationError) as raised:
        load_principals(path)
    assert "\n" not in str(raised.value)
    assert "line 1 comes before any [profile] header" in str(raised.value)


SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (f"aws_secret_access_key = {SECRET}\n", "line 1 comes before any [profile] header"),
        (f"[p]\naws_access_key_id = A\naws_secret_access_key {SECRET}\n", "not 'name = value' at line(s) 3"),
        (f"[p]\naws_secret_access_key = {SECRET}\naws_secret_access_key = x\n", "defined twice (line 3)"),
        (f"[p]\naws_secret_access_key = {SECRET}\n[p]\n", "defined twice (line 3)"),
    ],
    ids=["before-any-section", "no-equals", "duplicate-option", "duplicate-section"],
)
def test_a_bad_credentials_file_is_refused_without_quoting_it(tmp_path: Path, text: str, where: str) -> None:
    # configparser's messages quote the offending line: here, a secret access key, on stderr.
    path = tmp_path / "credentials"
    path.write_text(text)
    with pytest.raises(SimulationError) as raised:
        load_principals(path)
    assert where in str(raised.value)
    assert SECRET not in str(raised.value)
    assert "EXAMPLEKEY" not in str(raised.value)


def test_credentials_file_without_sections_stops_serve_in_one_line(aws_env: Path) -> None:
    (aws_env / "kms").mkdir(parents=True, exist_ok=True)
    (aws_env / "kms" / "credentials").write_text("not an ini file\n")
    _one_line_error(_kms_sim(aws_env, "serve", "--listen", "127.0.0.1:0"), 1, "before any [profile] header")


def test_trust_root_that_never_ends_is_refused(aws_env: Path) -> None:
    # /dev/zero was read whole (unbounded memory, never started); now read up to a bound and refused.
    _one_line_error(_kms_sim(aws_env, "serve", "--trust-root", "/dev/zero"), 1, "byte limit")


def test_corrupt_key_store_database_is_one_line(aws_env: Path) -> None:
    (aws_env / "kms").mkdir(parents=True, exist_ok=True)
    (aws_env / "kms" / "keystores.db").write_bytes(b"\x00garbage" * 1000)
    for argv in (["keystore", "list"], ["keystore", "set", "--id", "cks-1", "--state", "FAILED"]):
        _one_line_error(_kms_sim(aws_env, *argv), 1, "not a database")


# --- flags ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("age", ["1e300", "1e12", "315360001"])
def test_max_doc_age_beyond_ten_years_is_a_usage_error(aws_env: Path, age: str) -> None:
    # 1e300 s overflowed timedelta after the flag was accepted: a traceback.
    _one_line_error(_kms_sim(aws_env, "serve", "--max-doc-age", age), 2, "--max-doc-age")


@pytest.mark.parametrize("port", ["\u0663", "\uff18\uff10", "8\u00b2"], ids=["arabic3", "fw80", "sup"])
def test_listen_port_of_non_ascii_digits_is_refused(aws_env: Path, port: str) -> None:
    # "127.0.0.1:٣" bound port 3.
    _one_line_error(_kms_sim(aws_env, "serve", "--listen", f"127.0.0.1:{port}"), 1, "--listen must be")


def test_audit_log_is_valid_after_hostile_markers(shared_server: Server) -> None:
    client = shared_server.client()
    with pytest.raises(client.exceptions.InvalidMarkerException):
        client.describe_custom_key_stores(Marker="\u00b2")
    lines = (shared_server.home / "kms" / "audit.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert records[-1]["errorCode"] == "InvalidMarkerException"


# --- the connection: half-close, bad bytes after good requests, slow senders ------------------------------


def _signed_request(server: Server, body: bytes = b'{"NumberOfBytes": 16}') -> bytes:
    """One signed GenerateRandom as HTTP/1.1 bytes (keep-alive)."""
    parser = configparser.ConfigParser()
    parser.read(server.home / "kms" / "credentials")
    url = urlsplit(server.url)
    headers = {
        "Host": url.netloc,
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": "TrentService.GenerateRandom",
    }
    headers.update(
        sign_request(
            "POST", "/", "", headers, body,
            access_key=parser["nitro-sim"]["aws_access_key_id"],
            secret_key=parser["nitro-sim"]["aws_secret_access_key"],
            session_token=None, region="us-east-1", service="kms", at=datetime.now(UTC),
        )
    )  # fmt: skip
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return f"POST / HTTP/1.1\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


def _exchange(server: Server, data: bytes, *, half_close: bool) -> bytes:
    """Send ``data`` (then shut down the sending side if told) and read until the server closes."""
    url = urlsplit(server.url)
    assert url.hostname is not None
    assert url.port is not None
    with socket.create_connection((url.hostname, url.port), timeout=WAIT_S) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _statuses(reply: bytes) -> list[bytes]:
    """The status lines of the answers in ``reply`` (each follows the previous body directly)."""
    return re.findall(rb"HTTP/1\.1 [0-9]{3} [A-Za-z ]*", reply)


@pytest.mark.parametrize("count", [1, 3])
def test_a_half_closing_client_gets_its_answers(shared_server: Server, count: int) -> None:
    # The request was executed and audited, but the answer, held for the tick, was dropped when the loop
    # closed the connection on the client's FIN: the client read nothing.
    reply = _exchange(shared_server, _signed_request(shared_server) * count, half_close=True)
    assert _statuses(reply) == [b"HTTP/1.1 200 OK"] * count
    assert reply.count(b'"Plaintext"') == count


def test_an_error_answer_reaches_a_half_closing_client(shared_server: Server) -> None:
    request = _signed_request(shared_server, b'{"NumberOfBytes": 0}')
    reply = _exchange(shared_server, request, half_close=True)
    assert _statuses(reply) == [b"HTTP/1.1 400 Bad Request"]
    assert b"ValidationException" in reply


def test_good_requests_before_bad_bytes_are_answered_then_the_connection_closes(
    shared_server: Server,
) -> None:
    # uvicorn answered the bad bytes with a 400 at once and closed: the first request's answer was lost and
    # the client read the 400 as the answer to it.
    good = _signed_request(shared_server)
    reply = _exchange(shared_server, good + good + b"NOT HTTP\r\n\r\n", half_close=False)
    assert _statuses(reply) == [b"HTTP/1.1 200 OK", b"HTTP/1.1 200 OK"]
    assert shared_server.client().generate_random(NumberOfBytes=4)["Plaintext"]


def test_a_client_that_never_finishes_its_request_is_disconnected(
    start_server: Callable[..., Server],
) -> None:
    # No deadline held such a connection (and a descriptor) open forever; a short one is set here, and the
    # test waits only for the server to close (the socket timeout is a safety net, not a measurement).
    server = start_server("--request-timeout", "0.5")
    head = _signed_request(server).split(b"\r\n\r\n", 1)[0]
    assert _exchange(server, head[: len(head) // 2], half_close=False) == b""  # half a header section
    assert _exchange(server, head + b"\r\n\r\n{", half_close=False) == b""  # a body that stops
    assert server.client().generate_random(NumberOfBytes=4)["Plaintext"]
    assert "Traceback" not in server.stderr


def test_request_timeout_does_not_cut_a_pipeline_being_answered(
    start_server: Callable[..., Server],
) -> None:
    server = start_server("--request-timeout", "0.5")
    reply = _exchange(server, _signed_request(server) * 20, half_close=True)
    assert _statuses(reply) == [b"HTTP/1.1 200 OK"] * 20


@pytest.mark.parametrize("value", ["0", "-1", "nan", "3601"])
def test_bad_request_timeout_is_a_usage_error(aws_env: Path, value: str) -> None:
    _one_line_error(_kms_sim(aws_env, "serve", "--request-timeout", value), 2, "--request-timeout")


# --- a validly signed document whose timestamp no datetime holds ------------------------------------------


@pytest.mark.parametrize("timestamp", [253_402_300_800_000, 2**63, 2**64 - 1], ids=["y10000", "2^63", "max"])
def test_signed_timestamp_past_year_9999_is_a_validation_error(
    shared_server: Server,
    rsa_key: Any,
    spki_of: Callable[[Any], bytes],
    sign_at_timestamp: Any,
    timestamp: int,
) -> None:
    # datetime.fromtimestamp raised ValueError in the freshness check: HTTP 500 (and again on every reuse
    # of the cached document). The check now counts in integer time: such a document is dated after now.
    client = shared_server.client()
    document = sign_at_timestamp(shared_server.home, timestamp, spki_of(rsa_key))
    recipient = {"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256", "AttestationDocument": document}
    for _ in range(2):
        with pytest.raises(client.exceptions.ClientError) as raised:
            client.generate_random(NumberOfBytes=8, Recipient=recipient)
        error = raised.value.response["Error"]
        assert error["Code"] == "ValidationException"
        assert error["Message"].startswith(f"{_RECIPIENT} was rejected: timestamp: the document is dated ")
        assert error["Message"].endswith(" s after the verification time (allowed skew 60 s)")
    assert "internal error" not in shared_server.stderr


def test_env_exports_absolute_paths_for_a_relative_home(tmp_path: Path) -> None:
    # NITRO_SIM_HOME=relative/dir gave AWS_SHARED_CREDENTIALS_FILE=relative/dir/kms/credentials, which
    # points elsewhere (or nowhere) once the exports are used from another directory.
    result = subprocess.run(
        [sys.executable, "-m", "kms.cli", "env"],
        env={**os.environ, "NITRO_SIM_HOME": "rel/home"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    exports = dict(line.removeprefix("export ").split("=", 1) for line in result.stdout.splitlines())
    assert exports["AWS_SHARED_CREDENTIALS_FILE"] == str(tmp_path / "rel" / "home" / "kms" / "credentials")
    assert Path(exports["AWS_CONFIG_FILE"]).is_absolute()


def test_a_head_that_never_ends_is_refused_once_over_the_bound(shared_server: Server) -> None:
    # httptools/uvicorn buffered a head without limit (96 MB of header lines grew the server by ~95 MB); now
    # the connection is answered and closed once the head passes MAX_REQUEST_HEAD_BYTES (plus one read).
    url = urlsplit(shared_server.url)
    assert url.hostname is not None
    assert url.port is not None
    line = b"X-Filler: " + b"f" * 8000 + b"\r\n"
    reply = b""
    with socket.create_connection((url.hostname, url.port), timeout=WAIT_S) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: kms\r\n")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the server may close first
            for _ in range(4 * (MAX_REQUEST_HEAD_BYTES + 256 * 1024) // len(line)):
                sock.sendall(line)
                readable, _, _ = select.select([sock], [], [], 0.01)
                if readable:
                    break
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                reply += chunk
    assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert reply.endswith(
        b'{"__type":"ValidationException","message":"Request head is over the 65536-byte limit"}'
    )
    assert re.search(rb"\r\nx-amzn-requestid: [0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}\r\n", reply)
    assert shared_server.client().generate_random(NumberOfBytes=4)["Plaintext"]


def test_upgrade_requests_are_answered_without_operator_advice_on_stderr(shared_server: Server) -> None:
    upgrade = _signed_request(shared_server).replace(
        b"\r\n\r\n", b"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", 1
    )
    reply = _exchange(shared_server, upgrade, half_close=True)
    # httptools stops at an Upgrade head and never hands over the body: the signature over it fails.
    assert _statuses(reply) == [b"HTTP/1.1 400 Bad Request"]
    assert b"InvalidSignatureException" in reply
    assert "WebSocket" not in shared_server.stderr
    assert "upgrade" not in shared_server.stderr.lower()


def test_endless_policy_file_stops_serve_in_one_line(aws_env: Path) -> None:
    # Read whole before its size was checked: /dev/zero grew the process without end.
    _one_line_error(_kms_sim(aws_env, "serve", "--policy", "/dev/zero"), 1, "bytes")


def test_oversized_credentials_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "credentials"
    path.write_text("[p]\naws_access_key_id = AKIA\naws_secret_access_key = s\n" + "#" * 2_000_000 + "\n")
    with pytest.raises(SimulationError, match="is over"):
        load_principals(path)


def test_credentials_with_crlf_line_ends_still_load(tmp_path: Path) -> None:
    path = tmp_path / "credentials"
    path.write_bytes(b"[p]\r\naws_access_key_id = AKIAX\r\naws_secret_access_key = s3cr3t\r\n")
    principal = load_principals(path)["AKIAX"]
    assert (principal.name, principal.secret_key) == ("p", "s3cr3t")


@pytest.mark.parametrize(
    ("argv", "code"), [(["--help"], 0), (["serve", "--workers", "x"], 2), (["bogus"], 2), ([], 2)]
)
def test_main_returns_the_exit_status_instead_of_raising(
    aws_env: Path, capsys: pytest.CaptureFixture[str], argv: list[str], code: int
) -> None:
    assert kms_main(argv) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.count("\n") == (0 if code == 0 else 1)


def test_model_patterns_take_ascii_digits_only(shared_server: Server) -> None:
    # Java's \d (the KMS model's regex dialect) is [0-9]; Python's took "/kms/xks/v\u0661" as a version.
    client = shared_server.client()
    with pytest.raises(client.exceptions.ClientError) as raised:
        client.create_custom_key_store(
            CustomKeyStoreName="xks-arabic-digit",
            CustomKeyStoreType="EXTERNAL_KEY_STORE",
            XksProxyUriEndpoint="https://xks.example",
            XksProxyUriPath="/kms/xks/v\u0661",
            XksProxyConnectivity="PUBLIC_ENDPOINT",
            XksProxyAuthenticationCredential={"AccessKeyId": "A" * 20, "RawSecretAccessKey": "a" * 43},
        )
    error = raised.value.response["Error"]
    assert error["Code"] == "ValidationException"
    assert "xksProxyUriPath" in error["Message"]


def test_endless_trailer_fields_are_refused_once_over_the_bound(shared_server: Server) -> None:
    # After the head, llhttp hands trailer fields to uvicorn, which keeps them all: one connection sending
    # them without end grew the server by gigabytes. They count toward the head's bound.
    url = urlsplit(shared_server.url)
    assert url.hostname is not None
    assert url.port is not None
    line = b"X-Trailer: " + b"t" * 8000 + b"\r\n"
    with socket.create_connection((url.hostname, url.port), timeout=WAIT_S) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: kms\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(4 * (MAX_REQUEST_HEAD_BYTES + 256 * 1024) // len(line)):
                sock.sendall(line)
                readable, _, _ = select.select([sock], [], [], 0.01)
                if readable:
                    break
        reply = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                reply += chunk
    assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert reply.endswith(b'"message":"Request head is over the 65536-byte limit"}')
    assert shared_server.client().generate_random(NumberOfBytes=4)["Plaintext"]


def test_many_small_pipelined_requests_are_all_answered(shared_server: Server) -> None:
    # The head bound once counted a whole read whenever a head was in progress at both its ends, so a read
    # of many ordinary pipelined requests got one false "Request head is over ..." and nothing else.
    pad = b"X-Pad: " + b"p" * 120 + b"\r\n"
    request = b"POST / HTTP/1.1\r\nHost: kms\r\nContent-Length: 2\r\n" + pad + b"\r\n{}"
    reply = _exchange(shared_server, request * 3000, half_close=True)
    assert reply.count(b"MissingAuthenticationTokenException") == 3000
    assert b"Request head is over" not in reply


def test_the_command_line_defaults_are_the_transports() -> None:
    # One source: kms/cli.py (which must not import uvicorn); the transport takes its defaults from there.
    from kms import cli, transport

    assert cli.DEFAULT_REQUEST_TIMEOUT_S == transport.DEFAULT_REQUEST_TIMEOUT_S
    assert cli.DEFAULT_MAX_CONNECTIONS == transport.MAX_CONNECTIONS


def test_a_listen_port_of_thousands_of_digits_is_one_line(aws_env: Path) -> None:
    _one_line_error(_kms_sim(aws_env, "serve", "--listen", "127.0.0.1:" + "1" * 5000), 1, "--listen must be")


#: ``python -c``: lower this process's descriptor limit to argv[1], then run ``kms-sim`` with the rest.
_UNDER_LIMIT = (
    "import resource, runpy, sys; limit = int(sys.argv.pop(1)); "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit)); "
    "runpy.run_module('kms.cli', run_name='__main__')"
)


def _serve_under_descriptor_limit(home: Path, limit: int, *argv: str) -> subprocess.Popen[str]:
    """``kms-sim serve`` in a process whose hard limit is ``limit`` descriptors."""
    return subprocess.Popen(
        [sys.executable, "-c", _UNDER_LIMIT, str(limit), "serve", "--listen", "127.0.0.1:0", *argv],
        env={**os.environ, "NITRO_SIM_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_an_explicit_connection_bound_over_the_descriptor_limit_is_one_line(aws_env: Path) -> None:
    process = _serve_under_descriptor_limit(aws_env, 256, "--max-connections", "1000")
    out, err = process.communicate(timeout=WAIT_S)
    result = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    _one_line_error(
        result, 1, "--max-connections 1000 needs 1064 file descriptors; this process may open 256"
    )


def test_the_default_connection_bound_shrinks_to_the_descriptor_limit(aws_env: Path) -> None:
    process = _serve_under_descriptor_limit(aws_env, 256)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("http://127.0.0.1:")
    finally:
        process.terminate()
        _, err = process.communicate(timeout=WAIT_S)
    assert process.returncode == 0
    assert "Traceback" not in err
