"""End to end: a plain-HTTP kms-sim in a home where an earlier ``kms-sim serve --tls`` left its CA.

kms-sim, nsm-sim and vsock-proxy run as processes; ``kmstool-enclave-cli`` and ``python -m enclave.app`` run
as simulated enclave apps. Without ``NITRO_SIM_KMS_TLS`` the SDK guesses TLS from the CA file and fails
with one clear line naming the variable; with ``NITRO_SIM_KMS_TLS=0`` both tools get their attested bytes.
Every process is stopped in ``finally``.
"""

from __future__ import annotations

import base64
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from attestation.sim import PARENT_CID, vsock_socket_path

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
#: Generous bound for a process to come up or go down (never asserted as a time).
STARTUP_SECONDS = 30.0
PROXY_PORT = 8000


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "NITRO_SIM_"))}
    env.update({"NITRO_SIM_HOME": str(home), "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-such-file")})
    env.update(extra)
    return env


def _spawn(args: list[str], env: dict[str, str], log: Path, *, talk: bool = False) -> subprocess.Popen[str]:
    with log.open("a") as sink:
        return subprocess.Popen(
            args,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if talk else sink,
            stderr=sink,
            text=True,
        )


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STARTUP_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def _wait_path(proc: subprocess.Popen[str], path: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args[0]} exited early (see the .log files in {path.parent})")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear")
        time.sleep(0.02)


def _kms(home: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    proc = _spawn(
        [str(BIN / "kms-sim"), "serve", "--listen", f"127.0.0.1:{port}", *extra],
        _env(home),
        home / "kms.log",
        talk=True,
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], STARTUP_SECONDS)
    if not ready or not proc.stdout.readline().strip():
        _stop(proc)
        raise AssertionError("kms-sim did not print its URL (see kms.log)")
    return proc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=STARTUP_SECONDS, check=False)


def test_plain_kms_sim_after_a_tls_one(tmp_path_factory: pytest.TempPathFactory) -> None:
    home = tmp_path_factory.mktemp("e2e-tlsenv")
    port = _free_port()
    procs: list[subprocess.Popen[str]] = []
    try:
        _stop(_kms(home, port, "--tls"))  # leaves kms/tls/ca.pem behind, as any earlier --tls run does
        assert (home / "kms" / "tls" / "ca.pem").is_file()
        procs.append(_kms(home, port))  # now plain HTTP in the same home
        nsm_socket = home / "nsm.sock"
        procs.append(
            _spawn([str(BIN / "nsm-sim"), "--socket", str(nsm_socket)], _env(home), home / "nsm.log")
        )
        _wait_path(procs[-1], nsm_socket)
        allow = home / "allow.yaml"
        allow.write_text(f"allowlist:\n- {{address: 127.0.0.1, port: {port}}}\n")
        procs.append(
            _spawn(
                [str(BIN / "vsock-proxy"), "--config", str(allow), str(PROXY_PORT), "127.0.0.1", str(port)],
                _env(home),
                home / "proxy.log",
            )
        )
        _wait_path(procs[-1], vsock_socket_path(PARENT_CID, PROXY_PORT, home))
        kmstool = [str(BIN / "kmstool-enclave-cli"), "genrandom", "--length", "32"]
        app = [sys.executable, "-m", "enclave.app", "--bytes", "16"]

        guessed = _env(home, NITRO_SIM_NSM=str(nsm_socket), AWS_MAX_ATTEMPTS="1")
        done = _run(kmstool, guessed)
        assert done.returncode == 1
        assert "TLS handshake failed" in done.stderr
        assert "set NITRO_SIM_KMS_TLS=0" in done.stderr
        assert "Traceback" not in done.stderr

        told = _env(home, NITRO_SIM_NSM=str(nsm_socket), NITRO_SIM_KMS_TLS="0")
        done = _run(kmstool, told)
        assert done.returncode == 0, done.stderr
        prefix, _, b64 = done.stdout.strip().partition(" ")
        assert prefix == "PLAINTEXT:"
        assert len(base64.b64decode(b64, validate=True)) == 32
        done = _run(app, told)
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(done.stdout)["bytes"] == 16
    finally:
        for proc in reversed(procs):
            _stop(proc)
