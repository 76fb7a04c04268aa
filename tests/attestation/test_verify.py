"""The verifier pipeline on real AWS documents and on Nitro-shaped chains built in the fixtures."""

from __future__ import annotations

import hashlib
import os
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from attestation.document import decode_document, encode_document
from attestation.errors import MalformedDocumentError, PolicyError, VerificationError
from attestation.policy import RejectDebug
from attestation.verify import (
    AWS_NITRO_ROOT_G1_PEM,
    AWS_NITRO_ROOT_G1_SHA256,
    Verifier,
    aws_nitro_root,
)

_VECTORS = Path(
    os.environ.get("ATTESTED_RANDOM_VECTORS", Path(__file__).resolve().parents[3] / "shared/test-vectors")
)
REAL = sorted(p.name for p in (_VECTORS / "attestation").glob("*.cbor"))
assert REAL, f"no real attestation documents under {_VECTORS}"
DEBUG = [n for n in REAL if "debug" in n]
TODAY = datetime(2026, 11, 29, tzinfo=UTC)


@pytest.fixture(scope="module")
def aws() -> Verifier:
    return Verifier(roots=[aws_nitro_root()])


def _real(vectors: Path, name: str) -> tuple[bytes, datetime]:
    data = (vectors / "attestation" / name).read_bytes()
    return data, decode_document(data).document.issued_at


def test_embedded_root_is_the_published_aws_root(vectors: Path) -> None:
    pem = (vectors / "attestation/aws-nitro-enclaves-root-g1.pem").read_bytes()
    assert x509.load_pem_x509_certificate(pem) == x509.load_pem_x509_certificate(AWS_NITRO_ROOT_G1_PEM)
    der = aws_nitro_root().public_bytes(serialization.Encoding.DER)
    assert hashlib.sha256(der).hexdigest() == AWS_NITRO_ROOT_G1_SHA256


@pytest.mark.parametrize("name", REAL)
def test_real_document_verifies_at_its_own_timestamp(aws: Verifier, vectors: Path, name: str) -> None:
    data, at = _real(vectors, name)
    doc = aws.verify(data, at=at)
    assert doc == decode_document(data).document
    # Pinning by PEM bytes, DER bytes or certificate object is the same thing.
    pem = (vectors / "attestation/aws-nitro-enclaves-root-g1.pem").read_bytes()
    for root in (pem, aws_nitro_root().public_bytes(serialization.Encoding.DER)):
        assert Verifier(roots=[root], chain_cache=False).verify(data, at=at) == doc


@pytest.mark.parametrize("name", REAL)
def test_real_document_is_expired_today(aws: Verifier, vectors: Path, name: str) -> None:
    data, at = _real(vectors, name)
    aws.verify(data, at=at)  # warm the cache: a cached chain must still be checked at `at`
    for verifier in (aws, Verifier(roots=[aws_nitro_root()], chain_cache=False)):
        with pytest.raises(VerificationError, match=r"expired at .*checked at 2026-11-29") as info:
            verifier.verify(data, at=TODAY)
        assert info.value.step == "chain"


@pytest.mark.parametrize("name", REAL)
def test_real_document_is_not_yet_valid_before_its_chain(aws: Verifier, vectors: Path, name: str) -> None:
    data, at = _real(vectors, name)
    with pytest.raises(
        VerificationError, match=r"(cabundle\[\d\]|certificate) .* is not valid before"
    ) as info:
        aws.verify(data, at=at - timedelta(hours=4))
    assert info.value.step == "chain"


@pytest.mark.parametrize("name", DEBUG)
def test_real_debug_documents_fail_reject_debug(aws: Verifier, vectors: Path, name: str) -> None:
    data, at = _real(vectors, name)
    with pytest.raises(PolicyError, match="debug mode") as info:
        aws.verify(data, at=at, policy=RejectDebug())
    assert info.value.step == "policy"


@pytest.mark.parametrize("name", sorted(set(REAL) - set(DEBUG)))
def test_real_production_documents_pass_reject_debug(aws: Verifier, vectors: Path, name: str) -> None:
    data, at = _real(vectors, name)
    aws.verify(data, at=at, policy=RejectDebug())


