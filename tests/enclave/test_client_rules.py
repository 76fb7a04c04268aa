"""Client rules a review found loose: TLS choice, the random_bytes bound, botocore's credential and
max-attempts errors, and one way of naming an endpoint in messages.

The peer here is a plain-HTTP server on the simulated vsock (3, port) that answers every request with
KMS's AccessDeniedException: reaching it proves the client spoke plain HTTP; a TLS client fails its
handshake against it.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

import enclave
from attestation.sim import PARENT_CID, vsock_socket_path
from enclave import Config
from enclave._config import resolve_config, resolve_credentials
from enclave.errors import (
    ClientError,
    CredentialsError,
    EndpointConnectionError,
    PartialCredentialsError,
    ProfileNotFound,
)
from enclave.kms import MAX_RANDOM_BYTES, SIM_CA_FILE
from enclave.kmstool import main as kmstool_main
from kms.state import ensure_home
from kms.tls import ensure_tls

PORT = 8000
DENIED = json.dumps({"__type": "AccessDeniedException", "message": "denied"}).encode()


class StubNSM:
    def attestation(self, *, user_data=None, nonce=None, public_key=None) -> bytes:
        return b"DOC"

    def get_random(self) -> bytes:
        return b"\x01" * 256


class DenyingPeer:
    """Plain HTTP/1.1 on vsock (3, port): reads one request per connection, answers 400 AccessDenied."""

    def __init__(self, port: int) -> None:
        path = vsock_socket_path(PARENT_CID, port)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(8)
        self.requests = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                data = b""
                with contextlib.suppress(OSError):
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(65536)
                        if not chunk or not (data + chunk).startswith(b"POST "[: len(data + chunk)]):
                            break  # EOF, or not HTTP (a TLS ClientHello): hang up at once
                        data += chunk
                    if data.startswith(b"POST "):
                        self.requests += 1
                        conn.sendall(
                            b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.1\r\n"
                            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(DENIED), DENIED)
                        )

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join(timeout=10)


@pytest.fixture
def peer(sim_home: Path) -> Iterator[DenyingPeer]:
    served = DenyingPeer(PORT)
    try:
        yield served
    finally:
        served.close()


@pytest.fixture
def stale_ca(sim_home: Path) -> Path:
    """What one earlier ``kms-sim serve --tls`` leaves in the home: its CA file."""
    ensure_tls(ensure_home(sim_home).tls, at=datetime.now(UTC))
    ca = sim_home / SIM_CA_FILE
    assert ca.is_file()
    return ca


def _client(**kw: object) -> enclave.KMSClient:
    return enclave.client(
        "kms",
        region_name="us-east-1",
        aws_access_key_id="AKIDX",
        aws_secret_access_key="secret",
        nsm=StubNSM(),
        config=Config(connect_timeout=5, read_timeout=5, retries={"total_max_attempts": 1}),
        **kw,  # type: ignore[arg-type]
    )


# -- 1. TLS or plain HTTP -------------------------------------------------------------------------------


def test_stale_ca_file_alone_means_tls(
    peer: DenyingPeer, stale_ca: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NITRO_SIM_KMS_TLS", raising=False)
    with _client() as kms, pytest.raises(EndpointConnectionError, match="TLS handshake failed") as info:
        kms.generate_random(NumberOfBytes=8)
    assert str(info.value).endswith("(if kms-sim serves plain HTTP, set NITRO_SIM_KMS_TLS=0)")
    assert peer.requests == 0


def test_environment_says_plain_http_despite_the_ca_file(
    peer: DenyingPeer, stale_ca: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NITRO_SIM_KMS_TLS", "0")
    with _client() as kms, pytest.raises(kms.exceptions.AccessDeniedException):
        kms.generate_random(NumberOfBytes=8)
    assert peer.requests == 1


def test_explicit_use_ssl_and_scheme_win_over_the_environment(
    peer: DenyingPeer, stale_ca: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NITRO_SIM_KMS_TLS", "1")
    with _client(use_ssl=False) as kms, pytest.raises(ClientError):
        kms.generate_random(NumberOfBytes=8)
    with _client(endpoint_url="http://127.0.0.1:9") as kms:
        assert not kms._conn._endpoint.tls
    monkeypatch.setenv("NITRO_SIM_KMS_TLS", "0")
    with _client(endpoint_url="https://127.0.0.1:9") as kms:
        assert kms._conn._endpoint.tls
    assert peer.requests == 1


def test_tls_without_a_usable_ca_file_is_one_clear_error(
    sim_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NITRO_SIM_KMS_TLS", "1")
    missing = sim_home / SIM_CA_FILE
    with pytest.raises(
        ValueError, match=rf"^cannot use the CA bundle {missing} for TLS: No such file or directory "
    ):
        _client()
    junk = sim_home / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ValueError, match=rf"^cannot use the CA bundle {junk} for TLS: "):
        _client(verify=junk)


def test_environment_value_must_be_0_or_1(sim_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NITRO_SIM_KMS_TLS", "yes")
    with pytest.raises(
        ValueError, match=r"^NITRO_SIM_KMS_TLS must be 0 \(plain HTTP\) or 1 \(TLS\), got 'yes'$"
    ):
        _client()


def test_kmstool_follows_the_environment(
    peer: DenyingPeer, stale_ca: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # kmstool-enclave-cli has no TLS flag (the real one has none): the environment variable decides.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDX")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setattr("enclave._documents.DocumentSource.take", lambda self: b"doc")
    monkeypatch.setattr("enclave._documents.DocumentSource.prefetch_next", lambda self: None)
    assert kmstool_main(["genrandom", "--length", "8"]) == 255
    assert "TLS handshake failed" in capsys.readouterr().err
    monkeypatch.setenv("NITRO_SIM_KMS_TLS", "0")
    assert kmstool_main(["genrandom", "--length", "8"]) == 255
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("AccessDeniedException: An error occurred (AccessDeniedException)")
    assert err[-1] == ""
    assert err[-2] == "Could not generate random bytes"
    assert peer.requests == 1


# -- 2. random_bytes is bounded ---------------------------------------------------------------------------


def test_random_bytes_bound(sim_home: Path) -> None:
    message = rf"^n must be an integer in 0\.\.{MAX_RANDOM_BYTES} \(1 MiB\), got "
    with _client() as kms:
        for bad in (10**9, MAX_RANDOM_BYTES + 1, -1):
            with pytest.raises(ValueError, match=message + str(bad)):
                kms.random_bytes(bad)
        with pytest.raises(ValueError, match=message + "float"):
            kms.random_bytes(1.5)  # type: ignore[arg-type]
        assert kms.random_bytes(0) == b""
    # The module-level helper refuses before it would make a client (none could be made here).
    with pytest.raises(ValueError, match=message + str(10**9)):
        enclave.random_bytes(10**9)


# -- 3. credentials and retries as botocore ---------------------------------------------------------------


@pytest.fixture
def aws_files(tmp_path: Path) -> dict[str, str]:
    creds = tmp_path / "credentials"
    creds.write_text("[default]\naws_access_key_id = AKIDDEF\naws_secret_access_key = def\n")
    config = tmp_path / "config"
    config.write_text("[profile only-config]\nregion = eu-west-1\n")
    return {"AWS_SHARED_CREDENTIALS_FILE": str(creds), "AWS_CONFIG_FILE": str(config), "HOME": str(tmp_path)}


def test_unknown_profile_is_refused(aws_files: dict[str, str]) -> None:
    for profile in ("nope", ""):
        env = {**aws_files, "AWS_PROFILE": profile}
        with pytest.raises(ProfileNotFound, match=rf"^The config profile \({profile}\) could not be found$"):
            resolve_credentials(simulated=False, environ=env)
        # botocore checks the profile even when the key pair is given explicitly
        with pytest.raises(ProfileNotFound):
            resolve_credentials("AKIDX", "secret", simulated=False, environ=env)
    assert resolve_credentials(
        simulated=False, environ={**aws_files, "AWS_PROFILE": "default"}
    ).access_key == ("AKIDDEF")
    # a profile of the config file exists (it just has no keys here)
    with pytest.raises(CredentialsError, match=r"^Unable to locate credentials$"):
        resolve_credentials(simulated=False, environ={**aws_files, "AWS_PROFILE": "only-config"})


def test_profile_of_kms_sims_credentials_file_in_simulation(
    aws_files: dict[str, str], sim_home: Path
) -> None:
    ensure_home(sim_home)
    env = {**aws_files, "NITRO_SIM_HOME": str(sim_home), "AWS_PROFILE": "nitro-sim"}
    assert resolve_credentials(simulated=True, environ=env).access_key
    with pytest.raises(ProfileNotFound):
        resolve_credentials(simulated=False, environ=env)


def test_partial_credentials(aws_files: dict[str, str]) -> None:
    with pytest.raises(
        PartialCredentialsError, match=r"^Partial credentials found in env, missing: AWS_SECRET_ACCESS_KEY$"
    ):
        resolve_credentials(simulated=False, environ={**aws_files, "AWS_ACCESS_KEY_ID": "AKIDX"})
    with pytest.raises(
        PartialCredentialsError,
        match=r"^Partial credentials found in explicit, missing: aws_secret_access_key$",
    ):
        resolve_credentials("AKIDX", simulated=False, environ=aws_files)
    with pytest.raises(
        PartialCredentialsError, match=r"^Partial credentials found in explicit, missing: aws_access_key_id$"
    ):
        resolve_credentials(None, "secret", simulated=False, environ=aws_files)
    # a secret alone in the environment is ignored, as botocore's env provider keys on the key ID
    env = {**aws_files, "AWS_SECRET_ACCESS_KEY": "stray"}
    assert resolve_credentials(simulated=False, environ=env).access_key == "AKIDDEF"


def test_max_attempts_from_the_environment() -> None:
    assert resolve_config(None, environ={"AWS_MAX_ATTEMPTS": "7"}).max_attempts == 7
    assert resolve_config(None, environ={"AWS_MAX_ATTEMPTS": " 5 "}).max_attempts == 5
    assert resolve_config(None, environ={}).max_attempts == 3
    explicit = Config(retries={"total_max_attempts": 2})
    assert resolve_config(explicit, environ={"AWS_MAX_ATTEMPTS": "abc"}).max_attempts == 2
    retries_only = Config(retries={"max_attempts": 2})  # botocore's older key: retries, not attempts
    assert resolve_config(retries_only, environ={"AWS_MAX_ATTEMPTS": "abc"}).max_attempts == 3
    for text, message in (
        ("abc", r"^invalid literal for int\(\) with base 10: 'abc'$"),
        ("", r"^invalid literal for int\(\) with base 10: ''$"),
        ("0", r'^Value provided to "max_attempts": 0 must be an integer greater than or equal to 1\.$'),
        ("-1", r'^Value provided to "max_attempts": -1 must be an integer greater than or equal to 1\.$'),
        ("1000", r"^retries allow at most 20 attempts in all$"),
    ):
        with pytest.raises(ValueError, match=message):
            resolve_config(None, environ={"AWS_MAX_ATTEMPTS": text})


@pytest.mark.parametrize(
    "retries",
    [
        {},
        {"max_attempts": 0},
        {"max_attempts": 1},
        {"max_attempts": 4},
        {"total_max_attempts": 1},
        {"total_max_attempts": 6},
        {"total_max_attempts": 2, "max_attempts": 7},
        {"mode": "standard", "max_attempts": 2},
    ],
)
def test_attempts_are_counted_as_botocore_counts_them(retries: dict[str, object]) -> None:
    """botocore itself is the oracle: the total attempts its client derives from the same ``retries``."""
    import boto3
    from botocore.config import Config as BotoConfig

    oracle = boto3.client(
        "kms",
        region_name="us-east-1",
        aws_access_key_id="AKIDX",
        aws_secret_access_key="secret",
        config=BotoConfig(retries={"mode": "standard", **retries}),
    )
    expected = oracle.meta.config.retries.get("total_max_attempts", 3)  # standard mode's default: 3
    assert resolve_config(Config(retries=retries), environ={}).max_attempts == expected


@pytest.mark.parametrize(
    ("retries", "message"),
    [
        (
            {"max_attempt": 2},
            r'^Cannot provide retry configuration for "max_attempt"\. Valid retry configuration',
        ),
        (
            {"max_attempts": -1},
            r'^Value provided to "max_attempts": -1 must be an integer greater than or equal to 0\.$',
        ),
        (
            {"total_max_attempts": 0},
            r'^Value provided to "max_attempts": 0 must be an integer greater than or equal to 1\.$',
        ),
        ({"max_attempts": 20}, r"^retries allow at most 20 attempts in all$"),
    ],
)
def test_bad_retry_configuration_is_refused_in_botocore_words(
    retries: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Config(retries=retries)


def test_client_refuses_bad_max_attempts_environment(sim_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "abc")
    with pytest.raises(ValueError, match="invalid literal"):
        enclave.client("kms", aws_access_key_id="AKIDX", aws_secret_access_key="secret", nsm=StubNSM())


# -- 6. one way of naming the endpoint --------------------------------------------------------------------


def test_endpoint_named_the_same_when_refused_and_when_closed(sim_home: Path) -> None:
    # nobody listens: connection refused
    with _client(proxy_port=9999) as kms:
        assert kms.endpoint_url == "vsock://3:9999"
        with pytest.raises(EndpointConnectionError) as refused:
            kms.generate_random(NumberOfBytes=8)
    # a listener that closes every connection without answering
    path = vsock_socket_path(PARENT_CID, 9999)
    path.parent.mkdir(parents=True, exist_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(8)

    def hang_up() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                conn.recv(65536)
                conn.close()

    thread = threading.Thread(target=hang_up, daemon=True)
    thread.start()
    try:
        with (
            _client(proxy_port=9999, use_ssl=False) as kms,
            pytest.raises(EndpointConnectionError, match="closed before any response") as closed,
        ):
            kms.generate_random(NumberOfBytes=8)
    finally:
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(timeout=10)
    prefix = 'Could not connect to the endpoint URL: "vsock://3:9999": '
    assert str(refused.value).startswith(prefix)
    assert str(closed.value).startswith(prefix)


def test_timeouts_must_be_finite() -> None:
    for bad in (float("nan"), float("inf"), 0.0, -1.0, 1e300):
        with pytest.raises(ValueError, match=r"^timeouts must be positive numbers of seconds up to 3600$"):
            Config(connect_timeout=bad)
        with pytest.raises(ValueError, match=r"^timeouts must be positive numbers of seconds up to 3600$"):
            Config(read_timeout=bad)
