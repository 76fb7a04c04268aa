"""Fixtures for kms-sim: a real server process per test, real boto3 clients, simulated enclave documents.

Servers are started, awaited (their first line, the URL) and stopped through :mod:`nitro_sim.procs`; a
server's output (stdout and stderr) is its log, :attr:`Server.stderr`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import pytest
from botocore.config import Config
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from attestation.sigv4 import sign_request
from kms.service import Request, Service
from nitro_sim.procs import OutputLine, Process, ProcessError, ProcessGroup
from nitro_sim.stack import child_environment

#: How long one AWS CLI run may take (the CLI imports all of botocore's models: ~1-3 s).
CLI_TIMEOUT_S = 60


@dataclass
class Server:
    url: str
    home: Path
    process: Process

    def client(self, profile: str = "nitro-sim", **config: Any) -> Any:
        """A boto3 KMS client using the home's credentials file (retries off unless asked)."""
        options: dict[str, Any] = {"retries": {"total_max_attempts": 1, "mode": "standard"}}
        options.update(config)
        # The home's credentials and config files, as AWS_SHARED_CREDENTIALS_FILE / AWS_CONFIG_FILE would.
        core = botocore.session.Session()
        core.set_config_variable("credentials_file", str(self.home / "kms" / "credentials"))
        core.set_config_variable("config_file", str(self.home / "kms" / "config"))
        core.set_config_variable("profile", profile)
        session = boto3.session.Session(botocore_session=core)
        verify = str(self.home / "kms" / "tls" / "ca.pem") if self.url.startswith("https") else None
        region = None if profile == "nitro-sim" else "us-east-1"  # only nitro-sim is in the config file
        return session.client(
            "kms", endpoint_url=self.url, config=Config(**options), verify=verify, region_name=region
        )

    def aws(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``aws kms ARGS`` (the venv's AWS CLI) against this server with the home's profile, one attempt;
        the caller's AWS_* settings are left out."""
        aws = Path(sys.executable).parent / "aws"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env |= {
            "AWS_SHARED_CREDENTIALS_FILE": str(self.home / "kms" / "credentials"),
            "AWS_CONFIG_FILE": str(self.home / "kms" / "config"),
            "AWS_PROFILE": "nitro-sim",
            "AWS_MAX_ATTEMPTS": "1",
        }
        return subprocess.run(
            [str(aws), "kms", *args, "--endpoint-url", self.url, "--output", "json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=CLI_TIMEOUT_S,
            check=False,
        )

    @property
    def stderr(self) -> str:
        """What the server has written (its URL line, then its stderr)."""
        return self.process.output()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """``sig``, then SIGKILL if it does not exit in time; the exit status (negative: a signal)."""
        return self.process.stop(signum=sig)


@pytest.fixture
def aws_env(sim_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point boto3 at the home's credentials and config files (and nothing else from the environment)."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(sim_home / "kms" / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(sim_home / "kms" / "config"))
    return sim_home


def _start(group: ProcessGroup, where: Path, *args: str) -> Server:
    """Start ``kms-sim serve --listen 127.0.0.1:0 ARGS...`` with ``NITRO_SIM_HOME=where``."""
    where.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "kms.cli", "serve", "--listen", "127.0.0.1:0", *args]
    try:
        process = group.start(
            argv, name="kms-sim", env=child_environment(where), ready=OutputLine(pattern=r"^https?://")
        )
    except ProcessError as error:
        pytest.fail(f"kms-sim did not start: {error}", pytrace=False)
    assert process.ready_line is not None
    return Server(url=process.ready_line, home=where, process=process)


@pytest.fixture
def start_server(aws_env: Path, tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start ``kms-sim serve --listen 127.0.0.1:0 ARGS...``; every server started is stopped afterwards."""
    with ProcessGroup(tmp_path / "kms-sim-logs") as group:

        def start(*args: str, home: Path | None = None) -> Server:
            return _start(group, home or aws_env, *args)

        yield start


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One default kms-sim for a whole module (for tests that change no state but the audit log)."""
    home = tmp_path_factory.mktemp("shared")
    with ProcessGroup(home / "logs") as group:
        yield _start(group, home)


@pytest.fixture(scope="module")
def start_module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Server]]:
    """Start ``kms-sim serve ... ARGS`` servers that live for the whole module (each its own home)."""
    with ProcessGroup(tmp_path_factory.mktemp("module-logs")) as group:

        def start(*args: str) -> Server:
            return _start(group, tmp_path_factory.mktemp("module"), *args)

        yield start


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def spki(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture
def make_document(aws_env: Path, rsa_key: rsa.RSAPrivateKey) -> Callable[..., bytes]:
    """A simulated NSM document from the home's PKI, carrying ``rsa_key``'s SPKI unless told otherwise."""
    from attestation.nsm import simulate_document

    def make(*, home: Path | None = None, at: datetime | None = None, **kwargs: Any) -> bytes:
        kwargs.setdefault("public_key", spki(rsa_key))
        return simulate_document(home or aws_env, at=at or datetime.now(UTC), **kwargs)

    return make


def _recipient(document: bytes) -> dict[str, Any]:
    return {"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256", "AttestationDocument": document}


@pytest.fixture
def recipient() -> Callable[[bytes], dict[str, Any]]:
    """The Recipient member for a document."""
    return _recipient


@pytest.fixture
def spki_of() -> Callable[[rsa.RSAPrivateKey], bytes]:
    return spki


@pytest.fixture
def server(start_server: Callable[..., Server]) -> Server:
    """A kms-sim with default settings."""
    return start_server()


SignedCall = Callable[[tuple[Service, str, str], str, bytes], tuple[int, dict[str, Any]]]


def _signed_call(service: tuple[Service, str, str], target: str, body: bytes) -> tuple[int, dict[str, Any]]:
    """One SigV4-signed ``TrentService.<target>`` request handed to ``service`` in process: (status, JSON)."""
    svc, access_key, secret_key = service
    at = datetime.now(UTC)
    headers = {"host": "127.0.0.1:1", "x-amz-target": f"TrentService.{target}"}
    signed = sign_request(
        "POST",
        "/",
        "",
        headers,
        body,
        access_key=access_key,
        secret_key=secret_key,
        session_token=None,
        region="us-east-1",
        service="kms",
        at=at,
    )
    headers.update({k.lower(): v for k, v in signed.items()})
    request = Request(
        method="POST", path="/", query="", headers=list(headers.items()), body=body, source_ip="::1"
    )
    response = svc.handle(request, at=at, tick=time.monotonic())
    return response.status, json.loads(response.body)


@pytest.fixture(scope="session")
def signed_call() -> SignedCall:
    """:func:`_signed_call`: a request to an in-process Service (its access key and secret in the tuple)."""
    return _signed_call
