"""awsJson1_1 codec: targets, bodies, model validation messages (pure functions, no server)."""

from __future__ import annotations

import base64
import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kms.crypto_ops import DECRYPT_FIELDS, plain_decrypt
from kms.errors import KMSError, SerializationException, UnknownOperationException, ValidationException
from kms.operations import GENERATE_RANDOM_FIELDS, OPERATIONS, plain_generate_random
from kms.protocol import (
    decode_body,
    encode_error,
    encode_result,
    parse_target,
    validate,
)


def test_parse_target() -> None:
    assert parse_target("TrentService.GenerateRandom", OPERATIONS) == "GenerateRandom"
    for bad in (None, "", "GenerateRandom", "TrentService.Sign", "trentservice.GenerateRandom"):
        with pytest.raises(UnknownOperationException):
            parse_target(bad, OPERATIONS)


def test_decode_body() -> None:
    assert decode_body(b"") == {}
    assert decode_body(b" \t\r\n\x0b\x0c") == {}
    assert decode_body(b'  {"a": 1} ') == {"a": 1}
    for bad in (b"{", b"[]", b"1", b"\xff", b'"x"'):
        with pytest.raises(SerializationException):
            decode_body(bad)


def test_recipient_blob_is_decoded() -> None:
    document = b"\x84\x01\x02"
    params = validate(
        GENERATE_RANDOM_FIELDS,
        {
            "NumberOfBytes": 32,
            "Recipient": {
                "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256",
                "AttestationDocument": base64.b64encode(document).decode(),
            },
        },
    )
    assert params == {
        "NumberOfBytes": 32,
        "Recipient": {"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256", "AttestationDocument": document},
    }


def test_validation_message_redacts_blobs() -> None:
    with pytest.raises(ValidationException) as caught:
        validate(
            GENERATE_RANDOM_FIELDS,
            {
                "NumberOfBytes": 1,
                "Recipient": {"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256", "AttestationDocument": ""},
            },
        )
    assert caught.value.message == (
        "1 validation error detected: Value '*** Sensitive Data Redacted ***' "
        "at 'recipient.attestationDocument' failed to satisfy constraint: "
        "Member must have length greater than or equal to 1"
    )


def test_encoders() -> None:
    assert json.loads(encode_result({"Plaintext": b"\x00\x01", "CiphertextForRecipient": None})) == {
        "Plaintext": "AAE="
    }
    assert json.loads(encode_error(ValidationException("bad"))) == {
        "__type": "ValidationException",
        "message": "bad",
    }


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
        max_leaves=8,
    )
)
def test_any_json_value_either_validates_or_raises_a_kms_error(value: object) -> None:
    with contextlib.suppress(KMSError):
        validate(
            GENERATE_RANDOM_FIELDS, {"NumberOfBytes": value, "CustomKeyStoreId": value, "Recipient": value}
        )


def test_cached_authorization_parse_equals_a_fresh_parse() -> None:
    """kms.auth caches the parse of the text before ``Signature=``; each new signature is checked anew."""
    from attestation.sigv4 import parse_authorization
    from kms._auth_cache import parsed_authorization as _parse_authorization

    head = (
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261129/us-east-1/kms/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature="
    )
    for signature in ("a" * 64, "b" * 64, "0123456789abcdef" * 4):
        parsed, sent = _parse_authorization(head + signature)
        assert (parsed.scope, parsed.signed_headers, sent) == (
            parse_authorization(head + signature).scope,
            ("host", "x-amz-date"),
            signature,
        )
    for bad in ("A" * 64, "a" * 63, "a" * 65, ""):
        with pytest.raises(ValueError, match="Signature"):
            _parse_authorization(head + bad)


# -- fast paths agree with the strict ones -------------------------------------------------------------------

_B64_TEXT = st.one_of(
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=", max_size=40),
    st.text(alphabet="AQgw+/=\n -_.\\é\x00", max_size=12),
    st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode()),
    st.text(max_size=12),
)


_JSONISH = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 1100), st.floats(allow_nan=False), st.text(max_size=8)
)
_RECIPIENT = st.one_of(
    _JSONISH,
    st.fixed_dictionaries(
        {},
        optional={
            "KeyEncryptionAlgorithm": st.one_of(_JSONISH, st.just("RSAES_OAEP_SHA_256")),
            "AttestationDocument": st.one_of(_JSONISH, _B64_TEXT),
            "Other": _JSONISH,
        },
    ),
)
_GENERATE_RANDOM_RAW = st.fixed_dictionaries(
    {},
    optional={
        "NumberOfBytes": st.one_of(_JSONISH, st.integers(0, 1025)),
        "CustomKeyStoreId": st.one_of(st.none(), st.text(max_size=3)),
        "Recipient": _RECIPIENT,
        "Unknown": _JSONISH,
    },
)


@given(_GENERATE_RANDOM_RAW)
def test_plain_generate_random_agrees_with_validate(raw: dict[str, object]) -> None:
    plain = plain_generate_random(raw)
    try:
        strict: object = validate(GENERATE_RANDOM_FIELDS, raw)
    except KMSError:
        strict = None
    if plain is not None:
        # Same members, same order (the audit record lists them in this order).
        assert plain == strict
        assert list(plain) == list(strict)  # type: ignore[call-overload]
        if "Recipient" in plain:
            assert list(plain["Recipient"]) == list(strict["Recipient"])  # type: ignore[index]


