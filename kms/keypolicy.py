"""Key policies: the resource-based policy of each KMS key, and the decision for a request on a key.

A key policy is an IAM policy document whose statements also name a Principal (KMS developer guide, "Key
policies in AWS KMS"); its statements compile with kms.iam's compiler (one condition engine for both
policy kinds). Principals understood: ``"*"`` or ``{"AWS": "*"}`` (anyone), the account
(``arn:aws:iam::111122223333:root`` or ``111122223333``: delegation to the account's IAM policies), and IAM
ARNs of the account (a user, ``arn:aws:iam::111122223333:user/<profile>``). Service principals parse but
name none of kms-sim's callers.

Decision for a request on a key (IAM User Guide, "Policy evaluation logic", same account; KMS developer
guide, "Default key policy"): an explicit Deny in the key policy (for the caller or the whole account) or
in the identity policy wins; otherwise the request is allowed if the key policy allows the caller
directly, or if it allows the account and the caller's identity policy allows the action on the key's ARN;
otherwise AccessDeniedException in AWS's words ("... because no resource-based policy allows ...").
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from kms.errors import AccessDeniedException, MalformedPolicyDocumentException
from kms.iam import MAX_STATEMENTS, Context, IAMPolicies, PolicyFileError, Statement, compile_statement
from kms.keys import Key, key_arn
from kms.state import ACCOUNT_ID, Principal

__all__ = [
    "LOCKOUT_MESSAGE",
    "MAX_CACHED_POLICIES",
    "MAX_KEY_POLICY_BYTES",
    "KeyPolicy",
    "authorize_key",
    "check_lockout",
    "compile_key_policy",
    "key_context",
    "reads_conditions",
]

#: "Key policy document size: 32 KB (32,768 bytes)" (KMS developer guide, "Resource quotas").
MAX_KEY_POLICY_BYTES = 32768
#: Compiled key policies kept, by (key id, policy text): one per key of a busy working set.
MAX_CACHED_POLICIES = 1024
#: PutKeyPolicy / CreateKey's answer when the new policy fails the lockout safety check (KMS developer
#: guide, "Default key policy": the policy must let the caller make a later PutKeyPolicy request).
LOCKOUT_MESSAGE = "The new key policy will not allow you to update the key policy in the future."
_INVALID_PRINCIPALS = "Policy contains a statement with one or more invalid principals."
_ROOT = f"arn:aws:iam::{ACCOUNT_ID}:root"
_ENCRYPTION_CONTEXT = "kms:encryptioncontext:"
#: The key ID the lockout check of CreateKey evaluates the new policy for (the key has no ID yet).
_NEW_KEY_ID = "00000000-0000-4000-8000-000000000000"


@dataclass(frozen=True, slots=True)
class _KeyStatement:
    statement: Statement
    anyone: bool  # Principal "*"
    account: bool  # the account: allows only with the caller's identity policy
    principals: frozenset[str]  # IAM ARNs named directly


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    """A compiled key policy."""

    statements: tuple[_KeyStatement, ...]
    #: Whether any statement has a condition (if not, no request's condition keys are read).
    conditional: bool = False


def _principal_values(raw: object) -> list[str]:
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw and all(isinstance(v, str) for v in raw):
        return [str(v) for v in raw]
    raise MalformedPolicyDocumentException(_INVALID_PRINCIPALS)


def _principal(raw: object) -> tuple[bool, bool, frozenset[str]]:
    """(anyone, account, IAM ARNs) of a statement's Principal."""
    if raw == "*":
        return True, False, frozenset()
    if not isinstance(raw, dict) or not raw:
        raise MalformedPolicyDocumentException(_INVALID_PRINCIPALS)
    anyone = account = False
    arns: set[str] = set()
    for kind, value in raw.items():
        values = _principal_values(value)
        if kind != "AWS":
            if kind not in ("Service", "Federated", "CanonicalUser"):
                raise MalformedPolicyDocumentException(_INVALID_PRINCIPALS)
            continue  # names no caller kms-sim has
        for name in values:
            if name == "*":
                anyone = True
            elif name in (_ROOT, ACCOUNT_ID):
                account = True
            elif name.startswith("arn:aws:iam::") and name.count(":") == 5:
                arns.add(name)
            elif len(name) == 12 and name.isdigit():
                pass  # another account: it names none of this account's principals
            else:
                raise MalformedPolicyDocumentException(_INVALID_PRINCIPALS)
    return anyone, account, frozenset(arns)


