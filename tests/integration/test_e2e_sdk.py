"""End to end: kms-sim, vsock-proxy and nsm-sim as processes; the SDK as a simulated enclave app in a third.

    SDK process ──(simulated vsock 3:8000)──► vsock-proxy ──TCP──► tap (records every byte) ──TCP──► kms-sim
        └──(NITRO_SIM_NSM)──► nsm-sim

The tap is a test instrument: a plain TCP forwarder that keeps a copy of every byte the proxy relays, so
the test can show that the plaintext never crosses the host. Processes are started, awaited and stopped
through :mod:`nitro_sim.procs` (each stack's group is stopped in ``finally``); a test that needs no tap and
no restart uses the plugin's fixtures.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from recording_relay import RecordingRelay

from nitro_sim.procs import READY_TIMEOUT_S, Process, ProcessGroup
from nitro_sim.stack import KmsSim, Nsm, VsockProxy, child_environment, program

pytestmark = pytest.mark.slow

PCR0_ALLOWED = "a1" * 48
PCR0_OTHER = "b2" * 48

# The SDK driver: a simulated enclave app that takes one JSON command per stdin line, answers one line.
DRIVER = r"""
import base64, json, sys
import enclave
from enclave import Config

kms = None

def make(kw):
    global kms
    if kms is not None:
        kms.close()
    kms = enclave.client("kms", config=Config(**kw.pop("config", {})), **kw)

make({})
for line in sys.stdin:
    cmd = json.loads(line)
    try:
        if cmd["op"] == "client":
            make(cmd["kwargs"])
            out = {"ok": True}
        elif cmd["op"] == "generate":
            args = {"NumberOfBytes": cmd["n"]}
            if cmd.get("store"):
                args["CustomKeyStoreId"] = cmd["store"]
            result = kms.generate_random(**args)
            out = {"ok": True, "plaintext": result["Plaintext"].hex(),
                   "request_id": result["ResponseMetadata"]["RequestId"],
                   "retries": result["ResponseMetadata"]["RetryAttempts"],
                   "public_key": kms.public_key_der.hex()}
        elif cmd["op"] == "random_bytes":
            out = {"ok": True, "plaintext": enclave.random_bytes(cmd["n"], kms=kms).hex()}
        else:
            out = {"ok": False, "error": "bad op"}
    except enclave.ClientError as exc:
        cls = getattr(kms.exceptions, exc.code)
        out = {"ok": False, "error": type(exc).__name__, "code": exc.code, "same_class": type(exc) is cls,
               "message": exc.response["Error"]["Message"]}
    except Exception as exc:
        out = {"ok": False, "error": type(exc).__name__, "message": str(exc)}
    print(json.dumps(out), flush=True)
