"""What the bad-document corpus is made of, deterministically: keys, the PKI, COSE signing, the good document.

Rules (the generator's contract: regenerating gives the same bytes on every run and machine):

- Time is fixed (:data:`AT`, the verification time); nothing reads the clock.
- Randomness is a seeded SHA-256 stream (:class:`Stream`): EC keys by ``derive_private_key``, RSA keys by
  an incremental prime search from a seeded start (:func:`rsa_key`); ECDSA signatures of documents and
  certificates are deterministic (RFC 6979; cryptography's ``deterministic_signing``).
- The chain is the simulated PKI's own: :class:`attestation.pki.SimulatedPKI` in a temporary home, issuing
  with :mod:`attestation._pki_profile`, its randomness (keys, serials, names, CRL URLs) fed from the stream
  by :func:`seeded`. Its documented files (``pki/<level>.pem``: certificate, then key) give the CA keys that
  the defective certificates are issued with.
- PCR0-2 are real: a production enclave's measurements from a real AWS document
  (``test-vectors/attestation/nitro-2025-04-29-marlin-prod-17pcrs.cbor``), so "re-signed by an untrusted PKI
  with real PCRs" is exactly that. The rest of the PCR bank is the simulated NSM's
  (:class:`attestation.nsm.NSM`).
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from attestation import _pki_profile
from attestation.document import PROTECTED_ES384, AttestationDocument, encode_payload
from attestation.nsm import BOOT_LOCKED_PCRS, NSM
from attestation.pki import SimulatedPKI

SEED = b"attested-random/tests/attestation/corpus v1"

#: The verification time of the whole corpus (``nitro-attest verify --at``, and kms-sim's Recipient check).
AT = datetime(2026, 4, 1, 12, 0, 0, tzinfo=UTC)
#: The CA levels are issued here (valid from 5 minutes before, for their lifetimes: instance 1 day).
PKI_AT = AT - timedelta(hours=6)
#: The document-signing leaf is issued here (valid 3 hours), the good document two minutes later.
LEAF_AT = AT - timedelta(minutes=3)
DOC_AT = AT - timedelta(minutes=1)
#: ``--max-age`` and ``kms-sim --max-doc-age``: kms-sim's default, 5 minutes.
MAX_AGE_S = 300

#: PCR0, PCR1, PCR2 of a real production enclave (the marlin document of 2025-04-29 in test-vectors).
REAL_PCRS = {
    0: bytes.fromhex(
        "2984ab215649c40ffe8f8b80cfadee47f1b06760f7d9257981f64b2758c347fafa6c733591b25e75ae7e9d1cb86ad5df"
    ),
    1: bytes.fromhex(
        "ed7759aa996a2e94c6086f24f61f354f75f9ea7f93a74f55d65c2cb5590d1af3930c9adbc57bb543764fa1f5c444f495"
    ),
    2: bytes.fromhex(
        "27216d3fbedb900be4bdbdb2d5be27b9e8254989e123aaa97f24d1b0fd1016d001323eb9d09a9d25e8e1e1298d68e9c6"
    ),
}

FIELDS = (
    "module_id",
    "digest",
    "timestamp",
    "pcrs",
    "certificate",
    "cabundle",
    "public_key",
    "user_data",
    "nonce",
)
REQUIRED = FIELDS[:6]

# Steps of `nitro-attest verify` (attestation/verify.py's pipeline; the CLI prints "FAILED at step ...").
DECODE, CHAIN, SIGNATURE, POLICY = "decode", "chain", "signature", "policy"
# kms-sim's answers (kms/recipient.py: any document it rejects; kms/iam.py: the ImageSha384 condition).
VALIDATION, DENIED = "ValidationException", "AccessDeniedException"


@dataclass(frozen=True, slots=True, kw_only=True)
class Bad:
    """One corpus file: its scenario name, what is wrong, and who must refuse it how."""

    name: str
    what: str
    step: str
    detail: str
    data: bytes
    kms_error: str = VALIDATION


# -- deterministic randomness ------------------------------------------------------------------------------


class Stream:
    """SHA-256 in counter mode over the seed and a label: the only source of "randomness" here."""

    def __init__(self, label: str) -> None:
        self._prefix = SEED + b"/" + label.encode()
        self._counter = 0

    def bytes(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(self._prefix + self._counter.to_bytes(8, "big")).digest()
            self._counter += 1
        return out[:n]

    def bits(self, k: int) -> int:
        return int.from_bytes(self.bytes((k + 7) // 8), "big") >> (-k % 8)


def ec_key(label: str, curve: ec.EllipticCurve | None = None) -> ec.EllipticCurvePrivateKey:
    """A P-384 (or ``curve``) key derived from the seed and ``label``."""
    curve = curve or ec.SECP384R1()
    stream = Stream("ec/" + label)
    while True:
        with contextlib.suppress(ValueError):  # 0 or past the group order: draw again (negligibly rare)
            return ec.derive_private_key(stream.bits(curve.key_size), curve)


_SMALL_PRIMES = tuple(p for p in range(3, 4096, 2) if all(p % q for q in range(3, int(p**0.5) + 1, 2)))
_WITNESSES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53)
#: Where the upward prime search from each seeded start stops (found once by searching from 0): any value
#: gives a correct key (the search goes on from there); these make the RSA-8192 key take ~1 s, not ~2 min.
_PRIME_SKIPS = {"rsa8192/p": 4851, "rsa8192/q": 1534}


def _probable_prime(n: int) -> bool:
    """Miller-Rabin with the first 16 primes as fixed witnesses (deterministic; error < 4^-16)."""
    d, s = n - 1, 0
    while not d & 1:
        d, s = d >> 1, s + 1
    for a in _WITNESSES:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def _prime(label: str, bits: int) -> int:
    """The first prime at or after a seeded odd start of ``bits`` bits (top two bits set)."""
    candidate = Stream("prime/" + label).bits(bits) | (3 << (bits - 2)) | 1
    candidate += 2 * _PRIME_SKIPS.get(label, 0)
    while any(candidate % p == 0 for p in _SMALL_PRIMES) or not _probable_prime(candidate):
        candidate += 2
    return candidate


def rsa_key(bits: int) -> rsa.RSAPrivateKey:
    """An RSA key of exactly ``bits`` bits (e = 65537) from two seeded primes."""
    e = 65537
    p, q = _prime(f"rsa{bits}/p", bits // 2), _prime(f"rsa{bits}/q", bits // 2)
    d = pow(e, -1, (p - 1) * (q - 1))
    numbers = rsa.RSAPrivateNumbers(
        p=p,
        q=q,
        d=d,
        dmp1=rsa.rsa_crt_dmp1(d, p),
        dmq1=rsa.rsa_crt_dmq1(d, q),
        iqmp=rsa.rsa_crt_iqmp(p, q),
        public_numbers=rsa.RSAPublicNumbers(e, p * q),
    )
    # OpenSSL's own check of an 8192-bit key (primality of p and q again) takes seconds; ours just did it.
    return numbers.private_key(unsafe_skip_rsa_key_validation=bits > 4096)


def spki(key: Any) -> bytes:
    """The DER SubjectPublicKeyInfo of a private key's public half."""
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return bytes(der)


