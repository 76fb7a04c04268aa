"""The request pipeline, without I/O: a received request and its reception time in, a response out.

Order, each step a KMSError on failure (answered, audited, and the next request served as usual):

1. size bounds on the body and the header section (before anything reads them);
2. SigV4 authentication (kms.auth);
3. ``X-Amz-Target`` names an operation we serve;
4. rate limit (ThrottlingException);
5. JSON body, member types and model constraints (kms.protocol);
6. injected faults (KMSInternalException, ...), for testing clients' retries (``--fault`` counts, re-armed
   at run time by the faults file, see :class:`FaultInjector`);
7. a Recipient's attestation document verified against the trusted roots at the request time;
8. authorization: the key the request acts on is resolved (kms._op ``resolve``); with no key, the
   principal's IAM-style policy decides, with the document's PCRs as condition keys; with a key, its key
   policy and the identity policy together (kms.keypolicy), with the key's and the request's condition
   keys too; then each other resource the operation affects (``also``: an alias ARN, by the identity
   policy alone; another key, as the first); a new key policy passes the lockout safety check;
9. the operation.

An unexpected exception is a KMSInternalException (HTTP 500, no details on the wire, one line on stderr).
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain
from typing import Any

from kms._op import AttestedRecipient
from kms.audit import AuditLog, claimed_credential, claimed_operation, event_line
from kms.auth import authenticate
from kms.errors import (
    AccessDeniedException,
    DependencyTimeoutException,
    KMSError,
    KMSInternalException,
    ThrottlingException,
    ValidationException,
)
from kms.iam import IAMPolicies
from kms.keypolicy import authorize_key, check_lockout, key_context, reads_conditions
from kms.keys import Key
from kms.operations import OPERATIONS, Operations
from kms.protocol import (
    CONTENT_TYPE,
    MAX_REQUEST_BODY_BYTES,
    MAX_REQUEST_HEADER_BYTES,
    decode_body,
    encode_error,
    encode_result,
    parse_target,
)
from kms.reload import Watched
from kms.state import Principal

__all__ = [
    "INJECTABLE_FAULTS",
    "FaultInjector",
    "Request",
    "Response",
    "Service",
    "TokenBucket",
    "new_request_id",
]

#: A Recipient check: document bytes and request time in, the verified recipient out (ValidationException).
RecipientVerifier = Callable[[bytes, datetime], AttestedRecipient]

_CONDITION_PREFIX = "kms:recipientattestation:"
_NO_CONTEXT: Mapping[str, str] = {}


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """A received HTTP request: header names lower-case, values as sent."""

    method: str
    path: str
    query: str
    headers: Sequence[tuple[str, str]]
    body: bytes
    source_ip: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Response:
    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes


class TokenBucket:
    """A request-rate limit: ``rate`` per second with bursts of ``burst``; time is a monotonic argument."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._last: float | None = None

    def take(self, now: float) -> bool:
        if self._last is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


_INJECTABLE: Mapping[str, type[KMSError]] = {
    cls.__name__: cls for cls in (KMSInternalException, DependencyTimeoutException, ThrottlingException)
}
#: The error names a fault may be injected as (``--fault NAME:COUNT``, the faults file).
INJECTABLE_FAULTS = tuple(sorted(_INJECTABLE))


def check_fault_names(names: Iterable[str]) -> None:
    """ValueError (one line) unless every name is one of :data:`INJECTABLE_FAULTS`."""
    for name in names:
        if name not in _INJECTABLE:
            raise ValueError(f"cannot inject {name!r}; choose from {', '.join(INJECTABLE_FAULTS)}")


class FaultInjector:
    """Fail the first ``counts[name]`` requests, then each further one with probability ``rates[name]``.

    :meth:`arm` sets the count left for each fault it names (the others keep theirs): a running server
    re-arms from its faults file that way.
    """

    def __init__(
        self, counts: Mapping[str, int], rates: Mapping[str, float], seed: int | None = None
    ) -> None:
        check_fault_names((*counts, *rates))
        self._left = dict(counts)
        self._rates = dict(rates)
        self._random = random.Random(seed)  # noqa: S311 - fault timing, not security

    def arm(self, counts: Mapping[str, int]) -> None:
        check_fault_names(counts)
        self._left.update(counts)

    def check(self) -> None:
        for name, left in self._left.items():
            if left > 0:
                self._left[name] = left - 1
                raise _INJECTABLE[name](f"Injected fault ({name}) for testing client retries.")
        for name, rate in self._rates.items():
            if self._random.random() < rate:
                raise _INJECTABLE[name](f"Injected fault ({name}) for testing client retries.")


