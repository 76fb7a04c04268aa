"""The simulated Nitro PKI: chain shape against real AWS certificates, validation, persistence, renewal."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import Criticality, ExtensionPolicy, PolicyBuilder, Store

from attestation.errors import SimulationError
from attestation.pki import (
    INSTANCE_LIFETIME,
    LEAF_LIFETIME,
    MODULE_ID_RE,
    SimulatedPKI,
    new_module_id,
)

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
REAL_DOC = "nitro-2025-04-29-marlin-prod-17pcrs.cbor"


def _leaf_bc(_policy: object, _cert: object, bc: x509.BasicConstraints | None) -> None:
    if bc is None or bc.ca:
        raise ValueError("leaf is a CA")


def _leaf_ku(_policy: object, _cert: object, ku: x509.KeyUsage | None) -> None:
    if ku is None or not ku.digital_signature:
        raise ValueError("leaf lacks digitalSignature")


def verify_chain(
    root: bytes, leaf: bytes, cabundle: tuple[bytes, ...], at: datetime
) -> list[x509.Certificate]:
    """deps-and-costs §2.4: cryptography's verifier, webpki CA policy, CA=false + digitalSignature leaf."""
    ee = (
        ExtensionPolicy.permit_all()
        .require_present(x509.BasicConstraints, Criticality.AGNOSTIC, _leaf_bc)
        .require_present(x509.KeyUsage, Criticality.AGNOSTIC, _leaf_ku)
    )
    verifier = (
        PolicyBuilder()
        .store(Store([x509.load_der_x509_certificate(root)]))
        .time(at)
        .max_chain_depth(4)
        .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee)
        .build_client_verifier()
    )
    intermediates = [x509.load_der_x509_certificate(c) for c in reversed(cabundle[1:])]
    result = verifier.verify(x509.load_der_x509_certificate(leaf), intermediates)
    return list(result.chain)


def real_chain(vectors: Path) -> list[x509.Certificate]:
    payload = cbor2.loads(cbor2.loads((vectors / "attestation" / REAL_DOC).read_bytes())[2])
    ders = [*payload["cabundle"], payload["certificate"]]
    return [x509.load_der_x509_certificate(d) for d in ders]


@pytest.fixture
def pki(sim_home: Path) -> SimulatedPKI:
    return SimulatedPKI.load_or_create(sim_home, at=T0)


def test_issued_chain_validates_with_cryptography_verifier(pki: SimulatedPKI) -> None:
    signer = pki.issue_signer(at=T0)
    chain = verify_chain(pki.root_der, signer.certificate, signer.cabundle, T0)
    assert len(chain) == 5
    assert signer.cabundle[0] == pki.root_der
    assert len(signer.cabundle) == 4
    # Still valid at the end of the leaf's life, and not after.
    verify_chain(pki.root_der, signer.certificate, signer.cabundle, T0 + LEAF_LIFETIME - timedelta(seconds=1))
    with pytest.raises(Exception, match="not valid at validation time"):
        verify_chain(
            pki.root_der, signer.certificate, signer.cabundle, T0 + LEAF_LIFETIME + timedelta(seconds=1)
        )


def test_leaf_key_signs_and_leaf_carries_its_public_key(pki: SimulatedPKI) -> None:
    signer = pki.issue_signer(at=T0)
    leaf = x509.load_der_x509_certificate(signer.certificate)
    assert leaf.public_key() == signer.private_key.public_key()
    sig = signer.private_key.sign(b"msg", ec.ECDSA(hashes.SHA384()))
    pub = leaf.public_key()
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    pub.verify(sig, b"msg", ec.ECDSA(hashes.SHA384()))


