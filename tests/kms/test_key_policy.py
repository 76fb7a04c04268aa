"""kms.keypolicy and kms.iam's condition engine in process: key policy + identity policy decisions."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from attestation.nsm import simulate_document
from attestation.pki import SimulatedPKI
from kms.errors import AccessDeniedException, MalformedPolicyDocumentException
from kms.iam import IAMPolicies, PolicyFileError, parse_policies
from kms.keypolicy import (
    LOCKOUT_MESSAGE,
    authorize_key,
    check_lockout,
    compile_key_policy,
    key_context,
    reads_conditions,
)
from kms.keys import Key, default_policy, key_arn
from kms.recipient import RecipientCheck
from kms.service import condition_context
from kms.state import Principal

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
ROOT = "arn:aws:iam::111122223333:root"
ALICE = Principal(name="alice", access_key="AKIAALICEALICEALICE1", secret_key="a" * 40)
BOB = Principal(name="bob", access_key="AKIABOBBOBBOBBOBBOB1", secret_key="b" * 40)
KEY = Key(
    id="1234abcd-12ab-34cd-56ef-1234567890ab",
    arn=key_arn("1234abcd-12ab-34cd-56ef-1234567890ab"),
    spec="SYMMETRIC_DEFAULT",
    usage="ENCRYPT_DECRYPT",
    state="Enabled",
    created=T0.timestamp(),
    deletion_date=None,
    description="",
    policy=default_policy(),
    material_id="0" * 64,
    material=b"\x00" * 32,
)
ALLOW_ALL = {"Effect": "Allow", "Action": "kms:*", "Resource": "*"}


def _identity(**by_name: list[dict[str, Any]]) -> IAMPolicies:
    return parse_policies(
        {name: {"Version": "2012-10-17", "Statement": statements} for name, statements in by_name.items()},
        "policy.json",
    )


def _key(*statements: dict[str, Any]) -> Key:
    policy = json.dumps({"Version": "2012-10-17", "Statement": list(statements)})
    return dataclasses.replace(KEY, policy=policy)


def _stmt(principal: Any, action: Any = "kms:*", effect: str = "Allow", **extra: Any) -> dict[str, Any]:
    return {"Effect": effect, "Principal": principal, "Action": action, "Resource": "*", **extra}


def _message(identity: IAMPolicies, key: Key, principal: Principal = ALICE, context: Any = None) -> str:
    with pytest.raises(AccessDeniedException) as caught:
        authorize_key(identity, principal, "kms:Decrypt", key, context or {})
    return caught.value.message


# -- root delegation, direct principals, deny precedence ----------------------------------------------


def test_default_policy_delegates_to_the_identity_policy() -> None:
    authorize_key(_identity(alice=[ALLOW_ALL]), ALICE, "kms:Decrypt", KEY, {})
    message = _message(_identity(alice=[ALLOW_ALL]), KEY, BOB)
    assert message == (
        f"User: {BOB.arn} is not authorized to perform: kms:Decrypt on resource: {KEY.arn} "
        "because no identity-based policy allows the kms:Decrypt action"
    )


def test_a_key_policy_naming_the_user_allows_without_an_identity_policy() -> None:
    key = _key(_stmt({"AWS": ALICE.arn}, ["kms:Decrypt", "kms:Encrypt"]))
    authorize_key(_identity(), ALICE, "kms:Decrypt", key, {})
    message = _message(_identity(bob=[ALLOW_ALL]), key, BOB)
    assert message.endswith("because no resource-based policy allows the kms:Decrypt action")


@pytest.mark.parametrize("principal", ["*", {"AWS": "*"}, {"AWS": [BOB.arn, ALICE.arn]}])
def test_principal_forms(principal: Any) -> None:
    authorize_key(_identity(), ALICE, "kms:Decrypt", _key(_stmt(principal)), {})


@pytest.mark.parametrize("account", [ROOT, "111122223333"])
def test_account_forms_need_the_identity_policy(account: str) -> None:
    key = _key(_stmt({"AWS": account}))
    authorize_key(_identity(alice=[ALLOW_ALL]), ALICE, "kms:Decrypt", key, {})
    assert "no identity-based policy" in _message(_identity(), key)


def test_explicit_deny_in_the_key_policy_wins_over_any_allow() -> None:
    key = _key(_stmt({"AWS": ALICE.arn}), _stmt({"AWS": ALICE.arn}, "kms:Decrypt", "Deny"))
    assert _message(_identity(alice=[ALLOW_ALL]), key).endswith(
        "with an explicit deny in a resource-based policy"
    )
    authorize_key(_identity(alice=[ALLOW_ALL]), ALICE, "kms:Encrypt", key, {})


def test_a_deny_on_the_account_covers_every_user() -> None:
    key = _key(_stmt({"AWS": ALICE.arn}), _stmt({"AWS": ROOT}, "kms:Decrypt", "Deny"))
    assert "explicit deny in a resource-based policy" in _message(_identity(), key)


def test_explicit_deny_in_the_identity_policy_wins_over_the_key_policy() -> None:
    key = _key(_stmt({"AWS": ALICE.arn}))
    identity = _identity(alice=[{"Effect": "Deny", "Action": "kms:Decrypt", "Resource": KEY.arn}])
    assert _message(identity, key).endswith("with an explicit deny in an identity-based policy")


def test_identity_policies_name_key_arns_with_wildcards() -> None:
    for resource in (KEY.arn, "arn:aws:kms:*:111122223333:key/*", "arn:aws:kms:us-east-1:111122223333:*"):
        identity = _identity(alice=[{"Effect": "Allow", "Action": "kms:Decrypt", "Resource": resource}])
        authorize_key(identity, ALICE, "kms:Decrypt", KEY, {})
    other = _identity(alice=[{"Effect": "Allow", "Action": "kms:Decrypt", "Resource": key_arn("0" * 8)}])
    assert "no identity-based policy" in _message(other, KEY)


def test_a_keyless_request_matches_only_resource_star() -> None:
    identity = _identity(alice=[{"Effect": "Allow", "Action": "kms:*", "Resource": "arn:aws:kms:*:*:key/*"}])
    with pytest.raises(AccessDeniedException, match="no identity-based policy allows the kms:ListKeys"):
        identity.authorize(ALICE, "kms:ListKeys", {})


# -- conditions: operators and set qualifiers ---------------------------------------------------------


def _allowed(condition: dict[str, Any], context: dict[str, Any]) -> bool:
    key = _key(_stmt({"AWS": ALICE.arn}, Condition=condition))
    try:
        authorize_key(_identity(), ALICE, "kms:Decrypt", key, context)
    except AccessDeniedException:
        return False
    return True


EC = "kms:encryptioncontext:"
KEYS = "kms:encryptioncontextkeys"


@pytest.mark.parametrize(
    ("condition", "context", "allowed"),
    [
        ({"StringEquals": {"kms:EncryptionContext:Dept": "Eng"}}, {EC + "dept": "Eng"}, True),
        ({"StringEquals": {"kms:EncryptionContext:Dept": "Eng"}}, {EC + "dept": "eng"}, False),
        ({"StringEquals": {"kms:EncryptionContext:Dept": "Eng"}}, {}, False),
        ({"StringNotEquals": {"kms:EncryptionContext:Dept": "Eng"}}, {EC + "dept": "Ops"}, True),
        ({"StringNotEquals": {"kms:EncryptionContext:Dept": "Eng"}}, {}, True),
        ({"StringEqualsIgnoreCase": {"kms:EncryptionContext:Dept": "ENG"}}, {EC + "dept": "eng"}, True),
        ({"StringNotEqualsIgnoreCase": {"kms:EncryptionContext:Dept": "ENG"}}, {EC + "dept": "eng"}, False),
        ({"StringLike": {"kms:EncryptionContext:Dept": "E?g*"}}, {EC + "dept": "Engineering"}, True),
        ({"StringNotLike": {"kms:EncryptionContext:Dept": "E*"}}, {EC + "dept": "Engineering"}, False),
        ({"StringEqualsIfExists": {"kms:EncryptionContext:Dept": "Eng"}}, {}, True),
        ({"StringEqualsIfExists": {"kms:EncryptionContext:Dept": "Eng"}}, {EC + "dept": "Ops"}, False),
        ({"StringEquals": {"kms:EncryptionContext:Dept": ["Ops", "Eng"]}}, {EC + "dept": "Eng"}, True),
        # ForAnyValue: at least one request value matches; a missing key never does
        ({"ForAnyValue:StringEquals": {"kms:EncryptionContextKeys": "Dept"}}, {KEYS: ("Dept", "X")}, True),
        ({"ForAnyValue:StringEquals": {"kms:EncryptionContextKeys": "Dept"}}, {KEYS: ("X",)}, False),
        ({"ForAnyValue:StringEquals": {"kms:EncryptionContextKeys": "Dept"}}, {}, False),
        # ForAllValues: every request value matches; a missing key (or an empty set) is true
        ({"ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["A", "B"]}}, {KEYS: ("A", "B")}, True),
        ({"ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["A", "B"]}}, {KEYS: ("A", "C")}, False),
        ({"ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["A", "B"]}}, {}, True),
        (
            {"ForAllValues:StringLike": {"kms:EncryptionContextKeys": "app-*"}},
            {KEYS: ("app-1", "app-2")},
            True,
        ),
        ({"forallvalues:StringNotEquals": {"kms:EncryptionContextKeys": "secret"}}, {KEYS: ("a",)}, True),
        # Null: "true" holds when the key is missing, "false" when present
        ({"Null": {"kms:EncryptionContextKeys": "true"}}, {}, True),
        ({"Null": {"kms:EncryptionContextKeys": "true"}}, {KEYS: ("A",)}, False),
        ({"Null": {"kms:EncryptionContextKeys": "false"}}, {KEYS: ("A",)}, True),
        ({"Null": {"kms:EncryptionContextKeys": False}}, {}, False),
        # condition key names are case-insensitive
        ({"StringEquals": {"KMS:KEYSPEC": "SYMMETRIC_DEFAULT"}}, {"kms:keyspec": "SYMMETRIC_DEFAULT"}, True),
    ],
)
def test_condition_operators(condition: dict[str, Any], context: dict[str, Any], allowed: bool) -> None:
    assert _allowed(condition, context) is allowed


@pytest.mark.parametrize(
    "operator", ["NumericEquals", "ForAnyValue:Null", "NullIfExists", "ForSomeValues:StringEquals"]
)
def test_unsupported_operators_are_refused(operator: str) -> None:
    with pytest.raises(MalformedPolicyDocumentException, match="unsupported condition operator"):
        compile_key_policy(
            json.dumps({"Statement": [_stmt("*", Condition={operator: {"kms:KeySpec": "x"}})]})
        )
    with pytest.raises(PolicyFileError, match="unsupported condition operator"):
        _identity(alice=[{**ALLOW_ALL, "Condition": {operator: {"kms:KeySpec": "x"}}}])


def test_key_context_from_the_request_and_the_key() -> None:
    params = {"KeyId": "alias/app", "EncryptionContext": {"Dept": "Eng", "Project": "X"}}
    context = key_context({"kms:recipientattestation:pcr0": "00"}, params, KEY)
    assert context == {
        "kms:recipientattestation:pcr0": "00",
        "kms:calleraccount": "111122223333",
        "kms:keyspec": "SYMMETRIC_DEFAULT",
        "kms:keyusage": "ENCRYPT_DECRYPT",
        "kms:keyorigin": "AWS_KMS",
        "kms:encryptioncontext:dept": "Eng",
        "kms:encryptioncontext:project": "X",
        "kms:encryptioncontextkeys": ("Dept", "Project"),
        "kms:requestalias": "alias/app",
    }
    by_arn = key_context({}, {"KeyId": "arn:aws:kms:us-east-1:111122223333:alias/app"}, KEY)
    assert by_arn["kms:requestalias"] == "alias/app"
    assert "kms:encryptioncontextkeys" not in key_context({}, {"KeyId": KEY.id}, KEY)


# -- attestation conditions with a real document ------------------------------------------------------

IMAGE = {i: hashlib.sha384(f"key policy image PCR{i}".encode()).digest() for i in (0, 1, 2)}


def test_recipient_attestation_conditions_in_a_key_policy(sim_home: Path) -> None:
    public = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    spki = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    check = RecipientCheck(
        roots=[SimulatedPKI.load_or_create(sim_home, at=T0).root_der], max_age=timedelta(minutes=5)
    )
    ours = check(simulate_document(sim_home, at=T0, public_key=spki, pcrs=IMAGE), T0)
    other_pcrs = {**IMAGE, 1: hashlib.sha384(b"another").digest()}
    theirs = check(simulate_document(sim_home, at=T0, public_key=spki, pcrs=other_pcrs), T0)
    key = _key(
        _stmt(
            {"AWS": ROOT},
            "kms:Decrypt",
            Condition={
                "StringEqualsIgnoreCase": {"kms:RecipientAttestation:ImageSha384": IMAGE[0].hex().upper()},
                "StringEquals": {"kms:RecipientAttestation:PCR1": IMAGE[1].hex()},
            },
        )
    )
    identity = _identity(alice=[ALLOW_ALL])
    params = {"KeyId": KEY.id}
    authorize_key(identity, ALICE, "kms:Decrypt", key, key_context(condition_context(ours), params, key))
    for context in (condition_context(theirs), condition_context(None)):
        with pytest.raises(AccessDeniedException, match="no resource-based policy allows"):
            authorize_key(identity, ALICE, "kms:Decrypt", key, key_context(context, params, key))


# -- malformed policies and the lockout safety check --------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "JSON object with a Statement"),
        (json.dumps({"Statement": []}), "1 to"),
        (json.dumps({"Version": "2020-01-01", "Statement": [_stmt("*")]}), "Version"),
        (json.dumps({"Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]}), "principals"),
        (json.dumps({"Statement": [_stmt({"AWS": "bob"})]}), "invalid principals"),
        (json.dumps({"Statement": [_stmt({"Nobody": "x"})]}), "invalid principals"),
        (json.dumps({"Statement": [_stmt("*", effect="Maybe")]}), "Effect must be Allow or Deny"),
        (json.dumps({"Statement": [{**_stmt("*"), "NotPrincipal": {"AWS": ROOT}}]}), "NotPrincipal"),
    ],
)
def test_malformed_key_policies(policy: str, fragment: str) -> None:
    with pytest.raises(MalformedPolicyDocumentException) as caught:
        compile_key_policy(policy)
    assert fragment in caught.value.message
    assert "\n" not in caught.value.message


@pytest.mark.parametrize("missing", ["Action", "Resource"])
def test_a_statement_without_action_or_resource_has_no_effect(missing: str) -> None:
    """PutKeyPolicy's Policy member: such a statement "has no effect ... the PutKeyPolicy API request
    succeeds": a Deny without one of them denies nothing, an Allow allows nothing."""
    deny = {k: v for k, v in _stmt({"AWS": ALICE.arn}, "kms:Decrypt", "Deny").items() if k != missing}
    key = _key(_stmt({"AWS": ALICE.arn}), deny)
    authorize_key(_identity(), ALICE, "kms:Decrypt", key, {})
    allow = {k: v for k, v in _stmt({"AWS": ALICE.arn}).items() if k != missing}
    assert "no resource-based policy" in _message(_identity(), _key(allow))


