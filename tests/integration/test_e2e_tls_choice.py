"""End to end: a plain-HTTP kms-sim in a home where an earlier ``kms-sim serve --tls`` left its CA.

kms-sim, nsm-sim and vsock-proxy run as processes; ``kmstool-enclave-cli`` and ``python -m enclave.app`` run
as simulated enclave apps. Without ``NITRO_SIM_KMS_TLS`` the SDK guesses TLS from the CA file and fails
with one clear line naming the variable; with ``NITRO_SIM_KMS_TLS=0`` both tools get their attested bytes.
Every process is started and stopped through :mod:`nitro_sim.procs`.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest

from nitro_sim.procs import READY_TIMEOUT_S, ProcessGroup
from nitro_sim.stack import KmsSim, Nsm, VsockProxy, child_environment, program

pytestmark = pytest.mark.slow


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=READY_TIMEOUT_S, check=False)


def test_plain_kms_sim_after_a_tls_one(tmp_path_factory: pytest.TempPathFactory) -> None:
    home = tmp_path_factory.mktemp("e2e-tlsenv")
    # No developer's ~/.aws/credentials: the tools find kms-sim's credentials in the home.
    env = child_environment(home) | {"AWS_SHARED_CREDENTIALS_FILE": str(home / "no-such-file")}
    with ProcessGroup(home, env=env) as group:
        tls = KmsSim.spawn(group, home, args=["--tls"]).wait_ready()
        assert tls.url.startswith("https://")
        group.stop(tls.process)  # leaves kms/tls/ca.pem behind, as any earlier --tls run does
        assert (home / "kms" / "tls" / "ca.pem").is_file()
        kms = KmsSim.spawn(group, home).wait_ready()  # now plain HTTP in the same home
        assert kms.url.startswith("http://")
        nsm = Nsm.spawn(group, home, cid=16, name="nsm").wait_ready()
        VsockProxy.spawn(group, home, kms).wait_ready()
        kmstool = [*program("kmstool-enclave-cli"), "genrandom", "--length", "32"]
        app = [sys.executable, "-m", "enclave.app", "--bytes", "16"]

        guessed = env | {"NITRO_SIM_NSM": str(nsm.socket), "AWS_MAX_ATTEMPTS": "1"}
        done = _run(kmstool, guessed)
        assert done.returncode == 255  # main returns AWS_OP_ERR, as the real tool
        assert "TLS handshake failed" in done.stderr
        assert "set NITRO_SIM_KMS_TLS=0" in done.stderr
        assert "Traceback" not in done.stderr

        told = env | {"NITRO_SIM_NSM": str(nsm.socket), "NITRO_SIM_KMS_TLS": "0"}
        done = _run(kmstool, told)
        assert done.returncode == 0, done.stderr
        prefix, _, b64 = done.stdout.strip().partition(" ")
        assert prefix == "PLAINTEXT:"
        assert len(base64.b64decode(b64, validate=True)) == 32
        done = _run(app, told)
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(done.stdout)["bytes"] == 16
