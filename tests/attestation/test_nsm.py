"""The simulated NSM core: nsm-check's semantics, attestation documents, the wire handler."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from attestation._pki_profile import LEAF_LIFETIME
from attestation.document import decode_document, verify_signature
from attestation.errors import NSMError
from attestation.nsm import LEAF_RENEW_MARGIN, MAX_RANDOM_BYTES, NSM, default_boot_pcrs, simulate_document
from attestation.nsm_wire import (
    Attestation,
    AttestationResponse,
    DescribeNSM,
    DescribeNSMResponse,
    ErrorResponse,
    ExtendPCR,
    ExtendPCRResponse,
    GetRandom,
    GetRandomResponse,
    LockPCR,
    LockPCRResponse,
    decode_response,
    encode_request,
)
from attestation.pki import SimulatedPKI, new_module_id

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
ZERO = bytes(48)
PCR0 = hashlib.sha384(b"image").digest()


@pytest.fixture
def pki(sim_home: Path) -> SimulatedPKI:
    return SimulatedPKI.load_or_create(sim_home, at=T0)


@pytest.fixture
def nsm(pki: SimulatedPKI) -> NSM:
    return NSM(pki=pki, module_id=new_module_id(pki.instance_id, at=T0))


def test_initial_state_is_what_nsm_check_expects(nsm: NSM) -> None:
    description = nsm.describe_nsm()
    assert description.max_pcrs == 32
    assert description.locked_pcrs == tuple(range(16))
    assert description.digest == "SHA384"
    assert description.module_id == nsm.module_id
    for index in range(32):
        pcr = nsm.describe_pcr(index)
        assert len(pcr.data) == 48
        assert pcr.lock is (index < 16)
        if index in (0, 1, 2, 4):
            assert pcr.data != ZERO, index
        else:
            assert pcr.data == ZERO, index


def test_pcr4_is_the_instance_id_extended_into_zeros(nsm: NSM, pki: SimulatedPKI) -> None:
    assert nsm.describe_pcr(4).data == hashlib.sha384(ZERO + pki.instance_id.encode()).digest()


def test_extend_is_sha384_of_old_and_data(nsm: NSM) -> None:
    first = nsm.extend_pcr(16, b"abc")
    assert first == hashlib.sha384(ZERO + b"abc").digest()
    second = nsm.extend_pcr(16, b"def")
    assert second == hashlib.sha384(first + b"def").digest()
    assert nsm.describe_pcr(16).data == second


@pytest.mark.parametrize("index", [0, 4, 15])
def test_boot_pcrs_are_read_only(nsm: NSM, index: int) -> None:
    with pytest.raises(NSMError) as info:
        nsm.extend_pcr(index, b"x")
    assert info.value.code == "ReadOnlyIndex"
    with pytest.raises(NSMError) as info:
        nsm.lock_pcr(index)
    assert info.value.code == "ReadOnlyIndex"


@pytest.mark.parametrize("index", [32, 100, 65535])
def test_out_of_range_index(nsm: NSM, index: int) -> None:
    for call in (
        lambda: nsm.describe_pcr(index),
        lambda: nsm.extend_pcr(index, b""),
        lambda: nsm.lock_pcr(index),
    ):
        with pytest.raises(NSMError) as info:
            call()
        assert info.value.code == "InvalidIndex"


def test_lock_then_extend_fails_and_lock_is_idempotent(nsm: NSM) -> None:
    nsm.extend_pcr(20, b"x")
    nsm.lock_pcr(20)
    nsm.lock_pcr(20)
    assert nsm.describe_pcr(20).lock
    with pytest.raises(NSMError) as info:
        nsm.extend_pcr(20, b"y")
    assert info.value.code == "ReadOnlyIndex"
    assert 20 in nsm.describe_nsm().locked_pcrs


def test_lock_pcrs_range(nsm: NSM) -> None:
    nsm.lock_pcrs(18)
    assert nsm.describe_nsm().locked_pcrs == tuple(range(18))
    nsm.lock_pcrs(32)
    assert nsm.describe_nsm().locked_pcrs == tuple(range(32))
    with pytest.raises(NSMError) as info:
        nsm.lock_pcrs(33)
    assert info.value.code == "InvalidIndex"


def test_get_random(nsm: NSM) -> None:
    a, b = nsm.get_random(), nsm.get_random()
    assert len(a) == MAX_RANDOM_BYTES == 256
    assert a != b


def test_attestation_document_fields_chain_and_signature(nsm: NSM, pki: SimulatedPKI) -> None:
    raw = nsm.attestation(user_data=b"u", nonce=b"n", public_key=b"k", at=T0)
    signed = decode_document(raw)
    doc = signed.document
    assert doc.module_id == nsm.module_id
    assert doc.timestamp == int(T0.timestamp()) * 1000
    assert (doc.user_data, doc.nonce, doc.public_key) == (b"u", b"n", b"k")
    assert sorted(doc.pcrs) == list(range(16))
    assert doc.cabundle[0] == pki.root_der
    leaf_key = x509.load_der_x509_certificate(doc.certificate).public_key()
    assert isinstance(leaf_key, ec.EllipticCurvePublicKey)
    verify_signature(signed, leaf_key)
    assert not doc.debug_mode


def test_attestation_carries_locked_application_pcrs(nsm: NSM) -> None:
    value = nsm.extend_pcr(16, b"app")
    nsm.extend_pcr(17, b"unlocked")
    nsm.lock_pcr(16)
    doc = decode_document(nsm.attestation(at=T0)).document
    assert sorted(doc.pcrs) == list(range(17))
    assert doc.pcrs[16] == value
    assert 17 not in doc.pcrs


def test_optional_fields_absent_are_null_like_the_real_nsm(nsm: NSM) -> None:
    payload = cbor2.loads(cbor2.loads(nsm.attestation(at=T0))[2])
    assert payload["public_key"] is None
    assert payload["user_data"] is None
    assert payload["nonce"] is None


def test_field_bounds(nsm: NSM) -> None:
    full = bytes(1024)
    doc = decode_document(nsm.attestation(user_data=full, nonce=full, public_key=full, at=T0)).document
    assert doc.user_data == full
    for name in ("user_data", "nonce", "public_key"):
        with pytest.raises(NSMError) as info:
            nsm.attestation(at=T0, **{name: bytes(1025)})
        assert info.value.code == "InputTooLarge"


def test_debug_mode_zeroes_pcr0_to_2_and_keeps_3_and_4(pki: SimulatedPKI) -> None:
    pcr3 = hashlib.sha384(ZERO + b"arn:aws:iam::123456789012:role/x").digest()
    module_id = new_module_id(pki.instance_id, at=T0)
    nsm = NSM(pki=pki, module_id=module_id, pcrs={0: PCR0, 1: PCR0, 2: PCR0, 3: pcr3}, debug=True)
    doc = decode_document(nsm.attestation(at=T0)).document
    assert doc.debug_mode
    assert doc.pcrs[0] == doc.pcrs[1] == doc.pcrs[2] == ZERO
    assert doc.pcrs[3] == pcr3
    assert doc.pcrs[4] == default_boot_pcrs(module_id)[4] != ZERO


def test_given_pcrs_replace_defaults(pki: SimulatedPKI) -> None:
    nsm = NSM(pki=pki, module_id=new_module_id(pki.instance_id, at=T0), pcrs={0: PCR0})
    assert nsm.describe_pcr(0).data == PCR0
    assert nsm.describe_pcr(1).data == ZERO
    assert nsm.describe_pcr(4).data != ZERO


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"module_id": "i-1-enc2"}, "module_id must be"),
        ({"pcrs": {16: PCR0}}, "boot PCR index"),
        ({"pcrs": {0: b"short"}}, "must be 48 bytes"),
    ],
)
def test_construction_is_validated(pki: SimulatedPKI, kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"module_id": new_module_id(pki.instance_id, at=T0), **kwargs}
    with pytest.raises(ValueError, match=message):
        NSM(pki=pki, **args)  # type: ignore[arg-type]


# -- The wire handler --------------------------------------------------------------------------------------


def test_handle_serves_every_request(nsm: NSM) -> None:
    def ask(request: object) -> object:
        return decode_response(nsm.handle(encode_request(request), at=T0))  # type: ignore[arg-type]

    assert isinstance(ask(DescribeNSM()), DescribeNSMResponse)
    extended = ask(ExtendPCR(index=16, data=b"x"))
    assert extended == ExtendPCRResponse(data=hashlib.sha384(ZERO + b"x").digest())
    assert ask(LockPCR(index=16)) == LockPCRResponse()
    assert ask(LockPCR(index=3)) == ErrorResponse(code="ReadOnlyIndex")
    assert ask(ExtendPCR(index=40, data=b"")) == ErrorResponse(code="InvalidIndex")
    random = ask(GetRandom())
    assert isinstance(random, GetRandomResponse)
    assert len(random.random) == 256
    answer = ask(Attestation(nonce=b"abc"))
    assert isinstance(answer, AttestationResponse)
    assert decode_document(answer.document).document.nonce == b"abc"
    assert ask(Attestation(user_data=bytes(1025))) == ErrorResponse(code="InputTooLarge")


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"\xff\xff", "InvalidArgument"),
        (cbor2.dumps("Reboot"), "InvalidArgument"),
        (b"", "InvalidArgument"),
        (cbor2.dumps({"ExtendPCR": {"index": 16, "data": bytes(4096)}}), "InputTooLarge"),
    ],
    ids=["garbage", "unknown", "empty", "oversized"],
)
def test_handle_answers_errors_for_bad_requests(nsm: NSM, data: bytes, code: str) -> None:
    assert decode_response(nsm.handle(data, at=T0)) == ErrorResponse(code=code)


# -- Layout and independent checks ------------------------------------------------------------------------


def test_document_layout_matches_a_real_one(nsm: NSM, vectors: Path) -> None:
    ours = nsm.attestation(public_key=b"k", at=T0)
    real = (vectors / "attestation" / "nitro-2025-04-29-marlin-prod-17pcrs.cbor").read_bytes()
    # 84 (array of 4), 44 a1013822 (protected), a0 (unprotected), 59 (2-byte payload length).
    assert ours[:8] == real[:8] == bytes.fromhex("8444a1013822a059")
    assert ours[-98:-96] == real[-98:-96] == bytes.fromhex("5860")  # 96-byte bstr head
    ours_payload, real_payload = cbor2.loads(ours)[2], cbor2.loads(real)[2]
    assert list(cbor2.loads(ours_payload)) == list(cbor2.loads(real_payload))
    assert ours_payload[:1] == b"\xbf"


def test_pycose_verifies_our_document(nsm: NSM) -> None:
    from pycose.keys import EC2Key
    from pycose.keys.curves import P384
    from pycose.messages import Sign1Message

    raw = nsm.attestation(at=T0)
    message = Sign1Message.from_cose_obj(list(cbor2.loads(raw)), True)
    key = x509.load_der_x509_certificate(cbor2.loads(message.payload)["certificate"]).public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    numbers = key.public_numbers()
    message.key = EC2Key(crv=P384, x=numbers.x.to_bytes(48, "big"), y=numbers.y.to_bytes(48, "big"))
    assert message.verify_signature()


def test_simulate_document(sim_home: Path) -> None:
    raw = simulate_document(sim_home, at=T0, nonce=b"n", pcrs={0: PCR0}, debug=False)
    doc = decode_document(raw).document
    assert doc.pcrs[0] == PCR0
    assert doc.nonce == b"n"
    again = decode_document(simulate_document(sim_home, at=T0 + timedelta(seconds=1))).document
    assert again.cabundle == doc.cabundle
    debug = decode_document(simulate_document(sim_home, at=T0, debug=True, pcrs={0: PCR0})).document
    assert debug.debug_mode
    from attestation.pki import simulate_document as via_pki

    assert decode_document(via_pki(sim_home, at=T0)).document.cabundle == doc.cabundle


@pytest.fixture(scope="module")
def shared_nsm(tmp_path_factory: pytest.TempPathFactory) -> NSM:
    pki = SimulatedPKI.load_or_create(tmp_path_factory.mktemp("fuzz"), at=T0)
    return NSM(pki=pki, module_id=new_module_id(pki.instance_id, at=T0))


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.binary(max_size=40) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3),
    max_leaves=8,
)
_variants = st.sampled_from(
    ["DescribePCR", "ExtendPCR", "LockPCR", "LockPCRs", "DescribeNSM", "Attestation", "GetRandom", "Error"]
)
_shaped = st.builds(lambda v, body: cbor2.dumps({v: body}), _variants, _values) | st.builds(
    lambda v, i, d: cbor2.dumps({v: {"index": i, "data": d}}),
    _variants,
    st.integers(-5, 70000),
    st.binary(max_size=64),
)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200) | _values.map(cbor2.dumps) | _shaped)
def test_fuzz_handle_always_answers_in_the_wire_shape(shared_nsm: NSM, data: bytes) -> None:
    response = decode_response(shared_nsm.handle(data, at=T0))
    assert response is not None


def test_leaf_is_reused_while_valid_then_renewed(nsm: NSM) -> None:
    """One leaf serves many documents, as in real ones; it is replaced before it runs out."""
    at = T0 + timedelta(minutes=5)

    def leaf(when: datetime) -> bytes:
        return decode_document(nsm.attestation(at=when)).document.certificate

    first = leaf(at)
    assert leaf(at + timedelta(hours=2)) == first
    renewed = leaf(at + LEAF_LIFETIME - LEAF_RENEW_MARGIN + timedelta(minutes=1))
    assert renewed != first
    assert leaf(at - timedelta(minutes=1)) not in (first, renewed)  # not yet valid then: a new leaf


def test_the_project_verifier_accepts_our_documents_and_policies_see_the_pcrs(
    nsm: NSM, pki: SimulatedPKI
) -> None:
    from attestation.errors import PolicyError, VerificationError
    from attestation.policy import PCRs, RejectDebug
    from attestation.verify import Verifier, aws_nitro_root

    pcr0 = nsm.describe_pcr(0).data
    raw = nsm.attestation(nonce=b"n", at=T0)
    doc = Verifier(roots=[pki.root_der]).verify(raw, at=T0, policy=PCRs({0: pcr0}))
    assert doc.nonce == b"n"
    with pytest.raises(PolicyError):
        Verifier(roots=[pki.root_der]).verify(raw, at=T0, policy=PCRs({0: bytes(48)}))
    with pytest.raises(VerificationError):
        Verifier(roots=[aws_nitro_root()]).verify(raw, at=T0)
    debug = NSM(pki=pki, module_id=nsm.module_id, debug=True).attestation(at=T0)
    with pytest.raises(PolicyError):
        Verifier(roots=[pki.root_der]).verify(debug, at=T0, policy=RejectDebug())