def test_service_principals_parse_but_name_no_caller() -> None:
    key = _key(_stmt({"Service": "ec2.amazonaws.com"}))
    assert "no resource-based policy" in _message(_identity(alice=[ALLOW_ALL]), key)


def test_lockout_check() -> None:
    identity = _identity(alice=[ALLOW_ALL])
    check_lockout(default_policy(), identity, ALICE, KEY.arn)
    check_lockout(
        json.dumps({"Statement": [_stmt({"AWS": ALICE.arn}, "kms:PutKeyPolicy")]}), _identity(), ALICE, None
    )
    for locked in (
        json.dumps({"Statement": [_stmt({"AWS": BOB.arn})]}),
        json.dumps({"Statement": [_stmt({"AWS": ALICE.arn}, "kms:Decrypt")]}),
        json.dumps(
            {"Statement": [_stmt({"AWS": ROOT}), _stmt({"AWS": ALICE.arn}, "kms:PutKeyPolicy", "Deny")]}
        ),
    ):
        with pytest.raises(MalformedPolicyDocumentException) as caught:
            check_lockout(locked, identity, ALICE, KEY.arn)
        assert caught.value.message == LOCKOUT_MESSAGE
    # the default policy delegates to IAM: without an identity policy allowing PutKeyPolicy it locks out
    with pytest.raises(MalformedPolicyDocumentException):
        check_lockout(
            default_policy(), _identity(alice=[{**ALLOW_ALL, "Action": "kms:Decrypt"}]), ALICE, None
        )


def test_condition_keys_are_read_only_where_a_statement_has_a_condition() -> None:
    """The service builds a request's condition keys only if a policy it is decided by has a condition."""
    plain = _identity(alice=[ALLOW_ALL])
    condition = {"StringEquals": {"kms:EncryptionContext:purpose": "x"}}
    assert not compile_key_policy(default_policy()).conditional
    assert not reads_conditions(plain, KEY)
    conditional_key = _key(_stmt({"AWS": ROOT}), _stmt("*", "kms:Decrypt", "Deny", Condition=condition))
    assert compile_key_policy(conditional_key.policy).conditional
    assert reads_conditions(plain, conditional_key)
    assert reads_conditions(_identity(alice=[{**ALLOW_ALL, "Condition": condition}]), KEY)
    # Without a condition anywhere the decision is the same for any context.
    for context in ({}, {"kms:encryptioncontext:purpose": "x"}, key_context({}, {"KeyId": "alias/a"}, KEY)):
        authorize_key(plain, ALICE, "kms:Decrypt", KEY, context)
