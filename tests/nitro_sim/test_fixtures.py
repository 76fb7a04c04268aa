"""The nitro-sim fixtures as this project's own suite uses them (the plugin is installed with the package).

Under the default session scope these tests share one stack, so they also check the reset between tests:
a test that changes the policy, injects a fault, makes a key and alias or spoils an NSM is followed by one
that expects none of it (pytest runs a module's tests in file order).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from kms.iam import PolicyFileError
from nitro_sim.procs import ProcessError, ProcessGroup
from nitro_sim.stack import KmsSim, Nsm, VsockProxy, child_environment, image_policy

OTHER_IMAGE = hashlib.sha384(b"some other enclave image").digest()
MARKED = hashlib.sha384(b"the test's own enclave image").hexdigest()


def _recipient(record: dict[str, Any]) -> dict[str, str]:
    recipient: dict[str, str] = record["additionalEventData"]["recipient"]
    return recipient


def test_enclave_kms_gets_attested_bytes_and_kms_audits_them(
    enclave_kms: Any, kms_sim: KmsSim, nsm: Nsm
) -> None:
    plaintext = enclave_kms.generate_random(NumberOfBytes=32)["Plaintext"]
    assert len(plaintext) == 32
    [record] = kms_sim.audit()
    assert record["eventName"] == "GenerateRandom"
    assert (
        base64.b64decode(_recipient(record)["attestationDocumentEnclaveImageDigest"]).hex()
        == nsm.pcrs[0].hex()
    )
    assert plaintext.hex() not in json.dumps(record)


def test_a_policy_on_another_pcr0_denies(enclave_kms: Any, kms_sim: KmsSim) -> None:
    kms_sim.set_policy(image_policy(OTHER_IMAGE))
    with pytest.raises(enclave_kms.exceptions.AccessDeniedException):
        enclave_kms.generate_random(NumberOfBytes=32)
    assert kms_sim.audit()[-1]["errorCode"] == "AccessDeniedException"


def test_the_policy_is_back_and_the_audit_mark_moved(enclave_kms: Any, kms_sim: KmsSim) -> None:
    assert kms_sim.audit() == []
    assert len(enclave_kms.generate_random(NumberOfBytes=8)["Plaintext"]) == 8


def test_a_policy_on_this_pcr0_allows(enclave_kms: Any, kms_sim: KmsSim, nsm: Nsm) -> None:
    kms_sim.set_policy(image_policy(nsm.pcrs[0]))
    assert len(enclave_kms.generate_random(NumberOfBytes=8)["Plaintext"]) == 8


def test_an_injected_fault_is_retried_by_the_sdk(enclave_kms: Any, kms_sim: KmsSim) -> None:
    kms_sim.inject_fault("KMSInternalException", 1)
    response = enclave_kms.generate_random(NumberOfBytes=8)
    assert response["ResponseMetadata"]["RetryAttempts"] == 1
    assert [r.get("errorCode") for r in kms_sim.audit()] == ["KMSInternalException", None]


def test_faults_are_cleared_between_tests(kms_sim: KmsSim) -> None:
    client = kms_sim.boto3_client(config=_no_retries())
    assert len(client.generate_random(NumberOfBytes=8)["Plaintext"]) == 8


def test_a_key_and_alias_made_here_1(kms_sim: KmsSim) -> None:
    client = kms_sim.boto3_client()
    key_id = client.create_key()["KeyMetadata"]["KeyId"]
    client.create_alias(AliasName="alias/app", TargetKeyId=key_id)
    assert client.describe_key(KeyId="alias/app")["KeyMetadata"]["KeyId"] == key_id  # kms-sim keeps the row
    _MADE.append(key_id)


def test_a_key_and_alias_made_here_2_are_gone_in_the_next_test(kms_sim: KmsSim) -> None:
    client = kms_sim.boto3_client()
    assert client.list_keys()["Keys"] == []
    assert client.list_aliases()["Aliases"] == []
    with pytest.raises(client.exceptions.NotFoundException):
        client.describe_key(KeyId=_MADE[0])
    key_id = client.create_key()["KeyMetadata"]["KeyId"]
    client.create_alias(AliasName="alias/app", TargetKeyId=key_id)
    assert [k["KeyId"] for k in client.list_keys()["Keys"]] == [key_id]


_MADE: list[str] = []


def _no_retries() -> Any:
    from botocore.config import Config

    return Config(retries={"total_max_attempts": 1, "mode": "standard"})


def test_boto3_client_ignores_the_callers_aws_settings(
    kms_sim: KmsSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-simulated-secret")
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", "http://127.0.0.1:9")
    client = kms_sim.boto3_client(config=_no_retries())
    kms_sim.inject_fault("ThrottlingException", 1)
    with pytest.raises(client.exceptions.ClientError) as caught:
        client.generate_random(NumberOfBytes=8)
    assert caught.value.response["Error"]["Code"] == "ThrottlingException"
    assert kms_sim.audit()[-1]["userIdentity"]["userName"] == kms_sim.credentials.profile


def test_credentials_point_at_the_home(kms_sim: KmsSim, nitro_home: Path) -> None:
    credentials = kms_sim.credentials
    assert credentials.file == nitro_home / "kms" / "credentials"
    assert credentials.environ["AWS_PROFILE"] == "nitro-sim"
    assert credentials.secret_access_key not in repr(credentials)
    assert kms_sim.url.startswith("http://127.0.0.1:")


def test_a_policy_kms_sim_would_refuse_fails_here(kms_sim: KmsSim) -> None:
    with pytest.raises(PolicyFileError, match="unsupported condition operator"):
        kms_sim.set_policy(
            {"nitro-sim": {"Statement": [{"Effect": "Allow", "Action": "kms:*", "Condition": {"Nope": {}}}]}}
        )
    with pytest.raises(ValueError, match="cannot inject 'Nope'"):
        kms_sim.inject_fault("Nope")
    with pytest.raises(ValueError, match="count must be"):
        kms_sim.inject_fault("KMSInternalException", -1)


def test_nsm_makes_this_process_its_enclave_app(nsm: Nsm, vsock_proxy: VsockProxy, nitro_home: Path) -> None:
    assert os.environ["NITRO_SIM_NSM"] == str(nsm.socket)
    assert os.environ["NITRO_SIM_CID"] == str(nsm.cid)
    assert os.environ["NITRO_SIM_HOME"] == str(nitro_home)
    assert nsm.environ["NITRO_SIM_NSM"] == str(nsm.socket)
    assert vsock_proxy.socket == nitro_home / "vsock" / "3" / "8000.sock"
    assert vsock_proxy.socket.exists()


@pytest.mark.nitro_pcr(0, MARKED)
@pytest.mark.nitro_pcr(8, "00" * 48)
def test_nitro_pcr_marker(enclave_kms: Any, kms_sim: KmsSim, nsm: Nsm) -> None:
    assert nsm.pcrs[0].hex() == MARKED
    kms_sim.set_policy(image_policy(MARKED))
    enclave_kms.generate_random(NumberOfBytes=8)
    assert (
        base64.b64decode(_recipient(kms_sim.audit()[-1])["attestationDocumentEnclaveImageDigest"]).hex()
        == MARKED
    )


@pytest.mark.nitro_debug
def test_nitro_debug_marker(enclave_kms: Any, kms_sim: KmsSim, nsm: Nsm) -> None:
    assert nsm.debug
    assert nsm.pcrs[0] == bytes(48)
    enclave_kms.generate_random(NumberOfBytes=8)
    assert (
        base64.b64decode(_recipient(kms_sim.audit()[-1])["attestationDocumentEnclaveImageDigest"]).hex()
        == "00" * 48
    )


def test_a_spoiled_nsm_is_replaced_1(nsm: Nsm) -> None:
    from enclave.nsm import NSMClient, SimulatedDeviceTransport

    with NSMClient(SimulatedDeviceTransport(nsm.socket)) as client:
        client.extend_pcr(16, b"this test's own measurement")
    _SPOILED.append(nsm.process.pid)


def test_a_spoiled_nsm_is_replaced_2(nsm: Nsm) -> None:
    from enclave.nsm import NSMClient, SimulatedDeviceTransport

    if _SPOILED:  # under --nitro-sim-scope=function every device is new anyway
        assert nsm.process.pid != _SPOILED[0]
    with NSMClient(SimulatedDeviceTransport(nsm.socket)) as client:
        assert client.describe_pcr(16).data == bytes(48)


_SPOILED: list[int] = []


def test_a_process_that_fails_names_itself(tmp_path: Path) -> None:
    home = tmp_path
    (home / "kms").mkdir()
    (home / "kms" / "policy.json").write_text("{")
    with (
        ProcessGroup(home / "logs", env=child_environment(home)) as group,
        pytest.raises(ProcessError) as caught,
    ):
        KmsSim.spawn(group, home).wait_ready()
    message = str(caught.value)
    assert message.startswith("kms-sim (pid ")
    assert "exited with status 1 before it was ready" in message
    assert "  | kms-sim: error: policy file" in message
