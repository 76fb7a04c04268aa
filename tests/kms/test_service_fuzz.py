"""The request pipeline in process, fuzzed: any signed body gets 200 or a named 400 JSON error, never 500."""

from __future__ import annotations

import configparser
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attestation.sigv4 import sign_request
from kms.server import Settings, build_service
from kms.service import Request, Service

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


def _handle(service: tuple[Service, str, str], target: str, body: bytes) -> tuple[int, dict[str, Any]]:
    svc, access_key, secret_key = service
    at = datetime.now(UTC)
    headers = {"host": "127.0.0.1:1", "x-amz-target": f"TrentService.{target}"}
    signed = sign_request(
        "POST",
        "/",
        "",
        headers,
        body,
        access_key=access_key,
        secret_key=secret_key,
        session_token=None,
        region="us-east-1",
        service="kms",
        at=at,
    )
    headers.update({k.lower(): v for k, v in signed.items()})
    request = Request(
        method="POST", path="/", query="", headers=list(headers.items()), body=body, source_ip="::1"
    )
    response = svc.handle(request, at=at, tick=time.monotonic())
    return response.status, json.loads(response.body)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=TARGETS, members=MEMBERS)
def test_structured_fuzz_never_500(
    service: tuple[Service, str, str], target: str, members: dict[str, Any]
) -> None:
    status, reply = _handle(service, target, json.dumps(members).encode())
    assert status in (200, 400), reply
    if status == 400:
        assert set(reply) == {"__type", "message"}
        assert reply["__type"].endswith("Exception")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=300))
def test_byte_fuzz_never_500(service: tuple[Service, str, str], body: bytes) -> None:
    status, reply = _handle(service, "GenerateRandom", body)
    assert status in (200, 400), reply
