"""Simulated documents (attestation.nsm / attestation.pki) through the verifier, pycose, and a real layout."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pycose.messages import Sign1Message

from attestation.document import FIELD_ORDER, decode_document
from attestation.errors import PolicyError, VerificationError
from attestation.nsm import NSM, simulate_document
from attestation.pki import SimulatedPKI
from attestation.policy import AllOf, MaxAge, Nonce, PCRs, RejectDebug, RSAPublicKey
from attestation.verify import Verifier, aws_nitro_root

_VECTORS = Path(
    os.environ.get("ATTESTED_RANDOM_VECTORS", Path(__file__).resolve().parents[3] / "shared/test-vectors")
)
REAL = _VECTORS / "attestation/nitro-2024-09-07-blocky-prod-maxfields.cbor"
AT = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
PCR0 = bytes.fromhex("ab" * 48)
MODULE_ID = "i-0123456789abcdef0-enc0123456789abcdef"


@pytest.fixture
def pki(sim_home: Path) -> SimulatedPKI:
    return SimulatedPKI.load_or_create(sim_home, at=AT)


@pytest.fixture(scope="module")
def spki() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_simulated_document_verifies_under_the_simulated_root(
    sim_home: Path, pki: SimulatedPKI, spki: bytes
) -> None:
    data = simulate_document(sim_home, at=AT, public_key=spki, nonce=b"n", pcrs={0: PCR0, 1: b"\1" * 48})
    policy = AllOf(PCRs({0: PCR0}), RejectDebug(), MaxAge(timedelta(minutes=5)), Nonce(b"n"), RSAPublicKey())
    doc = Verifier(roots=[pki.root_der]).verify(data, at=AT + timedelta(seconds=1), policy=policy)
    assert doc.public_key == spki
    # Both roots pinned: still accepted (the simulated one anchors it).
    Verifier(roots=[aws_nitro_root(), pki.root_pem]).verify(data, at=AT, policy=policy)


def test_simulated_document_is_refused_under_the_aws_root_only(sim_home: Path, pki: SimulatedPKI) -> None:
    data = simulate_document(sim_home, at=AT)
    with pytest.raises(
        VerificationError, match=r"cabundle\[0\] \(CN=sim.aws.nitro-enclaves.*is not a pinned root"
    ):
        Verifier(roots=[aws_nitro_root()]).verify(data, at=AT)


def test_simulated_debug_document_fails_reject_debug(sim_home: Path, pki: SimulatedPKI) -> None:
    data = simulate_document(sim_home, at=AT, debug=True)
    verifier = Verifier(roots=[pki.root_der])
    doc = verifier.verify(data, at=AT)
    assert doc.debug_mode
    assert any(doc.pcrs[4])  # PCR4 still set in debug mode, as on real Nitro
    with pytest.raises(PolicyError, match="debug mode"):
        verifier.verify(data, at=AT, policy=RejectDebug())


def test_simulated_documents_expire_with_their_leaf(sim_home: Path, pki: SimulatedPKI) -> None:
    data = simulate_document(sim_home, at=AT)
    verifier = Verifier(roots=[pki.root_der])
    verifier.verify(data, at=AT)
    with pytest.raises(VerificationError, match="expired at") as info:
        verifier.verify(data, at=AT + timedelta(days=2))
    assert info.value.step == "chain"


def test_documents_of_one_nsm_reuse_the_cached_chain(pki: SimulatedPKI) -> None:
    # One NSM signs with one leaf while it is valid (as real NSMs do): one chain entry serves them all.
    nsm = NSM(pki=pki, module_id=MODULE_ID)
    verifier = Verifier(roots=[pki.root_der])
    for i in range(5):
        t = AT + timedelta(seconds=i)
        verifier.verify(nsm.attestation(nonce=bytes([i]), at=t), at=t)
    assert verifier.cache_info()[:2] == (1, 1)


def test_new_leaves_under_the_same_cas_reuse_the_verified_ca_part(sim_home: Path, pki: SimulatedPKI) -> None:
    # simulate_document starts a fresh NSM each time, so each document brings a new leaf under the same CAs.
    verifier = Verifier(roots=[pki.root_der])
    leaves = set()
    for i in range(5):
        t = AT + timedelta(seconds=i)
        data = simulate_document(sim_home, at=t)
        leaves.add(decode_document(data).document.certificate)
        verifier.verify(data, at=t)
    info = verifier.cache_info()
    assert info.ca_chains == 1
    assert info.chains == len(leaves)


def test_pycose_accepts_a_simulated_document(sim_home: Path, pki: SimulatedPKI) -> None:
    from pycose.keys.curves import P384
    from pycose.keys.ec2 import EC2Key

    data = simulate_document(sim_home, at=AT, user_data=b"u")
    leaf = x509.load_der_x509_certificate(decode_document(data).document.certificate)
    numbers = leaf.public_key().public_numbers()  # type: ignore[union-attr]
    message = Sign1Message.from_cose_obj(list(cbor2.loads(data)), True)
    message.key = EC2Key(crv=P384, x=numbers.x.to_bytes(48, "big"), y=numbers.y.to_bytes(48, "big"))
    assert message.verify_signature()


def _shape(value: Any) -> Any:
    """A value's CBOR shape: types and sizes that a real NSM fixes (not the contents)."""
    if isinstance(value, dict):
        return {
            "map": sorted({type(k).__name__ for k in value}),
            "values": sorted({_shape(v) for v in value.values()}),
        }
    if isinstance(value, list):
        return ("array", tuple(sorted({_shape(v) for v in value})))
    if isinstance(value, bytes):
        return "bytes48" if len(value) == 48 else "bytes"
    return type(value).__name__