def test_real_document_rejected_by_another_root(chain: Any, vectors: Path) -> None:
    data, at = _real(vectors, REAL[0])
    with pytest.raises(VerificationError, match=r"cabundle\[0\] .* is not a pinned root"):
        Verifier(roots=[chain.root]).verify(data, at=at)


def test_fixture_chain_document_verifies(chain: Any, nitro: Any) -> None:
    verifier = Verifier(roots=[chain.root])
    doc = verifier.verify(chain.sign(), at=nitro.t0)
    assert doc.module_id == nitro.module_id
    assert doc.pcrs[0] == nitro.pcr0


def test_several_roots_may_be_pinned(chain: Any, other_chain: Any, vectors: Path, nitro: Any) -> None:
    both = Verifier(roots=[chain.root_der, other_chain.root, aws_nitro_root()])
    both.verify(chain.sign(), at=nitro.t0)
    both.verify(other_chain.sign(), at=nitro.t0)
    data, at = _real(vectors, REAL[-1])
    both.verify(data, at=at)


def test_at_must_be_timezone_aware(chain: Any, nitro: Any) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Verifier(roots=[chain.root]).verify(chain.sign(), at=nitro.t0.replace(tzinfo=None))


@pytest.mark.parametrize(
    ("roots", "error"),
    [([], ValueError), ([b"not a certificate"], ValueError), ([42], TypeError)],
)
def test_verifier_needs_valid_roots(roots: list[Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        Verifier(roots=roots)


def test_chain_cache_bound_and_recheck(nitro: Any) -> None:
    chains = [nitro.build_chain() for _ in range(3)]
    verifier = Verifier(roots=[c.root for c in chains], cache_size=2)
    docs = [c.sign() for c in chains]
    for d in docs:
        verifier.verify(d, at=nitro.t0)
    assert verifier.cache_info() == (2, 2, 2)
    # A cached chain is re-checked against `at` on every hit, both ends of the window.
    with pytest.raises(VerificationError, match=r"certificate .* expired at"):
        verifier.verify(docs[-1], at=nitro.t0 + timedelta(hours=3, seconds=1))
    with pytest.raises(VerificationError, match=r"certificate .* not valid before"):
        verifier.verify(docs[-1], at=nitro.t0 - timedelta(minutes=2))
    with pytest.raises(VerificationError, match=r"cabundle\[3\] .* expired at"):
        verifier.verify(docs[-1], at=nitro.t0 + timedelta(hours=12, seconds=1))
    # The evicted one is verified again from scratch, still correctly.
    verifier.verify(docs[0], at=nitro.t0)


def test_cache_hit_and_miss_give_the_same_verdicts(chain: Any, nitro: Any) -> None:
    data = chain.sign()
    cached = Verifier(roots=[chain.root])
    uncached = Verifier(roots=[chain.root], chain_cache=False)
    for at in (nitro.t0, nitro.t0 + timedelta(hours=4), nitro.t0 - timedelta(days=11)):
        outcomes = []
        for v in (cached, cached, uncached):
            try:
                outcomes.append(("ok", v.verify(data, at=at)))
            except VerificationError as exc:
                outcomes.append(("error", str(exc)))
        assert outcomes[0] == outcomes[1] == outcomes[2]


def test_verifier_is_thread_safe(nitro: Any) -> None:
    chains = [nitro.build_chain() for _ in range(4)]
    docs = [c.sign() for c in chains]
    verifier = Verifier(roots=[c.root for c in chains], cache_size=2)  # forces evictions under contention
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for j in range(20):
                doc = verifier.verify(docs[(i + j) % 4], at=nitro.t0)
                assert doc.module_id == nitro.module_id
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert verifier.cache_info().chains <= 2


def test_garbage_raises_malformed(chain: Any, nitro: Any) -> None:
    with pytest.raises(MalformedDocumentError):
        Verifier(roots=[chain.root]).verify(b"\x84\x40\xa0\x40\x40", at=nitro.t0)


def test_certificate_that_is_not_der_is_malformed(chain: Any, nitro: Any) -> None:
    data = chain.sign(certificate=b"\x30\x03\x02\x01\x01")
    with pytest.raises(MalformedDocumentError, match=r"certificate is not a DER X.509 certificate"):
        Verifier(roots=[chain.root]).verify(data, at=nitro.t0)
    bad_bundle = (chain.cabundle[0], b"junk", *chain.cabundle[2:])
    with pytest.raises(MalformedDocumentError, match=r"cabundle\[1\] is not a DER X.509 certificate"):
        Verifier(roots=[chain.root]).verify(chain.sign(cabundle=bad_bundle), at=nitro.t0)


def _new_leaf(nitro: Any, chain: Any, **overrides: Any) -> tuple[bytes, Any]:
    """A fresh leaf under the chain's instance CA (what an NSM issues per document)."""
    key = overrides.pop("key", None) or ec.generate_private_key(ec.SECP384R1())
    fields: dict[str, Any] = {
        "subject": f"{nitro.module_id}.us-east-1.aws",
        "key": key,
        "issuer": chain.certs[3],
        "issuer_key": chain.keys[3],
        "not_before": nitro.t0 - timedelta(minutes=1),
        "not_after": nitro.t0 + timedelta(hours=3),
        "ca": False,
        "key_usage": nitro.leaf_key_usage(),
    }
    fields.update(overrides)
    cert = nitro.issue(**fields)
    return cert.public_bytes(serialization.Encoding.DER), key


def test_new_leaves_under_known_cas_reuse_the_verified_ca_part(chain: Any, nitro: Any) -> None:
    verifier = Verifier(roots=[chain.root])
    verifier.verify(chain.sign(), at=nitro.t0)
    assert verifier.cache_info()[:2] == (1, 1)
    for _ in range(3):
        der, key = _new_leaf(nitro, chain)
        doc = verifier.verify(encode_document(chain.document(certificate=der), key), at=nitro.t0)
        assert doc.certificate == der
    assert verifier.cache_info()[:2] == (4, 1)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"ca": True, "path_length": None}, "certificate is a CA"),
        ({"key_usage": None}, "certificate lacks keyUsage"),
        ({"basic_constraints": False}, "certificate lacks basicConstraints"),
        ({"issuer_key": "rogue"}, "certificate chain does not verify"),
        ({"not_before": datetime(2026, 11, 29, 12, 30, tzinfo=UTC)}, "certificate .* is not valid before"),
        ({"issuer": "zonal"}, r"certificate .* is not issued by cabundle\[3\]"),
    ],
    ids=[
        "leaf-is-ca",
        "no-key-usage",
        "no-basic-constraints",
        "foreign-signature",
        "not-yet-valid",
        "issuer",
    ],
)
def test_bad_new_leaf_fails_the_same_with_and_without_the_ca_cache(
    chain: Any, nitro: Any, overrides: dict[str, Any], message: str
) -> None:
    if overrides.get("issuer_key") == "rogue":
        overrides["issuer_key"] = ec.generate_private_key(ec.SECP384R1())
    if overrides.get("issuer") == "zonal":
        overrides["issuer"], overrides["issuer_key"] = chain.certs[2], chain.keys[2]
    der, key = _new_leaf(nitro, chain, **overrides)
    data = encode_document(chain.document(certificate=der), key)
    warm = Verifier(roots=[chain.root])
    warm.verify(chain.sign(), at=nitro.t0)  # the CA part is now cached
    steps = []
    for verifier in (warm, Verifier(roots=[chain.root], chain_cache=False)):
        with pytest.raises(VerificationError, match=message) as info:
            verifier.verify(data, at=nitro.t0)
        steps.append(info.value.step)
    assert steps == ["chain", "chain"]


def test_any_timezone_is_accepted_and_reported_in_utc(aws: Verifier, vectors: Path) -> None:
    data, at = _real(vectors, REAL[-1])
    aws.verify(data, at=at.astimezone(timezone(timedelta(hours=5))))
    with pytest.raises(VerificationError, match=r"checked at 2025-08-07T10:32:39.691000Z$"):
        aws.verify(data, at=(at + timedelta(days=100)).astimezone(timezone(timedelta(hours=-7))))
