"""KmsSim.reset and custom key stores: back to the key stores there were when kms-sim became ready.

One kms-sim with two workers serves this module, in a home that already held a key store before it started;
boto3 talks to it, and a KeyStores of the test's own stands for "another connection" to see whether a reset
wrote anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from kms.keystores import CLOUDHSM, KeyStores
from kms.state import KMSHome, ensure_home
from nitro_sim.procs import ProcessGroup
from nitro_sim.stack import KmsSim, child_environment

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
START_CLUSTER = "cluster-bcdefghijkl"
CLUSTER = "cluster-abcdefghijk"
TRUST_ANCHOR = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def start_store(home: Path) -> str:
    """A CloudHSM key store named ``start``, made in the home before kms-sim starts."""
    state: KMSHome = ensure_home(home)
    stores = KeyStores(state.keystores)
    try:
        return stores.create(
            name="start",
            store_type=CLOUDHSM,
            cluster_id=START_CLUSTER,
            trust_anchor=TRUST_ANCHOR,
            xks=None,
            at=T0,
        )
    finally:
        stores.close()


@pytest.fixture(scope="module")
def kms(home: Path, start_store: str) -> Iterator[KmsSim]:
    with ProcessGroup(home / "logs", env=child_environment(home)) as group:
        sim = KmsSim.spawn(group, home, args=["--workers", "2"]).wait_ready()
        try:
            yield sim
        finally:
            sim.close()


@pytest.fixture
def client(kms: KmsSim) -> Iterator[Any]:
    kms.reset()
    made = kms.boto3_client()
    yield made
    made.close()  # a kept-alive connection would hold a worker at the module's end


def _create(client: Any, name: str) -> str:
    response = client.create_custom_key_store(
        CustomKeyStoreName=name,
        CloudHsmClusterId=CLUSTER,
        TrustAnchorCertificate=TRUST_ANCHOR,
        KeyStorePassword="kmsPassword",
    )
    return str(response["CustomKeyStoreId"])


def _names(client: Any) -> list[str]:
    return [s["CustomKeyStoreName"] for s in client.describe_custom_key_stores()["CustomKeyStores"]]


def test_a_key_store_made_by_a_test_is_gone_and_its_name_free_again(kms: KmsSim, client: Any) -> None:
    store_id = _create(client, "x")
    with pytest.raises(ClientError) as taken:
        _create(client, "x")
    assert taken.value.response["Error"]["Code"] == "CustomKeyStoreNameInUseException"
    kms.reset()
    with pytest.raises(ClientError) as gone:
        client.describe_custom_key_stores(CustomKeyStoreId=store_id)
    assert gone.value.response["Error"]["Code"] == "CustomKeyStoreNotFoundException"
    assert _names(client) == ["start"]
    _create(client, "x")  # the name and the cluster are free again


def test_the_key_store_there_was_at_start_comes_back_as_it_was(
    kms: KmsSim, client: Any, start_store: str
) -> None:
    assert _names(client) == ["start"]  # the last test's key store is gone
    before = client.describe_custom_key_stores(CustomKeyStoreId=start_store)["CustomKeyStores"]
    client.connect_custom_key_store(CustomKeyStoreId=start_store)
    kms.reset()
    assert client.describe_custom_key_stores(CustomKeyStoreId=start_store)["CustomKeyStores"] == before
    client.delete_custom_key_store(CustomKeyStoreId=start_store)  # DISCONNECTED: it may go
    assert _names(client) == []
    kms.reset()
    assert client.describe_custom_key_stores(CustomKeyStoreId=start_store)["CustomKeyStores"] == before


def test_a_reset_after_no_key_store_change_writes_nothing(kms: KmsSim, client: Any, start_store: str) -> None:
    other = KeyStores(kms.state.keystores)
    try:
        version = other.data_version()
        client.generate_random(NumberOfBytes=8)
        client.describe_custom_key_stores()
        client.create_key()  # a change to keys.db, not to keystores.db
        kms.reset()
        assert other.data_version() == version  # no commit: the key-store reset did nothing
        client.connect_custom_key_store(CustomKeyStoreId=start_store)
        moved = other.data_version()
        kms.reset()
        assert other.data_version() != moved  # one commit: the key store is back
        assert other.get(start_store).state == "DISCONNECTED"
    finally:
        other.close()


def test_reset_key_stores_needs_a_ready_kms_sim(tmp_path: Path) -> None:
    with ProcessGroup(tmp_path / "logs", env=child_environment(tmp_path)) as group:
        sim = KmsSim.spawn(group, tmp_path)
        with pytest.raises(RuntimeError, match="call wait_ready"):
            sim.reset_key_stores()
        sim.wait_ready()
        sim.reset_key_stores()
        sim.close()
        sim.close()
