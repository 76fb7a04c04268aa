"""The request pipeline in process, fuzzed: any signed body gets 200 or a named 400 JSON error, never 500."""

from __future__ import annotations

import configparser
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kms.server import Settings, build_service
from kms.service import Service

SignedCall = Any  # tests/kms/conftest.py SignedCall (conftest modules are not importable)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=10,
)
MEMBERS = st.fixed_dictionaries(
    {},
    optional={
        "NumberOfBytes": st.integers(-5, 2000) | JSON,
        "CustomKeyStoreId": st.text(max_size=70) | JSON,
        "Recipient": st.fixed_dictionaries(
            {},
            optional={
                "KeyEncryptionAlgorithm": st.sampled_from(["RSAES_OAEP_SHA_256", "RSA"]) | JSON,
                "AttestationDocument": st.sampled_from(["", "AAAA", "hQ==", "!!"]) | JSON,
            },
        )
        | JSON,
        "CustomKeyStoreName": st.text(max_size=10),
        "Limit": JSON,
        "Marker": JSON,
    },
)
TARGETS = st.sampled_from(
    [
        "GenerateRandom",
        "CreateCustomKeyStore",
        "DescribeCustomKeyStores",
        "ConnectCustomKeyStore",
        "DisconnectCustomKeyStore",
        "DeleteCustomKeyStore",
        "Encrypt",
    ]
)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> tuple[Service, str, str]:
    home = tmp_path_factory.mktemp("fuzz")
    built = build_service(Settings(sim_home=str(home), audit=False))
    parser = configparser.ConfigParser()
    parser.read(Path(home) / "kms" / "credentials")
    return built, parser["nitro-sim"]["aws_access_key_id"], parser["nitro-sim"]["aws_secret_access_key"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=TARGETS, members=MEMBERS)
def test_structured_fuzz_never_500(
    service: tuple[Service, str, str], signed_call: SignedCall, target: str, members: dict[str, Any]
) -> None:
    status, reply = signed_call(service, target, json.dumps(members).encode())
    assert status in (200, 400), reply
    if status == 400:
        assert set(reply) == {"__type", "message"}
        assert reply["__type"].endswith("Exception")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=300))
def test_byte_fuzz_never_500(service: tuple[Service, str, str], signed_call: SignedCall, body: bytes) -> None:
    status, reply = signed_call(service, "GenerateRandom", body)
    assert status in (200, 400), reply