def compile_key_policy(text: str) -> KeyPolicy:
    """Compile a key policy; MalformedPolicyDocumentException (one line) if it is not one."""
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        raise MalformedPolicyDocumentException("The key policy is not valid JSON.") from None
    if not isinstance(document, dict) or "Statement" not in document:
        raise MalformedPolicyDocumentException("The key policy must be a JSON object with a Statement.")
    if document.get("Version", "2012-10-17") not in ("2012-10-17", "2008-10-17"):
        raise MalformedPolicyDocumentException("The key policy's Version must be 2012-10-17 or 2008-10-17.")
    raw = document["Statement"]
    statements: list[Any] = raw if isinstance(raw, list) else [raw]
    if not statements or len(statements) > MAX_STATEMENTS:
        raise MalformedPolicyDocumentException(f"A key policy has 1 to {MAX_STATEMENTS} statements.")
    compiled = []
    for index, statement in enumerate(statements):
        if isinstance(statement, dict) and "NotPrincipal" in statement:
            raise MalformedPolicyDocumentException("kms-sim does not simulate NotPrincipal in key policies.")
        if isinstance(statement, dict) and "Principal" not in statement:
            raise MalformedPolicyDocumentException(_INVALID_PRINCIPALS)
        if isinstance(statement, dict) and ("Action" not in statement or "Resource" not in statement):
            # "If either of the required Resource or Action elements are missing from a key policy statement,
            # the policy statement has no effect ... the PutKeyPolicy API request succeeds" (PutKeyPolicy's
            # Policy member; CreateKey's says the same).
            continue
        try:
            body = compile_statement(statement, f"Statement[{index}]")
        except PolicyFileError as error:
            raise MalformedPolicyDocumentException(str(error)) from None
        anyone, account, arns = _principal(statement["Principal"])
        compiled.append(_KeyStatement(body, anyone, account, arns))
    return KeyPolicy(tuple(compiled), any(entry.statement.conditions for entry in compiled))


@lru_cache(maxsize=MAX_CACHED_POLICIES)
def _cached(key_id: str, text: str) -> KeyPolicy:
    return compile_key_policy(text)


def _denied(principal: Principal, action: str, resource: str, where: str) -> AccessDeniedException:
    return AccessDeniedException(
        f"User: {principal.arn} is not authorized to perform: {action} on resource: {resource} {where}"
    )


def _decide(
    policy: KeyPolicy,
    *,
    identity: IAMPolicies,
    principal: Principal,
    action: str,
    context: Context,
    resource: str,
) -> None:
    direct = via_account = False
    for entry in policy.statements:
        names_caller = entry.anyone or principal.arn in entry.principals
        if not (names_caller or entry.account) or not entry.statement.matches(action, context, resource):
            continue
        if entry.statement.deny:
            raise _denied(principal, action, resource, "with an explicit deny in a resource-based policy")
        if names_caller:
            direct = True
        else:
            via_account = True
    identity_denied, identity_allowed = identity.evaluate(principal, action, context, resource)
    if identity_denied:
        raise _denied(principal, action, resource, "with an explicit deny in an identity-based policy")
    if direct or (via_account and identity_allowed):
        return
    if via_account:
        raise _denied(
            principal, action, resource, f"because no identity-based policy allows the {action} action"
        )
    raise _denied(principal, action, resource, f"because no resource-based policy allows the {action} action")


def authorize_key(
    identity: IAMPolicies, principal: Principal, action: str, key: Key, context: Context
) -> None:
    """Return if ``principal`` may do ``action`` on ``key``; AccessDeniedException otherwise."""
    _decide(
        _cached(key.id, key.policy),
        identity=identity,
        principal=principal,
        action=action,
        context=context,
        resource=key.arn,
    )


def reads_conditions(identity: IAMPolicies, key: Key) -> bool:
    """Whether deciding a request on ``key`` reads condition keys: a condition in the identity policies
    or in the key's policy. If not, the service passes an empty context instead of building
    :func:`key_context` (no statement without conditions looks at it)."""
    return identity.conditional or _cached(key.id, key.policy).conditional


def check_lockout(text: str, identity: IAMPolicies, principal: Principal, resource: str | None) -> None:
    """The key policy lockout safety check: MalformedPolicyDocumentException unless the new policy (with
    the caller's identity policy) lets the caller call PutKeyPolicy on the key (``resource``; None for a
    key CreateKey is about to make) later."""
    policy = compile_key_policy(text)
    if resource is None:
        resource = key_arn(_NEW_KEY_ID)
    try:
        _decide(
            policy,
            identity=identity,
            principal=principal,
            action="kms:PutKeyPolicy",
            context={},
            resource=resource,
        )
    except AccessDeniedException:
        raise MalformedPolicyDocumentException(LOCKOUT_MESSAGE) from None


def key_context(
    base: Mapping[str, str], params: Mapping[str, Any], key: Key
) -> dict[str, str | tuple[str, ...]]:
    """The condition keys of a request on ``key``: ``base`` (the Recipient's), the key's, the request's.

    Names lower-case as kms.iam compares them (conditions-kms.html): ``kms:CallerAccount``,
    ``kms:KeySpec``, ``kms:KeyUsage``, ``kms:KeyOrigin``, ``kms:EncryptionContext:<key>`` and the
    multi-valued ``kms:EncryptionContextKeys`` (from the EncryptionContext member), ``kms:RequestAlias``
    (when KeyId is an alias name or alias ARN).
    """
    context: dict[str, str | tuple[str, ...]] = dict(base)
    context["kms:calleraccount"] = ACCOUNT_ID
    context["kms:keyspec"] = key.spec
    context["kms:keyusage"] = key.usage
    context["kms:keyorigin"] = key.origin
    encryption_context = params.get("EncryptionContext")
    if isinstance(encryption_context, dict) and encryption_context:
        for name, value in encryption_context.items():
            context[_ENCRYPTION_CONTEXT + name.lower()] = value
        context["kms:encryptioncontextkeys"] = tuple(encryption_context)
    requested = params.get("KeyId")
    if isinstance(requested, str):
        alias = requested.partition(":alias/")[2] if requested.startswith("arn:") else None
        if alias:
            context["kms:requestalias"] = "alias/" + alias
        elif requested.startswith("alias/"):
            context["kms:requestalias"] = requested
    return context
