"""The audit line's spliced encoding equals the JSON of the whole record (pure functions, no server)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from kms.audit import _ENCODER, event, event_line
from kms.operations import AttestedRecipient
from kms.state import Principal

_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
_TEXT = st.one_of(st.text(max_size=12), st.sampled_from(["\x00time\x00", "a\x00id\x00b", '"\\']))

_RECIPIENTS = st.builds(
    lambda module_id, pcrs: AttestedRecipient(module_id=module_id, pcrs=pcrs, public_key=_KEY, key_id=b"k"),
    _TEXT,
    st.dictionaries(st.integers(0, 31), st.binary(min_size=48, max_size=48), min_size=1, max_size=4),
)


@settings(max_examples=400)
@given(
    operation=st.one_of(st.none(), st.sampled_from(["GenerateRandom", "DescribeCustomKeyStores"])),
    principal=st.one_of(st.none(), st.builds(Principal, name=_TEXT, access_key=_TEXT, secret_key=_TEXT)),
    access_key=st.one_of(st.none(), _TEXT),
    region=_TEXT,
    user_agent=st.one_of(st.none(), st.text(max_size=40), st.just("ua \x00time\x00 \x00id\x00")),
    params=st.one_of(
        st.just({}),
        st.just({"NumberOfBytes": 32, "Recipient": {"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256"}}),
        st.dictionaries(
            _TEXT,
            st.one_of(st.integers(), _TEXT, st.booleans(), st.floats(allow_nan=False), st.none()),
            max_size=3,
        ),
        st.just({"NumberOfBytes": 1, "KeyStorePassword": "secret"}),
        st.just({"NumberOfBytes": True}),
        st.fixed_dictionaries(
            {
                "CiphertextBlob": st.just(b"blob"),
                "EncryptionContext": st.dictionaries(_TEXT, _TEXT, max_size=3),
            }
        ),
        st.just({"EncryptionContext": {"a": "b"}, "GrantTokens": ["t"], "Other": {"a": 1}}),
        st.just({"NumberOfBytes": 1.0, "Recipient": {"KeyEncryptionAlgorithm": 1}}),
    ),
    recipient=st.one_of(st.none(), _RECIPIENTS),
    error=st.one_of(st.none(), st.tuples(_TEXT, st.text(max_size=30))),
    request_ids=st.lists(
        st.one_of(
            st.just("6f1c6a3e-2b7d-4c1e-9a53-0d8c4e2f1b7a"),
            st.uuids().map(str),
            _TEXT,
            st.sampled_from(["\x00id\x00", "", "a" * 65, "é"]),
        ),
        min_size=1,
        max_size=3,
    ),
    seconds=st.integers(0, 10**6),
)
def test_event_line_is_the_json_of_the_event(  # noqa: PLR0917 - hypothesis's arguments
    operation: str | None,
    principal: Principal | None,
    access_key: str | None,
    region: str,
    user_agent: str | None,
    params: dict[str, object],
    recipient: AttestedRecipient | None,
    error: tuple[str, str] | None,
    request_ids: list[str],
    seconds: int,
) -> None:
    for n, request_id in enumerate(request_ids):  # the second and later hit the template cache
        _check_line(
            at=datetime(2026, 11, 29, 14, 5, 6, 789, tzinfo=UTC) + timedelta(seconds=seconds + n),
            request_id=request_id,
            operation=operation,
            principal=principal,
            access_key=access_key,
            region=region,
            user_agent=user_agent,
            params=params,
            recipient=recipient,
            error=error,
        )


def _check_line(
    *,
    at: datetime,
    request_id: str,
    operation: str | None,
    principal: Principal | None,
    access_key: str | None,
    region: str,
    user_agent: str | None,
    params: dict[str, object],
    recipient: AttestedRecipient | None,
    error: tuple[str, str] | None,
) -> None:
    fields = {
        "at": at,
        "request_id": request_id,
        "operation": operation,
        "principal": principal,
        "access_key": access_key,
        "region": region,
        "source_ip": "127.0.0.1",
        "user_agent": user_agent,
        "params": params,
        "recipient": recipient,
        "error_code": error[0] if error else None,
        "error_message": error[1] if error else None,
    }
    line = event_line(**fields)  # type: ignore[arg-type]
    assert line == _ENCODER.encode(event(**fields))  # type: ignore[arg-type]
    assert json.loads(line) == json.loads(json.dumps(event(**fields), default=str))  # type: ignore[arg-type]