"""


@dataclass
class Stack:
    home: Path
    group: ProcessGroup
    nsm: Nsm
    kms: KmsSim
    tap: RecordingRelay | None = None
    driver: Process | None = None

    @property
    def kms_port(self) -> int:
        return self.kms.port

    def stop_kms(self) -> None:
        self.group.stop(self.kms.process)

    def start_kms(self) -> None:
        """kms-sim again, with the options it had, on the port the tap relays to."""
        self.kms.restart(self.group)
        assert self.kms.url.endswith(f":{self.kms_port}")

    def sdk_env(self) -> dict[str, str]:
        return {**self.group.env, **self.nsm.environ}

    def call(self, **cmd: object) -> dict[str, object]:
        if self.driver is None:
            self.driver = self.group.start(
                [sys.executable, "-c", DRIVER], name="sdk", env=self.nsm.environ, talk=True
            )
        self.driver.send(json.dumps(cmd))
        result: dict[str, object] = json.loads(self.driver.read_line())
        return result

    def close(self) -> None:
        try:
            self.group.stop_all()
        finally:
            if self.tap is not None:
                self.tap.close()


def _pcr0_policy(pcr0: str) -> dict[str, Any]:
    statement = {
        "Effect": "Allow",
        "Action": "kms:GenerateRandom",
        "Resource": "*",
        "Condition": {"StringEqualsIgnoreCase": {"kms:RecipientAttestation:PCR0": pcr0}},
    }
    return {"nitro-sim": {"Version": "2012-10-17", "Statement": [statement]}}


def _policy(home: Path, pcr0: str) -> Path:
    path = home / "policy-pcr0.json"
    path.write_text(json.dumps(_pcr0_policy(pcr0)))
    return path


def _start_stack(home: Path, *, enclave_pcr0: str, kms_args: tuple[str, ...] = ()) -> Stack:
    # No developer's ~/.aws/credentials: the SDK finds kms-sim's credentials in the home.
    env = child_environment(home) | {"AWS_SHARED_CREDENTIALS_FILE": str(home / "no-such-file")}
    group = ProcessGroup(home, env=env)
    tap: RecordingRelay | None = None
    try:
        nsm = Nsm.spawn(group, home, cid=16, pcrs={0: enclave_pcr0}, name="nsm")
        kms = KmsSim.spawn(group, home, policy=_policy(home, PCR0_ALLOWED), args=kms_args)
        nsm.wait_ready()
        kms.wait_ready()
        tap = RecordingRelay.tcp(kms.port)
        VsockProxy.spawn(group, home, tap.port).wait_ready()
    except BaseException:
        group.stop_all()
        if tap is not None:
            tap.close()
        raise
    return Stack(home=home, group=group, nsm=nsm, kms=kms, tap=tap)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = _start_stack(tmp_path_factory.mktemp("e2e"), enclave_pcr0=PCR0_ALLOWED)
    try:
        yield stack
    finally:
        stack.close()


@pytest.mark.parametrize("n", [1, 32, 1024])
def test_attested_generate_random(stack: Stack, n: int) -> None:
    first = stack.call(op="generate", n=n)
    second = stack.call(op="generate", n=n)
    assert first["ok"], first
    assert second["ok"], second
    assert len(bytes.fromhex(str(first["plaintext"]))) == n
    assert first["request_id"]
    if n >= 32:
        assert first["plaintext"] != second["plaintext"]


def test_random_bytes_any_size(stack: Stack) -> None:
    result = stack.call(op="random_bytes", n=5000)
    assert result["ok"], result
    data = bytes.fromhex(str(result["plaintext"]))
    assert len(data) == 5000
    assert len(set(data)) > 200  # 5000 random bytes cover most byte values


def test_plaintext_never_crosses_the_host(stack: Stack) -> None:
    assert stack.tap is not None
    plaintexts = []
    for n in (32, 64, 1024):
        result = stack.call(op="generate", n=n)
        assert result["ok"], result
        plaintexts.append(bytes.fromhex(str(result["plaintext"])))
    with stack.tap.lock:
        captured = bytes(stack.tap.captured)
    assert b"TrentService.GenerateRandom" in captured  # the capture did see the traffic
    assert b"CiphertextForRecipient" in captured
    for plaintext in plaintexts:
        for form in (plaintext, base64.b64encode(plaintext), plaintext.hex().encode()):
            assert form[:24] not in captured


@pytest.mark.parametrize(
    ("cmd", "code"),
    [
        ({"n": 0}, "ValidationException"),
        ({"n": 1025}, "ValidationException"),
        ({"n": 8, "store": "cks-0123456789abcdef0"}, "CustomKeyStoreNotFoundException"),
    ],
    ids=["zero", "too-many", "unknown-key-store"],
)
def test_service_errors_surface_as_their_classes(stack: Stack, cmd: dict[str, object], code: str) -> None:
    result = stack.call(op="generate", **cmd)
    assert result == {**result, "ok": False, "error": code, "code": code, "same_class": True}


def test_authentication_errors_surface_as_their_classes(stack: Stack) -> None:
    cred = stack.call(
        op="client", kwargs={"aws_access_key_id": "AKIANOSUCHUSER", "aws_secret_access_key": "x"}
    )
    assert cred["ok"]
    result = stack.call(op="generate", n=8)
    assert result["error"] == "UnrecognizedClientException"
    assert result["same_class"]
    stack.call(op="client", kwargs={})
    assert stack.call(op="generate", n=8)["ok"]


def test_kmstool_enclave_cli_genrandom(stack: Stack) -> None:
    done = subprocess.run(
        [*program("kmstool-enclave-cli"), "genrandom", "--length", "32"],
        env=stack.sdk_env(),
        capture_output=True,
        text=True,
        timeout=READY_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    prefix, _, b64 = done.stdout.strip().partition(" ")
    assert prefix == "PLAINTEXT:"
    assert len(base64.b64decode(b64, validate=True)) == 32


@pytest.mark.nitro_pcr(0, PCR0_OTHER)
def test_other_pcr0_is_refused(enclave_kms: Any, kms_sim: KmsSim) -> None:
    kms_sim.set_policy(_pcr0_policy(PCR0_ALLOWED))
    with pytest.raises(enclave_kms.exceptions.ClientError) as refused:
        enclave_kms.generate_random(NumberOfBytes=32)
    assert refused.value.code == "AccessDeniedException"
    assert type(refused.value) is enclave_kms.exceptions.AccessDeniedException


def test_stopped_kms_then_restart(tmp_path_factory: pytest.TempPathFactory) -> None:
    stack = _start_stack(tmp_path_factory.mktemp("e2e-restart"), enclave_pcr0=PCR0_ALLOWED)
    try:
        config = {"connect_timeout": 5, "read_timeout": 10, "retries": {"total_max_attempts": 1}}
        assert stack.call(op="client", kwargs={"config": config})["ok"]
        assert stack.call(op="generate", n=16)["ok"]
        stack.stop_kms()
        down = stack.call(op="generate", n=16)
        assert down["ok"] is False
        assert down["error"] in ("EndpointConnectionError", "ReadTimeoutError", "ConnectTimeoutError")
        assert "endpoint URL" in str(down["message"])
        stack.start_kms()
        back = stack.call(op="generate", n=16)
        assert back["ok"], back
    finally:
        stack.close()


def test_injected_faults_are_retried_then_surface(tmp_path_factory: pytest.TempPathFactory) -> None:
    stack = _start_stack(
        tmp_path_factory.mktemp("e2e-faults"),
        enclave_pcr0=PCR0_ALLOWED,
        kms_args=("--fault", "KMSInternalException:2", "--fault", "ThrottlingException:3"),
    )
    try:
        # Faults are consumed in order: requests 1-2 get KMSInternalException (500), 3-5 ThrottlingException.
        assert stack.call(op="client", kwargs={"config": {"retries": {"total_max_attempts": 1}}})["ok"]
        first = stack.call(op="generate", n=8)
        assert first["error"] == "KMSInternalException"
        assert first["same_class"]
        assert stack.call(op="client", kwargs={})["ok"]
        # 500, then two throttles: the 3 standard-mode attempts are used up and the throttle surfaces.
        second = stack.call(op="generate", n=8)
        assert second["error"] == "ThrottlingException"
        assert second["same_class"]
        # One more throttle, then success: retried transparently.
        third = stack.call(op="generate", n=8)
        assert third["ok"], third
        assert third["retries"] == 1
    finally:
        stack.close()


def test_tls_end_to_end_through_the_proxy(tmp_path_factory: pytest.TempPathFactory) -> None:
    # kms-sim --tls makes its CA in the home; the SDK then speaks TLS (server name
    # kms.us-east-1.amazonaws.com) end to end through the proxy: the host sees nothing in the clear.
    stack = _start_stack(tmp_path_factory.mktemp("e2e-tls"), enclave_pcr0=PCR0_ALLOWED, kms_args=("--tls",))
    try:
        assert (stack.home / "kms" / "tls" / "ca.pem").exists()
        result = stack.call(op="generate", n=32)
        assert result["ok"], result
        assert stack.tap is not None
        with stack.tap.lock:
            captured = bytes(stack.tap.captured)
        assert captured  # traffic went through the tap
        assert b"TrentService" not in captured
        assert b"CiphertextForRecipient" not in captured
        assert bytes.fromhex(str(result["plaintext"]))[:16] not in captured
    finally:
        stack.close()


def _sim_credentials(home: Path) -> tuple[str, str]:
    import configparser

    parser = configparser.ConfigParser()
    parser.read(home / "kms" / "credentials")
    section = parser["nitro-sim"]
    return section["aws_access_key_id"], section["aws_secret_access_key"]


@pytest.mark.parametrize(
    ("args", "creds"),
    [
        ({"NumberOfBytes": 1025}, None),
        ({"NumberOfBytes": 8, "CustomKeyStoreId": "cks-0123456789abcdef0"}, None),
        ({"NumberOfBytes": 8}, ("AKIANOSUCHUSER000000", "whatever")),
        ({"NumberOfBytes": 8}, ("REAL", "wrong-secret")),
    ],
    ids=["too-many", "unknown-key-store", "unknown-access-key", "wrong-secret"],
)
def test_sdk_and_boto3_see_the_same_error(
    stack: Stack, args: dict[str, object], creds: tuple[str, str] | None
) -> None:
    import boto3
    import botocore.exceptions

    access, secret = _sim_credentials(stack.home)
    if creds is not None:
        access = access if creds[0] == "REAL" else creds[0]
        secret = creds[1]
    boto = boto3.client(
        "kms",
        endpoint_url=f"http://127.0.0.1:{stack.kms_port}",
        region_name="us-east-1",
        aws_access_key_id=access,
        aws_secret_access_key=secret,
    )
    # boto3 sends the same attested Recipient as the SDK (a document from the stack's nsm-sim), so both
    # requests pass the PCR0 policy and meet the same check.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from enclave.nsm import NSMClient, SimulatedDeviceTransport

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    spki = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    with NSMClient(SimulatedDeviceTransport(stack.nsm.socket)) as nsm:
        document = nsm.attestation(public_key=spki)
    recipient = {"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256", "AttestationDocument": document}
    with pytest.raises(botocore.exceptions.ClientError) as info:
        boto.generate_random(**args, Recipient=recipient)
    boto_code = info.value.response["Error"]["Code"]

    kwargs = {"aws_access_key_id": access, "aws_secret_access_key": secret}
    assert stack.call(op="client", kwargs=kwargs)["ok"]
    try:
        result = stack.call(op="generate", n=args["NumberOfBytes"], store=args.get("CustomKeyStoreId"))
    finally:
        stack.call(op="client", kwargs={})
    assert result["error"] == boto_code
    assert result["same_class"]


@pytest.mark.parametrize("size", [4096])
def test_larger_rsa_keys(stack: Stack, size: int) -> None:
    assert stack.call(op="client", kwargs={"rsa_key_size": size})["ok"]
    try:
        result = stack.call(op="generate", n=32)
    finally:
        stack.call(op="client", kwargs={})
    assert result["ok"], result
    assert len(bytes.fromhex(str(result["plaintext"]))) == 32


@pytest.mark.parametrize("kwargs", [{"prefetch_attestation": True}, {"attestation_reuse_seconds": 30}])
def test_document_modes(stack: Stack, kwargs: dict[str, object]) -> None:
    assert stack.call(op="client", kwargs=kwargs)["ok"]
    try:
        results = [stack.call(op="generate", n=32) for _ in range(5)]
    finally:
        stack.call(op="client", kwargs={})
    assert all(r["ok"] for r in results), results
    assert len({r["plaintext"] for r in results}) == 5
