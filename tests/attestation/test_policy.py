"""Policies: each refuses with a PolicyError naming the field; composition fails closed."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from attestation.errors import PolicyError, VerificationError
from attestation.policy import (
    PCRS_BY_CONDITION_KEY,
    AllOf,
    AnyOf,
    MaxAge,
    Nonce,
    PCRs,
    Policy,
    RejectDebug,
    RSAPublicKey,
    UnsafeNoPolicy,
    image_sha384,
    load_rsa_public_key,
)
from attestation.verify import Verifier


@pytest.fixture(scope="module")
def rsa2048() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _spki(key: Any) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_every_policy_is_a_policy() -> None:
    for p in (PCRs({0: bytes(48)}), RejectDebug(), MaxAge(timedelta(1)), Nonce(b"n"), RSAPublicKey()):
        assert isinstance(p, Policy)
    assert isinstance(AllOf(RejectDebug()), Policy)
    assert isinstance(AnyOf(RejectDebug()), Policy)
    assert isinstance(UnsafeNoPolicy(), Policy)


def test_pcrs(chain: Any, nitro: Any) -> None:
    doc = chain.document()
    PCRs({0: nitro.pcr0, 1: b"\x01" * 48}).check(doc, at=nitro.t0)
    image_sha384(nitro.pcr0).check(doc, at=nitro.t0)
    assert PCRS_BY_CONDITION_KEY["ImageSha384"] == 0
    assert PCRS_BY_CONDITION_KEY["PCR8"] == 8
    with pytest.raises(PolicyError, match=r"pcrs\[1\] is 0101.*expects 0000") as info:
        PCRs({1: bytes(48)}).check(doc, at=nitro.t0)
    assert info.value.step == "policy"
    with pytest.raises(PolicyError, match=r"pcrs\[16\] is absent"):
        PCRs({16: bytes(48)}).check(doc, at=nitro.t0)


@pytest.mark.parametrize(
    "expected", [{}, {32: bytes(48)}, {-1: bytes(48)}, {0: b"short"}, {True: bytes(48)}, {0: "00" * 48}]
)
def test_pcrs_rejects_bad_expectations(expected: Any) -> None:
    with pytest.raises(ValueError, match="PCR"):
        PCRs(expected)


def test_reject_debug(chain: Any, nitro: Any) -> None:
    RejectDebug().check(chain.document(), at=nitro.t0)
    debug = chain.document(pcrs={0: bytes(48), 1: bytes(48), 2: bytes(48), 3: b"\x03" * 48})
    with pytest.raises(PolicyError, match="pcrs: the enclave runs in debug mode"):
        RejectDebug().check(debug, at=nitro.t0)


def test_max_age(chain: Any, nitro: Any) -> None:
    doc = chain.document()
    policy = MaxAge(timedelta(minutes=5))
    policy.check(doc, at=nitro.t0)
    policy.check(doc, at=nitro.t0 + timedelta(minutes=5))
    policy.check(doc, at=nitro.t0 - timedelta(seconds=60))  # within the clock skew
    with pytest.raises(PolicyError, match=r"timestamp: the document is 300.001 s old, over .* 300 s"):
        policy.check(doc, at=nitro.t0 + timedelta(minutes=5, milliseconds=1))
    with pytest.raises(PolicyError, match=r"timestamp: the document is dated 61.000 s after"):
        policy.check(doc, at=nitro.t0 - timedelta(seconds=61))
    with pytest.raises(ValueError, match="negative"):
        MaxAge(timedelta(seconds=-1))


def test_nonce(chain: Any, nitro: Any) -> None:
    Nonce(b"abc").check(chain.document(nonce=b"abc"), at=nitro.t0)
    with pytest.raises(PolicyError, match="nonce does not match"):
        Nonce(b"abc").check(chain.document(nonce=b"abd"), at=nitro.t0)
    with pytest.raises(PolicyError, match="nonce is absent"):
        Nonce(b"abc").check(chain.document(), at=nitro.t0)
    for bad in (b"", b"x" * 1025):
        with pytest.raises(ValueError, match="nonce"):
            Nonce(bad)


def test_rsa_public_key(chain: Any, nitro: Any, rsa2048: rsa.RSAPrivateKey) -> None:
    spki = _spki(rsa2048)
    RSAPublicKey().check(chain.document(public_key=spki), at=nitro.t0)
    assert load_rsa_public_key(spki).key_size == 2048
    cases = {
        "absent": None,
        "not a DER SubjectPublicKeyInfo": b"\x01" * 64,
        "not an RSA key": _spki(ec.generate_private_key(ec.SECP384R1())),
        "not a DER-encoded SubjectPublicKeyInfo": rsa2048.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.PKCS1
        ),
    }
    for reason, value in cases.items():
        with pytest.raises(PolicyError, match=f"public_key is {reason}"):
            RSAPublicKey().check(chain.document(public_key=value), at=nitro.t0)
    with pytest.raises(PolicyError, match=r"public_key is RSA-2048; allowed sizes are \(4096,\)"):
        RSAPublicKey(sizes=(4096,)).check(chain.document(public_key=spki), at=nitro.t0)
    with pytest.raises(ValueError, match="sizes"):
        RSAPublicKey(sizes=(1024,))


def test_rsa_1024_is_refused(chain: Any, nitro: Any) -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(PolicyError, match="RSA-1024"):
        RSAPublicKey().check(chain.document(public_key=_spki(small)), at=nitro.t0)


def test_all_of_and_any_of(chain: Any, nitro: Any) -> None:
    doc = chain.document(nonce=b"n")
    good, bad = Nonce(b"n"), Nonce(b"m")
    AllOf(good, RejectDebug()).check(doc, at=nitro.t0)
    with pytest.raises(PolicyError, match="nonce does not match"):
        AllOf(good, bad).check(doc, at=nitro.t0)
    AnyOf(bad, good).check(doc, at=nitro.t0)
    with pytest.raises(PolicyError, match=r"none of the alternatives holds: nonce does not match.*; pcrs"):
        AnyOf(bad, PCRs({0: bytes(48)})).check(doc, at=nitro.t0)
    # Empty compositions fail closed.
    with pytest.raises(PolicyError, match="fail closed"):
        AllOf().check(doc, at=nitro.t0)
    with pytest.raises(PolicyError, match="fail closed"):
        AnyOf().check(doc, at=nitro.t0)
    # Nesting works.
    AllOf(AnyOf(bad, good), AllOf(RejectDebug())).check(doc, at=nitro.t0)


def test_unsafe_no_policy_warns(chain: Any, nitro: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="attestation.policy"):
        UnsafeNoPolicy().check(chain.document(), at=nitro.t0)
    assert "UnsafeNoPolicy" in caplog.text


def test_policy_runs_last_in_the_verifier(chain: Any, nitro: Any) -> None:
    verifier = Verifier(roots=[chain.root])
    data = chain.sign(nonce=b"n")
    doc = verifier.verify(data, at=nitro.t0, policy=AllOf(Nonce(b"n"), MaxAge(timedelta(seconds=1))))
    assert doc.nonce == b"n"
    with pytest.raises(PolicyError, match="nonce does not match") as info:
        verifier.verify(data, at=nitro.t0, policy=Nonce(b"x"))
    assert isinstance(info.value, VerificationError)
    assert str(info.value) == "policy: nonce does not match the expected value"
    # Chain failure is reported before the policy is consulted.
    with pytest.raises(VerificationError) as info2:
        verifier.verify(data, at=nitro.t0 + timedelta(days=30), policy=Nonce(b"x"))
    assert info2.value.step == "chain"
