"""IAM-style authorization: one identity policy per principal, compiled once, evaluated per request.

Policy file (``$NITRO_SIM_HOME/kms/policy.json`` or ``--policy FILE``)::

    {"<principal name>": {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "kms:GenerateRandom", "Resource": "*",
         "Condition": {"StringEqualsIgnoreCase": {"kms:RecipientAttestation:ImageSha384": "<96 hex>"}}}]}}

A bare IAM policy document (``{"Version": ..., "Statement": [...]}``), or an entry under ``"*"``, applies
to every principal of the credentials file, in addition to the principal's own entry.

Evaluation (IAM User Guide, "Policy evaluation logic"): an explicit Deny wins; otherwise an Allow whose
action, resource and every condition match allows; otherwise the request is implicitly denied.
Resource is ``"*"`` or ARNs with IAM wildcards (a KMS key's ARN, ``arn:aws:kms:*:111122223333:key/*``);
a request that acts on no key (GenerateRandom, the key stores, CreateKey, ListKeys, ListAliases) matches
only ``"*"``. The key policies of kms.keypolicy compile their statements here too: one condition engine.

Conditions (IAM "Condition operators"): StringEquals, StringNotEquals, StringEqualsIgnoreCase,
StringNotEqualsIgnoreCase, StringLike, StringNotLike, each optionally ``…IfExists`` and prefixed by a set
qualifier ``ForAnyValue:`` or ``ForAllValues:`` (for multi-valued keys such as
``kms:EncryptionContextKeys``), and ``Null``. A list of values matches if any value does. A positive
operator on a key the request lacks is false: so a condition on ``kms:RecipientAttestation:*`` denies a
request without a Recipient (conditions-nitro-enclave.html). ``ForAllValues:`` on a missing key (or an
empty set) is true, ``ForAnyValue:`` false (IAM "Multivalued context keys"); ``Null`` with ``"true"`` holds
when the key is missing. Keys and action names compare case-insensitively, as IAM does; values per the
operator.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from attestation.errors import SimulationError
from kms.errors import AccessDeniedException
from kms.state import Principal

__all__ = [
    "ANY_PRINCIPAL",
    "Context",
    "IAMPolicies",
    "PolicyFileError",
    "Statement",
    "compile_statement",
    "load_policies",
    "parse_policies",
]

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
        "Null",
    }
)
_QUALIFIERS = {"foranyvalue:": "any", "forallvalues:": "all"}

#: Condition keys' values in a request: a string, or a tuple of strings for a multi-valued key.
Context = Mapping[str, str | tuple[str, ...]]


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
    mode: str  # "equals" | "ignorecase" | "like" | "null"
    values: tuple[str, ...]
    patterns: tuple[re.Pattern[str], ...]
    qualifier: str = ""  # "" | "any" (ForAnyValue:) | "all" (ForAllValues:)

    def _one(self, actual: str) -> bool:
        if self.mode == "equals":
            hit = actual in self.values
        elif self.mode == "ignorecase":
            hit = actual.casefold() in self.values
        else:
            hit = any(p.fullmatch(actual) for p in self.patterns)
        return hit != self.negated

    def holds(self, context: Context) -> bool:
        actual = context.get(self.key)
        if self.mode == "null":
            return (actual is None or actual == ()) == (self.values[0] == "true")
        if type(actual) is str and not self.qualifier:  # the usual case: one value, no set qualifier
            return self._one(actual)
        if actual is None or actual == ():
            if self.if_exists:
                return True
            if self.qualifier:
                return self.qualifier == "all"
            return self.negated
        items = (actual,) if isinstance(actual, str) else actual
        if self.qualifier == "all":
            return all(self._one(v) for v in items)
        return any(self._one(v) for v in items)


@dataclass(frozen=True, slots=True)
class Statement:
    """One compiled policy statement (identity policy, or the body of a key policy statement)."""

    deny: bool
    actions: tuple[re.Pattern[str], ...]
    conditions: tuple[_Condition, ...]
    #: Resource patterns; ``any_resource`` when one of them is ``"*"`` (which also covers "no resource").
    resources: tuple[re.Pattern[str], ...] = field(default=())
    any_resource: bool = True

    def matches(self, action: str, context: Context, resource: str | None = None) -> bool:
        return (
            any(p.fullmatch(action) for p in self.actions)
            and (
                self.any_resource
                or (resource is not None and any(p.fullmatch(resource) for p in self.resources))
            )
            and all(c.holds(context) for c in self.conditions)
        )


def _strings(value: object, where: str) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    if not items or len(items) > MAX_CONDITION_VALUES or not all(isinstance(v, str) for v in items):
        raise PolicyFileError(f"{where} must be a string or a non-empty list of strings")
    return tuple(str(v) for v in items)


def _operator(operator: str, where: str) -> tuple[str, str, bool]:
    """(set qualifier, base operator, IfExists) of a condition operator; PolicyFileError if unsupported."""
    qualifier = ""
    base = operator
    for prefix, name in _QUALIFIERS.items():
        if base.lower().startswith(prefix):
            qualifier, base = name, base[len(prefix) :]
    unqualified = base
    base = base.removesuffix("IfExists")
    if base not in _OPERATORS or (base == "Null" and (qualifier or unqualified != base)):
        raise PolicyFileError(f"{where}: unsupported condition operator {operator!r}")
    return qualifier, base, unqualified != base


def _condition(operator: str, key: str, raw: object, where: str) -> _Condition:
    qualifier, base, if_exists = _operator(operator, where)
    if base == "Null":
        value = raw[0] if isinstance(raw, list) and len(raw) == 1 else raw
        if isinstance(value, bool):
            value = "true" if value else "false"
        if value not in ("true", "false"):
            raise PolicyFileError(f'{where}: Null.{key} must be "true" or "false"')
        return _Condition(key.lower(), False, False, "null", (str(value),), ())
    negated = "Not" in base
    mode = "like" if "Like" in base else "ignorecase" if base.endswith("IgnoreCase") else "equals"
    values = _strings(raw, f"{where}: {operator}.{key}")
    patterns = tuple(_wildcard(v, ignore_case=False) for v in values) if mode == "like" else ()
    if mode == "ignorecase":
        values = tuple(v.casefold() for v in values)
    return _Condition(key.lower(), negated, if_exists, mode, values, patterns, qualifier)


def _resource(pattern: str, where: str) -> re.Pattern[str]:
    """An ARN (IAM wildcards allowed): ``arn:partition:service:region:account:resource``."""
    if pattern != "*" and (not pattern.startswith("arn:") or pattern.count(":") < 5):
        raise PolicyFileError(f'{where}: Resource must be "*" or an ARN, not {pattern!r}')
    return _wildcard(pattern, ignore_case=False)


def compile_statement(raw: object, where: str) -> Statement:
    """A statement's Effect, Action, Resource and Condition (other members, e.g. Sid, are not read)."""
    if not isinstance(raw, dict):
        raise PolicyFileError(f"{where} must be an object")
    effect = raw.get("Effect")
    if effect not in ("Allow", "Deny"):
        raise PolicyFileError(f"{where}: Effect must be Allow or Deny")
    if "Action" not in raw:
        raise PolicyFileError(f"{where}: Action is required")
    actions = tuple(_wildcard(a, ignore_case=True) for a in _strings(raw["Action"], f"{where}: Action"))
    resources = _strings(raw.get("Resource", "*"), f"{where}: Resource")
    patterns = tuple(_resource(r, where) for r in resources)
    conditions: list[_Condition] = []
    block = raw.get("Condition", {})
    if not isinstance(block, dict):
        raise PolicyFileError(f"{where}: Condition must be an object")
    for operator, pairs in block.items():
        _operator(operator, where)
        if not isinstance(pairs, dict):
            raise PolicyFileError(f"{where}: Condition.{operator} must be an object")
        conditions.extend(_condition(operator, key, value, where) for key, value in pairs.items())
    return Statement(effect == "Deny", actions, tuple(conditions), patterns, "*" in resources)


