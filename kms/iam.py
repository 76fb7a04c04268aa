"""IAM-style authorization: one identity policy per principal, compiled once, evaluated per request.

Policy file (``$NITRO_SIM_HOME/kms/policy.json`` or ``--policy FILE``)::

    {"<principal name>": {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "kms:GenerateRandom", "Resource": "*",
         "Condition": {"StringEqualsIgnoreCase": {"kms:RecipientAttestation:ImageSha384": "<96 hex>"}}}]}}

A bare IAM policy document (``{"Version": ..., "Statement": [...]}``), or an entry under ``"*"``, applies
to every principal of the credentials file, in addition to the principal's own entry.

Evaluation (IAM User Guide, "Policy evaluation logic"): an explicit Deny wins; otherwise an Allow whose
action, resource and every condition match allows; otherwise the request is implicitly denied.
Conditions (IAM "Condition operators"): StringEquals, StringNotEquals, StringEqualsIgnoreCase,
StringNotEqualsIgnoreCase, StringLike, StringNotLike, each optionally ``…IfExists``; a list of values
matches if any value does. A positive operator on a key the request lacks is false: so a condition on
``kms:RecipientAttestation:*`` denies a request without a Recipient (conditions-nitro-enclave.html).
Keys and action names compare case-insensitively, as IAM does; values per the operator.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from attestation.errors import SimulationError
from kms.errors import AccessDeniedException
from kms.state import Principal

__all__ = ["ANY_PRINCIPAL", "IAMPolicies", "PolicyFileError", "load_policies", "parse_policies"]

#: The policy-file key whose policy applies to every principal (also what a bare IAM document means).
ANY_PRINCIPAL = "*"

#: Bounds on a policy file (IAM's own managed-policy limit is 6,144 characters; ours is looser).
MAX_POLICY_FILE_BYTES = 1024 * 1024
MAX_STATEMENTS = 1000
MAX_CONDITION_VALUES = 100

_OPERATORS = frozenset(
    {
        "StringEquals",
        "StringNotEquals",
        "StringEqualsIgnoreCase",
        "StringNotEqualsIgnoreCase",
        "StringLike",
        "StringNotLike",
    }
)


class PolicyFileError(SimulationError):
    """The policy file is unreadable or not in the documented shape."""


def _wildcard(pattern: str, *, ignore_case: bool) -> re.Pattern[str]:
    """IAM wildcard matching: ``*`` any run, ``?`` one character, nothing else special."""
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(body, re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL)


@dataclass(frozen=True, slots=True)
class _Condition:
    key: str  # lower-case
    negated: bool
    if_exists: bool
    mode: str  # "equals" | "ignorecase" | "like"
    values: tuple[str, ...]
    patterns: tuple[re.Pattern[str], ...]

    def holds(self, context: Mapping[str, str]) -> bool:
        actual = context.get(self.key)
        if actual is None:
            return self.if_exists or self.negated
        if self.mode == "equals":
            hit = actual in self.values
        elif self.mode == "ignorecase":
            hit = actual.casefold() in self.values
        else:
            hit = any(p.fullmatch(actual) for p in self.patterns)
        return hit != self.negated


@dataclass(frozen=True, slots=True)
class _Statement:
    deny: bool
    actions: tuple[re.Pattern[str], ...]
    conditions: tuple[_Condition, ...]

    def matches(self, action: str, context: Mapping[str, str]) -> bool:
        return any(p.fullmatch(action) for p in self.actions) and all(
            c.holds(context) for c in self.conditions
        )


def _strings(value: object, where: str) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    if not items or len(items) > MAX_CONDITION_VALUES or not all(isinstance(v, str) for v in items):
        raise PolicyFileError(f"{where} must be a string or a non-empty list of strings")
    return tuple(str(v) for v in items)


def _condition(operator: str, key: str, raw: object, where: str) -> _Condition:
    base = operator.removesuffix("IfExists")
    if base not in _OPERATORS:
        raise PolicyFileError(f"{where}: unsupported condition operator {operator!r}")
    negated = "Not" in base
    mode = "like" if "Like" in base else "ignorecase" if base.endswith("IgnoreCase") else "equals"
    values = _strings(raw, f"{where}: {operator}.{key}")
    patterns = tuple(_wildcard(v, ignore_case=False) for v in values) if mode == "like" else ()
    if mode == "ignorecase":
        values = tuple(v.casefold() for v in values)
    return _Condition(key.lower(), negated, operator != base, mode, values, patterns)


def _statement(raw: object, where: str) -> _Statement:
    if not isinstance(raw, dict):
        raise PolicyFileError(f"{where} must be an object")
    effect = raw.get("Effect")
    if effect not in ("Allow", "Deny"):
        raise PolicyFileError(f"{where}: Effect must be Allow or Deny")
    if "Action" not in raw:
        raise PolicyFileError(f"{where}: Action is required")
    actions = tuple(_wildcard(a, ignore_case=True) for a in _strings(raw["Action"], f"{where}: Action"))
    resources = _strings(raw.get("Resource", "*"), f"{where}: Resource")
    if "*" not in resources:  # GenerateRandom and the key-store actions have no resource ARN
        raise PolicyFileError(f'{where}: Resource must be "*" (the simulated actions take no resource)')
    conditions: list[_Condition] = []
    block = raw.get("Condition", {})
    if not isinstance(block, dict):
        raise PolicyFileError(f"{where}: Condition must be an object")
    for operator, pairs in block.items():
        if operator.removesuffix("IfExists") not in _OPERATORS:
            raise PolicyFileError(f"{where}: unsupported condition operator {operator!r}")
        if not isinstance(pairs, dict):
            raise PolicyFileError(f"{where}: Condition.{operator} must be an object")
        conditions.extend(_condition(operator, key, value, where) for key, value in pairs.items())
    return _Statement(effect == "Deny", actions, tuple(conditions))


@dataclass(frozen=True, slots=True)
class IAMPolicies:
    """Compiled policies by principal name."""

    by_principal: Mapping[str, tuple[_Statement, ...]]
    #: Whether any statement has a condition (if not, no request's condition keys need computing).
    conditional: bool = False

    def authorize(self, principal: Principal, action: str, context: Mapping[str, str]) -> None:
        """Return if allowed; AccessDeniedException (explicit or implicit deny) otherwise.

        ``action`` is ``kms:<Operation>``; ``context`` maps lower-case condition keys to values.
        """
        allowed = False
        own = self.by_principal.get(principal.name, ())
        for statement in (*own, *self.by_principal.get(ANY_PRINCIPAL, ())):
            if statement.matches(action, context):
                if statement.deny:
                    raise AccessDeniedException(
                        f"User: {principal.arn} is not authorized to perform: {action} "
                        "with an explicit deny in an identity-based policy"
                    )
                allowed = True
        if not allowed:
            raise AccessDeniedException(
                f"User: {principal.arn} is not authorized to perform: {action} "
                f"because no identity-based policy allows the {action} action"
            )


def parse_policies(document: object, source: str) -> IAMPolicies:
    """Compile a policy file's JSON value; PolicyFileError with a one-line message if malformed."""
    if not isinstance(document, dict):
        raise PolicyFileError(f"{source}: must be a JSON object of principal name -> policy")
    if "Statement" in document:  # a plain IAM policy document: it applies to every principal
        document = {ANY_PRINCIPAL: document}
    compiled: dict[str, tuple[_Statement, ...]] = {}
    for name, policy in document.items():
        if not isinstance(policy, dict) or "Statement" not in policy:
            raise PolicyFileError(f"{source}: policy for {name!r} must be an object with a Statement")
        raw = policy["Statement"]
        statements = raw if isinstance(raw, list) else [raw]
        if len(statements) > MAX_STATEMENTS:
            raise PolicyFileError(f"{source}: policy for {name!r} has over {MAX_STATEMENTS} statements")
        compiled[name] = tuple(
            _statement(s, f"{source}: {name}.Statement[{i}]") for i, s in enumerate(statements)
        )
    conditional = any(s.conditions for statements in compiled.values() for s in statements)
    return IAMPolicies(compiled, conditional)


def load_policies(path: Path) -> IAMPolicies:
    """Read and compile a policy file."""
    try:
        with path.open("rb") as handle:  # bounded: the path may be /dev/zero or a FIFO
            data = handle.read(MAX_POLICY_FILE_BYTES + 1)
    except OSError as error:
        raise PolicyFileError(f"cannot read policy file {path}: {error.strerror}") from None
    if len(data) > MAX_POLICY_FILE_BYTES:
        raise PolicyFileError(f"policy file {path} is over {MAX_POLICY_FILE_BYTES} bytes")
    try:
        document = json.loads(data)
    except ValueError as error:
        raise PolicyFileError(f"policy file {path} is not valid JSON: {error}") from None
    except RecursionError:  # nesting deeper than the interpreter's stack: not a policy either
        raise PolicyFileError(f"policy file {path} is not valid JSON: nested too deeply") from None
    return parse_policies(document, str(path))
