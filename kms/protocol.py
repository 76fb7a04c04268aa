"""awsJson1_1 as KMS speaks it, without I/O: target and body in, typed members or a KMSError out.

Rules (botocore kms service-2.json metadata and shapes; aws-facts §1):
- ``POST /`` with ``X-Amz-Target: TrentService.<Operation>``; the body is one JSON object (empty = ``{}``)
  in UTF-8 without a BOM, every string valid Unicode (no unpaired surrogate), else SerializationException.
- Members of the wrong JSON type are a SerializationException; values that break a model constraint
  (length, range, enum, pattern, required) are a ValidationException whose message lists every violation
  in AWS's form: ``1 validation error detected: Value '0' at 'numberOfBytes' failed to satisfy
  constraint: Member must have value greater than or equal to 1``. Unknown members are ignored, as AWS
  services do for forward compatibility.
- Model patterns are not implicitly anchored (Smithy ``@pattern``), so they are searched, not full-matched.
- Blobs are base64 in JSON; responses are ``application/x-amz-json-1.1``; errors are
  ``{"__type": Name, "message": text}``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kms.errors import KMSError, SerializationException, UnknownOperationException, ValidationException

__all__ = [
    "CONTENT_TYPE",
    "MAX_REQUEST_BODY_BYTES",
    "MAX_REQUEST_HEADER_BYTES",
    "TARGET_PREFIX",
    "Field",
    "decode_body",
    "encode_error",
    "encode_result",
    "parse_target",
    "validate",
]

TARGET_PREFIX = "TrentService."
CONTENT_TYPE = "application/x-amz-json-1.1"
#: Largest body we read: a 262144-byte AttestationDocument is ~350 KB as base64, plus the envelope.
MAX_REQUEST_BODY_BYTES = 400 * 1024
#: Largest header section we serve (names and values, summed): SigV4 with a session token needs ~3 KB;
#: more is refused (ValidationException, 400) before anything reads the headers.
MAX_REQUEST_HEADER_BYTES = 16 * 1024
#: Bound on the length of an X-Amz-Target value we echo in an error message.
MAX_TARGET_ECHO_CHARS = 128


@dataclass(frozen=True, slots=True, kw_only=True)
class Field:
    """One member of an input shape: its wire name, kind and model constraints."""

    name: str
    kind: str  # "string" | "integer" | "blob" | "boolean" | "structure" | "list" | "map"
    minimum: int | None = None
    maximum: int | None = None
    enum: tuple[str, ...] | None = None
    pattern: str | None = None
    required: bool = False
    sensitive: bool = False
    #: A structure's members; a list's one element spec; a map's key spec and value spec.
    members: tuple[Field, ...] = ()

    @property
    def path_name(self) -> str:
        """The member as AWS names it in validation messages (lowerCamelCase)."""
        return self.name[:1].lower() + self.name[1:]


def parse_target(value: str | None, operations: Mapping[str, object]) -> str:
    """The operation named by ``X-Amz-Target``, or UnknownOperationException."""
    if value is None or not value.startswith(TARGET_PREFIX):
        raise UnknownOperationException("Missing or malformed X-Amz-Target header")
    name = value[len(TARGET_PREFIX) :]
    if name not in operations:
        raise UnknownOperationException(f"Unknown operation {name[:MAX_TARGET_ECHO_CHARS]!r}")
    return name


def decode_body(body: bytes) -> dict[str, Any]:
    """The JSON object of a request body; SerializationException for anything else."""
    if len(body) > MAX_REQUEST_BODY_BYTES:
        raise ValidationException(f"Request body is over the {MAX_REQUEST_BODY_BYTES}-byte limit")
    if not body or body.isspace():  # the same ASCII whitespace bytes.strip() removes, without a copy
        return {}
    try:
        # Decoded strictly as UTF-8 here: json.loads(bytes) would also take UTF-16/32 and skip a UTF-8
        # BOM; given a str, it refuses the BOM ("Unexpected UTF-8 BOM"), as AWS's JSON parsing does.
        parsed = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise SerializationException("Malformed request body: not valid JSON") from None
    if not isinstance(parsed, dict):
        raise SerializationException("Request body must be a JSON object")
    # A lone surrogate can only come from a \u escape (paired ones decode to one character); such a
    # string is not Unicode text and cannot be stored or echoed (SQLite raised UnicodeEncodeError -> 500).
    # (A one-byte search is a memchr; the two-byte one scans ~20x slower, so look for the backslash first.)
    if b"\\" in body and b"\\u" in body:
        try:
            json.dumps(parsed, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise SerializationException(
                "Malformed request body: a string holds an unpaired surrogate (not valid UTF-8)"
            ) from None
    return parsed


_JSON_KIND = {bool: "BOOLEAN_VALUE", int: "NUMBER_VALUE", float: "NUMBER_VALUE", str: "STRING_VALUE"}


def _kind_of(value: object) -> str:
    if isinstance(value, dict):
        return "START_OBJECT"
    if isinstance(value, list):
        return "START_ARRAY"
    return _JSON_KIND.get(type(value), "VALUE")


_TARGET_NAMES = {
    "string": "String",
    "integer": "an Integer",
    "blob": "a Blob",
    "boolean": "a Boolean",
    "structure": "a Structure",
    "list": "a List",
    "map": "a Map",
}


def _convert(spec: Field, value: object, path: str, errors: list[str]) -> object:
    """Type-check one value (SerializationException) and collect constraint violations into ``errors``."""
    kind = spec.kind
    # One check per member, for its own kind only (this runs on every member of every request).
    if kind in ("string", "blob"):
        ok = isinstance(value, str)
    elif kind == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "boolean":
        ok = isinstance(value, bool)
    elif kind in ("structure", "map"):
        ok = isinstance(value, dict)
    elif kind == "list":
        ok = isinstance(value, list)
    else:
        raise KeyError(kind)
    if not ok:
        raise SerializationException(f"{_kind_of(value)} can not be converted to {_TARGET_NAMES[kind]}")
    if kind == "structure":
        assert isinstance(value, dict)
        return _members(spec.members, value, path + ".", errors)
    if kind in ("list", "map"):
        return _collection(spec, value, path, errors)
    converted: object = value
    if kind == "blob":
        assert isinstance(value, str)
        try:
            converted = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise SerializationException(f"'{path}' is not valid base64") from None
    if kind == "integer":
        assert isinstance(converted, int)
        if spec.minimum is not None and converted < spec.minimum:
            errors.append(
                _violation(
                    _shown(spec, value),
                    path,
                    f"Member must have value greater than or equal to {spec.minimum}",
                )
            )
        if spec.maximum is not None and converted > spec.maximum:
            errors.append(
                _violation(
                    _shown(spec, value), path, f"Member must have value less than or equal to {spec.maximum}"
                )
            )
    elif kind in ("string", "blob"):
        assert isinstance(converted, str | bytes)
        size = len(converted)
        if spec.minimum is not None and size < spec.minimum:
            errors.append(
                _violation(
                    _shown(spec, value),
                    path,
                    f"Member must have length greater than or equal to {spec.minimum}",
                )
            )
        if spec.maximum is not None and size > spec.maximum:
            errors.append(
                _violation(
                    _shown(spec, value), path, f"Member must have length less than or equal to {spec.maximum}"
                )
            )
        if spec.enum is not None and converted not in spec.enum:
            errors.append(
                _violation(
                    _shown(spec, value), path, f"Member must satisfy enum value set: [{', '.join(spec.enum)}]"
                )
            )
        # re.ASCII: the model's patterns are Java regexes, whose \d is [0-9] (Python's also takes "٣").
        if (
            spec.pattern is not None
            and isinstance(converted, str)
            and not re.search(spec.pattern, converted, re.ASCII)
        ):
            errors.append(
                _violation(
                    _shown(spec, value),
                    path,
                    f"Member must satisfy regular expression pattern: {spec.pattern}",
                )
            )
    return converted


def _collection(spec: Field, value: object, path: str, errors: list[str]) -> object:
    """A list's elements or a map's entries, each converted by its spec; the count bounded like a length."""
    assert isinstance(value, list | dict)
    if spec.minimum is not None and len(value) < spec.minimum:
        errors.append(
            _violation(
                _shown(spec, value), path, f"Member must have length greater than or equal to {spec.minimum}"
            )
        )
    if spec.maximum is not None and len(value) > spec.maximum:
        errors.append(
            _violation(
                _shown(spec, value), path, f"Member must have length less than or equal to {spec.maximum}"
            )
        )
    if isinstance(value, list):
        (element,) = spec.members
        return [_convert(element, item, f"{path}.{n}.member", errors) for n, item in enumerate(value, 1)]
    key_spec, value_spec = spec.members
    return {
        _convert(key_spec, key, f"{path}.{key}.key", errors): _convert(
            value_spec, item, f"{path}.{key}.value", errors
        )
        for key, item in value.items()
    }


def _shown(spec: Field, value: object) -> str:
    """A value as a validation message may echo it (built only when there is a violation to report)."""
    return "*** Sensitive Data Redacted ***" if spec.kind == "blob" or spec.sensitive else str(value)


def _violation(shown: str, path: str, constraint: str) -> str:
    return f"Value '{shown[:MAX_TARGET_ECHO_CHARS]}' at '{path}' failed to satisfy constraint: {constraint}"


def _members(
    specs: tuple[Field, ...], raw: Mapping[str, object], prefix: str, errors: list[str]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for spec in specs:
        path = prefix + spec.path_name
        value = raw.get(spec.name)
        if value is None:
            if spec.required:
                errors.append(f"Value null at '{path}' failed to satisfy constraint: Member must not be null")
            continue
        out[spec.name] = _convert(spec, value, path, errors)
    return out


def validate(specs: tuple[Field, ...], raw: Mapping[str, object]) -> dict[str, Any]:
    """The typed members of ``raw`` per ``specs`` (blobs decoded); KMSError on any violation."""
    errors: list[str] = []
    out = _members(specs, raw, "", errors)
    if errors:
        count = len(errors)
        noun = "error" if count == 1 else "errors"
        raise ValidationException(f"{count} validation {noun} detected: " + "; ".join(errors))
    return out


def _json_default(value: object) -> object:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


#: Reused per response (``json.dumps`` with options builds a new encoder per call); same output as
#: ``json.dumps(value, default=_json_default, separators=(",", ":"))``.
_RESULT_ENCODER = json.JSONEncoder(default=_json_default, separators=(",", ":"))
_ERROR_ENCODER = json.JSONEncoder(separators=(",", ":"))


#: The C function the encoder quotes strings with (``ensure_ascii``): the same text, called directly.
_QUOTE = json.encoder.encode_basestring_ascii


def encode_result(result: Mapping[str, object]) -> bytes:
    """A success body: JSON with bytes as base64 (None members omitted, as AWS does)."""
    if len(result) == 1:  # GenerateRandom's one blob: the bytes the encoder would give, without it
        ((name, value),) = result.items()
        if type(value) is bytes and name.isascii() and name.isalnum():  # a name JSON leaves as is
            return b'{"%s":"%s"}' % (name.encode(), base64.b64encode(value))
    # The usual answer (Decrypt's and the data-key operations': strings and blobs) quoted member by
    # member, as the encoder quotes them; any other value type goes to the encoder.
    parts = []
    for name, value in result.items():
        if value is None:
            continue
        if type(name) is not str:
            break
        if type(value) is bytes:
            parts.append(f'{_QUOTE(name)}:"{binascii.b2a_base64(value, newline=False).decode()}"')
        elif type(value) is str:
            parts.append(f"{_QUOTE(name)}:{_QUOTE(value)}")
        else:
            break
    else:
        return ("{" + ",".join(parts) + "}").encode()
    present = {k: v for k, v in result.items() if v is not None}
    return _RESULT_ENCODER.encode(present).encode()


def encode_error(error: KMSError) -> bytes:
    """An error body: ``{"__type": Name, "message": text}`` (botocore reads ``__type``)."""
    return _ERROR_ENCODER.encode({"__type": error.code, "message": error.message}).encode()
