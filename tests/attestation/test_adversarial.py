"""Mutate a valid document, re-sign where needed, and expect the specific error (tuf ``modify_metadata``)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from attestation.document import PROTECTED_ES384, decode_document, encode_document
from attestation.errors import AttestationError, MalformedDocumentError, VerificationError
from attestation.verify import Verifier, aws_nitro_root

_VECTORS = Path(
    os.environ.get("ATTESTED_RANDOM_VECTORS", Path(__file__).resolve().parents[3] / "shared/test-vectors")
)
SUI = _VECTORS / "attestation/nitro-2024-11-14-sui-debug-pcr34.cbor"


def sign_payload(
    payload: bytes, key: ec.EllipticCurvePrivateKey, protected: bytes = PROTECTED_ES384
) -> bytes:
    """A COSE_Sign1 over arbitrary payload bytes (to build documents our encoder refuses to make)."""
    sig_structure = cbor2.dumps(["Signature1", protected, b"", payload])
    r, s = decode_dss_signature(key.sign(sig_structure, ec.ECDSA(hashes.SHA384())))
    return cbor2.dumps([protected, {}, payload, r.to_bytes(48, "big") + s.to_bytes(48, "big")])


def payload_fields(chain: Any, **changes: object) -> dict[str, object]:
    doc = chain.document()
    fields: dict[str, object] = {
        "module_id": doc.module_id,
        "digest": doc.digest,
        "timestamp": doc.timestamp,
        "pcrs": dict(doc.pcrs),
        "certificate": doc.certificate,
        "cabundle": list(doc.cabundle),
        "public_key": None,
        "user_data": None,
        "nonce": None,
    }
    fields.update(changes)
    return fields


@pytest.fixture(scope="module")
def verifier(chain: Any) -> Verifier:
    return Verifier(roots=[chain.root])


def _fails(verifier: Verifier, data: bytes, at: datetime) -> AttestationError:
    with pytest.raises(AttestationError) as info:
        verifier.verify(data, at=at)
    return info.value


# -- a flipped byte anywhere ---


def test_every_flipped_byte_of_a_fixture_document_fails(chain: Any, nitro: Any, verifier: Verifier) -> None:
    data = chain.sign(nonce=b"n" * 20, user_data=b"u" * 32)
    verifier.verify(data, at=nitro.t0)
    steps: set[str] = set()
    for i in range(0, len(data), 3):  # every third byte here; every byte of the real document below
        mutated = bytearray(data)
        mutated[i] ^= 0xFF
        err = _fails(verifier, bytes(mutated), nitro.t0)
        steps.add(err.step if isinstance(err, VerificationError) else "decode")
    assert steps == {"decode", "chain", "signature"}


def test_every_flipped_byte_of_a_real_document_fails() -> None:
    data = SUI.read_bytes()
    at = decode_document(data).document.issued_at
    aws = Verifier(roots=[aws_nitro_root()])
    aws.verify(data, at=at)
    for i in range(len(data)):
        mutated = bytearray(data)
        mutated[i] ^= 0x01  # the smallest change
        _fails(aws, bytes(mutated), at)


def test_prefixes_and_trailing_junk_are_malformed(chain: Any, nitro: Any, verifier: Verifier) -> None:
    data = chain.sign()
    for n in range(len(data)):
        with pytest.raises(MalformedDocumentError):
            verifier.verify(data[:n], at=nitro.t0)
    for junk in (b"\x00", b"\xff", data):
        with pytest.raises(MalformedDocumentError, match="trailing bytes"):
            verifier.verify(data + junk, at=nitro.t0)


# -- certificates swapped, re-ordered, replaced ---


def test_reordered_cabundle_fails_at_chain(chain: Any, nitro: Any, verifier: Verifier) -> None:
    bundle = chain.cabundle
    for reordered in [
        (bundle[0], bundle[2], bundle[1], bundle[3]),
        (bundle[0], bundle[3], bundle[2], bundle[1]),
        (bundle[0], bundle[1], bundle[3], bundle[2]),
    ]:
        err = _fails(verifier, chain.sign(cabundle=reordered), nitro.t0)
        assert isinstance(err, VerificationError)
        assert err.step == "chain"
        assert "cabundle must be ordered root first" in str(err)
    # The root not first (the order real documents and AWS's doc fix).
    err = _fails(verifier, chain.sign(cabundle=(*bundle[1:], bundle[0])), nitro.t0)
    assert "is not a pinned root" in str(err)


def test_leaf_swapped_with_an_intermediate_fails(chain: Any, nitro: Any, verifier: Verifier) -> None:
    bundle = chain.cabundle
    data = chain.sign(certificate=bundle[3], cabundle=(*bundle[:3], chain.leaf_der))
    err = _fails(verifier, data, nitro.t0)
    assert isinstance(err, VerificationError)
    assert err.step == "chain"


def test_missing_intermediate_fails(chain: Any, nitro: Any, verifier: Verifier) -> None:
    bundle = chain.cabundle
    err = _fails(verifier, chain.sign(cabundle=(bundle[0], bundle[1], bundle[3])), nitro.t0)
    assert isinstance(err, VerificationError)
    assert err.step == "chain"


def test_leaf_from_another_chain_fails(chain: Any, other_chain: Any, nitro: Any, verifier: Verifier) -> None:
    # Signed by the other leaf's own key, so only the chain is wrong.
    doc = chain.document(certificate=other_chain.leaf_der)
    err = _fails(verifier, other_chain.sign(doc), nitro.t0)
    assert isinstance(err, VerificationError)
    assert err.step == "chain"
    assert "certificate chain does not verify" in str(err)


def test_intermediates_from_another_chain_under_the_pinned_root_fail(
    chain: Any, other_chain: Any, nitro: Any, verifier: Verifier
) -> None:
    bundle = (chain.cabundle[0], *other_chain.cabundle[1:])
    err = _fails(verifier, other_chain.sign(cabundle=bundle, certificate=other_chain.leaf_der), nitro.t0)
    assert isinstance(err, VerificationError)
    assert err.step == "chain"


def test_unpinned_root_fails(other_chain: Any, nitro: Any, verifier: Verifier) -> None:
    err = _fails(verifier, other_chain.sign(), nitro.t0)
    assert isinstance(err, VerificationError)
    assert err.step == "chain"
    assert "cabundle[0] (CN=sim.nitro-enclaves" in str(err)
    assert "is not a pinned root" in str(err)


def test_real_document_rejected_with_only_a_fixture_root(chain: Any) -> None:
    data = SUI.read_bytes()
    at = decode_document(data).document.issued_at
    err = _fails(Verifier(roots=[chain.root]), data, at)
    assert "is not a pinned root" in str(err)


# -- content changed and re-signed by a key the chain does not vouch for ---


def test_pcr_changed_and_resigned_by_untrusted_key_fails_signature(
    chain: Any, nitro: Any, verifier: Verifier
) -> None:
    doc = chain.document(pcrs={**chain.document().pcrs, 0: bytes(48)})
    err = _fails(verifier, _sign_with_random_key(doc), nitro.t0)
    assert isinstance(err, VerificationError)
    assert err.step == "signature"
    assert str(err) == "signature: COSE_Sign1 signature does not verify"


def test_pcr_changed_with_a_self_made_leaf_fails_chain(chain: Any, nitro: Any, verifier: Verifier) -> None:
    rogue_key = ec.generate_private_key(ec.SECP384R1())
    rogue_instance_key = ec.generate_private_key(ec.SECP384R1())
    instance = chain.certs[3]
    leaf = nitro.issue(
        subject=f"{nitro.module_id}.us-east-1.aws",
        key=rogue_key,
        issuer=instance,  # claims the real instance as issuer, signed by another key
        issuer_key=rogue_instance_key,
        not_before=nitro.t0 - timedelta(minutes=1),
        not_after=nitro.t0 + timedelta(hours=1),
        ca=False,
        key_usage=nitro.leaf_key_usage(),
    )
    doc = chain.document(
        pcrs={**chain.document().pcrs, 0: bytes(48)},
        certificate=leaf.public_bytes(serialization.Encoding.DER),
    )
    err = _fails(verifier, encode_document(doc, rogue_key), nitro.t0)
    assert isinstance(err, VerificationError)
    assert err.step == "chain"


def _sign_with_random_key(doc: Any) -> bytes:
    return encode_document(doc, ec.generate_private_key(ec.SECP384R1()))


# -- over-long and ill-typed fields (signed by the real leaf key: only the field is wrong) ---


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"user_data": b"u" * 1025}, "user_data is 1025 bytes, allowed 0..1024"),
        ({"nonce": b"n" * 1025}, "nonce is 1025 bytes, allowed 0..1024"),
        ({"public_key": b"k" * 1025}, "public_key is 1025 bytes, allowed 0..1024"),
        ({"certificate": b"c" * 1025}, "certificate is 1025 bytes, allowed 1..1024"),
        ({"digest": "SHA256"}, "digest must be 'SHA384'"),
        ({"timestamp": 0}, r"timestamp must be in 1..2\^64-1"),
        ({"pcrs": {}}, "pcrs must be a map of 1..32 entries"),
        ({"pcrs": {32: bytes(48)}}, "pcrs key 32 is not an index"),
        ({"pcrs": {0: bytes(47)}}, r"pcrs\[0\] must be 32, 48 or 64 bytes, got 47"),
        ({"cabundle": []}, "cabundle must hold 1..8 certificates"),
        ({"module_id": ""}, "module_id must be a non-empty text string"),
        ({"extra": 1}, "unknown field 'extra'"),
    ],
    ids=lambda v: next(iter(v)) if isinstance(v, dict) else None,
)
def test_bad_field_signed_by_the_real_leaf_is_malformed(
    chain: Any, nitro: Any, verifier: Verifier, change: dict[str, object], message: str
) -> None:
    data = sign_payload(cbor2.dumps(payload_fields(chain, **change)), chain.leaf_key)
    with pytest.raises(MalformedDocumentError, match=message):
        verifier.verify(data, at=nitro.t0)


def test_payload_built_here_verifies_when_fields_are_right(
    chain: Any, nitro: Any, verifier: Verifier
) -> None:
    # The control for the test above: the same construction with valid fields is accepted.
    data = sign_payload(cbor2.dumps(payload_fields(chain)), chain.leaf_key)
    verifier.verify(data, at=nitro.t0)
    verifier.verify(b"\xd2" + data, at=nitro.t0)  # tag 18 too


def test_other_algorithm_in_protected_header_is_malformed(chain: Any, nitro: Any, verifier: Verifier) -> None:
    es256 = cbor2.dumps({1: -7})
    data = sign_payload(cbor2.dumps(payload_fields(chain)), chain.leaf_key, protected=es256)
    with pytest.raises(MalformedDocumentError, match="ES384"):
        verifier.verify(data, at=nitro.t0)


# -- X.509 defects in otherwise valid chains ---


@pytest.mark.parametrize(
    ("defect", "message"),
    [
        ({"leaf_ca": True}, "certificate is a CA"),
        ({"leaf_digital_signature": False}, "certificate lacks keyUsage digitalSignature"),
        ({"leaf_basic_constraints": False}, "certificate lacks basicConstraints"),
        ({"instance_path_length": None, "leaf_ca": False}, None),  # control: pathlen absent is allowed
    ],
    ids=["leaf-is-ca", "leaf-lacks-digitalSignature", "leaf-lacks-basicConstraints", "instance-no-pathlen"],
)
def test_x509_policy_defects(nitro: Any, defect: dict[str, Any], message: str | None) -> None:
    bad = nitro.build_chain(**defect)
    verifier = Verifier(roots=[bad.root])
    if message is None:
        verifier.verify(bad.sign(), at=nitro.t0)
        return
    err = _fails(verifier, bad.sign(), nitro.t0)
    assert isinstance(err, VerificationError)
    assert err.step == "chain"
    assert message in str(err)


def test_path_length_violation_fails(chain: Any, nitro: Any) -> None:
    # One more CA below the instance certificate (pathlen 0) breaks its pathLenConstraint.
    extra_key = ec.generate_private_key(ec.SECP384R1())
    extra = nitro.issue(
        subject="extra.aws.nitro-enclaves",
        key=extra_key,
        issuer=chain.certs[3],
        issuer_key=chain.keys[3],
        not_before=nitro.t0 - timedelta(hours=1),
        not_after=nitro.t0 + timedelta(hours=1),
        ca=True,
        path_length=None,
    )
    leaf_key = ec.generate_private_key(ec.SECP384R1())
    leaf = nitro.issue(
        subject="leaf.aws",
        key=leaf_key,
        issuer=extra,
        issuer_key=extra_key,
        not_before=nitro.t0 - timedelta(minutes=1),
        not_after=nitro.t0 + timedelta(hours=1),
        ca=False,
        key_usage=nitro.leaf_key_usage(),
    )
    doc = chain.document(
        certificate=leaf.public_bytes(serialization.Encoding.DER),
        cabundle=(*chain.cabundle, extra.public_bytes(serialization.Encoding.DER)),
    )
    err = _fails(Verifier(roots=[chain.root]), encode_document(doc, leaf_key), nitro.t0)
    assert isinstance(err, VerificationError)
    assert err.step == "chain"


def test_leaf_with_a_p256_key_fails(nitro: Any) -> None:
    bad = nitro.build_chain(leaf_curve=ec.SECP256R1())
    data = encode_document(bad.document(), ec.generate_private_key(ec.SECP384R1()))
    err = _fails(Verifier(roots=[bad.root]), data, nitro.t0)
    assert isinstance(err, VerificationError)
    assert err.step == "chain"
    assert "P-384" in str(err)


def test_expired_root_fails(nitro: Any) -> None:
    root_key = ec.generate_private_key(ec.SECP384R1())
    old_root = nitro.issue(
        subject="old.nitro-enclaves",
        key=root_key,
        issuer=None,
        issuer_key=root_key,
        not_before=datetime(2000, 1, 1, tzinfo=UTC),
        not_after=nitro.t0 - timedelta(seconds=1),
        ca=True,
    )
    bad = nitro.build_chain(root=(old_root, root_key))
    err = _fails(Verifier(roots=[old_root]), bad.sign(), nitro.t0)
    assert isinstance(err, VerificationError)
    assert "cabundle[0] (CN=old.nitro-enclaves" in str(err)
    assert "expired at" in str(err)


def test_non_positive_serial_is_malformed_not_a_warning(chain: Any, nitro: Any, verifier: Verifier) -> None:
    from attestation._chain import _tlv

    for field in ("certificate", "cabundle"):
        der = bytearray(chain.leaf_der if field == "certificate" else chain.cabundle[2])
        _, cert_start, _ = _tlv(bytes(der), 0)
        _, tbs_start, _ = _tlv(bytes(der), cert_start)
        _, _, version_end = _tlv(bytes(der), tbs_start)
        _, serial_at, _ = _tlv(bytes(der), version_end)
        der[serial_at] |= 0x80  # negative
        if field == "certificate":
            data = chain.sign(certificate=bytes(der))
        else:
            data = chain.sign(cabundle=(*chain.cabundle[:2], bytes(der), chain.cabundle[3]))
        with pytest.raises(MalformedDocumentError, match="serial number that is not positive"):
            verifier.verify(data, at=nitro.t0)


@pytest.mark.parametrize(
    "protected",
    [
        cbor2.dumps({True: -35}),
        cbor2.dumps({1: -35.0}),
        cbor2.dumps({1: -35, 4: b"kid"}),
        cbor2.dumps({1: -7}),
    ],
    ids=["label-true", "alg-float", "extra-label", "es256"],
)
def test_protected_header_must_be_exactly_alg_es384(
    chain: Any, nitro: Any, verifier: Verifier, protected: bytes
) -> None:
    # Python compares True == 1 and -35.0 == -35; CBOR does not, and neither do we.
    data = sign_payload(cbor2.dumps(payload_fields(chain)), chain.leaf_key, protected=protected)
    with pytest.raises(MalformedDocumentError, match=r"COSE protected header must be \{1: -35\}"):
        verifier.verify(data, at=nitro.t0)


def test_non_minimal_alg_encoding_is_accepted_as_signed(chain: Any, nitro: Any, verifier: Verifier) -> None:
    # Valid CBOR for {1: -35}; the signature covers the protected bytes as received, so this is safe.
    data = sign_payload(
        cbor2.dumps(payload_fields(chain)), chain.leaf_key, protected=bytes.fromhex("a101390022")
    )
    verifier.verify(data, at=nitro.t0)
