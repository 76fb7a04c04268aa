"""The cryptographic operations in process, fuzzed: any signed body gets an answer or a named one-line error.

Members are drawn from real values (the home's key IDs and ARNs, blobs those keys made, curve points) and
from arbitrary JSON, so requests reach every check of kms.crypto_ops, not only the model's validation.
A 500 (an escaped exception) fails the test, as does a message that echoes the plaintext sent.
"""

from __future__ import annotations

import base64
import configparser
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kms.ciphertext import seal
from kms.keys import KeyRing
from kms.server import Settings, build_service
from kms.service import Service
from kms.state import KMSHome

SignedCall = Any  # tests/kms/conftest.py SignedCall (conftest modules are not importable)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=6,
)
CANARY = b"FUZZ-CANARY"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> tuple[Service, str, str, dict[str, Any]]:
    home = tmp_path_factory.mktemp("crypto-fuzz")
    built = build_service(Settings(sim_home=str(home), audit=False))
    ring = KeyRing(KMSHome(root=Path(home) / "kms").keys)
    now = datetime.now(UTC)
    try:
        symmetric = ring.create(spec="SYMMETRIC_DEFAULT", usage="ENCRYPT_DECRYPT", at=now)
        rsa_key = ring.create(spec="RSA_2048", usage="ENCRYPT_DECRYPT", at=now)
        ecc = ring.create(spec="ECC_NIST_P256", usage="KEY_AGREEMENT", at=now)
    finally:
        ring.close()
    blob = seal(key_id=symmetric.id, material=symmetric.material, plaintext=CANARY, context={"a": "b"})
    peer = ec.generate_private_key(ec.SECP256R1()).public_key()
    values = {
        "key_ids": [
            symmetric.id,
            symmetric.arn,
            rsa_key.id,
            ecc.arn,
            "alias/none",
            "arn:aws:kms:x",
            "k" * 40,
        ],
        "blobs": [_b64(blob), _b64(blob[:-1]), _b64(blob[:5] + bytes(40)), _b64(bytes(256)), "AAAA"],
        "public_keys": [
            _b64(
                peer.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
            ),
            _b64(b"\x30\x03\x02\x01\x00"),
        ],
    }
    parser = configparser.ConfigParser()
    parser.read(Path(home) / "kms" / "credentials")
    return (
        built,
        parser["nitro-sim"]["aws_access_key_id"],
        parser["nitro-sim"]["aws_secret_access_key"],
        values,
    )


@st.composite
def requests(draw: st.DrawFn, values: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    target = draw(
        st.sampled_from(
            [
                "Encrypt",
                "Decrypt",
                "GenerateDataKey",
                "GenerateDataKeyWithoutPlaintext",
                "GenerateDataKeyPair",
                "GenerateDataKeyPairWithoutPlaintext",
                "DeriveSharedSecret",
            ]
        )
    )
    # Half the requests hold only plausible values (they reach the handlers); half also out-of-range values
    # and any JSON (they exercise the model's validation).
    garbage = draw(st.booleans())
    junk = JSON if garbage else st.nothing()

    def bad(*choices: object) -> st.SearchStrategy[Any]:
        return st.sampled_from(choices) | junk if garbage else st.nothing()

    optional = {
        "KeyId": st.sampled_from(values["key_ids"]) | junk,
        "Plaintext": st.just(_b64(CANARY)) | junk,
        "CiphertextBlob": st.sampled_from(values["blobs"]) | junk,
        "EncryptionContext": st.dictionaries(
            st.sampled_from(["a", "A", ""]), st.sampled_from(["b", ""]), max_size=2
        )
        | junk,
        "GrantTokens": st.lists(st.just("t"), max_size=2) | bad([""], ["t"] * 11),
        "EncryptionAlgorithm": st.sampled_from(["SYMMETRIC_DEFAULT", "RSAES_OAEP_SHA_256", "SM2PKE"])
        | bad("x"),
        "DryRun": st.booleans() | junk,
        "DryRunModifiers": st.just(["IGNORE_CIPHERTEXT"]) | bad(["x"]),
        "KeySpec": st.sampled_from(["AES_256", "AES_128"]) | bad("AES_512"),
        "NumberOfBytes": st.integers(1, 1024) | bad(0, 1025),
        "KeyPairSpec": st.sampled_from(["ECC_NIST_P256", "ECC_SECG_P256K1", "SM2", "ML_KEM_512"]) | bad("x"),
        "KeyAgreementAlgorithm": st.just("ECDH") | bad("x"),
        "PublicKey": st.sampled_from(values["public_keys"]) | junk,
    }
    return target, draw(st.fixed_dictionaries({}, optional=optional))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_crypto_fuzz_never_500(
    service: tuple[Service, str, str, dict[str, Any]], signed_call: SignedCall, data: st.DataObject
) -> None:
    target, members = data.draw(requests(service[3]))
    status, reply = signed_call(service[:3], target, json.dumps(members).encode())
    assert status in (200, 400, 412), reply
    if status != 200:
        assert set(reply) == {"__type", "message"}
        assert reply["__type"].endswith("Exception")
        assert "\n" not in reply["message"]
        assert CANARY.decode() not in reply["message"]
        assert _b64(CANARY) not in reply["message"]