def condition_context(recipient: AttestedRecipient | None) -> dict[str, str]:
    """``kms:RecipientAttestation:ImageSha384`` (PCR0) and ``…:PCR<N>``: lower-case keys and hex values."""
    if recipient is None:
        return {}
    context = {f"{_CONDITION_PREFIX}pcr{index}": value.hex() for index, value in recipient.pcrs.items()}
    if 0 in recipient.pcrs:
        context[f"{_CONDITION_PREFIX}imagesha384"] = recipient.pcrs[0].hex()
    return context


def authorize_identity_on(
    policies: IAMPolicies, principal: Principal, action: str, context: Mapping[str, str], resource: str
) -> None:
    """Return if the identity policy lets ``principal`` do ``action`` on ``resource`` (an alias ARN: no
    resource-based policy exists for it); AccessDeniedException in AWS's words otherwise."""
    denied, allowed = policies.evaluate(principal, action, context, resource)
    if denied:
        why = "with an explicit deny in an identity-based policy"
    elif not allowed:
        why = f"because no identity-based policy allows the {action} action"
    else:
        return
    raise AccessDeniedException(
        f"User: {principal.arn} is not authorized to perform: {action} on resource: {resource} {why}"
    )


def _first_values(headers: Sequence[tuple[str, str]]) -> tuple[dict[str, str], int]:
    """Each header's first value by name (what a scan from the front finds), and the section's size.

    C-level passes: ``dict`` of the reversed pairs keeps each name's first value (later pairs overwrite
    earlier ones), and the size sums the lengths of every name and value.
    """
    return dict(reversed(headers)), sum(map(len, chain.from_iterable(headers)))


@dataclass(slots=True)
class _Trace:
    """What the pipeline learned before it stopped (mutable, one per request)."""

    principal: Principal | None = None
    operation: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    recipient: AttestedRecipient | None = None
    key: Key | None = None


CONTENT_TYPE_BYTES = CONTENT_TYPE.encode()

#: RFC 9562 version 4 (random) UUID bits, as ``uuid.uuid4()`` sets them: version nibble 4, variant 10.
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_UUID4_SET = (4 << 76) | (0x8000 << 48)


