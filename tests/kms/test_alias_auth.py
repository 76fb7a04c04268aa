"""CreateAlias, UpdateAlias and DeleteAlias are authorized on the alias as well as on the keys, as AWS does.

KMS developer guide, "Controlling access to aliases": a principal needs the alias operation on the alias
(in an IAM policy: an alias has no policy of its own; ``Resource`` an alias ARN, a pattern, or ``*``)
and on every affected KMS key (by its key policy, or an IAM policy the key policy delegates to): for
UpdateAlias, both the key the alias names now and the new one. Against a live kms-sim
(``--reload-interval 0``: each policy edit, made by rename, is in force at the next request) with boto3.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from kms.state import default_policy

Server = Any

ACCOUNT = "111122223333"
ALICE_ARN = f"arn:aws:iam::{ACCOUNT}:user/alice"
ALIAS_ARNS = f"arn:aws:kms:us-east-1:{ACCOUNT}:alias"
KEY_ARNS = f"arn:aws:kms:*:{ACCOUNT}:key/*"
ALIAS_ACTIONS = ["kms:CreateAlias", "kms:UpdateAlias", "kms:DeleteAlias"]


def _replace(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text)
    os.replace(temp, path)


@pytest.fixture(scope="module")
def server(start_module_server: Callable[..., Server]) -> Iterator[Server]:
    """A kms-sim with a second principal, ``alice``, whose identity policy each test sets."""
    server = start_module_server("--reload-interval", "0")
    credentials = server.home / "kms" / "credentials"
    _replace(
        credentials,
        credentials.read_text()
        + "\n[alice]\naws_access_key_id = AKIAALICEALICEALICE1\naws_secret_access_key = "
        + "a" * 40
        + "\n",
    )
    yield server
    assert "Traceback" not in server.stderr


@pytest.fixture
def admin(server: Server) -> Any:
    return server.client()


@pytest.fixture
def alice(server: Server) -> Any:
    return server.client("alice")


def _allow_alice(server: Server, *statements: dict[str, Any]) -> None:
    policy: dict[str, Any] = default_policy()
    policy["alice"] = {"Version": "2012-10-17", "Statement": list(statements)}
    _replace(server.home / "kms" / "policy.json", json.dumps(policy))


def _allow(resource: str | list[str], actions: list[str] | None = None) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": actions or ALIAS_ACTIONS, "Resource": resource}


def _denied(call: Callable[[], Any]) -> str:
    with pytest.raises(ClientError) as raised:
        call()
    error = raised.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert error["Error"]["Code"] == "AccessDeniedException"
    message: str = error["Error"]["Message"]
    return message


def _aliases(admin: Any) -> dict[str, str]:
    return {a["AliasName"]: a.get("TargetKeyId", "") for a in admin.list_aliases()["Aliases"]}


@pytest.fixture
def keys(admin: Any) -> tuple[str, str]:
    """Two symmetric keys (new for each test): their key IDs."""
    first, second = (admin.create_key()["KeyMetadata"]["KeyId"] for _ in range(2))
    return first, second


def test_create_alias_needs_the_action_on_the_alias(
    server: Server, admin: Any, alice: Any, keys: Any
) -> None:
    _allow_alice(server, _allow(KEY_ARNS))  # the key, but no alias
    message = _denied(lambda: alice.create_alias(AliasName="alias/app-one", TargetKeyId=keys[0]))
    assert message == (
        f"User: {ALICE_ARN} is not authorized to perform: kms:CreateAlias on resource: "
        f"{ALIAS_ARNS}/app-one because no identity-based policy allows the kms:CreateAlias action"
    )
    assert "alias/app-one" not in _aliases(admin)
    # An alias pattern in Resource, as the developer guide's example ("test*"): that alias only.
    _allow_alice(server, _allow([KEY_ARNS, f"{ALIAS_ARNS}/app-*"]))
    alice.create_alias(AliasName="alias/app-one", TargetKeyId=keys[0])
    assert _aliases(admin)["alias/app-one"] == keys[0]
    message = _denied(lambda: alice.create_alias(AliasName="alias/other", TargetKeyId=keys[0]))
    assert f"on resource: {ALIAS_ARNS}/other because" in message


def test_create_alias_needs_the_action_on_the_key(server: Server, admin: Any, alice: Any, keys: Any) -> None:
    _allow_alice(server, _allow(f"{ALIAS_ARNS}/*"))  # the alias, but no key
    message = _denied(lambda: alice.create_alias(AliasName="alias/key-less", TargetKeyId=keys[0]))
    assert message == (
        f"User: {ALICE_ARN} is not authorized to perform: kms:CreateAlias on resource: "
        f"arn:aws:kms:us-east-1:{ACCOUNT}:key/{keys[0]} "
        "because no identity-based policy allows the kms:CreateAlias action"
    )
    # Resource "*" covers every alias and every key ("kms:Create*" for all resources, too).
    _allow_alice(server, _allow("*", ["kms:Create*"]))
    alice.create_alias(AliasName="alias/key-less", TargetKeyId=keys[0])


def test_an_explicit_deny_on_the_alias_wins(server: Server, admin: Any, alice: Any, keys: Any) -> None:
    _allow_alice(
        server,
        _allow("*"),
        {"Effect": "Deny", "Action": "kms:CreateAlias", "Resource": f"{ALIAS_ARNS}/restricted/*"},
    )
    message = _denied(lambda: alice.create_alias(AliasName="alias/restricted/x", TargetKeyId=keys[0]))
    assert message == (
        f"User: {ALICE_ARN} is not authorized to perform: kms:CreateAlias on resource: "
        f"{ALIAS_ARNS}/restricted/x with an explicit deny in an identity-based policy"
    )
    alice.create_alias(AliasName="alias/unrestricted", TargetKeyId=keys[0])


def test_a_key_policy_deny_on_the_key_wins_over_the_alias_allow(
    server: Server, admin: Any, alice: Any
) -> None:
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                "Action": "kms:*",
                "Resource": "*",
            },
            {"Effect": "Deny", "Principal": {"AWS": ALICE_ARN}, "Action": "kms:CreateAlias", "Resource": "*"},
        ],
    }
    key = admin.create_key(Policy=json.dumps(policy))["KeyMetadata"]
    _allow_alice(server, _allow("*"))
    message = _denied(lambda: alice.create_alias(AliasName="alias/guarded", TargetKeyId=key["KeyId"]))
    assert message.endswith(f"on resource: {key['Arn']} with an explicit deny in a resource-based policy")


def test_update_alias_needs_the_alias_and_both_keys(
    server: Server, admin: Any, alice: Any, keys: Any
) -> None:
    old, new = keys
    admin.create_alias(AliasName="alias/moving", TargetKeyId=old)
    key = f"arn:aws:kms:us-east-1:{ACCOUNT}:key"
    # The alias and the new key, not the key it names now.
    _allow_alice(server, _allow([f"{ALIAS_ARNS}/moving", f"{key}/{new}"]))
    message = _denied(lambda: alice.update_alias(AliasName="alias/moving", TargetKeyId=new))
    assert message == (
        f"User: {ALICE_ARN} is not authorized to perform: kms:UpdateAlias on resource: {key}/{old} "
        "because no identity-based policy allows the kms:UpdateAlias action"
    )
    # Both keys, not the alias.
    _allow_alice(server, _allow([f"{key}/{old}", f"{key}/{new}"]))
    message = _denied(lambda: alice.update_alias(AliasName="alias/moving", TargetKeyId=new))
    assert f"on resource: {ALIAS_ARNS}/moving because" in message
    # The alias and the old key, not the new one.
    _allow_alice(server, _allow([f"{ALIAS_ARNS}/moving", f"{key}/{old}"]))
    message = _denied(lambda: alice.update_alias(AliasName="alias/moving", TargetKeyId=new))
    assert f"on resource: {key}/{new} because" in message
    assert _aliases(admin)["alias/moving"] == old
    # All three.
    _allow_alice(server, _allow([f"{ALIAS_ARNS}/moving", f"{key}/{old}", f"{key}/{new}"]))
    alice.update_alias(AliasName="alias/moving", TargetKeyId=new)
    assert _aliases(admin)["alias/moving"] == new


def test_delete_alias_needs_the_alias_and_its_key(server: Server, admin: Any, alice: Any, keys: Any) -> None:
    admin.create_alias(AliasName="alias/doomed", TargetKeyId=keys[0])
    _allow_alice(server, _allow(KEY_ARNS))
    message = _denied(lambda: alice.delete_alias(AliasName="alias/doomed"))
    assert message == (
        f"User: {ALICE_ARN} is not authorized to perform: kms:DeleteAlias on resource: "
        f"{ALIAS_ARNS}/doomed because no identity-based policy allows the kms:DeleteAlias action"
    )
    _allow_alice(server, _allow(f"{ALIAS_ARNS}/doomed"))
    message = _denied(lambda: alice.delete_alias(AliasName="alias/doomed"))
    assert f"on resource: arn:aws:kms:us-east-1:{ACCOUNT}:key/{keys[0]} because" in message
    assert "alias/doomed" in _aliases(admin)
    _allow_alice(server, _allow([KEY_ARNS, f"{ALIAS_ARNS}/doomed"]))
    alice.delete_alias(AliasName="alias/doomed")
    assert "alias/doomed" not in _aliases(admin)


def test_an_alias_that_does_not_exist_is_not_found(server: Server, alice: Any, keys: Any) -> None:
    _allow_alice(server, _allow("*"))
    with pytest.raises(alice.exceptions.NotFoundException):
        alice.update_alias(AliasName="alias/never-made", TargetKeyId=keys[0])
    with pytest.raises(alice.exceptions.NotFoundException):
        alice.delete_alias(AliasName="alias/never-made")