@contextlib.contextmanager
def seeded(label: str) -> Iterator[None]:
    """The simulated PKI's randomness from the stream, and certificate ECDSA signatures deterministic.

    What ``attestation.pki`` and ``attestation._pki_profile`` draw: ``ec.generate_private_key`` (keys),
    ``secrets.token_hex`` (instance id, CNs, module ids), ``secrets.randbits`` and
    ``x509.random_serial_number`` (serials), ``uuid.uuid4`` (CRL URLs); and ``CertificateBuilder.sign``.
    """
    stream = Stream("pki/" + label)
    count = iter(range(1 << 30))
    original_sign = x509.CertificateBuilder.sign

    def generate_private_key(curve: ec.EllipticCurve, backend: Any = None) -> ec.EllipticCurvePrivateKey:
        return ec_key(f"{label}/{next(count)}", curve)

    def sign(builder: x509.CertificateBuilder, key: Any, algorithm: Any, *args: Any, **kw: Any) -> Any:
        if isinstance(key, ec.EllipticCurvePrivateKey):
            kw["ecdsa_deterministic"] = True
        return original_sign(builder, key, algorithm, *args, **kw)

    def serial() -> int:
        return stream.bits(159) | 1

    def uuid4() -> uuid.UUID:
        return uuid.UUID(bytes=stream.bytes(16), version=4)

    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(ec, "generate_private_key", generate_private_key))
        stack.enter_context(mock.patch("secrets.token_hex", lambda n=32: stream.bytes(n).hex()))
        stack.enter_context(mock.patch("secrets.randbits", stream.bits))
        stack.enter_context(mock.patch.object(x509, "random_serial_number", serial))
        stack.enter_context(mock.patch.object(uuid, "uuid4", uuid4))
        stack.enter_context(mock.patch.object(x509.CertificateBuilder, "sign", sign))
        yield


