"""enclave._awsjson.attested_body (the document's base64 spliced in) equals encoding the body at once."""

from __future__ import annotations

import binascii
import json

from hypothesis import given
from hypothesis import strategies as st

from enclave._awsjson import KEY_ENCRYPTION_ALGORITHM, attested_body

_MEMBERS = st.dictionaries(
    st.sampled_from(["CiphertextBlob", "EncryptionContext", "KeyId", "GrantTokens", "NumberOfBytes", 'é"\\']),
    st.one_of(
        st.binary(max_size=20),
        st.text(max_size=6),
        st.integers(),
        st.lists(st.text(max_size=3), max_size=2),
        st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
    ),
    max_size=4,
)


def _whole(members: dict[str, object], document: bytes) -> bytes:
    """The body as one ``json.dumps`` of every member, blobs as base64, the Recipient last."""
    fields: dict[str, object] = {
        name: binascii.b2a_base64(value, newline=False).decode() if isinstance(value, bytes) else value
        for name, value in members.items()
    }
    fields["Recipient"] = {
        "KeyEncryptionAlgorithm": KEY_ENCRYPTION_ALGORITHM,
        "AttestationDocument": binascii.b2a_base64(document, newline=False).decode(),
    }
    return json.dumps(fields, separators=(",", ":")).encode()


@given(_MEMBERS, st.binary(max_size=64))
def test_attested_body_is_the_whole_encoding(members: dict[str, object], document: bytes) -> None:
    body = attested_body(members, document)
    assert body == _whole(members, document)
    assert (
        json.loads(body)["Recipient"]["AttestationDocument"]
        == binascii.b2a_base64(document, newline=False).decode()
    )
