"""Fixes from a review of kms-sim: TLS names of every region, JSON text rules, the Unix listener, audit and
header bounds, flag validation, ``kms-sim env``, and X-Amz-Target among the signed headers."""

from __future__ import annotations

import configparser
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kms.audit import MAX_AUDIT_REGION_CHARS, MAX_AUDIT_USER_AGENT_CHARS
from kms.cli import main
from kms.errors import SerializationException
from kms.protocol import MAX_REQUEST_HEADER_BYTES, decode_body
from kms.tls import KMS_REGIONS, SERVER_DNS_NAMES, ensure_tls
from kms.transport import MAX_REQUEST_HEAD_BYTES

Server = Any

#: How long a test waits for a process it started.
WAIT_S = 30


def _credentials(home: Path) -> tuple[str, str]:
    parser = configparser.ConfigParser()
    parser.read(home / "kms" / "credentials")
    return parser["nitro-sim"]["aws_access_key_id"], parser["nitro-sim"]["aws_secret_access_key"]


def _send(
    server: Server,
    body: bytes,
    *,
    region: str = "eu-west-1",
    target_signed: bool = True,
    extra: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    """POST one GenerateRandom signed by botocore's SigV4Auth; ``extra`` headers are added unsigned."""
    headers = {"Content-Type": "application/x-amz-json-1.1"}
    if target_signed:
        headers["X-Amz-Target"] = "TrentService.GenerateRandom"
    request = AWSRequest(method="POST", url=server.url + "/", data=body, headers=headers)
    SigV4Auth(Credentials(*_credentials(server.home)), "kms", region).add_auth(request)
    sent = dict(request.headers.items())
    if not target_signed:
        sent["X-Amz-Target"] = "TrentService.GenerateRandom"
    sent.update(extra or {})
    url = urlsplit(server.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=WAIT_S)
    try:
        connection.request("POST", "/", body=body, headers=sent)
        response = connection.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else {}
    finally:
        connection.close()


def _last_audit(server: Server) -> dict[str, Any]:
    lines = (server.home / "kms" / "audit.jsonl").read_bytes().splitlines()
    record: dict[str, Any] = json.loads(lines[-1])
    return record


# --- (1) TLS: the certificate names every region's KMS endpoint -------------------------------------------


def _dns_names(cert: x509.Certificate) -> set[str]:
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(names.get_values_for_type(x509.DNSName))


def test_certificate_names_every_region(tmp_path: Path) -> None:
    files = ensure_tls(tmp_path / "tls", at=datetime.now(UTC))
    names = _dns_names(x509.load_pem_x509_certificate(files.cert.read_bytes()))
    assert len(KMS_REGIONS) == len(set(KMS_REGIONS)) >= 30
    for region in ("us-east-1", "eu-west-1", "ap-southeast-7", "us-gov-west-1", "cn-northwest-1"):
        assert f"kms.{region}.amazonaws.com" in names
        assert f"kms-fips.{region}.amazonaws.com" in names
    assert "localhost" in names
    assert names == set(SERVER_DNS_NAMES)


def test_regions_match_the_shipped_vsock_proxy_allowlist(vectors: Path) -> None:
    import yaml

    config = yaml.safe_load((vectors / "vsock-proxy" / "vsock-proxy.yaml").read_text())
    kms = {e["address"] for e in config["allowlist"] if str(e["address"]).startswith(("kms.", "kms-fips."))}
    assert kms == set(SERVER_DNS_NAMES) - {"localhost"}


def test_old_certificate_without_the_region_names_is_reissued(tmp_path: Path) -> None:
    at = datetime.now(UTC)
    files = ensure_tls(tmp_path / "tls", at=at)
    # What an older kms-sim issued: a valid certificate from the same CA naming only us-east-1.
    ca_key = serialization.load_pem_private_key((tmp_path / "tls" / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    old = (
        x509.CertificateBuilder()
        .subject_name(ca.subject)
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(at - timedelta(days=1))
        .not_valid_after(at + timedelta(days=60))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.DNSName("kms.us-east-1.amazonaws.com")]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    files.cert.write_bytes(old.public_bytes(serialization.Encoding.PEM))
    ensure_tls(tmp_path / "tls", at=at)
    renewed = x509.load_pem_x509_certificate(files.cert.read_bytes())
    assert renewed.serial_number != old.serial_number
    assert "kms.eu-west-1.amazonaws.com" in _dns_names(renewed)


def test_tls_handshake_with_a_second_region_server_name(start_server: Callable[..., Server]) -> None:
    server = start_server("--tls")
    url = urlsplit(server.url)
    context = ssl.create_default_context(cafile=str(server.home / "kms" / "tls" / "ca.pem"))
    for name in ("kms.eu-west-1.amazonaws.com", "kms-fips.ap-northeast-1.amazonaws.com"):
        with (
            socket.create_connection((url.hostname, url.port), timeout=WAIT_S) as raw,
            context.wrap_socket(raw, server_hostname=name) as tls,
        ):
            assert tls.version() is not None


@pytest.fixture
def loopback_only_resolver(monkeypatch: pytest.MonkeyPatch) -> Callable[[str, int], None]:
    """Make one KMS host name resolve to 127.0.0.1 in this process; every other name is refused.

    Nothing is ever looked up: the test never resolves or connects to anything but loopback.
    """
    mapping: dict[str, str] = {}
    real = socket.getaddrinfo

    def fake(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name in mapping:
            return real(mapping[name], port, *args, **kwargs)
        if name in ("127.0.0.1", "localhost"):
            return real(name, port, *args, **kwargs)
        raise socket.gaierror(socket.EAI_NONAME, f"test resolver: {name} is not a loopback name")

    monkeypatch.setattr(socket, "getaddrinfo", fake)

    def add(name: str, _port: int) -> None:
        mapping[name] = "127.0.0.1"

    return add


def test_boto3_in_a_second_region_verifies_the_regional_name(
    start_server: Callable[..., Server], loopback_only_resolver: Callable[[str, int], None]
) -> None:
    server = start_server("--tls")
    port = urlsplit(server.url).port
    assert port is not None
    loopback_only_resolver("kms.eu-west-1.amazonaws.com", port)
    import boto3

    key, secret = _credentials(server.home)
    kms = boto3.client(
        "kms",
        region_name="eu-west-1",
        endpoint_url=f"https://kms.eu-west-1.amazonaws.com:{port}",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        verify=str(server.home / "kms" / "tls" / "ca.pem"),
    )
    try:
        assert len(kms.generate_random(NumberOfBytes=8)["Plaintext"]) == 8
    finally:
        kms.close()
    assert _last_audit(server)["awsRegion"] == "eu-west-1"


@pytest.fixture
def nsm_socket(aws_env: Path) -> Iterator[Path]:
    """A running ``nsm-sim`` on the home's PKI (the one kms-sim trusts)."""
    path = aws_env / "nsm.sock"
    process = subprocess.Popen(
        [sys.executable, "-m", "host.nsm_sim", "--socket", str(path)],
        env={**os.environ, "NITRO_SIM_HOME": str(aws_env)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        for _ in range(WAIT_S * 10):
            if path.exists() or process.poll() is not None:
                break
            time.sleep(0.1)
        assert path.exists(), process.stderr.read() if process.stderr else ""
        yield path
    finally:
        process.terminate()
        try:
            process.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


def test_sdk_client_in_a_second_region_over_tls(
    start_server: Callable[..., Server], nsm_socket: Path
) -> None:
    import enclave
    from enclave.nsm import NSMClient, SimulatedDeviceTransport

    server = start_server("--tls")
    key, secret = _credentials(server.home)
    with NSMClient(SimulatedDeviceTransport(nsm_socket)) as nsm:
        kms = enclave.client(
            "kms",
            region_name="eu-west-1",
            endpoint_url=server.url,  # https://127.0.0.1:PORT; server name kms.eu-west-1.amazonaws.com
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            verify=server.home / "kms" / "tls" / "ca.pem",
            nsm=nsm,
        )
        with kms:
            response = kms.generate_random(NumberOfBytes=16)
    assert len(response["Plaintext"]) == 16
    assert _last_audit(server)["awsRegion"] == "eu-west-1"


# --- (2) JSON text: lone surrogates and a BOM are SerializationException ----------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"NumberOfBytes": 8, "CustomKeyStoreId": "\\ud800"}',
        b'{"NumberOfBytes": 8, "CustomKeyStoreId": "cks-\\udfff"}',
        b'{"NumberOfBytes": 8, "\\ud800": 1}',
        b'\xef\xbb\xbf{"NumberOfBytes": 8}',
        '{"NumberOfBytes": 8}'.encode("utf-16"),
        b'{"NumberOfBytes": 8, "CustomKeyStoreId": "\xed\xa0\x80"}',  # a surrogate in raw (invalid) UTF-8
    ],
    ids=["lone-high", "lone-low", "lone-in-key", "utf8-bom", "utf16", "raw-surrogate"],
)
def test_text_that_is_not_utf8_is_a_serialization_exception(shared_server: Server, body: bytes) -> None:
    status, reply = _send(shared_server, body)
    assert (status, reply["__type"]) == (400, "SerializationException"), reply
    assert _send(shared_server, b'{"NumberOfBytes": 4}')[0] == 200


def test_escaped_non_ascii_that_is_valid_unicode_still_decodes() -> None:
    assert decode_body(b'{"a": "\\ud83d\\ude00 \\u00e9"}') == {"a": "\U0001f600 \u00e9"}
    assert decode_body('{"a": "é"}'.encode()) == {"a": "é"}
    with pytest.raises(SerializationException):
        decode_body(b'{"a": ["x", {"b": "\\udc80"}]}')


def test_escaped_key_store_id_reaches_the_key_stores(shared_server: Server) -> None:
    status, reply = _send(shared_server, b'{"NumberOfBytes": 8, "CustomKeyStoreId": "cks-\\u00e9"}')
    assert status == 400
    assert reply["__type"] in ("CustomKeyStoreNotFoundException", "ValidationException")


# --- (3) --listen unix:PATH never removes what it should not ----------------------------------------------


def _serve_unix(home: Path, path: Path) -> subprocess.CompletedProcess[str]:
    """``kms-sim serve --listen unix:PATH`` expected to refuse at once (a server would time out here)."""
    return subprocess.run(
        [sys.executable, "-m", "kms.cli", "serve", "--listen", f"unix:{path}"],
        env={**os.environ, "NITRO_SIM_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
    )


def test_unix_listen_refuses_a_regular_file(aws_env: Path) -> None:
    path = aws_env / "precious.txt"
    path.write_text("keep me")
    result = _serve_unix(aws_env, path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("kms-sim: error: ")
    assert "exists and is not a socket" in result.stderr
    assert result.stderr.count("\n") == 1
    assert path.read_text() == "keep me"


def test_unix_listen_refuses_a_live_socket(aws_env: Path) -> None:
    path = aws_env / "live.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as live:
        live.bind(str(path))
        live.listen(1)
        result = _serve_unix(aws_env, path)
        assert result.returncode == 1
        assert "in use" in result.stderr
        assert result.stderr.count("\n") == 1
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.connect(str(path))  # still the live server's


def test_unix_listen_replaces_a_stale_socket(aws_env: Path) -> None:
    path = aws_env / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as gone:
        gone.bind(str(path))  # closed without unlinking: what a killed server leaves
    assert path.exists()
    process = subprocess.Popen(
        [sys.executable, "-m", "kms.cli", "serve", "--listen", f"unix:{path}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NITRO_SIM_HOME": str(aws_env)},
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == f"unix:{path}"
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(str(path))
        connection = http.client.HTTPConnection("localhost", timeout=WAIT_S)
        connection.sock = client
        try:  # one answered request: the server is up (and its signal handlers in place)
            connection.request(
                "POST", "/", body=b"{}", headers={"X-Amz-Target": "TrentService.GenerateRandom"}
            )
            assert connection.getresponse().status == 400
        finally:
            connection.close()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=WAIT_S) == 0
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


# --- (4) bounds on what unauthenticated callers put in the audit log, and on the header section -----------


def test_huge_user_agent_is_refused_and_truncated_in_the_audit(shared_server: Server) -> None:
    # Over the service's header bound but under the transport's head bound (MAX_REQUEST_HEAD_BYTES), so the
    # service answers and audits it; a bigger head is refused by the transport (tests/kms/test_hostile.py).
    user_agent = "u" * (MAX_REQUEST_HEAD_BYTES - 4096)
    status, reply = _send(shared_server, b'{"NumberOfBytes": 8}', extra={"User-Agent": user_agent})
    assert (status, reply["__type"]) == (400, "ValidationException")
    assert str(MAX_REQUEST_HEADER_BYTES) in reply["message"]
    record = _last_audit(shared_server)
    assert record["userAgent"] == "u" * MAX_AUDIT_USER_AGENT_CHARS
    assert _send(shared_server, b'{"NumberOfBytes": 4}')[0] == 200


def test_long_user_agent_under_the_header_bound_is_served_and_truncated(shared_server: Server) -> None:
    status, _ = _send(shared_server, b'{"NumberOfBytes": 8}', extra={"User-Agent": "a" * 5000})
    assert status == 200
    assert _last_audit(shared_server)["userAgent"] == "a" * MAX_AUDIT_USER_AGENT_CHARS


def test_huge_region_in_the_credential_is_truncated_in_the_audit(shared_server: Server) -> None:
    region = "r" * (MAX_REQUEST_HEAD_BYTES - 4096)  # audited: under the transport's head bound
    authorization = (
        f"AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/20260101/{region}/kms/aws4_request, "
        f"SignedHeaders=host;x-amz-date;x-amz-target, Signature={'0' * 64}"
    )
    status, _ = _send(shared_server, b"{}", extra={"Authorization": authorization})
    assert status == 400
    record = _last_audit(shared_server)
    assert record["awsRegion"] == "r" * MAX_AUDIT_REGION_CHARS
    assert len(json.dumps(record)) < 8 * 1024


# --- (5) flag validation: one line, exit 2 ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["serve", "--rate-limit", "nan"], "--rate-limit: must be a finite number > 0"),
        (["serve", "--rate-limit", "0"], "--rate-limit: must be a finite number > 0"),
        (["serve", "--rate-limit", "-5"], "--rate-limit"),
        (["serve", "--rate-limit", "inf"], "--rate-limit"),
        (["serve", "--rate-limit", "10", "--burst", "0"], "--burst: must be a finite number > 0"),
        (["serve", "--burst", "nan"], "--burst"),
        (["serve", "--fault-rate", "KMSInternalException:1.5"], "--fault-rate: must be a finite number >= 0"),
        (["serve", "--fault-rate", "KMSInternalException:nan"], "<= 1"),
        (["serve", "--fault-rate", "KMSInternalException:-0.1"], "--fault-rate"),
        (["serve", "--fault-rate", "KMSInternalException"], "must be NAME:P"),
        (["serve", "--max-doc-age", "nan"], "--max-doc-age: must be a finite number >= 0"),
        (["serve", "--max-doc-age", "-1"], "--max-doc-age"),
        (["serve", "--max-doc-age", "inf"], "--max-doc-age"),
        (["keystore", "set", "--id", "cks-1", "--error-code", "BOGUS"], "--error-code: invalid choice"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(
    aws_env: Path, capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str
) -> None:
    assert main(argv) == 2  # returned, not raised: main([...]) is the exit status
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("kms-sim: error: ")
    assert fragment in captured.err
    assert captured.err.count("\n") == 1


def test_fault_rate_zero_and_one_are_accepted(start_server: Callable[..., Server]) -> None:
    server = start_server("--fault-rate", "KMSInternalException:0", "--max-doc-age", "0")
    assert len(server.client().generate_random(NumberOfBytes=4)["Plaintext"]) == 4


# --- (6) kms-sim env: AWS_CA_BUNDLE and shell quoting -----------------------------------------------------


def test_env_quotes_paths_and_names_the_ca(tmp_path: Path) -> None:
    home = tmp_path / "a home's dir"
    env = {**os.environ, "NITRO_SIM_HOME": str(home)}
    command = [sys.executable, "-m", "kms.cli", "env"]
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=WAIT_S, check=True)
    assert "AWS_CA_BUNDLE" not in first.stdout
    ensure_tls(home / "kms" / "tls", at=datetime.now(UTC))
    script = (
        f'eval "$({" ".join(command)})" && printf "%s\\n" "$AWS_SHARED_CREDENTIALS_FILE" '
        '"$AWS_CONFIG_FILE" "$AWS_PROFILE" "$AWS_CA_BUNDLE"'
    )
    shell = subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=WAIT_S, check=True
    )
    assert shell.stdout.splitlines() == [
        str(home / "kms" / "credentials"),
        str(home / "kms" / "config"),
        "nitro-sim",
        str(home / "kms" / "tls" / "ca.pem"),
    ]


# --- (7) SigV4: X-Amz-Target must be signed ---------------------------------------------------------------


def test_unsigned_target_is_an_invalid_signature(shared_server: Server) -> None:
    status, reply = _send(shared_server, b'{"NumberOfBytes": 8}', target_signed=False)
    assert (status, reply["__type"]) == (400, "InvalidSignatureException")
    assert "X-Amz-Target" in reply["message"]
    assert _send(shared_server, b'{"NumberOfBytes": 8}')[0] == 200
