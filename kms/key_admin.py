"""Key management: CreateKey, DescribeKey, ListKeys, aliases, key policies, Enable/Disable, deletion.

Shapes copy botocore kms service-2.json (2014-11-01); behaviour and messages follow the KMS API
reference (each operation's page, quoted in the model's documentation strings) and the developer guide's
"Key states of AWS KMS keys" table: which state lets which operation through, and with which error.

Each operation's ``resolve`` names the key it acts on before authorization (the key policy takes part in
the decision); where the model's KeyId documentation says "Specify the key ID or key ARN", an alias is
not accepted. ListKeys, ListAliases and CreateKey act on no key: the identity policy alone decides.
The alias operations act on the alias too (``also``): the caller needs the action on the alias ARN in
its identity policy, and UpdateAlias on the alias's current key as well as on the new one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from cryptography.hazmat.primitives import serialization

from kms._op import AttestedRecipient, Backend, Operation
from kms.errors import (
    InvalidAliasNameException,
    InvalidMarkerException,
    KMSInvalidStateException,
    LimitExceededException,
    NotFoundException,
    UnsupportedOperationException,
    ValidationException,
)
from kms.keypolicy import MAX_KEY_POLICY_BYTES, compile_key_policy
from kms.keys import (
    ALIAS_PREFIX,
    ENABLED,
    KEY_SPECS,
    PENDING_DELETION,
    Key,
    alias_arn,
    check_usable,
    key_arn,
)
from kms.protocol import Field
from kms.state import ACCOUNT_ID

__all__ = ["KEY_OPERATIONS", "key_metadata"]

#: ListKeys ``Limit``: 1..1000, default 100 (``LimitType`` and its documentation).
MAX_LIST_KEYS_LIMIT = 1000
DEFAULT_LIST_KEYS_LIMIT = 100
#: ListAliases ``Limit``: "between 1 and 100, inclusive ... it defaults to 50" (its documentation).
MAX_LIST_ALIASES_LIMIT = 100
DEFAULT_LIST_ALIASES_LIMIT = 50
#: ``DescriptionType``: 0..8192 characters.
MAX_DESCRIPTION_CHARS = 8192
#: ScheduleKeyDeletion PendingWindowInDays: "it must be between 7 and 30, inclusive. If you do not include
#: a value, it defaults to 30" (the model's own range, 1..365, is wider than the service's).
MIN_PENDING_WINDOW_DAYS = 7
MAX_PENDING_WINDOW_DAYS = 30
#: GetKeyPolicy / PutKeyPolicy PolicyName: "the default value is default" (AWS_RAM policies are not
#: simulated: kms-sim has no RAM).
DEFAULT_POLICY_NAME = "default"
#: CreateKey without KeyUsage for a key that is not SYMMETRIC_DEFAULT (ValidationException): AWS's text as
#: tools quote it (a CloudFormation pre-flight rule: "CreateKey fails with ..."); no AWS page prints it.
KEY_USAGE_REQUIRED = (
    "You must specify a KeyUsage value for all KMS keys except for symmetric encryption keys."
)
#: The algorithms member of KeyMetadata and GetPublicKey, and its values, for each key spec we simulate.
_ALGORITHMS: Mapping[str, tuple[str, tuple[str, ...]]] = {
    "SYMMETRIC_DEFAULT": ("EncryptionAlgorithms", ("SYMMETRIC_DEFAULT",)),
    "RSA_2048": ("EncryptionAlgorithms", ("RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256")),
    "RSA_3072": ("EncryptionAlgorithms", ("RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256")),
    "RSA_4096": ("EncryptionAlgorithms", ("RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256")),
    "ECC_NIST_P256": ("KeyAgreementAlgorithms", ("ECDH",)),
    "ECC_NIST_P384": ("KeyAgreementAlgorithms", ("ECDH",)),
}

# -- shapes -------------------------------------------------------------------------------------------

_KEY_ID = Field(name="KeyId", kind="string", minimum=1, maximum=2048, required=True)
_GRANT_TOKENS = Field(
    name="GrantTokens",
    kind="list",
    minimum=0,
    maximum=10,
    members=(Field(name="member", kind="string", minimum=1, maximum=8192),),
)
_ALIAS_NAME = Field(
    name="AliasName", kind="string", minimum=1, maximum=256, pattern="^[a-zA-Z0-9:/_-]+$", required=True
)
_TARGET_KEY_ID = Field(name="TargetKeyId", kind="string", minimum=1, maximum=2048, required=True)
_MARKER = Field(name="Marker", kind="string", minimum=1, maximum=1024, pattern="[\u0020-\u00ff]*")
_POLICY_NAME = Field(name="PolicyName", kind="string", minimum=1, maximum=128, pattern=r"[\w]+")
_POLICY = Field(
    name="Policy",
    kind="string",
    minimum=1,
    maximum=131072,
    pattern="[\u0009\u000a\u000d\u0020-\u00ff]+",
)
_BYPASS = Field(name="BypassPolicyLockoutSafetyCheck", kind="boolean")
_ALL_SPECS = (
    "RSA_2048",
    "RSA_3072",
    "RSA_4096",
    "ECC_NIST_P256",
    "ECC_NIST_P384",
    "ECC_NIST_P521",
    "ECC_SECG_P256K1",
    "SYMMETRIC_DEFAULT",
    "HMAC_224",
    "HMAC_256",
    "HMAC_384",
    "HMAC_512",
    "SM2",
)
_CREATE_KEY_FIELDS = (
    _POLICY,
    Field(name="Description", kind="string", minimum=0, maximum=MAX_DESCRIPTION_CHARS),
    Field(
        name="KeyUsage",
        kind="string",
        enum=(
            "SIGN_VERIFY",
            "ENCRYPT_DECRYPT",
            "GENERATE_VERIFY_MAC",
            "KEY_AGREEMENT",
            "ENCAPSULATE_DECAPSULATE",
        ),
    ),
    Field(name="CustomerMasterKeySpec", kind="string", enum=_ALL_SPECS),
    Field(
        name="KeySpec",
        kind="string",
        enum=(
            *_ALL_SPECS,
            "ML_DSA_44",
            "ML_DSA_65",
            "ML_DSA_87",
            "ECC_NIST_EDWARDS25519",
            "ML_KEM_512",
            "ML_KEM_768",
            "ML_KEM_1024",
        ),
    ),
    Field(name="Origin", kind="string", enum=("AWS_KMS", "EXTERNAL", "AWS_CLOUDHSM", "EXTERNAL_KEY_STORE")),
    Field(name="CustomKeyStoreId", kind="string", minimum=1, maximum=64),
    _BYPASS,
    Field(
        name="Tags",
        kind="list",
        members=(
            Field(
                name="member",
                kind="structure",
                members=(
                    Field(name="TagKey", kind="string", minimum=1, maximum=128, required=True),
                    Field(name="TagValue", kind="string", minimum=0, maximum=256, required=True),
                ),
            ),
        ),
    ),
    Field(name="MultiRegion", kind="boolean"),
    Field(name="XksKeyId", kind="string", minimum=1, maximum=128, pattern="^[a-zA-Z0-9-_.]+$"),
)


# -- helpers ------------------------------------------------------------------------------------------


def _any_form(backend: Backend, members: dict[str, Any], at: datetime) -> Key | None:
    """KeyId as key ID, key ARN, alias name or alias ARN."""
    return backend.keys.resolve(members["KeyId"], at=at)


def _id_or_arn(backend: Backend, members: dict[str, Any], at: datetime) -> Key | None:
    """KeyId as key ID or key ARN ("Specify the key ID or key ARN of the KMS key")."""
    return backend.keys.resolve(members["KeyId"], aliases=False, at=at)


def _target(backend: Backend, members: dict[str, Any], at: datetime) -> Key | None:
    """CreateAlias / UpdateAlias TargetKeyId: key ID or key ARN."""
    check_alias_name(members["AliasName"])
    return backend.keys.resolve(members["TargetKeyId"], aliases=False, at=at)


def _alias_key(backend: Backend, members: dict[str, Any], at: datetime) -> Key | None:
    """DeleteAlias: the key the alias names."""
    check_alias_name(members["AliasName"])
    return backend.keys.resolve(members["AliasName"], at=at)


def _the_alias(backend: Backend, members: dict[str, Any], at: datetime) -> tuple[str | Key, ...]:
    """CreateAlias / DeleteAlias: the alias itself ("kms:CreateAlias for the alias ... in an IAM policy")."""
    return (alias_arn(members["AliasName"]),)


def _alias_and_its_key(backend: Backend, members: dict[str, Any], at: datetime) -> tuple[str | Key, ...]:
    """UpdateAlias: the alias, and the key it names now ("kms:UpdateAlias for the current KMS key")."""
    return alias_arn(members["AliasName"]), backend.keys.resolve(members["AliasName"], at=at)


def check_alias_name(name: str) -> None:
    """An alias name customers may create, update or delete (CreateAlias AliasName's documentation; the
    ValidationException messages are KMS's own, the ``:`` the model's pattern allows is one of them)."""
    if not name.startswith(ALIAS_PREFIX) or name == ALIAS_PREFIX:
        raise ValidationException(
            'Alias must start with the prefix "alias/". '
            "Please see https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html"
        )
    if ":" in name:
        raise ValidationException(f"{name} contains invalid characters for an alias")
    if name.startswith(ALIAS_PREFIX + "aws/"):
        raise InvalidAliasNameException(
            f'Alias names starting with "{ALIAS_PREFIX}aws/" are reserved for AWS managed keys: {name}'
        )


def _not_pending(key: Key) -> None:
    if key.state == PENDING_DELETION:
        raise KMSInvalidStateException(f"{key.arn} is pending deletion.")


T = TypeVar("T")


def _page(
    items: Sequence[T], params: dict[str, Any], default_limit: int
) -> tuple[Sequence[T], dict[str, Any]]:
    """One page of ``items`` by Limit and Marker (an ASCII decimal offset we issued), and the Truncated /
    NextMarker members."""
    start = 0
    if "Marker" in params:
        marker = params["Marker"]
        if not (marker.isascii() and marker.isdigit()) or int(marker) > len(items):
            raise InvalidMarkerException("The request was rejected because the marker is not valid.")
        start = int(marker)
    limit = params.get("Limit", default_limit)
    extra: dict[str, Any] = {"Truncated": False}
    if start + limit < len(items):
        extra = {"NextMarker": str(start + limit), "Truncated": True}
    return items[start : start + limit], extra


def key_metadata(key: Key) -> dict[str, Any]:
    """KeyMetadata as DescribeKey and CreateKey return it (timestamps are epoch seconds in awsJson)."""
    algorithms_member, algorithms = _ALGORITHMS[key.spec]
    metadata: dict[str, Any] = {
        "AWSAccountId": ACCOUNT_ID,
        "KeyId": key.id,
        "Arn": key.arn,
        "CreationDate": key.created,
        "Enabled": key.state == ENABLED,
        "Description": key.description,
        "KeyUsage": key.usage,
        "KeyState": key.state,
    }
    if key.deletion_date is not None:
        metadata["DeletionDate"] = key.deletion_date
    metadata |= {
        "Origin": key.origin,
        "KeyManager": "CUSTOMER",
        "CustomerMasterKeySpec": key.spec,
        "KeySpec": key.spec,
        algorithms_member: list(algorithms),
        "MultiRegion": False,
    }
    if key.spec == "SYMMETRIC_DEFAULT":
        metadata["CurrentKeyMaterialId"] = key.material_id
    return metadata


def _must(key: Key | None) -> Key:
    if key is None:  # resolve never answers None for these operations
        raise NotFoundException("The request names no KMS key.")
    return key


def _checked_policy(text: str) -> None:
    """MalformedPolicyDocumentException / LimitExceededException for a policy AWS would not store."""
    if len(text.encode()) > MAX_KEY_POLICY_BYTES:
        raise LimitExceededException(
            f"The key policy is over the {MAX_KEY_POLICY_BYTES}-byte limit of a key policy document."
        )
    compile_key_policy(text)


# -- handlers -----------------------------------------------------------------------------------------


def create_key(
    backend: Backend,
    params: dict[str, Any],
    recipient: AttestedRecipient | None,
    at: datetime,
    key: Key | None,
) -> dict[str, Any]:
    if "KeySpec" in params and "CustomerMasterKeySpec" in params:
        raise ValidationException("You cannot specify KeySpec and CustomerMasterKeySpec in the same request.")
    spec = params.get("KeySpec", params.get("CustomerMasterKeySpec", "SYMMETRIC_DEFAULT"))
    usage = params.get("KeyUsage")
    if usage is None:
        # KeyUsage "is optional when you are creating a symmetric encryption KMS key; otherwise, it is
        # required" (its documentation): RSA keys too, whatever "The default value is ENCRYPT_DECRYPT" says.
        if spec != "SYMMETRIC_DEFAULT":
            raise ValidationException(KEY_USAGE_REQUIRED)
        usage = "ENCRYPT_DECRYPT"
    if spec not in KEY_SPECS:
        raise UnsupportedOperationException(f"kms-sim does not simulate {spec} KMS keys.")
    if usage not in KEY_SPECS[spec]:
        raise ValidationException(
            f"KeyUsage {usage} is not compatible with KeySpec {spec} in kms-sim "
            f"(it simulates {spec} keys for {', '.join(KEY_SPECS[spec])} only)."
        )
    if params.get("Origin", "AWS_KMS") != "AWS_KMS":
        raise UnsupportedOperationException(f"kms-sim does not simulate Origin {params['Origin']}.")
    if "CustomKeyStoreId" in params or "XksKeyId" in params:
        raise UnsupportedOperationException("kms-sim does not simulate KMS keys in custom key stores.")
    if params.get("MultiRegion"):
        raise UnsupportedOperationException("kms-sim does not simulate multi-Region keys.")
    if "Policy" in params:
        _checked_policy(params["Policy"])
    created = backend.keys.create(
        spec=spec, usage=usage, description=params.get("Description", ""), policy=params.get("Policy"), at=at
    )
    return {"KeyMetadata": key_metadata(created)}


def describe_key(
    backend: Backend,
    params: dict[str, Any],
    recipient: AttestedRecipient | None,
    at: datetime,
    key: Key | None,
) -> dict[str, Any]:
    return {"KeyMetadata": key_metadata(_must(key))}


def list_keys(
    backend: Backend,
    params: dict[str, Any],
    recipient: AttestedRecipient | None,
    at: datetime,
    key: Key | None,
) -> dict[str, Any]:
    owners = params.get("ResourceOwners", ["SELF"])
    ids = backend.keys.key_ids(at=at) if "SELF" in owners else []
    page, extra = _page(ids, params, DEFAULT_LIST_KEYS_LIMIT)
    return {"Keys": [{"KeyId": key_id, "KeyArn": key_arn(key_id)} for key_id in page], **extra}


def create_alias(
    backend: Backend,
    params: dict[str, Any],
    recipient: AttestedRecipient | None,
    at: datetime,
    key: Key | None,
) -> dict[str, Any]:
    target = _must(key)
    _not_pending(target)
    backend.keys.create_alias(params["AliasName"], target.id, at=at)
    return {}


def update_alias(
    backend: Backend,
    params: dict[str, Any],
    recipient: AttestedRecipient | None,
    at: datetime,
    key: Key | None,
) -> dict[str, Any]:
    target = _must(key)
    _not_pending(target)
    current = backend.keys.resolve(params["AliasName"], at=at)
    # "the new target KMS key must be the same type as the current target KMS key ... and they must have
    # the same key usage" (UpdateAlias TargetKeyId)
    if (current.spec == "SYMMETRIC_DEFAULT") != (target.spec == "SYMMETRIC_DEFAULT") or (
        current.usage != target.usage
    ):
        raise ValidationException(
            f"{target.arn} cannot replace {current.arn} as the target of {params['AliasName']}: "
            "the keys differ in type or key usage."
        )
    backend.keys.update_alias(params["AliasName"], target.id, at=at)
    return {}


def delete_alias(
    backend: Backend,
    params: dict[str, Any],
    recipient: AttestedRecipient | None,
    at: datetime,
    key: Key | None,
) -> dict[str, Any]:
    backend.keys.delete_alias(params["AliasName"])
    return {}


def list_aliases(
    backend: Backend,
    params: dict[str, Any],
    recipient: AttestedRecipient | None,
    at: datetime,
    key: Key | None,
) -> dict[str, Any]:
    key_id = None
    if "KeyId" in params:
        key_id = backend.keys.resolve(params["KeyId"], aliases=False, at=at).id
    aliases = backend.keys.aliases(key_id=key_id, at=at)
    page, extra = _page(aliases, params, DEFAULT_LIST_ALIASES_LIMIT)
    entries = [
        {
            "AliasName": a.name,
            "AliasArn": a.arn,
            "TargetKeyId": a.key_id,
            "CreationDate": a.created,
            "LastUpdatedDate": a.updated,
        }
        for a in page
    ]
    return {"Aliases": entries, **extra}


def _policy_name(params: dict[str, Any]) -> str:
    name: str = params.get("PolicyName", DEFAULT_POLICY_NAME)
    if name != DEFAULT_POLICY_NAME:
        raise NotFoundException(f"No such policy exists: {name}. kms-sim keys have only the default policy.")
    return name


def get_key_policy(
    backend: Backend,
    params: dict[str, Any],
    recipient: AttestedRecipient | None,
    at: datetime,
    key: Key | None,
) -> dict[str, Any]:
    return {"Policy": _must(key).policy, "PolicyName": _policy_name(params)}


def put_key_policy(
    backend: Backend,
    params: dict[str, Any],
    recipient: AttestedRecipient | None,
    at: datetime,
    key: Key | None,
) -> dict[str, Any]:
    _policy_name(params)
    _checked_policy(params["Policy"])
    backend.keys.put_policy(_must(key).id, params["Policy"], at=at)
    return {}


def enable_key(
    backend: Backend,
    params: dict[str, Any],
    recipient: AttestedRecipient | None,
    at: datetime,
    key: Key | None,
) -> dict[str, Any]:
    backend.keys.set_enabled(_must(key).id, True, at=at)
    return {}


def disable_key(
    backend: Backend,
    params: dict[str, Any],
    recipient: AttestedRecipient | None,
    at: datetime,
    key: Key | None,
) -> dict[str, Any]:
    backend.keys.set_enabled(_must(key).id, False, at=at)
    return {}


def schedule_key_deletion(
    backend: Backend,
    params: dict[str, Any],
    recipient: AttestedRecipient | None,
    at: datetime,
    key: Key | None,
) -> dict[str, Any]:
    days = params.get("PendingWindowInDays", MAX_PENDING_WINDOW_DAYS)
    if not MIN_PENDING_WINDOW_DAYS <= days <= MAX_PENDING_WINDOW_DAYS:
        raise ValidationException(
            f"1 validation error detected: Value '{days}' at 'pendingWindowInDays' failed to satisfy "
            f"constraint: Member must have value between {MIN_PENDING_WINDOW_DAYS} and "
            f"{MAX_PENDING_WINDOW_DAYS}, inclusive"
        )
    scheduled = backend.keys.schedule_deletion(_must(key).id, days, at=at)
    return {
        "KeyId": scheduled.arn,
        "DeletionDate": scheduled.deletion_date,
        "KeyState": scheduled.state,
        "PendingWindowInDays": days,
    }


def cancel_key_deletion(
    backend: Backend,
    params: dict[str, Any],
    recipient: AttestedRecipient | None,
    at: datetime,
    key: Key | None,
) -> dict[str, Any]:
    target = _must(key)
    backend.keys.cancel_deletion(target.id, at=at)
    return {"KeyId": target.arn}


def get_public_key(
    backend: Backend,
    params: dict[str, Any],
    recipient: AttestedRecipient | None,
    at: datetime,
    key: Key | None,
) -> dict[str, Any]:
    target = _must(key)
    check_usable(target)
    if target.spec == "SYMMETRIC_DEFAULT":
        raise UnsupportedOperationException(
            f"{target.arn} key usage is ENCRYPT_DECRYPT and key spec SYMMETRIC_DEFAULT: "
            "a symmetric key has no public key."
        )
    private = serialization.load_der_private_key(target.material, password=None)
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    algorithms_member, algorithms = _ALGORITHMS[target.spec]
    return {
        "KeyId": target.arn,
        "PublicKey": public,
        "CustomerMasterKeySpec": target.spec,
        "KeySpec": target.spec,
        "KeyUsage": target.usage,
        algorithms_member: list(algorithms),
    }


_KEY_ONLY = (_KEY_ID,)

KEY_OPERATIONS: Mapping[str, Operation] = {
    "CreateKey": Operation(fields=_CREATE_KEY_FIELDS, handler=create_key, checks_lockout=True),
    "DescribeKey": Operation(fields=(_KEY_ID, _GRANT_TOKENS), handler=describe_key, resolve=_any_form),
    "ListKeys": Operation(
        fields=(
            Field(name="Limit", kind="integer", minimum=1, maximum=MAX_LIST_KEYS_LIMIT),
            _MARKER,
            Field(
                name="ResourceOwners",
                kind="list",
                minimum=1,
                maximum=2,
                members=(Field(name="member", kind="string", enum=("SELF", "OTHER_ACCOUNTS_VIA_RAM")),),
            ),
        ),
        handler=list_keys,
    ),
    "CreateAlias": Operation(
        fields=(_ALIAS_NAME, _TARGET_KEY_ID), handler=create_alias, resolve=_target, also=_the_alias
    ),
    "UpdateAlias": Operation(
        fields=(_ALIAS_NAME, _TARGET_KEY_ID), handler=update_alias, resolve=_target, also=_alias_and_its_key
    ),
    "DeleteAlias": Operation(
        fields=(_ALIAS_NAME,), handler=delete_alias, resolve=_alias_key, also=_the_alias
    ),
    "ListAliases": Operation(
        fields=(
            Field(name="KeyId", kind="string", minimum=1, maximum=2048),
            Field(name="Limit", kind="integer", minimum=1, maximum=MAX_LIST_ALIASES_LIMIT),
            _MARKER,
        ),
        handler=list_aliases,
    ),
    "GetKeyPolicy": Operation(fields=(_KEY_ID, _POLICY_NAME), handler=get_key_policy, resolve=_id_or_arn),
    "PutKeyPolicy": Operation(
        fields=(_KEY_ID, _POLICY_NAME, dataclasses.replace(_POLICY, required=True), _BYPASS),
        handler=put_key_policy,
        resolve=_id_or_arn,
        checks_lockout=True,
    ),
    "EnableKey": Operation(fields=_KEY_ONLY, handler=enable_key, resolve=_id_or_arn),
    "DisableKey": Operation(fields=_KEY_ONLY, handler=disable_key, resolve=_id_or_arn),
    "ScheduleKeyDeletion": Operation(
        fields=(_KEY_ID, Field(name="PendingWindowInDays", kind="integer", minimum=1, maximum=365)),
        handler=schedule_key_deletion,
        resolve=_id_or_arn,
    ),
    "CancelKeyDeletion": Operation(fields=_KEY_ONLY, handler=cancel_key_deletion, resolve=_id_or_arn),
    "GetPublicKey": Operation(fields=(_KEY_ID, _GRANT_TOKENS), handler=get_public_key, resolve=_any_form),
}