@dataclass(frozen=True, slots=True)
class IAMPolicies:
    """Compiled policies by principal name."""

    by_principal: Mapping[str, tuple[Statement, ...]]
    #: Whether any statement has a condition (if not, no request's condition keys need computing).
    conditional: bool = False

    def authorize(self, principal: Principal, action: str, context: Context) -> None:
        """Return if allowed; AccessDeniedException (explicit or implicit deny) otherwise.

        For a request that acts on no key. ``action`` is ``kms:<Operation>``; ``context`` maps lower-case
        condition keys to values.
        """
        allowed = False
        own = self.by_principal.get(principal.name, ())
        for statement in (*own, *self.by_principal.get(ANY_PRINCIPAL, ())):
            if statement.matches(action, context):
                if statement.deny:
                    raise AccessDeniedException(
                        f"User: {principal.arn} is not authorized to perform: {action} on resource: * "
                        "with an explicit deny in an identity-based policy"
                    )
                allowed = True
        if not allowed:
            # "... is not authorized to perform: kms:CreateKey on resource: * because no identity-based policy
            # allows the kms:CreateKey action": IAM names "*" as the resource of an action that takes none.
            raise AccessDeniedException(
                f"User: {principal.arn} is not authorized to perform: {action} on resource: * "
                f"because no identity-based policy allows the {action} action"
            )

    def evaluate(
        self, principal: Principal, action: str, context: Context, resource: str
    ) -> tuple[bool, bool]:
        """(explicitly denied, allowed) by the principal's identity policy for an action on ``resource``."""
        allowed = False
        own = self.by_principal.get(principal.name, ())
        for statement in (*own, *self.by_principal.get(ANY_PRINCIPAL, ())):
            if statement.matches(action, context, resource):
                if statement.deny:
                    return True, False
                allowed = True
        return False, allowed


def parse_policies(document: object, source: str) -> IAMPolicies:
    """Compile a policy file's JSON value; PolicyFileError with a one-line message if malformed."""
    if not isinstance(document, dict):
        raise PolicyFileError(f"{source}: must be a JSON object of principal name -> policy")
    if "Statement" in document:  # a plain IAM policy document: it applies to every principal
        document = {ANY_PRINCIPAL: document}
    compiled: dict[str, tuple[Statement, ...]] = {}
    for name, policy in document.items():
        if not isinstance(policy, dict) or "Statement" not in policy:
            raise PolicyFileError(f"{source}: policy for {name!r} must be an object with a Statement")
        raw = policy["Statement"]
        statements = raw if isinstance(raw, list) else [raw]
        if len(statements) > MAX_STATEMENTS:
            raise PolicyFileError(f"{source}: policy for {name!r} has over {MAX_STATEMENTS} statements")
        compiled[name] = tuple(
            compile_statement(s, f"{source}: {name}.Statement[{i}]") for i, s in enumerate(statements)
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