def test_each_level_is_shaped_like_the_real_aws_certificate(pki: SimulatedPKI, vectors: Path) -> None:
    signer = pki.issue_signer(at=T0)
    ours = [x509.load_der_x509_certificate(d) for d in (*signer.cabundle, signer.certificate)]
    theirs = real_chain(vectors)
    names = ["root", "regional", "zonal", "instance", "leaf"]
    for name, mine, real in zip(names, ours, theirs, strict=True):
        assert [(e.oid, e.critical) for e in mine.extensions] == [
            (e.oid, e.critical) for e in real.extensions
        ], name
        assert mine.extensions.get_extension_for_class(x509.BasicConstraints).value == (
            real.extensions.get_extension_for_class(x509.BasicConstraints).value
        ), name
        assert mine.extensions.get_extension_for_class(x509.KeyUsage).value == (
            real.extensions.get_extension_for_class(x509.KeyUsage).value
        ), name
        assert [a.oid for a in mine.subject] == [a.oid for a in real.subject], name
        assert mine.signature_algorithm_oid == real.signature_algorithm_oid, name
        key = mine.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        assert isinstance(key.curve, ec.SECP384R1)
        assert mine.version == real.version
        assert len(mine.public_bytes(serialization.Encoding.DER)) <= 1024
    lifetimes = [c.not_valid_after_utc - c.not_valid_before_utc for c in ours]
    real_lifetimes = [c.not_valid_after_utc - c.not_valid_before_utc for c in theirs]
    for name, mine_life, real_life in zip(names[1:], lifetimes[1:], real_lifetimes[1:], strict=True):
        assert abs(mine_life - real_life) <= timedelta(minutes=6), name
    assert lifetimes[0] >= timedelta(days=30 * 365)
    # AKI of each CA below the root names its issuer's SKI, as in the real chain.
    for child, parent in zip(ours[1:4], ours[:3], strict=True):
        aki = child.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        ski = parent.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        assert aki.key_identifier == ski.digest


def test_leaf_names_the_module_and_serial_is_enclave_id_and_time(pki: SimulatedPKI) -> None:
    module_id = new_module_id(pki.instance_id, at=T0)
    assert MODULE_ID_RE.fullmatch(module_id)
    signer = pki.issue_signer(at=T0, module_id=module_id)
    leaf = x509.load_der_x509_certificate(signer.certificate)
    cn = leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert cn == f"{module_id}.us-east-1.aws"
    enc = module_id.split("-enc")[1]
    assert leaf.serial_number == int(enc, 16) << 64 | int(T0.timestamp())
    assert leaf.not_valid_after_utc == T0 + LEAF_LIFETIME
    instance = x509.load_der_x509_certificate(signer.cabundle[3])
    instance_cn = instance.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert instance_cn == f"{pki.instance_id}.us-east-1.aws.nitro-enclaves"


def test_fresh_leaf_per_document(pki: SimulatedPKI) -> None:
    a, b = pki.issue_signer(at=T0), pki.issue_signer(at=T0)
    assert a.certificate != b.certificate
    assert a.cabundle == b.cabundle


def test_state_persists_with_private_keys_0600(sim_home: Path, pki: SimulatedPKI) -> None:
    again = SimulatedPKI.load_or_create(sim_home, at=T0 + timedelta(minutes=1))
    assert again.root_der == pki.root_der
    assert again.instance_id == pki.instance_id
    assert again.cabundle(at=T0) == pki.cabundle(at=T0)
    for name in ("root", "regional", "zonal", "instance"):
        mode = stat.S_IMODE(os.stat(sim_home / "pki" / f"{name}.pem").st_mode)
        assert mode == 0o600, name
    assert (
        x509.load_pem_x509_certificate((sim_home / "pki" / "root.crt").read_bytes()).public_bytes(
            serialization.Encoding.DER
        )
        == pki.root_der
    )


def test_expired_levels_are_reissued_never_reused(sim_home: Path, pki: SimulatedPKI) -> None:
    before = pki.cabundle(at=T0)
    later = T0 + INSTANCE_LIFETIME + timedelta(hours=1)
    signer = pki.issue_signer(at=later)  # the in-memory PKI renews itself
    assert signer.cabundle[0] == before[0]
    assert signer.cabundle[3] != before[3]
    renewed_instance = x509.load_der_x509_certificate(signer.cabundle[3])
    assert pki.instance_id in str(renewed_instance.subject)  # the same parent instance, a new certificate
    verify_chain(pki.root_der, signer.certificate, signer.cabundle, later)
    for der in signer.cabundle:
        cert = x509.load_der_x509_certificate(der)
        assert cert.not_valid_before_utc <= later
        assert cert.not_valid_after_utc >= later + LEAF_LIFETIME
    # Another process loading the home sees the renewed chain, not the expired one.
    other = SimulatedPKI.load_or_create(sim_home, at=later)
    assert other.cabundle(at=later) == signer.cabundle
    # Three weeks on, the regional level must be new too; the root stays.
    far = T0 + timedelta(days=21)
    far_bundle = other.cabundle(at=far)
    assert far_bundle[0] == before[0]
    assert far_bundle[1] != before[1]


def test_usable_in_the_past_of_a_fresh_home(sim_home: Path) -> None:
    past = datetime(2025, 4, 29, 10, 31, tzinfo=UTC)
    pki = SimulatedPKI.load_or_create(sim_home, at=past)
    signer = pki.issue_signer(at=past)
    verify_chain(pki.root_der, signer.certificate, signer.cabundle, past)


