"""The AWS Encryption SDK for Python (``aws-encryption-sdk``, a test extra) with a kms-sim key.

The SDK is an independent KMS client with its own expectations of the wire: it calls GenerateDataKey
(NumberOfBytes, EncryptionContext with its own ``aws-crypto-public-key`` pair, GrantTokens) to encrypt and
Decrypt (KeyId, CiphertextBlob, EncryptionContext) to decrypt, and checks KeyId in both answers against the
key ARN it asked for. Nothing here is special-cased for it: the provider's boto3 clients find kms-sim by
the ``endpoint_url`` of their profile, as any AWS SDK does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aws_encryption_sdk  # type: ignore[import-untyped]
import botocore.session
import pytest
from aws_encryption_sdk.exceptions import DecryptKeyError  # type: ignore[import-untyped]

from kms.keys import Key, KeyRing
from kms.state import DEFAULT_REGION, KMSHome

Server = Any  # tests/kms/conftest.py Server (conftest modules are not importable)


@pytest.fixture(scope="module")
def keys(shared_server: Server) -> Iterator[tuple[Key, Key]]:
    ring = KeyRing(KMSHome(root=shared_server.home / "kms").keys)
    now = datetime.now(UTC)
    try:
        yield (
            ring.create(spec="SYMMETRIC_DEFAULT", usage="ENCRYPT_DECRYPT", at=now),
            ring.create(spec="SYMMETRIC_DEFAULT", usage="ENCRYPT_DECRYPT", at=now),
        )
    finally:
        ring.close()


@pytest.fixture(scope="module")
def session(shared_server: Server, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A botocore session whose profile sends KMS calls to kms-sim (``endpoint_url`` in its config)."""
    config = tmp_path_factory.mktemp("sdk") / "config"
    config.write_text(f"[profile nitro-sim]\nregion = {DEFAULT_REGION}\nendpoint_url = {shared_server.url}\n")
    core = botocore.session.Session()
    core.set_config_variable("credentials_file", str(Path(shared_server.home) / "kms" / "credentials"))
    core.set_config_variable("config_file", str(config))
    core.set_config_variable("profile", "nitro-sim")
    return core


def _provider(session: Any, *keys: Key) -> Any:
    return aws_encryption_sdk.StrictAwsKmsMasterKeyProvider(
        key_ids=[key.arn for key in keys], botocore_session=session
    )


@pytest.fixture(scope="module")
def client() -> Any:
    return aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=aws_encryption_sdk.CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
    )


def test_encrypt_and_decrypt_a_message(client: Any, session: Any, keys: tuple[Key, Key]) -> None:
    provider = _provider(session, keys[0])
    message = b"attested random, enveloped " * 1000
    context = {"purpose": "test", "tenant": "b"}
    ciphertext, header = client.encrypt(source=message, key_provider=provider, encryption_context=context)
    assert message not in ciphertext
    assert [key.key_provider.key_info.decode() for key in header.encrypted_data_keys] == [keys[0].arn]
    plaintext, decrypted_header = client.decrypt(source=ciphertext, key_provider=provider)
    assert plaintext == message
    # The SDK adds its own signing-key pair to the context; ours comes back as we gave it.
    assert {k: decrypted_header.encryption_context[k] for k in context} == context


def test_two_keys_either_decrypts(client: Any, session: Any, keys: tuple[Key, Key]) -> None:
    # The data key is generated under the first key and encrypted under the second (Encrypt).
    ciphertext, header = client.encrypt(source=b"multi-key", key_provider=_provider(session, *keys))
    assert len(header.encrypted_data_keys) == 2
    for key in keys:
        assert client.decrypt(source=ciphertext, key_provider=_provider(session, key))[0] == b"multi-key"


def test_changed_encryption_context_fails(
    client: Any, session: Any, keys: tuple[Key, Key], shared_server: Server
) -> None:
    provider = _provider(session, keys[0])
    ciphertext, _ = client.encrypt(
        source=b"bound to its context", key_provider=provider, encryption_context={"purpose": "test"}
    )
    # The message header carries the context in the clear; change "test" to "best" there. The SDK hands
    # the changed context to KMS Decrypt, whose blob is bound to the original: InvalidCiphertextException,
    # which the SDK reports as "no master key could decrypt".
    changed = ciphertext.replace(b"purpose\x00\x04test", b"purpose\x00\x04best", 1)
    assert changed != ciphertext
    with pytest.raises(DecryptKeyError, match="Unable to decrypt any data key"):
        client.decrypt(source=changed, key_provider=provider)
    audit = (Path(shared_server.home) / "kms" / "audit.jsonl").read_text().splitlines()
    last = json.loads(audit[-1])
    assert (last["eventName"], last["errorCode"]) == ("Decrypt", "InvalidCiphertextException")
    assert last["requestParameters"]["encryptionContext"]["purpose"] == "best"


def test_a_key_not_in_the_message_fails(client: Any, session: Any, keys: tuple[Key, Key]) -> None:
    ciphertext, _ = client.encrypt(source=b"for key one", key_provider=_provider(session, keys[0]))
    with pytest.raises(DecryptKeyError):
        client.decrypt(source=ciphertext, key_provider=_provider(session, keys[1]))
