"""The audit log: one CloudTrail-shaped JSON event per request, appended to ``kms/audit.jsonl``.

Shape (CloudTrail record fields in the order KMS's examples show them: KMS developer guide, "Examples of
AWS KMS log entries" and "Monitoring requests for Nitro enclaves"): eventVersion, userIdentity (type,
principalId, arn, accountId, accessKeyId, userName), eventTime, eventSource, eventName, awsRegion,
sourceIPAddress, userAgent, requestParameters (what the request sent, with the values it left to their
defaults where KMS's examples show them, never its Recipient, and null for GenerateRandom: see
:func:`request_parameters`), responseElements (null but for CreateKey, ScheduleKeyDeletion and
CancelKeyDeletion: see :func:`response_elements`), for an attested call ``additionalEventData.recipient``
(the module ID, the image digest (PCR0) and PCRs 1, 2, 3, 4 and 8: :data:`RECORDED_PCRS`), requestID,
eventID, readOnly (true for Describe*, List*, Get*, GenerateRandom and the cryptographic operations, as
KMS's records show), resources (a request on a KMS key: ``[{"accountId", "type": "AWS::KMS::Key",
"ARN"}]``; ``[]`` for GenerateRandom, ListAliases and ListKeys, which use none), eventType,
managementEvent (true: every KMS call is a management event), recipientAccountId, and
errorCode/errorMessage on failure.

Never logged: plaintext, ciphertext, public keys, key material, CiphertextForRecipient, the attestation
document, passwords, secrets, session tokens, signatures: every blob (bytes) member is dropped, at any
depth, not a list of names. A request refused before it was authenticated is recorded with what it
claimed (the operation its ``X-Amz-Target`` names, the access key and region of its credential scope),
and so is one the HTTP shell refused before the service saw it (:func:`refused_line`: a head over its
bound, a request not received whole in time).
Cheap and safe across worker processes: one ``os.write`` of one line on an ``O_APPEND`` descriptor.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from kms._op import AttestedRecipient
from kms.operations import OPERATIONS
from kms.state import ACCOUNT_ID, DEFAULT_REGION, Principal

__all__ = [
    "CLOUDTRAIL_MONTHS",
    "MAX_AUDIT_ACCESS_KEY_CHARS",
    "MAX_AUDIT_REGION_CHARS",
    "MAX_AUDIT_USER_AGENT_CHARS",
    "MAX_QUERY_SCAN_CHARS",
    "RECORDED_PCRS",
    "AuditLog",
    "claimed_credential",
    "claimed_operation",
    "event",
    "event_line",
    "refused_line",
    "request_parameters",
    "response_elements",
]

#: Bounds on what an unauthenticated caller controls in a record (truncated to these): CloudTrail's
#: userAgent, a region name (the longest real one is 14 characters) and an access key ID (at most 128).
MAX_AUDIT_USER_AGENT_CHARS = 1024
MAX_AUDIT_REGION_CHARS = 64
MAX_AUDIT_ACCESS_KEY_CHARS = 128

#: Request members never copied into requestParameters: secrets and large blobs, and the Recipient (no
#: enclave example in "Monitoring requests for Nitro enclaves" shows it in requestParameters; what KMS
#: records of it is ``additionalEventData.recipient``, from the verified document).
_REDACTED = frozenset(
    {"KeyStorePassword", "XksProxyAuthenticationCredential", "TrustAnchorCertificate", "Recipient"}
)

#: Operations whose requestParameters are null whatever the request sent: ct-generaterandom.md and the
#: GenerateRandom enclave example both show ``"requestParameters": null`` (NumberOfBytes is not logged).
_NO_PARAMETERS = frozenset({"GenerateRandom"})

#: Operations that use no KMS key, whose records have ``"resources": []`` unless the request named one:
#: ct-generaterandom.md ("Because this operation doesn't use an AWS KMS key, the resources field is
#: empty", and so its enclave example) and ct-listaliases.md (the same words); ListKeys, which uses no key
#: either, follows them. The custom key store operations' examples (ct-describe-keystores.md, ...) have no
#: resources member, and neither do their records.
_KEYLESS = frozenset({"GenerateRandom", "ListAliases", "ListKeys"})


def _camel(name: str) -> str:
    return name[:1].lower() + name[1:]


def _event_time(at: datetime) -> str:
    """``at.strftime("%Y-%m-%dT%H:%M:%SZ")`` at a fifth of the cost (``at`` is aware UTC)."""
    return f"{at.year:04d}-{at.month:02d}-{at.day:02d}T{at.hour:02d}:{at.minute:02d}:{at.second:02d}Z"


#: Operations whose records say ``readOnly: true`` beyond Describe*, List* and Get* (KMS developer guide,
#: "Examples of AWS KMS log entries": Encrypt, Decrypt, GenerateDataKey... are read-only calls).
_READ_ONLY = frozenset(
    {
        "GenerateRandom",
        "Encrypt",
        "Decrypt",
        "ReEncrypt",
        "GenerateDataKey",
        "GenerateDataKeyWithoutPlaintext",
        "GenerateDataKeyPair",
        "GenerateDataKeyPairWithoutPlaintext",
        "DeriveSharedSecret",
    }
)


def read_only(operation: str | None) -> bool:
    return operation is not None and (
        operation in _READ_ONLY or operation.startswith(("Describe", "List", "Get"))
    )


def _without_blobs(value: Any) -> Any:
    """``value`` with every bytes member of a nested structure, map or list dropped."""
    if isinstance(value, dict):
        return {k: _without_blobs(v) for k, v in value.items() if not isinstance(v, bytes)}
    if isinstance(value, list):
        return [_without_blobs(v) for v in value if not isinstance(v, bytes)]
    return value


#: The default of every EncryptionAlgorithm member (Encrypt, Decrypt, ReEncrypt's source and destination).
_SYMMETRIC_DEFAULT = "SYMMETRIC_DEFAULT"


def _create_key_defaults(params: Mapping[str, Any], out: dict[str, Any], key_arn: str | None) -> None:
    """ct-createkey.md (each of its three examples): description "", bypassPolicyLockoutSafetyCheck false,
    keySpec and customerMasterKeySpec (both the spec used) and keyUsage, whatever the request left out.
    No keyUsage default for a key that is not SYMMETRIC_DEFAULT: that request is refused without one."""
    spec = params.get("KeySpec", params.get("CustomerMasterKeySpec", _SYMMETRIC_DEFAULT))
    out.setdefault("description", "")
    out.setdefault("bypassPolicyLockoutSafetyCheck", False)
    out.setdefault("keySpec", spec)
    out.setdefault("customerMasterKeySpec", spec)
    if spec == _SYMMETRIC_DEFAULT:
        out.setdefault("keyUsage", "ENCRYPT_DECRYPT")


def _encrypt_defaults(params: Mapping[str, Any], out: dict[str, Any], key_arn: str | None) -> None:
    """ct-encrypt.md: encryptionAlgorithm "SYMMETRIC_DEFAULT". keyId stays as sent: the ACM user guide's
    Encrypt record keeps the alias ARN its caller named (the key's ARN is in ``resources``)."""
    out.setdefault("encryptionAlgorithm", _SYMMETRIC_DEFAULT)


def _decrypt_defaults(params: Mapping[str, Any], out: dict[str, Any], key_arn: str | None) -> None:
    """ct-decrypt.md and ct-decrypt-enclave.md: encryptionAlgorithm "SYMMETRIC_DEFAULT" and keyId the ARN of
    the key that decrypted (a symmetric Decrypt need not name it; the examples show the ARN every time)."""
    out.setdefault("encryptionAlgorithm", _SYMMETRIC_DEFAULT)
    if key_arn is not None:
        out["keyId"] = key_arn


def _reencrypt_defaults(params: Mapping[str, Any], out: dict[str, Any], key_arn: str | None) -> None:
    """ct-reencrypt.md: sourceEncryptionAlgorithm and destinationEncryptionAlgorithm "SYMMETRIC_DEFAULT"."""
    out.setdefault("sourceEncryptionAlgorithm", _SYMMETRIC_DEFAULT)
    out.setdefault("destinationEncryptionAlgorithm", _SYMMETRIC_DEFAULT)


def _put_key_policy_defaults(params: Mapping[str, Any], out: dict[str, Any], key_arn: str | None) -> None:
    """ct-put-key-policy.md: policyName "default" and bypassPolicyLockoutSafetyCheck false."""
    out.setdefault("policyName", "default")
    out.setdefault("bypassPolicyLockoutSafetyCheck", False)


def _get_key_policy_defaults(params: Mapping[str, Any], out: dict[str, Any], key_arn: str | None) -> None:
    """ct-getkeypolicy.md: policyName "default" (the one policy name; PolicyName is optional since 2023)."""
    out.setdefault("policyName", "default")


#: Per operation, the members KMS's CloudTrail examples (KMS developer guide, "Examples of AWS KMS log
#: entries": the ct-*.md page named in each rule) record with the value used when the request left them
#: out. The other operations' examples show the members as sent (GenerateDataKey's keyId and keySpec,
#: ScheduleKeyDeletion's keyId, the alias operations'), and so do their records here.
_DEFAULTS: Mapping[str, Callable[[Mapping[str, Any], dict[str, Any], str | None], None]] = {
    "CreateKey": _create_key_defaults,
    "Encrypt": _encrypt_defaults,
    "Decrypt": _decrypt_defaults,
    "ReEncrypt": _reencrypt_defaults,
    "PutKeyPolicy": _put_key_policy_defaults,
    "GetKeyPolicy": _get_key_policy_defaults,
}


def request_parameters(
    params: Mapping[str, Any], operation: str | None = None, key_arn: str | None = None
) -> dict[str, Any] | None:
    """requestParameters as CloudTrail shows them: lowerCamel names, no secrets, no Recipient, no bytes at
    any depth, and for the operations of :data:`_DEFAULTS` the values used where the request left them
    out; None (JSON null) for the operations of :data:`_NO_PARAMETERS` and for a request that sent none.

    A function of ``params``, ``operation`` and ``key_arn`` alone (the template key of :func:`event_line`
    holds all three)."""
    if operation in _NO_PARAMETERS:
        return None
    out: dict[str, Any] = {}
    for name, value in params.items():
        # Blobs (Plaintext, CiphertextBlob, PublicKey, ...) are never logged: CloudTrail shows none of them.
        if name in _REDACTED or isinstance(value, bytes):
            continue
        if isinstance(value, dict | list):
            out[_camel(name)] = _without_blobs(value)
        else:
            out[_camel(name)] = value
    defaults = _DEFAULTS.get(operation) if operation is not None else None
    if defaults is not None:
        defaults(params, out, key_arn)
    return out or None


#: CloudTrail's month abbreviations (its dates are Java's medium US form: "Aug 10, 2022, 10:38:27 PM").
CLOUDTRAIL_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _trail_date(epoch: float) -> str:
    """A date in responseElements as KMS's examples print it (UTC), e.g. ``Nov 2, 2021, 11:25:25 PM``
    (ct-createkey.md creationDate, ct-schedule-key-deletion.md deletionDate); never the locale's."""
    at = datetime.fromtimestamp(epoch, UTC)
    hour = at.hour % 12 or 12
    half = "AM" if at.hour < 12 else "PM"
    month = CLOUDTRAIL_MONTHS[at.month - 1]
    return f"{month} {at.day}, {at.year}, {hour}:{at.minute:02d}:{at.second:02d} {half}"


#: KeyMetadata members that are dates (epoch seconds in the answer, :func:`_trail_date` in the record).
_DATE_MEMBERS = frozenset({"CreationDate", "DeletionDate", "ValidTo"})


def _create_key_response(result: Mapping[str, Any]) -> dict[str, Any]:
    """ct-createkey.md: ``keyMetadata`` with each member's lowerCamel name, as two of its three examples
    spell AWSAccountId too (``aWSAccountId``), and creationDate as a CloudTrail date."""
    metadata = {
        _camel(name): _trail_date(value) if name in _DATE_MEMBERS else value
        for name, value in result["KeyMetadata"].items()
    }
    return {"keyMetadata": _without_blobs(metadata)}


def _schedule_deletion_response(result: Mapping[str, Any]) -> dict[str, Any]:
    """ct-schedule-key-deletion.md (the custom key store example, the one with every member): keyId (the
    ARN), deletionDate, keyState, pendingWindowInDays."""
    return {
        "keyId": result["KeyId"],
        "deletionDate": _trail_date(result["DeletionDate"]),
        "keyState": result["KeyState"],
        "pendingWindowInDays": result["PendingWindowInDays"],
    }


def _cancel_deletion_response(result: Mapping[str, Any]) -> dict[str, Any]:
    """ct-cancel-key-deletion.md: keyId, the key's ARN."""
    return {"keyId": result["KeyId"]}


#: The operations whose records show response data, each with the members its examples show (picked
#: by name: nothing else of an answer, and never a blob, reaches a record). Every other operation's
#: examples (GenerateRandom, Encrypt, Decrypt, GenerateDataKey*, ReEncrypt, DescribeKey, ListAliases,
#: GetKeyPolicy, PutKeyPolicy, CreateAlias, UpdateAlias, DeleteAlias, EnableKey, DisableKey) have
#: ``responseElements: null``: KMS logs no key material, plaintext, ciphertext or policy text it returns.
_RESPONSES: Mapping[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "CreateKey": _create_key_response,
    "ScheduleKeyDeletion": _schedule_deletion_response,
    "CancelKeyDeletion": _cancel_deletion_response,
}


def response_elements(operation: str | None, result: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """responseElements of a request that succeeded with ``result`` (its response members), else None."""
    if result is None or operation is None:
        return None
    build = _RESPONSES.get(operation)
    return None if build is None else build(result)


#: Bound on the cache of recipient records (entries: a module ID and up to 6 PCRs as base64, ~0.6 KB).
RECIPIENT_DATA_CACHE_SIZE = 256

#: An enclave sends the same module ID and PCRs on every call, each time in a new document: their
#: record is built once per distinct (module ID, PCRs) and copied per request (exact content keys).
_RECIPIENT_DATA: dict[tuple[object, ...], dict[str, str]] = {}

#: One encoder for every line (``json.dumps`` with these options builds a new one per call); the
#: output is the same as ``json.dumps(record, separators=(",", ":"), default=str)``.
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)


#: The same records as JSON text (what :func:`event_line` splices in), under the same keys and bound.
_RECIPIENT_JSON: dict[tuple[object, ...], str] = {}


def recipient_data(recipient: AttestedRecipient) -> dict[str, str]:
    key = (recipient.module_id, *recipient.pcrs.items())
    known = _RECIPIENT_DATA.get(key)
    if known is None:
        known = _recipient_data(recipient)
        _RECIPIENT_DATA[key] = known
        if len(_RECIPIENT_DATA) > RECIPIENT_DATA_CACHE_SIZE:
            del _RECIPIENT_DATA[next(iter(_RECIPIENT_DATA))]
    return dict(known)


#: The last recipient and its JSON: kms.recipient hands an enclave's calls the same recipient object.
_LAST_RECIPIENT_JSON: tuple[AttestedRecipient | None, str] = (None, "")


def _recipient_json(recipient: AttestedRecipient) -> str:
    global _LAST_RECIPIENT_JSON  # noqa: PLW0603 - a one-entry cache (one tuple, replaced whole)
    last, text = _LAST_RECIPIENT_JSON
    if recipient is last:  # a frozen object, kept alive by the entry: same content
        return text
    text = _recipient_json_by_content(recipient)
    _LAST_RECIPIENT_JSON = (recipient, text)
    return text


def _recipient_json_by_content(recipient: AttestedRecipient) -> str:
    key = (recipient.module_id, *recipient.pcrs.items())
    known = _RECIPIENT_JSON.get(key)
    if known is None:
        known = _ENCODER.encode(_recipient_data(recipient))
        _RECIPIENT_JSON[key] = known
        if len(_RECIPIENT_JSON) > RECIPIENT_DATA_CACHE_SIZE:
            del _RECIPIENT_JSON[next(iter(_RECIPIENT_JSON))]
    return known


#: The PCRs a record names besides PCR0 (which it names as the image digest), in this order: every
#: example of "Monitoring requests for Nitro enclaves" lists attestationDocumentEnclavePCR1, 2, 3, 4 and 8
#: after attestationDocumentEnclaveImageDigest, and no PCR0 member; the other PCRs are not recorded.
RECORDED_PCRS = (1, 2, 3, 4, 8)


def _recipient_data(recipient: AttestedRecipient) -> dict[str, str]:
    """The examples' members, in their order; a PCR the document does not have is left out.

    Values are base64, as CloudTrail shows KMS's binary fields: a record captured from the real service
    reads ``"attestationDocumentEnclaveImageDigest": "T37s...7ToS"``, ``"attestationDocumentEnclavePCR1":
    "O0p+...l00D"`` and a zero PCR8 as ``"AAAA...AAAA"``; the developer guide's example shows hex there, an
    illustration. (Key-policy conditions compare hex: ``kms:RecipientAttestation:*`` values, kms.service.)
    """
    data = {
        "attestationDocumentModuleId": recipient.module_id,
        "attestationDocumentEnclaveImageDigest": base64.b64encode(recipient.pcrs.get(0, b"")).decode(),
    }
    for index in RECORDED_PCRS:
        value = recipient.pcrs.get(index)
        if value is not None:
            data[f"attestationDocumentEnclavePCR{index}"] = base64.b64encode(value).decode()
    return data


def event(
    *,
    at: datetime,
    request_id: str,
    operation: str | None,
    principal: Principal | None,
    access_key: str | None,
    region: str,
    source_ip: str,
    user_agent: str | None,
    params: Mapping[str, Any],
    recipient: AttestedRecipient | None,
    error_code: str | None,
    error_message: str | None,
    key_arn: str | None = None,
    result: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One CloudTrail-shaped record (caller-controlled strings truncated to the MAX_AUDIT_* bounds);
    ``result`` is a successful request's response members (:func:`response_elements`)."""
    return _record(
        at=at,
        request_id=request_id,
        operation=operation,
        principal=principal,
        access_key=access_key,
        region=region,
        source_ip=source_ip,
        user_agent=user_agent,
        params=params,
        recipient=None if recipient is None else recipient_data(recipient),
        error_code=error_code,
        error_message=error_message,
        key_arn=key_arn,
        result=result,
    )


def _record(
    *,
    at: datetime,
    request_id: str,
    operation: str | None,
    principal: Principal | None,
    access_key: str | None,
    region: str,
    source_ip: str,
    user_agent: str | None,
    params: Mapping[str, Any],
    recipient: object,
    error_code: str | None,
    error_message: str | None,
    key_arn: str | None,
    result: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """:func:`event` with ``additionalEventData.recipient`` given as it is to appear (None: no member), so
    that :func:`event_line` can put a stand-in there."""
    region = region[:MAX_AUDIT_REGION_CHARS]
    if user_agent is not None:
        user_agent = user_agent[:MAX_AUDIT_USER_AGENT_CHARS]
    if access_key is not None:
        access_key = access_key[:MAX_AUDIT_ACCESS_KEY_CHARS]
    if key_arn is None and operation == "CreateKey" and result is not None:
        key_arn = result["KeyMetadata"]["Arn"]  # ct-createkey.md: the new key is the record's resource
    identity: dict[str, Any]
    if principal is not None:
        identity = {
            "type": "IAMUser",
            "principalId": principal.principal_id,
            "arn": principal.arn,
            "accountId": ACCOUNT_ID,
            "accessKeyId": principal.access_key,
            "userName": principal.name,
        }
    else:  # unauthenticated: CloudTrail records what the caller claimed
        identity = {"type": "Unknown", "accessKeyId": access_key}
    record: dict[str, Any] = {
        "eventVersion": "1.08",
        "userIdentity": identity,
        "eventTime": _event_time(at),
        "eventSource": "kms.amazonaws.com",
        "eventName": operation,
        "awsRegion": region,
        "sourceIPAddress": source_ip,
        "userAgent": user_agent,
        "requestParameters": request_parameters(params, operation, key_arn),
        "responseElements": response_elements(operation, result),
    }
    if recipient is not None:  # after responseElements, as in every enclave example
        record["additionalEventData"] = {"recipient": recipient}
    record |= {"requestID": request_id, "eventID": request_id, "readOnly": read_only(operation)}
    if key_arn is not None:
        record["resources"] = [{"accountId": ACCOUNT_ID, "type": "AWS::KMS::Key", "ARN": key_arn}]
    elif operation in _KEYLESS:
        record["resources"] = []
    record |= {
        # CloudTrail counts every KMS call as a management event (its ExcludeManagementEventSources
        # setting names KMS as a management event source); ct-describe-keystores.md shows true.
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": ACCOUNT_ID,
    }
    if error_code is not None:
        record["errorCode"] = error_code
        record["errorMessage"] = error_message
    return record


#: Bound on the cache of record templates (entries: the JSON text of one record cut in four or five, ~1 KB).
AUDIT_TEMPLATE_CACHE_SIZE = 256
#: Stand-ins for the per-request values of a record (eventTime, requestID/eventID, the recipient part of
#: an attested call), and their JSON (the recipient's with its quotes: an object takes its place).
_TIME_MARK = "\x00time\x00"
_ID_MARK = "\x00id\x00"
_RECIPIENT_MARK = "\x00recipient\x00"
_TIME_JSON = _ENCODER.encode(_TIME_MARK)[1:-1]
_ID_JSON = _ENCODER.encode(_ID_MARK)[1:-1]
_RECIPIENT_JSON_MARK = _ENCODER.encode(_RECIPIENT_MARK)
#: JSON-neutral request IDs (``new_request_id``'s form): their JSON text is themselves.
_PLAIN_ID = re.compile(r"[0-9A-Za-z-]{1,64}")
#: Record texts by everything but time, request ID and recipient: the pieces around those values (four
#: without a recipient, five with one), or None where a caller-controlled string held a stand-in (then
#: the record is encoded whole).
_TEMPLATES: dict[tuple[object, ...], tuple[str, ...] | None] = {}


def _params_key(params: Mapping[str, Any], operation: str | None) -> tuple[object, ...] | None:
    """What :func:`request_parameters` of ``params`` depends on, hashable; None if not plain scalars.

    Types are part of the key (``1``, ``1.0`` and ``True`` are equal keys but different JSON).
    """
    if operation in _NO_PARAMETERS:
        return ()  # null whatever was sent
    key: list[object] = []
    for name, value in params.items():
        # Blobs (Plaintext, CiphertextBlob, PublicKey, ...) are never logged: CloudTrail shows none of them.
        if name in _REDACTED or isinstance(value, bytes):
            continue
        if type(value) in (int, str, bool) or value is None:
            key.append((name, type(value), value))
        elif type(value) is dict and all(type(k) is str and type(v) is str for k, v in value.items()):
            key.append((name, dict, tuple(value.items())))  # an EncryptionContext: its pairs in order
        else:
            return None
    return tuple(key)


def _template(key: tuple[object, ...], record: dict[str, Any], attested: bool) -> tuple[str, ...] | None:
    """The record's JSON cut at the stand-ins (``record`` holds them), cached under ``key``.

    Cut only where each stand-in occurs once (the time, the recipient) or twice (the ID) in the whole
    text: then every occurrence is the record's own, in the record's order (time, recipient, ID, ID).
    """
    text = _ENCODER.encode(record)
    pieces: tuple[str, ...] | None = None
    if (
        text.count(_TIME_JSON) == 1
        and text.count(_ID_JSON) == 2
        and text.count(_RECIPIENT_JSON_MARK) == (1 if attested else 0)
    ):
        head, rest = text.split(_TIME_JSON)
        if attested:
            before, rest = rest.split(_RECIPIENT_JSON_MARK)
            middle = rest.split(_ID_JSON)
            pieces = (head, before, middle[0], middle[1], middle[2])
        else:
            middle = rest.split(_ID_JSON)
            pieces = (head, middle[0], middle[1], middle[2])
    _TEMPLATES[key] = pieces
    if len(_TEMPLATES) > AUDIT_TEMPLATE_CACHE_SIZE:
        del _TEMPLATES[next(iter(_TEMPLATES))]
    return pieces


def event_line(
    *,
    at: datetime,
    request_id: str,
    operation: str | None,
    principal: Principal | None,
    access_key: str | None,
    region: str,
    source_ip: str,
    user_agent: str | None,
    params: Mapping[str, Any],
    recipient: AttestedRecipient | None,
    error_code: str | None,
    error_message: str | None,
    key_arn: str | None = None,
    result: Mapping[str, Any] | None = None,
) -> str:
    """``event(...)`` as one JSON line's text (no newline), exactly as :meth:`AuditLog.write` encodes it.

    Two splices (tests/kms/test_audit.py compares the result with encoding the record, on any input):

    - A client's records differ only in time, request ID and recipient, so the rest of the text is kept as
      a template (bounded, keyed by every other input, exact values and types, and whether the call was
      attested) and those values are put in; the time (``YYYY-MM-DDTHH:MM:SSZ``) and an ID of letters,
      digits and ``-`` are their own JSON.
    - A recipient's part (module ID and the recorded PCRs in base64: most of an attested call's record) is
      the same for every call of an enclave: its JSON text is made once, and goes in after
      responseElements.

    A record with response elements (a new key's metadata, a deletion date: different every time) is
    encoded whole, never kept as a template.
    """
    fields: dict[str, Any] = {
        "at": at,
        "operation": operation,
        "principal": principal,
        "access_key": access_key,
        "region": region,
        "source_ip": source_ip,
        "user_agent": user_agent,
        "params": params,
        "error_code": error_code,
        "error_message": error_message,
        "key_arn": key_arn,
        "result": result,
    }
    pieces = None
    if result is None or operation not in _RESPONSES:
        params_key = _params_key(params, operation) if _PLAIN_ID.fullmatch(request_id) else None
        if params_key is not None:
            key: tuple[object, ...] = (
                operation,
                principal,
                access_key,
                region,
                source_ip,
                user_agent,
                params_key,
                error_code,
                error_message,
                key_arn,
                recipient is None,
            )
            if key in _TEMPLATES:
                pieces = _TEMPLATES[key]
            else:
                marked = _record(
                    request_id=_ID_MARK, recipient=None if recipient is None else _RECIPIENT_MARK, **fields
                )
                marked["eventTime"] = _TIME_MARK
                pieces = _template(key, marked, recipient is not None)
    if pieces is None:
        data = None if recipient is None else recipient_data(recipient)
        return _ENCODER.encode(_record(request_id=request_id, recipient=data, **fields))
    time = _event_time(at)
    if recipient is None:
        return f"{pieces[0]}{time}{pieces[1]}{request_id}{pieces[2]}{request_id}{pieces[3]}"
    part = _recipient_json(recipient)
    return f"{pieces[0]}{time}{pieces[1]}{part}{pieces[2]}{request_id}{pieces[3]}{request_id}{pieces[4]}"


def claimed_operation(first: Mapping[str, str]) -> str | None:
    """The operation a request names, for the record of a request refused before its target was read."""
    target = first.get("x-amz-target") or ""
    name = target.removeprefix("TrentService.")
    return name if target.startswith("TrentService.") and name in OPERATIONS else None


#: How much of a query string :func:`claimed_credential` reads (the verifier reads no more either).
MAX_QUERY_SCAN_CHARS = 16 * 1024


def _query_credential(query: str) -> str:
    """The decoded ``X-Amz-Credential`` of a presigned request's query, or ""."""
    for item in query.split("&"):
        name, _, value = item.partition("=")
        if unquote(name) == "X-Amz-Credential":
            return unquote(value)
    return ""


def claimed_credential(first: Mapping[str, str], query: str = "") -> tuple[str | None, str]:
    """The access key and scope region a request claims, for the record (authenticated or not).

    From the ``Authorization`` header (the text after ``Credential=`` up to the next ``,``) or else a
    presigned query's ``X-Amz-Credential``: the access key is the part before the first ``/`` (truncated to
    the record's bound), the region the third ``/`` part of a five-part credential.
    """
    value = first.get("authorization") or ""
    start = value.find("Credential=")
    if start >= 0:
        credential = value[start + len("Credential=") :].split(",", 1)[0]
    elif "X-Amz-Credential" in query or "%" in query:
        credential = _query_credential(query[:MAX_QUERY_SCAN_CHARS])
    else:
        return None, DEFAULT_REGION
    access_key = credential.split("/", 1)[0][:MAX_AUDIT_ACCESS_KEY_CHARS] or None
    parts = credential.split("/")
    return access_key, parts[2] if len(parts) == 5 and parts[2] else DEFAULT_REGION


def refused_line(
    *,
    at: datetime,
    request_id: str,
    headers: Iterable[tuple[bytes, bytes]],
    target: bytes,
    source_ip: str,
    error_code: str,
    error_message: str,
) -> str:
    """The record of a request the HTTP shell refused before the service saw it (:func:`event_line`).

    ``headers`` are the (lower-case name, value) fields received so far, ``target`` the request target
    (path and query) so far: the record names what they claim, as for any unauthenticated request.
    """
    first: dict[str, str] = {}
    for name, value in headers:
        first.setdefault(name.decode("latin-1"), value.decode("latin-1"))
    access_key, region = claimed_credential(first, target.partition(b"?")[2].decode("latin-1"))
    return event_line(
        at=at,
        request_id=request_id,
        operation=claimed_operation(first),
        principal=None,
        access_key=access_key,
        region=region,
        source_ip=source_ip,
        user_agent=first.get("user-agent"),
        params={},
        recipient=None,
        error_code=error_code,
        error_message=error_message,
    )


class AuditLog:
    """An append-only JSON-lines file.

    A record that cannot be written (a full disk, an I/O error) does not fail the request: KMS serves
    while CloudTrail delivery lags, and so does the simulation. But the loss is never silent and never
    floods stderr: the first failure says that records are being lost, and the next record that is
    written says how many were. A partial write leaves a fragment without its newline; the next record
    starts on a fresh line, so one torn record never spoils the one after it.
    """

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._lost = 0  # records lost since the log last took one whole
        self._torn = False  # the last write left a fragment without its newline

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one record (see the class for what a failing disk does)."""
        self.write_line(_ENCODER.encode(record))

    def write_line(self, line: str) -> None:
        """Append one line of already encoded JSON (from :func:`event_line`)."""
        data = ("\n" if self._torn else "") + line + "\n"
        encoded = data.encode()
        try:
            written = os.write(self._fd, encoded)
        except OSError as error:
            self._lose(error.strerror or type(error).__name__)
            return
        if written < len(encoded):
            self._torn = True
            self._lose("a partial write (the disk is full?)")
            return
        self._torn = False
        if self._lost:
            print(
                f"kms-sim: the audit log is writable again; {self._lost} record(s) were lost",
                file=sys.stderr,
            )
            self._lost = 0

    def _lose(self, reason: str) -> None:
        if not self._lost:
            print(
                f"kms-sim: cannot write the audit log ({reason}); records are lost until it can",
                file=sys.stderr,
            )
        self._lost += 1

    def close(self) -> None:
        os.close(self._fd)
