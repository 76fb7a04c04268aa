"""The NSM's fast document path: pre-encoded constant parts give the reference encoder's bytes exactly, and
every cache behind it (leaf and chain window, PCR map) is invalidated when what it was built from changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from attestation.document import (
    MAX_OPTIONAL_FIELD_BYTES,
    PROTECTED_ES384,
    AttestationDocument,
    DocumentEncoder,
    decode_document,
    encode_payload,
    encode_pcrs,
    verify_signature,
)
from attestation.errors import MalformedDocumentError
from attestation.nsm import NSM
from attestation.pki import DocumentSigner, SimulatedPKI, new_module_id

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
_optional = st.none() | st.binary(max_size=MAX_OPTIONAL_FIELD_BYTES)
_pcrs = st.dictionaries(
    st.integers(0, 31),
    st.sampled_from((32, 48, 64)).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
    min_size=1,
    max_size=32,
)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> tuple[SimulatedPKI, DocumentSigner, str]:
    pki = SimulatedPKI.load_or_create(tmp_path_factory.mktemp("nsmenc"), at=T0)
    module_id = new_module_id(pki.instance_id, at=T0)
    return pki, pki.issue_signer(at=T0, module_id=module_id), module_id


def _encoder(signer: DocumentSigner, module_id: str) -> DocumentEncoder:
    return DocumentEncoder(
        module_id=module_id,
        certificate=signer.certificate,
        cabundle=signer.cabundle,
        signing_key=signer.private_key,
    )


@settings(max_examples=60, deadline=None)
@given(
    timestamp=st.integers(1, 2**64 - 1),
    pcrs=_pcrs,
    public_key=_optional,
    user_data=_optional,
    nonce=_optional,
)
def test_encoder_bytes_equal_the_reference_encoder(
    shared: tuple[SimulatedPKI, DocumentSigner, str],
    *,
    timestamp: int,
    pcrs: dict[int, bytes],
    public_key: bytes | None,
    user_data: bytes | None,
    nonce: bytes | None,
) -> None:
    _, signer, module_id = shared
    reference = AttestationDocument(
        module_id=module_id,
        digest="SHA384",
        timestamp=timestamp,
        pcrs=pcrs,
        certificate=signer.certificate,
        cabundle=signer.cabundle,
        public_key=public_key,
        user_data=user_data,
        nonce=nonce,
    )
    encoder = _encoder(signer, module_id)
    payload = encoder.payload(
        timestamp=timestamp,
        pcrs_cbor=encode_pcrs(pcrs),
        public_key=public_key,
        user_data=user_data,
        nonce=nonce,
    )
    assert payload == encode_payload(reference)
    document = encoder.sign(payload)
    decoded = decode_document(document)
    # The signature is random; everything else is the reference encoder's list, byte for byte.
    assert document == cbor2.dumps([PROTECTED_ES384, {}, payload, decoded.signature])
    assert decoded.document == reference
    leaf_key = x509.load_der_x509_certificate(signer.certificate).public_key()
    assert isinstance(leaf_key, ec.EllipticCurvePublicKey)
    verify_signature(decoded, leaf_key)


def test_encoder_refuses_what_a_document_would(shared: tuple[SimulatedPKI, DocumentSigner, str]) -> None:
    _, signer, module_id = shared
    with pytest.raises(MalformedDocumentError):
        DocumentEncoder(
            module_id="",
            certificate=signer.certificate,
            cabundle=signer.cabundle,
            signing_key=signer.private_key,
        )
    with pytest.raises(MalformedDocumentError):
        DocumentEncoder(
            module_id=module_id, certificate=b"", cabundle=signer.cabundle, signing_key=signer.private_key
        )
    with pytest.raises(TypeError):
        DocumentEncoder(
            module_id=module_id,
            certificate=signer.certificate,
            cabundle=signer.cabundle,
            signing_key=ec.generate_private_key(ec.SECP256R1()),
        )
    encoder = _encoder(signer, module_id)
    pcrs = encode_pcrs({0: bytes(48)})
    for timestamp in (0, -1, 2**64, True):
        with pytest.raises(MalformedDocumentError):
            encoder.payload(timestamp=timestamp, pcrs_cbor=pcrs)
    with pytest.raises(MalformedDocumentError):
        encoder.payload(timestamp=1, pcrs_cbor=pcrs, nonce=bytes(MAX_OPTIONAL_FIELD_BYTES + 1))


def test_nsm_documents_are_the_reference_encoding(sim_home: Path) -> None:
    pki = SimulatedPKI.load_or_create(sim_home, at=T0)
    nsm = NSM(pki=pki, module_id=new_module_id(pki.instance_id, at=T0))
    for n in range(3):
        raw = nsm.attestation(
            at=T0 + timedelta(seconds=n), nonce=bytes([n]) * n, public_key=b"k" if n else None
        )
        decoded = decode_document(raw)
        assert decoded.payload == encode_payload(decoded.document)
        assert raw == cbor2.dumps([PROTECTED_ES384, {}, decoded.payload, decoded.signature])


def test_pcr_map_follows_extend_and_lock(sim_home: Path) -> None:
    pki = SimulatedPKI.load_or_create(sim_home, at=T0)
    nsm = NSM(pki=pki, module_id=new_module_id(pki.instance_id, at=T0))

    def pcrs() -> dict[int, bytes]:
        return dict(decode_document(nsm.attestation(at=T0)).document.pcrs)

    assert sorted(pcrs()) == list(range(16))
    value = nsm.extend_pcr(16, b"app")
    assert 16 not in pcrs()  # extended but unlocked: not in the document
    nsm.lock_pcr(16)
    assert pcrs()[16] == value
    nsm.lock_pcrs(20)
    assert sorted(pcrs()) == list(range(20))
    assert pcrs()[17] == bytes(48)


def test_renewed_ca_levels_replace_the_cached_leaf_and_chain(sim_home: Path) -> None:
    """Another holder of the PKI renews the chain while our leaf is still in its window: the next document
    must carry the PKI's current chain and a leaf it issued, as the uncached check did."""
    pki = SimulatedPKI.load_or_create(sim_home, at=T0)
    nsm = NSM(pki=pki, module_id=new_module_id(pki.instance_id, at=T0))
    at = T0 + timedelta(hours=1)
    before = decode_document(nsm.attestation(at=at)).document
    assert decode_document(nsm.attestation(at=at)).document.certificate == before.certificate  # cached
    generation = pki.generation
    pki.cabundle(at=T0 - timedelta(hours=1))  # not usable that early: renews the lower levels
    assert pki.generation != generation
    after = decode_document(nsm.attestation(at=at)).document
    assert after.cabundle == pki.cabundle(at=at) != before.cabundle
    assert after.certificate != before.certificate
    instance = x509.load_der_x509_certificate(after.cabundle[-1])
    x509.load_der_x509_certificate(after.certificate).verify_directly_issued_by(instance)


def test_chain_window_edge_renews_like_the_uncached_check(sim_home: Path) -> None:
    """Past the chain's usable window (the instance CA must outlive a whole leaf), a new chain is used."""
    pki = SimulatedPKI.load_or_create(sim_home, at=T0)
    nsm = NSM(pki=pki, module_id=new_module_id(pki.instance_id, at=T0))
    generation, _first, last = pki.usable_window()
    inside = decode_document(nsm.attestation(at=last)).document
    assert inside.cabundle == pki.cabundle(at=last)
    assert pki.generation == generation
    beyond = last + timedelta(seconds=1)
    outside = decode_document(nsm.attestation(at=beyond)).document
    assert pki.generation != generation
    assert outside.cabundle == pki.cabundle(at=beyond) != inside.cabundle
    assert outside.certificate != inside.certificate