def new_request_id() -> str:
    """``str(uuid.uuid4())`` at about half the cost: 122 random bits from os.urandom, same text form."""
    n = int.from_bytes(os.urandom(16), "big") & _UUID4_CLEAR | _UUID4_SET
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class Service:
    """The KMS request pipeline over its state (credentials, policies, key stores, audit log)."""

    def __init__(
        self,
        *,
        principals: Watched[Mapping[str, Principal]],
        policies: Watched[IAMPolicies],
        operations: Operations,
        recipient_verifier: RecipientVerifier,
        audit: AuditLog | None,
        throttle: TokenBucket | None = None,
        faults: FaultInjector | None = None,
        fault_file: Watched[Mapping[str, int]] | None = None,
    ) -> None:
        self.principals = principals
        self.policies = policies
        self.operations = operations
        self.verify_recipient = recipient_verifier
        self.audit = audit
        self.throttle = throttle
        self.faults = faults
        #: The faults file (counts to arm, re-read as the policy is) and the value last armed from it.
        self.fault_file = fault_file
        self._armed: Mapping[str, int] | None = None

    def close(self) -> None:
        """Release the stores' database connections and the audit descriptor."""
        self.operations.close()
        if self.audit is not None:
            self.audit.close()

    def _arm_from_file(self, fault_file: Watched[Mapping[str, int]], tick: float) -> None:
        """Arm the counts of a newly loaded faults file (a first, empty one leaves ``--fault`` alone)."""
        armed = fault_file.get(tick)
        if armed is self._armed:
            return
        first = self._armed is None
        self._armed = armed
        if armed or not first:
            if self.faults is None:
                self.faults = FaultInjector({}, {})
            self.faults.arm(armed)

    def _pipeline(
        self,
        request: Request,
        first: Mapping[str, str],
        header_bytes: int,
        trace: _Trace,
        *,
        at: datetime,
        tick: float,
    ) -> dict[str, Any]:
        """Steps (1)-(9); fills ``trace`` as it learns who asked for what (for the audit record).

        ``first`` maps each header name to its first value, ``header_bytes`` is the section's size.
        """
        # (1) size
        if len(request.body) > MAX_REQUEST_BODY_BYTES:
            raise ValidationException(f"Request body is over the {MAX_REQUEST_BODY_BYTES}-byte limit")
        if header_bytes > MAX_REQUEST_HEADER_BYTES:
            raise ValidationException(f"Request headers are over the {MAX_REQUEST_HEADER_BYTES}-byte limit")
        # (2) authentication
        trace.principal = authenticate(
            request.method,
            request.path,
            request.query,
            request.headers,
            request.body,
            principals=self.principals.get(tick),
            at=at,
            first=first,
        )
        # (3) operation
        trace.operation = parse_target(first.get("x-amz-target"), OPERATIONS)
        # (4) rate
        if self.throttle is not None and not self.throttle.take(tick):
            raise ThrottlingException("Rate exceeded")
        # (5) members
        spec = OPERATIONS[trace.operation]
        trace.params = spec.members(decode_body(request.body))
        # (6) injected faults
        if self.fault_file is not None:
            self._arm_from_file(self.fault_file, tick)
        if self.faults is not None:
            self.faults.check()
        # (7) Recipient
        if "Recipient" in trace.params:
            trace.recipient = self.verify_recipient(trace.params["Recipient"]["AttestationDocument"], at)
        # (8) authorization, of the key the request acts on (if any) by its key policy too
        trace.key = spec.resolve(self.operations, trace.params, at)
        policies = self.policies.get(tick)
        if trace.key is None:
            context = condition_context(trace.recipient) if policies.conditional else _NO_CONTEXT
            policies.authorize(trace.principal, spec.action, context)
        else:
            key_conditions: Mapping[str, Any] = _NO_CONTEXT
            if reads_conditions(policies, trace.key):
                key_conditions = key_context(condition_context(trace.recipient), trace.params, trace.key)
            authorize_key(policies, trace.principal, spec.action, trace.key, key_conditions)
        if spec.also is not None:  # the other resources it affects (an alias, the key it named before)
            for other in spec.also(self.operations, trace.params, at):
                if isinstance(other, str):
                    context = condition_context(trace.recipient) if policies.conditional else _NO_CONTEXT
                    authorize_identity_on(policies, trace.principal, spec.action, context, other)
                    continue
                other_key, action = other if isinstance(other, tuple) else (other, spec.action)
                other_conditions = key_context(condition_context(trace.recipient), trace.params, other_key)
                authorize_key(policies, trace.principal, action, other_key, other_conditions)
        if (
            spec.checks_lockout
            and "Policy" in trace.params
            and not trace.params.get("BypassPolicyLockoutSafetyCheck")
        ):
            resource = trace.key.arn if trace.key is not None else None
            check_lockout(trace.params["Policy"], policies, trace.principal, resource)
        # (9) operation
        return spec.handler(self.operations, trace.params, trace.recipient, at, trace.key)

    def handle(self, request: Request, *, at: datetime, tick: float) -> Response:
        """Answer one request received at ``at`` (aware UTC; ``tick`` is a monotonic clock reading)."""
        trace = _Trace()
        error: KMSError | None = None
        first: Mapping[str, str] = {}
        result: dict[str, Any] | None = None  # the response members, for the record's responseElements
        try:
            first, header_bytes = _first_values(request.headers)
            result = self._pipeline(request, first, header_bytes, trace, at=at, tick=tick)
            body = encode_result(result)
        except KMSError as caught:
            error = caught
        except Exception as unexpected:  # a bug: answer 500 (SDKs retry), keep serving, say one line
            print(
                f"kms-sim: internal error in {trace.operation}: {type(unexpected).__name__}", file=sys.stderr
            )
            error = KMSInternalException("An internal error occurred.")
        status = 200
        if error is not None:
            status = error.status
            body = encode_error(error)
        request_id = new_request_id()
        if self.audit is not None:
            access_key, region = claimed_credential(first, request.query)
            self.audit.write_line(
                event_line(
                    at=at,
                    request_id=request_id,
                    operation=trace.operation or claimed_operation(first),
                    principal=trace.principal,
                    access_key=access_key,
                    region=region,
                    source_ip=request.source_ip,
                    user_agent=first.get("user-agent"),
                    params=trace.params,
                    recipient=trace.recipient,
                    error_code=error.code if error is not None else None,
                    error_message=error.message if error is not None else None,
                    key_arn=trace.key.arn if trace.key is not None else None,
                    result=result if error is None else None,
                )
            )
        headers = (
            (b"content-type", CONTENT_TYPE_BYTES),
            (b"x-amzn-requestid", request_id.encode()),
            (b"content-length", str(len(body)).encode()),
        )
        return Response(status=status, headers=headers, body=body)