# -- the PKI ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pki:
    """One simulated Nitro PKI: the four CA levels (certificate and key), a leaf, the enclave's PCR banks."""

    levels: dict[str, _pki_profile.Level]
    module_id: str
    leaf: x509.Certificate
    leaf_key: ec.EllipticCurvePrivateKey
    #: PCR0-15 as the simulated NSM reports them for an enclave of :data:`REAL_PCRS`, and in debug mode.
    pcrs: dict[int, bytes]
    debug_pcrs: dict[int, bytes]

    @property
    def cabundle(self) -> list[bytes]:
        return [self.levels[name].der for name in _pki_profile.LEVELS]

    @property
    def leaf_der(self) -> bytes:
        return self.leaf.public_bytes(serialization.Encoding.DER)

    def der(self, name: str) -> bytes:
        return self.levels[name].der

    def cert(self, name: str) -> x509.Certificate:
        return self.levels[name].certificate

    def key(self, name: str) -> ec.EllipticCurvePrivateKey:
        return self.levels[name].key


def make_pki(label: str) -> Pki:
    """A SimulatedPKI made in a temporary home at :data:`PKI_AT`, and a leaf issued at :data:`LEAF_AT`."""
    with tempfile.TemporaryDirectory() as home, seeded(label):
        pki = SimulatedPKI.load_or_create(Path(home), at=PKI_AT)
        module_id = _pki_profile.new_module_id(pki.instance_id, at=PKI_AT)
        signer = pki.issue_signer(at=LEAF_AT, module_id=module_id)
        levels = {}
        for name in _pki_profile.LEVELS:
            pem = (Path(home) / "pki" / f"{name}.pem").read_bytes()
            cert = x509.load_pem_x509_certificate(pem)
            key = serialization.load_pem_private_key(pem, password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise TypeError(f"{name}.pem does not hold an EC key")
            der = cert.public_bytes(serialization.Encoding.DER)
            levels[name] = _pki_profile.Level(name=name, certificate=cert, der=der, key=key)
        banks = []
        for debug in (False, True):
            nsm = NSM(pki=pki, module_id=module_id, pcrs=REAL_PCRS, debug=debug)
            banks.append({i: nsm.describe_pcr(i).data for i in range(BOOT_LOCKED_PCRS)})
    return Pki(
        levels=levels,
        module_id=module_id,
        leaf=x509.load_der_x509_certificate(signer.certificate),
        leaf_key=signer.private_key,
        pcrs=banks[0],
        debug_pcrs=banks[1],
    )


def issue_leaf(pki: Pki, *, at: datetime, label: str) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    """Another leaf of ``pki``'s instance level issued at ``at``, by the profile's own function."""
    with seeded(label):
        return _pki_profile.issue_leaf(pki.levels["instance"], module_id=pki.module_id, at=at)


Extensions = dict[type[x509.ExtensionType], tuple[x509.ExtensionType, bool] | None]


def reissue(
    cert: x509.Certificate,
    signer: ec.EllipticCurvePrivateKey,
    *,
    public_key: Any = None,
    issuer: x509.Name | None = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    replace: Extensions | None = None,
    add: tuple[tuple[x509.ExtensionType, bool], ...] = (),
    algorithm: hashes.SHA256 | hashes.SHA384 | None = None,
) -> bytes:
    """``cert`` issued again with what is given changed (``replace``: extension type -> new or None), DER."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(issuer or cert.issuer)
        .public_key(public_key or cert.public_key())
        .serial_number(cert.serial_number)
        .not_valid_before(not_before or cert.not_valid_before_utc)
        .not_valid_after(not_after or cert.not_valid_after_utc)
    )
    for ext in cert.extensions:
        if replace and type(ext.value) in replace:
            new = replace[type(ext.value)]
            if new is not None:
                builder = builder.add_extension(new[0], critical=new[1])
            continue
        builder = builder.add_extension(ext.value, critical=ext.critical)
    for value, critical in add:
        builder = builder.add_extension(value, critical=critical)
    signed_cert = builder.sign(signer, algorithm or hashes.SHA384(), ecdsa_deterministic=True)
    return signed_cert.public_bytes(serialization.Encoding.DER)


def key_usage(*, digital_signature: bool, key_cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=not key_cert_sign,  # so that no KeyUsage here is empty
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def ca_below(
    parent: x509.Certificate, parent_key: ec.EllipticCurvePrivateKey, label: str
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """One more CA (no pathlen of its own) issued by ``parent``: a level the Nitro chain does not have."""
    key = ec_key("ca/" + label)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{label}.aws.nitro-enclaves")]))
        .issuer_name(parent.subject)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(hashlib.sha256(label.encode()).digest()[:8], "big"))
        .not_valid_before(PKI_AT - timedelta(minutes=5))
        .not_valid_after(PKI_AT + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(key_usage(digital_signature=True, key_cert_sign=True), critical=True)
        .sign(parent_key, hashes.SHA384(), ecdsa_deterministic=True)
    )
    return cert, key


def leaf_under(
    issuer: x509.Certificate, issuer_key: ec.EllipticCurvePrivateKey, like: x509.Certificate, label: str
) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    """A leaf shaped like ``like`` (the profile's) with its own key, issued by another CA; DER and key."""
    key = ec_key("leaf/" + label)
    return reissue(like, issuer_key, public_key=key.public_key(), issuer=issuer.subject), key


def negative_serial(der: bytes) -> bytes:
    """``der`` with its serialNumber's first content octet given the sign bit (the signature left stale)."""
    out = bytearray(der)
    pos = 0
    for _ in range(2):  # into Certificate, then into tbsCertificate (long-form lengths)
        pos += 2 + (out[pos + 1] & 0x7F if out[pos + 1] & 0x80 else 0)
    if out[pos] == 0xA0:  # [0] EXPLICIT version
        pos += 2 + out[pos + 1]
    if out[pos] != 0x02:
        raise ValueError("no serialNumber where RFC 5280 puts it")
    out[pos + 2] |= 0x80
    return bytes(out)


# -- COSE_Sign1 and the payload map -------------------------------------------------------------------------

ES384 = ec.ECDSA(hashes.SHA384(), deterministic_signing=True)


def signature(payload: bytes, key: ec.EllipticCurvePrivateKey, protected: bytes = PROTECTED_ES384) -> bytes:
    """ES384 over the COSE Sig_structure (RFC 9052 §4.4) as raw r||s, 48 bytes each (RFC 9053 §2.1)."""
    r, s = decode_dss_signature(key.sign(sig_structure(payload, protected), ES384))
    return r.to_bytes(48, "big") + s.to_bytes(48, "big")


def sig_structure(payload: bytes, protected: bytes = PROTECTED_ES384) -> bytes:
    return cbor2.dumps(["Signature1", protected, b"", payload])


def cose(protected: Any, unprotected: Any, payload: Any, sig: Any, *, tag: int | None = None) -> bytes:
    """A COSE_Sign1 array of whatever parts are given, untagged as the NSM writes it (or with ``tag``)."""
    value: Any = [protected, unprotected, payload, sig]
    return cbor2.dumps(value if tag is None else cbor2.CBORTag(tag, value))


def signed(payload: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
    return cose(PROTECTED_ES384, {}, payload, signature(payload, key))


Pairs = list[tuple[Any, Any]]


def encode_pairs(pairs: Pairs) -> bytes:
    """An indefinite-length CBOR map of ``pairs`` in order, duplicates kept (the newest NSM's map form)."""
    return b"\xbf" + b"".join(cbor2.dumps(k) + cbor2.dumps(v) for k, v in pairs) + b"\xff"


def ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


@dataclass(frozen=True, slots=True, kw_only=True)
class Base:
    """The good document and what its variations are made from."""

    pki: Pki
    #: The untrusted PKI: the same profile and names, other keys.
    rogue: Pki
    recipient: rsa.RSAPrivateKey
    pairs: Pairs
    payload: bytes
    good: bytes

    @property
    def good_signature(self) -> bytes:
        return self.good[-96:]

    def changed(self, **fields: Any) -> Pairs:
        """The good payload's fields in NSM order, with ``fields`` replaced."""
        return [(k, fields.get(k, v)) for k, v in self.pairs]

    def resigned(self, pairs: Pairs) -> bytes:
        """``pairs`` signed by the genuine leaf key: only the content is wrong."""
        return signed(encode_pairs(pairs), self.pki.leaf_key)

    def kept_signature(self, pairs: Pairs) -> bytes:
        """``pairs`` with the good document's signature: the payload changed after signing."""
        return cose(PROTECTED_ES384, {}, encode_pairs(pairs), self.good_signature)


def make_base() -> Base:
    pki = make_pki("trusted")
    recipient = rsa_key(2048)
    doc = AttestationDocument(
        module_id=pki.module_id,
        digest="SHA384",
        timestamp=ms(DOC_AT),
        pcrs=pki.pcrs,
        certificate=pki.leaf_der,
        cabundle=tuple(pki.cabundle),
        public_key=spki(recipient),
        user_data=hashlib.sha384(b"corpus user_data").digest(),
        nonce=hashlib.sha256(b"corpus nonce").digest()[:16],
    )
    payload = encode_payload(doc)  # the codec's own encoding of the control
    pairs: Pairs = [(name, getattr(doc, name)) for name in FIELDS]
    pairs = [(k, dict(v) if k == "pcrs" else list(v) if k == "cabundle" else v) for k, v in pairs]
    if encode_pairs(pairs) != payload:  # so every variation differs from the control only where meant
        raise AssertionError("encode_pairs differs from attestation.document.encode_payload")
    return Base(
        pki=pki,
        rogue=make_pki("untrusted"),
        recipient=recipient,
        pairs=pairs,
        payload=payload,
        good=signed(payload, pki.leaf_key),
    )
