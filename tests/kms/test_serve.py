"""``kms-sim serve`` as a process: faults and retries, throttling, TLS, workers, Unix socket, signals, CLI."""

from __future__ import annotations

import http.client
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from kms.cli import main

Server = Any


def test_injected_faults_are_retried_by_boto3(start_server: Callable[..., Server]) -> None:
    server = start_server("--fault", "KMSInternalException:2")
    client = server.client(retries={"total_max_attempts": 3, "mode": "standard"})
    response = client.generate_random(NumberOfBytes=8)
    assert response["ResponseMetadata"]["RetryAttempts"] == 2
    assert len(response["Plaintext"]) == 8


def test_injected_fault_without_retries_surfaces(start_server: Callable[..., Server]) -> None:
    server = start_server("--fault", "DependencyTimeoutException:1", "--fault", "KMSInternalException:1")
    client = server.client()
    with pytest.raises(client.exceptions.DependencyTimeoutException) as caught:
        client.generate_random(NumberOfBytes=8)
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    with pytest.raises(client.exceptions.KMSInternalException):
        client.generate_random(NumberOfBytes=8)
    assert len(client.generate_random(NumberOfBytes=8)["Plaintext"]) == 8


def test_fault_rate_one_always_fails(start_server: Callable[..., Server]) -> None:
    client = start_server("--fault-rate", "KMSInternalException:1.0").client()
    for _ in range(3):
        with pytest.raises(client.exceptions.KMSInternalException):
            client.generate_random(NumberOfBytes=8)


def test_throttling(start_server: Callable[..., Server]) -> None:
    client = start_server("--rate-limit", "0.001", "--burst", "2").client()
    client.generate_random(NumberOfBytes=8)
    client.generate_random(NumberOfBytes=8)
    with pytest.raises(client.exceptions.ClientError) as caught:
        client.generate_random(NumberOfBytes=8)
    assert caught.value.response["Error"] == {"Code": "ThrottlingException", "Message": "Rate exceeded"}


def test_tls_with_the_home_ca(start_server: Callable[..., Server]) -> None:
    server = start_server("--tls")
    assert server.url.startswith("https://127.0.0.1:")
    assert (server.home / "kms" / "tls" / "ca.pem").exists()
    assert len(server.client().generate_random(NumberOfBytes=8)["Plaintext"]) == 8


def test_workers_share_the_socket_and_sigterm_is_clean(
    start_server: Callable[..., Server], make_document: Callable[..., bytes], recipient: Callable[..., Any]
) -> None:
    server = start_server("--workers", "2")
    document = make_document()
    client = server.client()

    def call(_: int) -> int:
        response = client.generate_random(NumberOfBytes=16, Recipient=recipient(document))
        return len(response["CiphertextForRecipient"])

    with ThreadPoolExecutor(4) as pool:
        assert all(size > 0 for size in pool.map(call, range(20)))
    assert server.stop(signal.SIGTERM) == 0


def test_sigterm_single_worker_exits_zero(server: Server) -> None:
    server.client().generate_random(NumberOfBytes=8)
    assert server.stop(signal.SIGTERM) == 0


def test_unix_socket_listener(aws_env: Path) -> None:
    path = aws_env / "kms.sock"
    process = subprocess.Popen(
        [sys.executable, "-m", "kms.cli", "serve", "--listen", f"unix:{path}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={"NITRO_SIM_HOME": str(aws_env), "PATH": "/usr/bin:/bin"},
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == f"unix:{path}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(path))
        connection = http.client.HTTPConnection("localhost")
        connection.sock = sock
        connection.request("POST", "/", body=b"{}", headers={"X-Amz-Target": "TrentService.GenerateRandom"})
        response = connection.getresponse()
        assert response.status == 400
        assert b"MissingAuthenticationTokenException" in response.read()
        connection.close()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        process.stdout.close()
    assert not path.exists()


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["serve", "--listen", "nonsense"], "--listen must be HOST:PORT or unix:PATH"),
        (["serve", "--workers", "0"], "--workers must be 1..64"),
        (["serve", "--fault", "KMSInternalException"], "--fault must be NAME:INT"),
        (["serve", "--fault", "NoSuchException:1"], "cannot inject 'NoSuchException'"),
        (["serve", "--trust-root", "/nonexistent.pem"], "cannot load trust root"),
    ],
)
def test_cli_errors_are_one_line(
    aws_env: Path, capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str
) -> None:
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("kms-sim: error: ")
    assert fragment in captured.err
    assert captured.err.count("\n") == 1


def test_real_aws_root_can_be_trusted_too(start_server: Callable[..., Server], vectors: Path) -> None:
    root = vectors / "attestation" / "aws-nitro-enclaves-root-g1.pem"
    assert (
        len(start_server("--trust-root", str(root)).client().generate_random(NumberOfBytes=4)["Plaintext"])
        == 4
    )


def test_env_prints_sdk_exports(aws_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    assert f"export AWS_SHARED_CREDENTIALS_FILE={aws_env / 'kms' / 'credentials'}" in out
    assert "export AWS_PROFILE=nitro-sim" in out
    assert oct((aws_env / "kms" / "credentials").stat().st_mode & 0o777) == "0o600"


def test_port_in_use_is_a_one_line_error(aws_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["serve", "--listen", f"127.0.0.1:{port}"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("kms-sim: error: ")
    assert "in use" in captured.err


def test_workers_exit_when_the_supervisor_is_killed(start_server: Callable[..., Server]) -> None:
    server = start_server("--workers", "2")
    server.client().generate_random(NumberOfBytes=8)
    pid = server.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert len(children) >= 2
    assert server.stop(signal.SIGKILL) == -signal.SIGKILL
    for _ in range(150):
        if not any(_alive(child) for child in children):
            break
        time.sleep(0.1)
    assert not any(_alive(child) for child in children)


def _alive(pid: str) -> bool:
    """True while ``pid`` runs; an exited orphan the init process has not reaped yet (zombie) is not alive."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def test_attestation_time_must_be_an_instant(capsys: pytest.CaptureFixture[str]) -> None:
    from kms.cli import main

    assert main(["serve", "--attestation-time", "yesterday"]) == 2
    assert "--attestation-time: must be an ISO 8601 time" in capsys.readouterr().err
