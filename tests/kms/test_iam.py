"""IAM-style policy evaluation: actions, explicit deny, condition operators on the attestation keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kms.errors import AccessDeniedException
from kms.iam import PolicyFileError, load_policies, parse_policies
from kms.state import Principal

ALICE = Principal(name="alice", access_key="AKIAALICE00000000000", secret_key="s" * 40)
BOB = Principal(name="bob", access_key="AKIABOB0000000000000", secret_key="t" * 40)
PCR0 = "ab" * 48
KEY0 = "kms:recipientattestation:imagesha384"


def _policies(*statements: dict[str, Any], name: str = "alice") -> Any:
    return parse_policies({name: {"Version": "2012-10-17", "Statement": list(statements)}}, "test")


def _allow(**condition: Any) -> dict[str, Any]:
    statement: dict[str, Any] = {"Effect": "Allow", "Action": "kms:GenerateRandom", "Resource": "*"}
    if condition:
        statement["Condition"] = condition
    return statement


def test_allow_and_implicit_deny() -> None:
    policies = _policies(_allow())
    policies.authorize(ALICE, "kms:GenerateRandom", {})
    with pytest.raises(AccessDeniedException, match="because no identity-based policy allows"):
        policies.authorize(ALICE, "kms:CreateCustomKeyStore", {})
    with pytest.raises(AccessDeniedException, match="user/bob is not authorized"):
        policies.authorize(BOB, "kms:GenerateRandom", {})


@pytest.mark.parametrize(
    "action", ["kms:*", "*", "kms:Generate*", "KMS:generaterandom", "kms:GenerateRando?"]
)
def test_action_wildcards_and_case(action: str) -> None:
    _policies({"Effect": "Allow", "Action": action, "Resource": "*"}).authorize(
        ALICE, "kms:GenerateRandom", {}
    )


def test_explicit_deny_wins() -> None:
    policies = _policies(
        {"Effect": "Allow", "Action": "kms:*", "Resource": "*"},
        {"Effect": "Deny", "Action": ["kms:GenerateRandom"], "Resource": "*"},
    )
    with pytest.raises(AccessDeniedException, match="with an explicit deny"):
        policies.authorize(ALICE, "kms:GenerateRandom", {})
    policies.authorize(ALICE, "kms:DescribeCustomKeyStores", {})


@pytest.mark.parametrize(
    ("operator", "value", "actual", "allowed"),
    [
        ("StringEquals", PCR0, PCR0, True),
        ("StringEquals", PCR0.upper(), PCR0, False),
        ("StringEqualsIgnoreCase", PCR0.upper(), PCR0, True),
        ("StringEquals", [PCR0, "00" * 48], PCR0, True),
        ("StringEquals", "00" * 48, PCR0, False),
        ("StringLike", "ab*", PCR0, True),
        ("StringLike", "ab?b*", PCR0, True),
        ("StringLike", "cd*", PCR0, False),
        ("StringNotEquals", "00" * 48, PCR0, True),
        ("StringNotEquals", PCR0, PCR0, False),
        ("StringNotEqualsIgnoreCase", PCR0.upper(), PCR0, False),
        ("StringNotLike", "ab*", PCR0, False),
    ],
)
def test_condition_operators(operator: str, value: Any, actual: str, allowed: bool) -> None:
    policies = _policies(_allow(**{operator: {"kms:RecipientAttestation:ImageSha384": value}}))
    if allowed:
        policies.authorize(ALICE, "kms:GenerateRandom", {KEY0: actual})
    else:
        with pytest.raises(AccessDeniedException):
            policies.authorize(ALICE, "kms:GenerateRandom", {KEY0: actual})


def test_attestation_condition_denies_a_request_without_recipient() -> None:
    policies = _policies(_allow(StringEqualsIgnoreCase={"kms:RecipientAttestation:PCR3": PCR0}))
    with pytest.raises(AccessDeniedException):
        policies.authorize(ALICE, "kms:GenerateRandom", {})
    # ... while IfExists lets it through, as IAM defines.
    lenient = _policies(_allow(StringEqualsIfExists={"kms:RecipientAttestation:PCR3": PCR0}))
    lenient.authorize(ALICE, "kms:GenerateRandom", {})


def test_all_conditions_must_hold() -> None:
    policies = _policies(
        _allow(
            StringEqualsIgnoreCase={"kms:RecipientAttestation:ImageSha384": PCR0},
            StringEquals={"kms:RecipientAttestation:PCR8": "cd" * 48},
        )
    )
    policies.authorize(ALICE, "kms:GenerateRandom", {KEY0: PCR0, "kms:recipientattestation:pcr8": "cd" * 48})
    with pytest.raises(AccessDeniedException):
        policies.authorize(
            ALICE, "kms:GenerateRandom", {KEY0: PCR0, "kms:recipientattestation:pcr8": "00" * 48}
        )


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ([], "must be a JSON object"),
        ({"alice": {}}, "must be an object with a Statement"),
        ({"alice": {"Statement": [{"Effect": "Maybe", "Action": "kms:*"}]}}, "Effect must be Allow or Deny"),
        ({"alice": {"Statement": [{"Effect": "Allow"}]}}, "Action is required"),
        ({"alice": {"Statement": [{"Effect": "Allow", "Action": 5}]}}, "Action must be a string"),
        (
            {"alice": {"Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "arn:aws:kms:x"}]}},
            'Resource must be "\\*" or an ARN',
        ),
        (
            {
                "alice": {
                    "Statement": [{"Effect": "Allow", "Action": "kms:*", "Condition": {"NumericEquals": {}}}]
                }
            },
            "unsupported condition operator",
        ),
    ],
)
def test_malformed_policy_files_are_one_line_errors(document: Any, fragment: str) -> None:
    with pytest.raises(PolicyFileError, match=fragment):
        parse_policies(document, "policy.json")


def test_load_policies_reports_unreadable_and_invalid_json(tmp_path: Path) -> None:
    with pytest.raises(PolicyFileError, match="cannot read policy file"):
        load_policies(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(PolicyFileError, match="not valid JSON"):
        load_policies(bad)


def test_bare_iam_document_and_star_apply_to_every_principal() -> None:
    bare = parse_policies({"Version": "2012-10-17", "Statement": [_allow()]}, "bare")
    bare.authorize(ALICE, "kms:GenerateRandom", {})
    bare.authorize(BOB, "kms:GenerateRandom", {})
    mixed = parse_policies(
        {
            "*": {"Statement": [{"Effect": "Deny", "Action": "kms:GenerateRandom", "Resource": "*"}]},
            "alice": {"Statement": [_allow()]},
        },
        "mixed",
    )
    with pytest.raises(AccessDeniedException, match="explicit deny"):
        mixed.authorize(ALICE, "kms:GenerateRandom", {})