def test_plain_generate_random_takes_the_usual_request() -> None:
    raw = {
        "NumberOfBytes": 32,
        "Recipient": {"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256", "AttestationDocument": "hIQB"},
    }
    assert plain_generate_random(raw) == validate(GENERATE_RANDOM_FIELDS, raw)
    assert plain_generate_random({"NumberOfBytes": 1024}) == {"NumberOfBytes": 1024}
    for odd in ({"NumberOfBytes": True}, {"NumberOfBytes": 0}, {"NumberOfBytes": 8, "CustomKeyStoreId": "x"}):
        assert plain_generate_random(odd) is None


_CONTEXT = st.one_of(
    _JSONISH,
    st.dictionaries(st.text(max_size=4), st.one_of(st.text(max_size=4), _JSONISH), max_size=3),
)
_DECRYPT_RAW = st.fixed_dictionaries(
    {},
    optional={
        "CiphertextBlob": st.one_of(_JSONISH, _B64_TEXT),
        "EncryptionContext": _CONTEXT,
        "GrantTokens": st.one_of(_JSONISH, st.lists(st.text(max_size=3), max_size=2)),
        "KeyId": st.one_of(_JSONISH, st.sampled_from(["", "k" * 2048, "k" * 2049, "alias/x"])),
        "EncryptionAlgorithm": st.one_of(
            _JSONISH, st.sampled_from(["SYMMETRIC_DEFAULT", "RSAES_OAEP_SHA_1"])
        ),
        "Recipient": _RECIPIENT,
        "DryRun": _JSONISH,
        "DryRunModifiers": st.one_of(_JSONISH, st.just(["IGNORE_CIPHERTEXT"])),
        "Unknown": _JSONISH,
    },
)


#: Requests the shortcut takes, mostly: every member absent or of the model, now and then one odd value.
_USUAL_DECRYPT_RAW = st.fixed_dictionaries(
    {
        "CiphertextBlob": st.one_of(
            st.binary(min_size=1, max_size=40).map(lambda b: base64.b64encode(b).decode()), _B64_TEXT
        )
    },
    optional={
        "EncryptionContext": st.one_of(
            st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=3), _CONTEXT
        ),
        "KeyId": st.one_of(st.text(min_size=1, max_size=8), st.just("")),
        "EncryptionAlgorithm": st.sampled_from(["SYMMETRIC_DEFAULT", "RSAES_OAEP_SHA_256", "SM2PKE", "x"]),
        "Recipient": st.one_of(
            st.fixed_dictionaries(
                {
                    "KeyEncryptionAlgorithm": st.just("RSAES_OAEP_SHA_256"),
                    "AttestationDocument": st.binary(min_size=0, max_size=40).map(
                        lambda b: base64.b64encode(b).decode()
                    ),
                }
            ),
            _RECIPIENT,
        ),
        "Unknown": _JSONISH,
    },
)


@settings(max_examples=400)
@given(st.one_of(_DECRYPT_RAW, _USUAL_DECRYPT_RAW))
def test_plain_decrypt_agrees_with_validate(raw: dict[str, object]) -> None:
    plain = plain_decrypt(raw)
    try:
        strict: object = validate(DECRYPT_FIELDS, raw)
    except KMSError:
        strict = None
    if plain is not None:
        # Same members, same order (the audit record lists them in this order), same nested order.
        assert plain == strict
        assert list(plain) == list(strict)  # type: ignore[call-overload]
        for name in ("Recipient", "EncryptionContext"):
            if name in plain:
                assert list(plain[name]) == list(strict[name])  # type: ignore[index]


def test_plain_decrypt_takes_the_usual_request() -> None:
    blob = base64.b64encode(b"KSC\x01" + bytes(60)).decode()
    recipient = {"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256", "AttestationDocument": "hIQB"}
    usual = [
        {"CiphertextBlob": blob},
        {"CiphertextBlob": blob, "EncryptionContext": {"purpose": "x", "a": ""}, "Recipient": recipient},
        {
            "Recipient": recipient,
            "KeyId": "alias/app",
            "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
            "EncryptionContext": {},
            "CiphertextBlob": blob,
        },
    ]
    for raw in usual:
        plain = plain_decrypt(raw)
        assert plain is not None
        assert plain == validate(DECRYPT_FIELDS, raw)
        assert list(plain) == list(validate(DECRYPT_FIELDS, raw))
    # Left to validate: no blob (its error is the resolve step's), the members the shortcut does not take,
    # and anything the model refuses.
    for odd in (
        {},
        {"CiphertextBlob": blob, "DryRun": False},
        {"CiphertextBlob": blob, "GrantTokens": ["t"]},
        {"CiphertextBlob": blob, "DryRunModifiers": ["IGNORE_CIPHERTEXT"]},
        {"CiphertextBlob": "not base64!"},
        {"CiphertextBlob": base64.b64encode(bytes(6145)).decode()},
        {"CiphertextBlob": blob, "EncryptionContext": {"a": 1}},
        {"CiphertextBlob": blob, "KeyId": ""},
        {"CiphertextBlob": blob, "EncryptionAlgorithm": "SM3"},
        {"CiphertextBlob": blob, "Recipient": {"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_1"}},
    ):
        assert plain_decrypt(odd) is None


@given(
    st.dictionaries(
        st.one_of(st.sampled_from(["Plaintext", "CiphertextForRecipient"]), st.text(max_size=6)),
        st.one_of(st.binary(max_size=40), st.none(), st.integers(), st.text(max_size=4), st.booleans()),
        max_size=4,
    )
)
def test_encode_result_is_the_generic_encoding(result: dict[str, object]) -> None:
    present = {k: v for k, v in result.items() if v is not None}
    generic = json.dumps(
        present,
        default=lambda b: base64.b64encode(b).decode("ascii"),
        separators=(",", ":"),
    ).encode()
    assert encode_result(result) == generic