def test_two_processes_creating_at_once_agree_on_one_root(sim_home: Path) -> None:
    code = (
        "import sys; from datetime import datetime, UTC; from pathlib import Path;"
        "from attestation.pki import SimulatedPKI;"
        "p = SimulatedPKI.load_or_create(Path(sys.argv[1]), at=datetime.now(UTC));"
        "sys.stdout.write(p.root_der.hex() + ' ' + p.cabundle(at=datetime.now(UTC))[3].hex())"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(sim_home)], stdout=subprocess.PIPE)
        for _ in range(4)
    ]
    outputs = set()
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        outputs.add(out)
    assert len(outputs) == 1


def test_corrupt_state_is_a_clear_error(sim_home: Path, pki: SimulatedPKI) -> None:
    (sim_home / "pki" / "root.pem").write_bytes(b"garbage")
    with pytest.raises(SimulationError, match=r"root\.pem is not a certificate and key"):
        SimulatedPKI.load_or_create(sim_home, at=T0)


def test_mismatched_key_is_a_clear_error(sim_home: Path, pki: SimulatedPKI) -> None:
    zonal = (sim_home / "pki" / "zonal.pem").read_bytes()
    cert_part = zonal[: zonal.index(b"-----BEGIN PRIVATE KEY")]
    key_part = (sim_home / "pki" / "regional.pem").read_bytes()
    key_part = key_part[key_part.index(b"-----BEGIN PRIVATE KEY") :]
    (sim_home / "pki" / "zonal.pem").write_bytes(cert_part + key_part)
    with pytest.raises(SimulationError, match="do not match"):
        SimulatedPKI.load_or_create(sim_home, at=T0)


def test_naive_time_is_refused(sim_home: Path) -> None:
    with pytest.raises(TypeError, match="timezone-aware"):
        SimulatedPKI.load_or_create(sim_home, at=datetime(2026, 1, 1))


def test_module_id_shape() -> None:
    with pytest.raises(ValueError, match="instance id"):
        new_module_id("i-123", at=T0)


def test_openssl_verifies_the_chain_independently(pki: SimulatedPKI, tmp_path: Path) -> None:
    signer = pki.issue_signer(at=T0)

    def pem(der: bytes) -> bytes:
        return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)

    (tmp_path / "root.pem").write_bytes(pem(signer.cabundle[0]))
    (tmp_path / "chain.pem").write_bytes(b"".join(pem(d) for d in signer.cabundle[1:]))
    (tmp_path / "leaf.pem").write_bytes(pem(signer.certificate))
    command = [
        "openssl",
        "verify",  # not -x509_strict: real Nitro leaves lack an AKI, and ours mirror them
        "-attime",
        str(int(T0.timestamp())),
        "-CAfile",
        str(tmp_path / "root.pem"),
        "-untrusted",
        str(tmp_path / "chain.pem"),
        str(tmp_path / "leaf.pem"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("OK")
    late = [*command[:3], str(int((T0 + LEAF_LIFETIME + timedelta(minutes=1)).timestamp())), *command[4:]]
    assert subprocess.run(late, capture_output=True, check=False).returncode != 0


def test_real_aws_root_does_not_anchor_the_simulated_chain(pki: SimulatedPKI, vectors: Path) -> None:
    real_root = (vectors / "attestation" / "aws-nitro-enclaves-root-g1.pem").read_bytes()
    real_der = x509.load_pem_x509_certificate(real_root).public_bytes(serialization.Encoding.DER)
    signer = pki.issue_signer(at=T0)
    with pytest.raises(Exception, match="candidates exhausted"):
        verify_chain(real_der, signer.certificate, signer.cabundle, T0)


def test_real_chain_checks_the_same_way_at_its_own_time(vectors: Path) -> None:
    """Sanity check of the test's own verifier recipe: the real AWS chain passes it too."""
    chain = real_chain(vectors)
    ders = tuple(c.public_bytes(serialization.Encoding.DER) for c in chain)
    at = chain[-1].not_valid_before_utc + timedelta(minutes=1)
    assert len(verify_chain(ders[0], ders[-1], ders[:-1], at)) == 5


def test_issuing_in_the_past_of_a_home_keeps_its_root(sim_home: Path, pki: SimulatedPKI) -> None:
    past = T0 - timedelta(days=2 * 365)
    signer = SimulatedPKI.load_or_create(sim_home, at=past).issue_signer(at=past)
    assert signer.cabundle[0] == pki.root_der
    verify_chain(pki.root_der, signer.certificate, signer.cabundle, past)
