"""KmsSim.reset and kms-sim's stores: back to the keys, aliases and custom key stores there were when kms-sim
became ready.

One kms-sim with two workers (each keeps the key rows it read) serves this module, in a home that already
held a key, an alias and a key store before it started; boto3 talks to it, and a KeyRing or KeyStores of the
test's own stands for "another connection" to see whether a reset wrote anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from kms.keys import KeyRing
from kms.keystores import CLOUDHSM, KeyStores
from kms.state import KMSHome, ensure_home
from nitro_sim.procs import ProcessGroup
from nitro_sim.stack import KmsSim, child_environment

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
START_CLUSTER = "cluster-bcdefghijkl"
CLUSTER = "cluster-abcdefghijk"
TRUST_ANCHOR = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"
#: Connections per check: each is accepted by either worker, so both end up keeping the rows asked for.
CONNECTIONS = 8


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def start_key(home: Path) -> str:
    """A key with the alias ``alias/start``, made in the home before kms-sim starts."""
    state: KMSHome = ensure_home(home)
    ring = KeyRing(state.keys)
    try:
        key_id = ring.create(spec="SYMMETRIC_DEFAULT", usage="ENCRYPT_DECRYPT", at=T0).id
        ring.create_alias("alias/start", key_id, at=T0)
    finally:
        ring.close()
    return key_id


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
def kms(home: Path, start_key: str, start_store: str) -> Iterator[KmsSim]:
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


def _everywhere(kms: KmsSim, call: str, **args: Any) -> set[str]:
    """``call`` on new connections (either worker): the outcomes, "ok" or the error code."""
    outcomes = set()
    for _ in range(CONNECTIONS):
        fresh = kms.boto3_client()
        try:
            getattr(fresh, call)(**args)
            outcomes.add("ok")
        except ClientError as error:
            outcomes.add(error.response["Error"]["Code"])
        finally:
            fresh.close()
    return outcomes


def test_a_key_and_alias_made_by_a_test_are_gone_on_every_worker(kms: KmsSim, client: Any) -> None:
    key_id = client.create_key(Description="the test's")["KeyMetadata"]["KeyId"]
    client.create_alias(AliasName="alias/app", TargetKeyId=key_id)
    assert _everywhere(kms, "describe_key", KeyId=key_id) == {"ok"}  # kept by both workers now
    kms.reset()
    assert _everywhere(kms, "describe_key", KeyId=key_id) == {"NotFoundException"}
    assert _everywhere(kms, "describe_key", KeyId="alias/app") == {"NotFoundException"}
    again = client.create_key()["KeyMetadata"]["KeyId"]
    client.create_alias(AliasName="alias/app", TargetKeyId=again)  # the name is free again


def test_the_keys_there_were_at_start_come_back_as_they_were(
    kms: KmsSim, client: Any, start_key: str
) -> None:
    assert [k["KeyId"] for k in client.list_keys()["Keys"]] == [start_key]  # the last test's keys are gone
    client.disable_key(KeyId=start_key)
    client.delete_alias(AliasName="alias/start")
    policy = client.get_key_policy(KeyId=start_key)["Policy"]
    client.put_key_policy(KeyId=start_key, Policy=policy.replace("key-default-1", "changed"))
    assert _everywhere(kms, "encrypt", KeyId=start_key, Plaintext=b"x") == {"DisabledException"}
    kms.reset()
    assert _everywhere(kms, "encrypt", KeyId="alias/start", Plaintext=b"x") == {"ok"}
    assert client.describe_key(KeyId=start_key)["KeyMetadata"]["KeyState"] == "Enabled"
    assert client.get_key_policy(KeyId=start_key)["Policy"] == policy
    assert [a["AliasName"] for a in client.list_aliases()["Aliases"]] == ["alias/start"]


def test_a_reset_after_no_key_change_writes_nothing(kms: KmsSim, client: Any, start_key: str) -> None:
    other = KeyRing(kms.state.keys)
    try:
        version = other.data_version()
        client.generate_random(NumberOfBytes=8)
        client.describe_key(KeyId=start_key)
        kms.reset()
        assert other.data_version() == version  # no commit: the reset did nothing
        client.schedule_key_deletion(KeyId=start_key, PendingWindowInDays=7)
        moved = other.data_version()
        kms.reset()
        assert other.data_version() != moved  # one commit: the key is back
        assert other.resolve(start_key).state == "Enabled"
    finally:
        other.close()


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


def test_reset_needs_a_ready_kms_sim_and_close_is_idempotent(tmp_path: Path) -> None:
    with ProcessGroup(tmp_path / "logs", env=child_environment(tmp_path)) as group:
        sim = KmsSim.spawn(group, tmp_path)
        with pytest.raises(RuntimeError, match="call wait_ready"):
            sim.reset_keys()
        with pytest.raises(RuntimeError, match="call wait_ready"):
            sim.reset_key_stores()
        sim.wait_ready()
        sim.reset()
        sim.close()
        sim.close()
