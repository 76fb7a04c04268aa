"""End to end: a plain-HTTP kms-sim in a home where an earlier ``kms-sim serve --tls`` left its CA.

kms-sim, nsm-sim and vsock-proxy run as processes; ``kmstool-enclave-cli`` and ``python -m enclave.app`` run
as simulated enclave apps. Without ``NITRO_SIM_KMS_TLS`` the SDK guesses TLS from the CA file and fails
with one clear line naming the variable; with ``NITRO_SIM_KMS_TLS=0`` both tools get their attested bytes.
Every process is stopped in ``finally``.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import e2e_procs as e2e
import pytest

from attestation.sim import PARENT_CID, vsock_socket_path

pytestmark = pytest.mark.slow


def _kms(home: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    proc = e2e.spawn(
        [str(e2e.BIN / "kms-sim"), "serve", "--listen", f"127.0.0.1:{port}", *extra],
        e2e.env(home),
        home / "kms.log",
        talk=True,
    )
    try:
        e2e.first_line(proc)
    except AssertionError:
        e2e.stop(proc)
        raise
    return proc


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, env=env, capture_output=True, text=True, timeout=e2e.STARTUP_SECONDS, check=False
    )


def test_plain_kms_sim_after_a_tls_one(tmp_path_factory: pytest.TempPathFactory) -> None:
    home = tmp_path_factory.mktemp("e2e-tlsenv")
    port = e2e.free_port()
    procs: list[subprocess.Popen[str]] = []
    try:
        e2e.stop(_kms(home, port, "--tls"))  # leaves kms/tls/ca.pem behind, as any earlier --tls run does
        assert (home / "kms" / "tls" / "ca.pem").is_file()
        procs.append(_kms(home, port))  # now plain HTTP in the same home
        nsm_socket = home / "nsm.sock"
        procs.append(
            e2e.spawn(
                [str(e2e.BIN / "nsm-sim"), "--socket", str(nsm_socket)], e2e.env(home), home / "nsm.log"
            )
        )
        e2e.wait_path(procs[-1], nsm_socket)
        allow = home / "allow.yaml"
        allow.write_text(f"allowlist:\n- {{address: 127.0.0.1, port: {port}}}\n")
        procs.append(
            e2e.spawn(
                [
                    str(e2e.BIN / "vsock-proxy"),
                    "--config",
                    str(allow),
                    str(e2e.PROXY_PORT),
                    "127.0.0.1",
                    str(port),
                ],
                e2e.env(home),
                home / "proxy.log",
            )
        )
        e2e.wait_path(procs[-1], vsock_socket_path(PARENT_CID, e2e.PROXY_PORT, home))
        kmstool = [str(e2e.BIN / "kmstool-enclave-cli"), "genrandom", "--length", "32"]
        app = [sys.executable, "-m", "enclave.app", "--bytes", "16"]

        guessed = e2e.env(home, NITRO_SIM_NSM=str(nsm_socket), AWS_MAX_ATTEMPTS="1")
        done = _run(kmstool, guessed)
        assert done.returncode == 1
        assert "TLS handshake failed" in done.stderr
        assert "set NITRO_SIM_KMS_TLS=0" in done.stderr
        assert "Traceback" not in done.stderr

        told = e2e.env(home, NITRO_SIM_NSM=str(nsm_socket), NITRO_SIM_KMS_TLS="0")
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
            e2e.stop(proc)