def test_simulated_bytes_have_the_real_layout(sim_home: Path, pki: SimulatedPKI, spki: bytes) -> None:
    real = REAL.read_bytes()
    ours = simulate_document(sim_home, at=AT, public_key=spki, user_data=b"u" * 32, nonce=b"n" * 16)
    # Envelope: untagged array(4), bstr(4) {1: -35}, empty unprotected map, payload bstr, 96-byte signature.
    assert ours[:7] == real[:7] == bytes.fromhex("8444a1013822a0")
    real_outer, our_outer = cbor2.loads(real), cbor2.loads(ours)
    assert len(real_outer[3]) == len(our_outer[3]) == 96
    assert ours[-98:-96] == real[-98:-96] == bytes.fromhex("5860")
    # Payload: the same keys in the same (NSM) order, field by field the same CBOR types and sizes.
    real_fields, our_fields = cbor2.loads(real_outer[2]), cbor2.loads(our_outer[2])
    assert list(our_fields) == list(real_fields) == list(FIELD_ORDER)
    for name in FIELD_ORDER:
        assert _shape(our_fields[name]) == _shape(real_fields[name]), name
    assert sorted(our_fields["pcrs"]) == sorted(real_fields["pcrs"]) == list(range(16))
    assert len(our_fields["cabundle"]) == len(real_fields["cabundle"]) == 4
    # Unrequested optional fields are present as null, as in real documents.
    bare = cbor2.loads(cbor2.loads(simulate_document(sim_home, at=AT))[2])
    assert list(bare) == list(FIELD_ORDER)
    assert bare["public_key"] is bare["user_data"] is bare["nonce"] is None
    # Certificates: per level, the same extensions with the same criticality as AWS's.
    for real_der, our_der in zip(
        [*real_fields["cabundle"], real_fields["certificate"]],
        [*our_fields["cabundle"], our_fields["certificate"]],
        strict=True,
    ):
        real_cert, our_cert = (
            x509.load_der_x509_certificate(real_der),
            x509.load_der_x509_certificate(our_der),
        )
        assert our_cert.signature_algorithm_oid == real_cert.signature_algorithm_oid
        real_ext = {(e.oid.dotted_string, e.critical) for e in real_cert.extensions}
        our_ext = {(e.oid.dotted_string, e.critical) for e in our_cert.extensions}
        assert our_ext == real_ext, our_cert.subject.rfc4514_string()
