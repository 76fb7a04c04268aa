"""End to end: the attested-random provider as a simulated enclave app, and the real ``attested-random`` CLI.

    attested-random ─(vsock 16:5005)─► python -m enclave.provider ─(vsock 3:8000)─► vsock-proxy ─► kms-sim
                                            └─(NITRO_SIM_NSM)─► nsm-sim (PCR0 of app.eif)

Two enclaves run, as ``nitro-cli run-enclave`` would start them (NITRO_SIM_CID, NITRO_SIM_NSM, NITRO_SIM_HOME
set): CID 16 whose PCR0 is the test image's, which the KMS policy allows, and CID 17 with another PCR0.
Everything lives in a short temporary home under /tmp, is started through :mod:`nitro_sim.procs` and is
stopped at the end of the module. (The provider's real image, built from ``Dockerfile.enclave`` and run by
``nitro-cli``, is tested with the plugin's fixtures in ``test_provider_image.py``.)
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from attestation.eif import build_eif, read_eif
from attestation.provider_wire import (
    MAX_ANSWER_BODY_BYTES,
    Answer,
    ErrorAnswer,
    FrameReader,
    RandomRequest,
    decode_answer,
    encode_frame,
    encode_request,
)
from attestation.sim import vsock_socket_path
from nitro_sim.procs import READY_TIMEOUT_S, OutputLine, Process, ProcessGroup
from nitro_sim.stack import KmsSim, Nsm, VsockProxy, child_environment, program

pytestmark = pytest.mark.slow

IMAGE = build_eif(
    kernel=b"test kernel", cmdline=b"console=ttyS0", ramdisks=[b"boot", b"provider"], metadata=None
)
PCR0_ALLOWED = read_eif(IMAGE).measurements.pcr0.hex()
PCR0_OTHER = "b2" * 48
PORT = 5005
CID_ALLOWED, CID_OTHER = 16, 17


@dataclass
class Stack:
    home: Path
    group: ProcessGroup
    nsms: dict[int, Nsm] = field(default_factory=dict)
    providers: dict[str, Process] = field(default_factory=dict)

    def start_provider(self, name: str, cid: int, *args: str) -> Process:
        port = int(args[args.index("--port") + 1]) if "--port" in args else PORT
        proc = self.group.start(
            [sys.executable, "-m", "enclave.provider", *args],
            name=name,
            env=self.nsms[cid].environ,
            ready=OutputLine(pattern=rf"listening on vsock port {port}\b"),
        )
        self.providers[name] = proc
        return proc

    def fetch(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*program("attested-random"), "fetch", *args],
            env=self.group.env,
            capture_output=True,
            text=True,
            timeout=2 * READY_TIMEOUT_S,
            check=False,
        )


def _policy(home: Path) -> Path:
    path = home / "policy.json"
    statement = {
        "Effect": "Allow",
        "Action": "kms:GenerateRandom",
        "Resource": "*",
        "Condition": {"StringEqualsIgnoreCase": {"kms:RecipientAttestation:ImageSha384": PCR0_ALLOWED}},
    }
    path.write_text(json.dumps({"nitro-sim": {"Version": "2012-10-17", "Statement": [statement]}}))
    return path


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    home = Path(tempfile.mkdtemp(prefix="arp-", dir="/tmp"))  # short: Unix socket paths fit in 108 bytes
    # No developer's ~/.aws/credentials: the provider finds kms-sim's credentials in the home.
    env = child_environment(home) | {"AWS_SHARED_CREDENTIALS_FILE": str(home / "no-such-file")}
    try:
        with ProcessGroup(home, env=env) as group:
            stack = Stack(home=home, group=group)
            (home / "app.eif").write_bytes(IMAGE)
            for cid, pcr0 in ((CID_ALLOWED, PCR0_ALLOWED), (CID_OTHER, PCR0_OTHER)):
                stack.nsms[cid] = Nsm.spawn(group, home, cid=cid, pcrs={0: pcr0}, name=f"nsm{cid}")
            kms = KmsSim.spawn(group, home, policy=_policy(home)).wait_ready()
            VsockProxy.spawn(group, home, kms).wait_ready()
            for device in stack.nsms.values():
                device.wait_ready()
            stack.start_provider("provider16", CID_ALLOWED)
            stack.start_provider("provider17", CID_OTHER)
            yield stack
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _json(done: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_plaintext_answer_verifies(stack: Stack) -> None:
    out = _json(stack.fetch("--enclave-cid", "16", "--pcr0", PCR0_ALLOWED, "--json"))
    assert out["bytes"] == 32
    assert out["encrypted"] is False
    verified = out["verified"]
    assert isinstance(verified, dict)
    assert verified["pcr0"] == PCR0_ALLOWED
    assert verified["nonce_ok"] is True
    assert verified["digest_ok"] is True


def test_encrypted_answer_verifies(stack: Stack) -> None:
    out = _json(
        stack.fetch("--enclave-cid", "16", "--pcr0", PCR0_ALLOWED, "--encrypt", "--bytes", "4096", "--json")
    )
    assert out["bytes"] == 4096
    assert out["encrypted"] is True
    assert len(set(base64.b64decode(str(out["random_b64"])))) > 200


def test_pcr0_from_the_image(stack: Stack) -> None:
    done = stack.fetch("--enclave-cid", "16", "--eif-path", str(stack.home / "app.eif"), "--bytes", "16")
    assert done.returncode == 0, done.stderr
    assert f"  PCR0       {PCR0_ALLOWED} (as expected)" in done.stdout


def test_concurrent_clients(stack: Stack) -> None:
    argv = [
        *program("attested-random"),
        "fetch",
        "--enclave-cid",
        "16",
        "--pcr0",
        PCR0_ALLOWED,
        "--json",
    ]
    clients = [
        subprocess.Popen(
            [*argv, *(["--encrypt"] if i % 2 else [])],
            env=stack.group.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(6)
    ]
    answers = set()
    for client in clients:
        out, err = client.communicate(timeout=2 * READY_TIMEOUT_S)
        assert client.returncode == 0, err
        answers.add(json.loads(out)["random_hex"])
    assert len(answers) == len(clients)


def test_wrong_pcr0_is_refused(stack: Stack) -> None:
    done = stack.fetch("--enclave-cid", "16", "--pcr0", PCR0_OTHER)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("attested-random: refused: PCR0 check failed: ")
    assert done.stderr.count("\n") == 1


def test_kms_policy_refuses_another_image(stack: Stack) -> None:
    done = stack.fetch("--enclave-cid", "17", "--pcr0", PCR0_OTHER)
    assert done.returncode == 1
    assert done.stderr.startswith("attested-random: provider error AccessDeniedException: ")
    assert done.stderr.count("\n") == 1


def _connect(stack: Stack, port: int = PORT) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(2 * READY_TIMEOUT_S)
    sock.connect(str(vsock_socket_path(CID_ALLOWED, port, stack.home)))
    return sock


def _answer(sock: socket.socket) -> Answer | ErrorAnswer | None:
    reader = FrameReader(MAX_ANSWER_BODY_BYTES)
    while data := sock.recv(65536):
        if bodies := reader.feed(data):
            return decode_answer(bodies[0])
    return None


def test_garbage_does_not_kill_the_provider(stack: Stack) -> None:
    with _connect(stack) as sock:  # not our protocol at all: answered, then closed
        sock.sendall(b"GET / HTTP/1.1\r\nHost: enclave\r\n\r\n")
        answer = _answer(sock)
        assert isinstance(answer, ErrorAnswer)
        assert answer.error == "RequestTooLarge"
        assert sock.recv(1) == b""
    with _connect(stack) as sock:  # a frame of garbage: answered, and the connection still serves
        sock.sendall(encode_frame(b"\xd8\x1c\xa0 not a request"))
        answer = _answer(sock)
        assert isinstance(answer, ErrorAnswer)
        assert answer.error == "MalformedRequest"
        sock.sendall(encode_frame(encode_request(RandomRequest(number_of_bytes=8, nonce=b"n" * 16))))
        good = _answer(sock)
        assert isinstance(good, Answer)
        assert len(good.payload) == 8
    with _connect(stack) as sock:  # gone mid-frame
        sock.sendall(encode_frame(b"\xa2" * 100)[:50])
    _connect(stack).close()  # gone at once
    assert stack.providers["provider16"].running()
    assert stack.fetch("--enclave-cid", "16", "--pcr0", PCR0_ALLOWED).returncode == 0


def test_nothing_secret_in_the_logs(stack: Stack) -> None:
    out = _json(stack.fetch("--enclave-cid", "16", "--pcr0", PCR0_ALLOWED, "--bytes", "64", "--json"))
    random = bytes.fromhex(str(out["random_hex"]))
    names = {proc.name for proc in stack.group.processes}
    assert {"provider16", "vsock-proxy", "kms-sim", "nsm-sim-nsm16"} <= names
    for proc in stack.group.processes:
        log = proc.log.read_bytes()
        for form in (random, random.hex().encode(), base64.b64encode(random)):
            assert form[:24] not in log, proc.name


def test_sigterm_stops_it_and_removes_its_socket(stack: Stack) -> None:
    proc = stack.start_provider("provider-stop", CID_ALLOWED, "--port", "5099")
    path = vsock_socket_path(CID_ALLOWED, 5099, stack.home)
    with _connect(stack, 5099) as idle:  # an idle client does not hold the shutdown up
        assert stack.group.stop(proc) == 0
        assert idle.recv(1) == b""
    assert not path.exists()
    log = (stack.home / "provider-stop.log").read_text()
    assert "enclave-provider listening on vsock port 5099" in log
    assert log.rstrip().endswith("enclave-provider: stopped")
