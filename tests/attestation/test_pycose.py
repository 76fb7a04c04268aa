"""pycose as an independent COSE_Sign1 oracle, both directions (its cbor2 6 bug: deps-and-costs.md §2.2)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from pycose.algorithms import Es384
from pycose.headers import Algorithm
from pycose.keys.curves import P384
from pycose.keys.ec2 import EC2Key
from pycose.messages import Sign1Message

from attestation.document import encode_payload
from attestation.errors import VerificationError
from attestation.verify import Verifier, aws_nitro_root

_VECTORS = Path(
    os.environ.get("ATTESTED_RANDOM_VECTORS", Path(__file__).resolve().parents[3] / "shared/test-vectors")
)
REAL = sorted(p.name for p in (_VECTORS / "attestation").glob("*.cbor"))


def _pycose_key(key: ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) -> EC2Key:
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    numbers = public.public_numbers()
    fields: dict[str, Any] = {
        "crv": P384,
        "x": numbers.x.to_bytes(48, "big"),
        "y": numbers.y.to_bytes(48, "big"),
    }
    if isinstance(key, ec.EllipticCurvePrivateKey):
        fields["d"] = key.private_numbers().private_value.to_bytes(48, "big")
    return EC2Key(**fields)


def _pycose_verifies(document: bytes, public_key: ec.EllipticCurvePublicKey) -> bool:
    # CoseMessage.decode is broken with cbor2 6 and untagged input: build the message from the array.
    message = Sign1Message.from_cose_obj(list(cbor2.loads(document)), True)
    message.key = _pycose_key(public_key)
    return bool(message.verify_signature())


def test_pycose_verifies_our_document(chain: Any) -> None:
    assert _pycose_verifies(chain.sign(nonce=b"n", user_data=b"u"), chain.leaf_key.public_key())


def test_pycose_rejects_our_document_under_another_key(chain: Any, other_chain: Any) -> None:
    assert not _pycose_verifies(chain.sign(), other_chain.leaf_key.public_key())


@pytest.mark.parametrize("name", REAL)
def test_pycose_verifies_real_documents(vectors: Path, name: str) -> None:
    data = (vectors / "attestation" / name).read_bytes()
    leaf = x509.load_der_x509_certificate(cbor2.loads(cbor2.loads(data)[2])["certificate"])
    assert _pycose_verifies(data, leaf.public_key())  # type: ignore[arg-type]


@pytest.mark.parametrize("tagged", [False, True], ids=["untagged", "tag18"])
def test_we_verify_a_pycose_signed_document(chain: Any, nitro: Any, tagged: bool) -> None:
    payload = encode_payload(chain.document(nonce=b"from pycose"))
    message = Sign1Message(phdr={Algorithm: Es384}, payload=payload, key=_pycose_key(chain.leaf_key))
    data = message.encode(tag=tagged)
    assert data.startswith((b"\xd2" if tagged else b"") + bytes.fromhex("8444a1013822"))
    doc = Verifier(roots=[chain.root]).verify(data, at=nitro.t0)
    assert doc.nonce == b"from pycose"
    # ... and only under the chain that vouches for the signing key.
    with pytest.raises(VerificationError, match="not a pinned root"):
        Verifier(roots=[aws_nitro_root()]).verify(data, at=nitro.t0)


def test_pycose_signature_under_a_foreign_key_is_rejected(chain: Any, other_chain: Any, nitro: Any) -> None:
    payload = encode_payload(chain.document())
    message = Sign1Message(phdr={Algorithm: Es384}, payload=payload, key=_pycose_key(other_chain.leaf_key))
    with pytest.raises(VerificationError, match="signature") as info:
        Verifier(roots=[chain.root]).verify(message.encode(tag=False), at=nitro.t0)
    assert info.value.step == "signature"
