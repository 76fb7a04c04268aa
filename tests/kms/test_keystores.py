"""Custom key stores through boto3: lifecycle, state rules, GenerateRandom in them, kill -9 durability."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

Server = Any

CLUSTER = "cluster-abcdefghijk"
XKS = {
    "CustomKeyStoreType": "EXTERNAL_KEY_STORE",
    "XksProxyUriEndpoint": "https://xks.example.com",
    "XksProxyUriPath": "/example/prefix/kms/xks/v1",
    "XksProxyConnectivity": "PUBLIC_ENDPOINT",
    "XksProxyAuthenticationCredential": {
        "AccessKeyId": "ABCDE23456ABCDE23456",
        "RawSecretAccessKey": "A" * 43,
    },
}


def _create_hsm(client: Any, name: str = "hsm-store", cluster: str = CLUSTER) -> str:
    response = client.create_custom_key_store(
        CustomKeyStoreName=name,
        CloudHsmClusterId=cluster,
        TrustAnchorCertificate="-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
        KeyStorePassword="kmsPassword",
    )
    return str(response["CustomKeyStoreId"])


def _state(client: Any, store_id: str) -> str:
    return str(
        client.describe_custom_key_stores(CustomKeyStoreId=store_id)["CustomKeyStores"][0]["ConnectionState"]
    )


def _admin(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kms.cli", "keystore", *args],
        capture_output=True,
        text=True,
        env={"NITRO_SIM_HOME": str(home), "PATH": "/usr/bin:/bin"},
        timeout=60,
        check=False,
    )


def test_cloudhsm_lifecycle_and_generate_random(server: Server) -> None:
    client = server.client()
    store_id = _create_hsm(client)
    assert store_id.startswith("cks-")
    assert len(store_id) == 21
    entry = client.describe_custom_key_stores(CustomKeyStoreName="hsm-store")["CustomKeyStores"][0]
    assert entry["CustomKeyStoreId"] == store_id
    assert entry["CloudHsmClusterId"] == CLUSTER
    assert entry["CustomKeyStoreType"] == "AWS_CLOUDHSM"
    assert entry["ConnectionState"] == "DISCONNECTED"
    assert entry["CreationDate"].tzinfo is not None
    with pytest.raises(client.exceptions.CustomKeyStoreInvalidStateException):
        client.generate_random(NumberOfBytes=8, CustomKeyStoreId=store_id)
    client.connect_custom_key_store(CustomKeyStoreId=store_id)
    assert _state(client, store_id) == "CONNECTED"
    assert len(client.generate_random(NumberOfBytes=8, CustomKeyStoreId=store_id)["Plaintext"]) == 8
    with pytest.raises(client.exceptions.CustomKeyStoreInvalidStateException):
        client.delete_custom_key_store(CustomKeyStoreId=store_id)
    client.disconnect_custom_key_store(CustomKeyStoreId=store_id)
    with pytest.raises(client.exceptions.CustomKeyStoreInvalidStateException):
        client.disconnect_custom_key_store(CustomKeyStoreId=store_id)  # DISCONNECTED: not valid
    client.delete_custom_key_store(CustomKeyStoreId=store_id)
    with pytest.raises(client.exceptions.CustomKeyStoreNotFoundException):
        client.describe_custom_key_stores(CustomKeyStoreId=store_id)
    assert client.describe_custom_key_stores()["CustomKeyStores"] == []


def test_name_and_cluster_in_use_and_limits(server: Server) -> None:
    client = server.client()
    _create_hsm(client)
    with pytest.raises(client.exceptions.CustomKeyStoreNameInUseException):
        _create_hsm(client, cluster="cluster-bbbbbbbbbbb")
    with pytest.raises(client.exceptions.CloudHsmClusterInUseException):
        _create_hsm(client, name="other")
    for i in range(9):
        client.create_custom_key_store(CustomKeyStoreName=f"xks-{i}", **XKS)
    with pytest.raises(client.exceptions.LimitExceededException):
        client.create_custom_key_store(CustomKeyStoreName="one-too-many", **XKS)


def test_external_key_store_is_unsupported_for_generate_random(server: Server) -> None:
    client = server.client()
    store_id = client.create_custom_key_store(CustomKeyStoreName="xks", **XKS)["CustomKeyStoreId"]
    entry = client.describe_custom_key_stores(CustomKeyStoreId=store_id)["CustomKeyStores"][0]
    assert entry["XksProxyConfiguration"]["UriEndpoint"] == "https://xks.example.com"
    assert "RawSecretAccessKey" not in json.dumps(entry, default=str)
    with pytest.raises(client.exceptions.UnsupportedOperationException):
        client.generate_random(NumberOfBytes=8, CustomKeyStoreId=store_id)


def test_unknown_key_store(server: Server) -> None:
    client = server.client()
    with pytest.raises(client.exceptions.CustomKeyStoreNotFoundException):
        client.generate_random(NumberOfBytes=8, CustomKeyStoreId="cks-00000000000000000")
    for call in (
        client.connect_custom_key_store,
        client.disconnect_custom_key_store,
        client.delete_custom_key_store,
    ):
        with pytest.raises(client.exceptions.CustomKeyStoreNotFoundException):
            call(CustomKeyStoreId="cks-00000000000000000")


def test_validation_of_create(server: Server) -> None:
    client = server.client(parameter_validation=False)
    with pytest.raises(client.exceptions.ClientError) as caught:
        client.create_custom_key_store(CustomKeyStoreName="x", CloudHsmClusterId="cluster-abcdefghijk")
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    with pytest.raises(client.exceptions.ClientError) as caught:
        _create_hsm(client, cluster="cluster-1")
    assert "cloudHsmClusterId" in caught.value.response["Error"]["Message"]
    with pytest.raises(client.exceptions.ClientError) as caught:
        client.create_custom_key_store(
            CustomKeyStoreName="x",
            CloudHsmClusterId=CLUSTER,
            TrustAnchorCertificate="t",
            KeyStorePassword="short",
        )
    message = caught.value.response["Error"]["Message"]
    assert "'keyStorePassword'" in message
    assert "short" not in message  # sensitive values are redacted


def test_pagination(server: Server) -> None:
    client = server.client()
    for i in range(5):
        client.create_custom_key_store(CustomKeyStoreName=f"xks-{i}", **XKS)
    first = client.describe_custom_key_stores(Limit=2)
    assert first["Truncated"] is True
    names = [s["CustomKeyStoreName"] for s in first["CustomKeyStores"]]
    marker = first["NextMarker"]
    while marker:
        page = client.describe_custom_key_stores(Limit=2, Marker=marker)
        names += [s["CustomKeyStoreName"] for s in page["CustomKeyStores"]]
        marker = page.get("NextMarker")
    assert names == [f"xks-{i}" for i in range(5)]
    with pytest.raises(client.exceptions.InvalidMarkerException):
        client.describe_custom_key_stores(Marker="bogus")


def test_operator_sets_failed_state_and_hsm_timeout(server: Server) -> None:
    client = server.client()
    store_id = _create_hsm(client)
    client.connect_custom_key_store(CustomKeyStoreId=store_id)
    assert _admin(server.home, "set", "--id", store_id, "--hsm-timeout", "on").returncode == 0
    with pytest.raises(client.exceptions.DependencyTimeoutException):
        client.generate_random(NumberOfBytes=8, CustomKeyStoreId=store_id)
    assert _admin(server.home, "set", "--id", store_id, "--hsm-timeout", "off").returncode == 0
    client.generate_random(NumberOfBytes=8, CustomKeyStoreId=store_id)
    result = _admin(
        server.home, "set", "--id", store_id, "--state", "FAILED", "--error-code", "NETWORK_ERRORS"
    )
    assert result.returncode == 0
    entry = client.describe_custom_key_stores(CustomKeyStoreId=store_id)["CustomKeyStores"][0]
    assert (entry["ConnectionState"], entry["ConnectionErrorCode"]) == ("FAILED", "NETWORK_ERRORS")
    with pytest.raises(client.exceptions.CustomKeyStoreInvalidStateException):
        client.connect_custom_key_store(CustomKeyStoreId=store_id)
    with pytest.raises(client.exceptions.CustomKeyStoreInvalidStateException):
        client.generate_random(NumberOfBytes=8, CustomKeyStoreId=store_id)
    client.disconnect_custom_key_store(CustomKeyStoreId=store_id)  # the documented recovery path
    client.connect_custom_key_store(CustomKeyStoreId=store_id)
    listed = json.loads(_admin(server.home, "list").stdout)
    assert [(s["CustomKeyStoreId"], s["ConnectionState"]) for s in listed] == [(store_id, "CONNECTED")]
    bad = _admin(server.home, "set", "--id", "cks-nope")
    assert bad.returncode == 1
    assert bad.stderr.startswith("kms-sim: error: ")


def test_kill_9_loses_no_key_store(start_server: Callable[..., Server]) -> None:
    server = start_server()
    client = server.client()
    created = [
        _create_hsm(client, name=f"hsm-{i}", cluster=f"cluster-abcdefghij{c}") for i, c in enumerate("kmn")
    ]
    client.connect_custom_key_store(CustomKeyStoreId=created[1])
    assert server.stop(signal.SIGKILL) == -signal.SIGKILL
    again = start_server().client()
    stores = {
        s["CustomKeyStoreId"]: s["ConnectionState"]
        for s in again.describe_custom_key_stores()["CustomKeyStores"]
    }
    assert stores == {created[0]: "DISCONNECTED", created[1]: "CONNECTED", created[2]: "DISCONNECTED"}
    assert len(again.generate_random(NumberOfBytes=8, CustomKeyStoreId=created[1])["Plaintext"]) == 8
