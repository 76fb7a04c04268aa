"""kms._auth_cache (kms.auth's cached verifier side) equals attestation.sigv4's plain one (pure functions)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attestation.sigv4 import (
    MalformedAuthorizationError,
    ParsedAuthorization,
    payload_hash,
    request_signature,
)
from kms._auth_cache import expected_signature as _expected_signature

_NAMES = st.sampled_from(
    ["host", "Host", "x-amz-date", "x-amz-target", "content-type", "user-agent", "x-a", "X-B"]
)
_VALUES = st.text(alphabet="ab \t:,;/\u00a0\u2003é", max_size=10)
_SIGNED = st.lists(st.sampled_from(["content-type", "host", "x-amz-date", "x-amz-target", "x-b"]), min_size=1)


def _outcome(call: object, **kwargs: object) -> object:
    try:
        return call(**kwargs)  # type: ignore[operator]
    except MalformedAuthorizationError:
        return "missing header"


@settings(max_examples=300)
@given(
    method=st.sampled_from(["POST", "post", "GET"]),
    path=st.sampled_from(["/", "", "/a/../b", "/x y"]),
    query=st.sampled_from(["", "b=2&a=1"]),
    headers=st.lists(st.tuples(_NAMES, _VALUES), max_size=8),
    body=st.binary(max_size=20),
    signed=_SIGNED,
)
def test_expected_signature_is_request_signature(  # noqa: PLR0917 - hypothesis's arguments
    method: str, path: str, query: str, headers: list[tuple[str, str]], body: bytes, signed: list[str]
) -> None:
    parsed = ParsedAuthorization(
        access_key="AKIDEXAMPLE",
        date_stamp="20261129",
        region="us-east-1",
        service="kms",
        signed_headers=tuple(sorted(set(signed))),
        signature="0" * 64,
    )
    common = {"secret_key": "secret", "amz_date_value": "20261129T140506Z"}
    ours = _outcome(
        _expected_signature,
        method=method,
        path=path,
        query=query,
        headers=headers,
        body=body,
        parsed=parsed,
        **common,
    )
    reference = _outcome(
        request_signature,
        method=method,
        path=path,
        query=query,
        headers=headers,
        body_sha256=payload_hash(body),
        authorization=parsed,
        **common,
    )
    assert ours == reference
    # With the service's index of first values (the shortcut for distinct lower-case names).
    indexed = _outcome(
        _expected_signature,
        method=method,
        path=path,
        query=query,
        headers=headers,
        body=body,
        parsed=parsed,
        first=dict(reversed(headers)),
        **common,
    )
    assert indexed == reference
    # Again (the canonical request up to the body's hash from the cache), and with another body.
    again = _outcome(
        _expected_signature,
        method=method,
        path=path,
        query=query,
        headers=headers,
        body=body,
        parsed=parsed,
        first=dict(reversed(headers)),
        **common,
    )
    assert again == reference
    other = body + b"x"
    assert _outcome(
        _expected_signature,
        method=method,
        path=path,
        query=query,
        headers=headers,
        body=other,
        parsed=parsed,
        first=dict(reversed(headers)),
        **common,
    ) == _outcome(
        request_signature,
        method=method,
        path=path,
        query=query,
        headers=headers,
        body_sha256=payload_hash(other),
        authorization=parsed,
        **common,
    )


def _both(
    *,
    method: str = "POST",
    path: str = "/",
    query: str = "",
    host: str = "h",
    body: bytes = b"{}",
    secret_key: str = "secret",
    amz_date_value: str = "20261129T140506Z",
    region: str = "us-east-1",
) -> tuple[str, str]:
    parsed = ParsedAuthorization(
        access_key="AKIDEXAMPLE",
        date_stamp="20261129",
        region=region,
        service="kms",
        signed_headers=("host", "x-amz-date"),
        signature="0" * 64,
    )
    headers = [("host", host), ("x-amz-date", "20261129T140506Z")]
    common = {"secret_key": secret_key, "amz_date_value": amz_date_value}
    ours = _expected_signature(
        method, path, query, headers, body, parsed=parsed, first=dict(reversed(headers)), **common
    )
    reference = request_signature(
        method=method,
        path=path,
        query=query,
        headers=headers,
        body_sha256=payload_hash(body),
        authorization=parsed,
        **common,
    )
    return ours, reference


def test_cached_canonical_requests_are_keyed_by_every_input_but_the_body() -> None:
    variants: list[dict[str, str]] = [
        {},
        {"secret_key": "other"},
        {"method": "PUT"},
        {"path": "/a"},
        {"query": "a=1"},
        {"host": "h2"},
        {"amz_date_value": "20261129T140507Z"},
        {"region": "eu-west-1"},
    ]
    for change in variants * 2:  # the second round answers from the cache
        ours, reference = _both(**change)  # type: ignore[arg-type]
        assert ours == reference
        ours, reference = _both(body=b"[]", **change)
        assert ours == reference


def test_a_missing_signed_header_is_refused() -> None:
    parsed = ParsedAuthorization(
        access_key="AKIDEXAMPLE",
        date_stamp="20261129",
        region="us-east-1",
        service="kms",
        signed_headers=("host", "x-amz-date"),
        signature="0" * 64,
    )
    with pytest.raises(MalformedAuthorizationError, match="x-amz-date"):
        _expected_signature(
            "POST", "/", "", [("host", "h")], b"", parsed=parsed, secret_key="s", amz_date_value="x"
        )


def test_amz_date_cache_answers_as_the_parser() -> None:
    from datetime import UTC, datetime

    from attestation.sigv4 import parse_amz_date
    from kms._auth_cache import amz_date_time as _amz_date

    for value in ("20261129T140506Z", "20261129T140506Z", "20261129T140507Z", "20240229T000000Z"):
        assert _amz_date(value) == parse_amz_date(value) == datetime(*_fields(value), tzinfo=UTC)
    for bad in ("20261129T140506Z ", "20261301T000000Z", "2026-11-29T14:05"):
        with pytest.raises(MalformedAuthorizationError):
            _amz_date(bad)
        assert _amz_date("20261129T140506Z") == parse_amz_date("20261129T140506Z")
    # strptime matches the literal Z case-insensitively; the fast path leaves that to it.
    assert _amz_date("20261129T140506z") == parse_amz_date("20261129T140506z")


def _fields(value: str) -> tuple[int, ...]:
    return tuple(int(x) for x in (value[:4], value[4:6], value[6:8], value[9:11], value[11:13], value[13:15]))
