"""Certificate profiles of the simulated Nitro PKI: names, extensions, lifetimes, issuance (no state, no I/O).

Every shape here is mirrored from the certificates inside real AWS documents (aws-facts.md §3 "Payload map";
test vector nitro-2025-04-29-marlin-prod-17pcrs): attribute order and string types of the subjects,
extension order and criticality, lifetimes, serial layouts. :mod:`attestation.pki` keeps the state.
"""

from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# -- Named bounds and shapes ---------------------------------------------------------------------------------
ROOT_LIFETIME = timedelta(days=30 * 365 + 7)  # real root: 2019-10-28 .. 2049-10-28
REGIONAL_LIFETIME = timedelta(days=20, hours=1)  # real: 20 days 1 hour
ZONAL_LIFETIME = timedelta(days=5, hours=14)  # real: 5 days 14 hours
INSTANCE_LIFETIME = timedelta(days=1)
LEAF_LIFETIME = timedelta(hours=3)
#: Real leaves start 3 s before the time in their serial.
LEAF_BACKDATE = timedelta(seconds=3)
#: CA levels start a little before the time they were issued at, so processes whose clocks (or reference
#: times) differ by less than this agree that a freshly issued level is already valid.
CA_BACKDATE = timedelta(minutes=5)
#: The root starts well before it is first used (AWS's G1 root was six years old in 2025), so documents
#: issued "in the past" of a home still chain to the same root instead of forcing a new trust anchor.
ROOT_BACKDATE = timedelta(days=5 * 365)

#: The simulated region and partition; the root's CN differs from AWS's so the two can never be confused.
REGION = "us-east-1"
ROOT_COMMON_NAME = "sim.aws.nitro-enclaves"
#: ``i-`` and 17 hex digits (EC2 instance id); the enclave part is ``-enc`` and 16 hex digits.
INSTANCE_ID_RE = re.compile(r"i-[0-9a-f]{17}")
MODULE_ID_RE = re.compile(r"(i-[0-9a-f]{17})-enc([0-9a-f]{16})")

LEVELS = ("root", "regional", "zonal", "instance")
LIFETIMES = {
    "root": ROOT_LIFETIME,
    "regional": REGIONAL_LIFETIME,
    "zonal": ZONAL_LIFETIME,
    "instance": INSTANCE_LIFETIME,
}
#: What each level must still cover after ``at``: the lifetime of what it issues next.
CHILD_LIFETIME = {
    "root": REGIONAL_LIFETIME,
    "regional": ZONAL_LIFETIME,
    "zonal": INSTANCE_LIFETIME,
    "instance": LEAF_LIFETIME,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Level:
    name: str
    certificate: x509.Certificate
    der: bytes
    key: ec.EllipticCurvePrivateKey

    def usable(self, at: datetime) -> bool:
        """Valid at ``at`` and still valid for a whole child lifetime after it."""
        start = self.certificate.not_valid_before_utc
        end = self.certificate.not_valid_after_utc
        return start <= at and at + CHILD_LIFETIME[self.name] <= end


def _name(*parts: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in parts])


def _ski(key: ec.EllipticCurvePublicKey) -> x509.SubjectKeyIdentifier:
    # RFC 5280 §4.2.1.2 method (1): SHA-1 of the public key bits, which is what the real certificates carry.
    return x509.SubjectKeyIdentifier.from_public_key(key)


def _crl_dp(region: str | None) -> x509.CRLDistributionPoints:
    host = "crl.nitro-sim.invalid" if region is None else f"crl-{region}.nitro-sim.invalid"
    uri = f"http://{host}/crl/{uuid.uuid4()}.crl"
    point = x509.DistributionPoint([x509.UniformResourceIdentifier(uri)], None, None, None)
    return x509.CRLDistributionPoints([point])


_CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)
_INSTANCE_KEY_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)
_LEAF_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=True,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


def _subject(level: str, instance_id: str) -> x509.Name:
    """Subjects with the attribute order and string types of the real certificates."""
    c, st = (NameOID.COUNTRY_NAME, "US"), (NameOID.STATE_OR_PROVINCE_NAME, "Washington")
    loc = (NameOID.LOCALITY_NAME, "Seattle")
    o, ou = (NameOID.ORGANIZATION_NAME, "Amazon"), (NameOID.ORGANIZATIONAL_UNIT_NAME, "AWS")
    if level == "root":
        return _name(c, o, ou, (NameOID.COMMON_NAME, ROOT_COMMON_NAME))
    if level == "regional":
        cn = f"{secrets.token_hex(8)}.{REGION}.aws.nitro-enclaves"
        return _name(c, o, ou, (NameOID.COMMON_NAME, cn))
    if level == "zonal":
        cn = f"{secrets.token_hex(8)}.zonal.{REGION}.aws.nitro-enclaves"
        return _name((NameOID.COMMON_NAME, cn), ou, o, c, (NameOID.STATE_OR_PROVINCE_NAME, "WA"), loc)
    cn = f"{instance_id}.{REGION}.aws.nitro-enclaves"
    return _name(c, st, loc, o, ou, (NameOID.COMMON_NAME, cn))


def _random_serial(bits: int) -> int:
    return secrets.randbits(bits - 1) | (1 << (bits - 2))  # positive, fixed length, never zero


def issue_ca(level: str, parent: Level | None, *, at: datetime, instance_id: str) -> Level:
    key = ec.generate_private_key(ec.SECP384R1())
    public = key.public_key()
    subject = _subject(level, instance_id)
    start = at - (ROOT_BACKDATE if level == "root" else CA_BACKDATE)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if parent is None else parent.certificate.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number() if level == "instance" else _random_serial(128))
        .not_valid_before(start)
        .not_valid_after(start + LIFETIMES[level])
    )
    ski = _ski(public)
    if parent is None:
        builder = (
            builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(_CA_KEY_USAGE, critical=True)
        )
        signer = key
    else:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(parent.key.public_key())
        if level == "instance":
            builder = (
                builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(_INSTANCE_KEY_USAGE, critical=True)
                .add_extension(ski, critical=False)
                .add_extension(aki, critical=False)
            )
        else:
            pathlen = 2 if level == "regional" else 1
            builder = (
                builder.add_extension(x509.BasicConstraints(ca=True, path_length=pathlen), critical=True)
                .add_extension(aki, critical=False)
                .add_extension(ski, critical=False)
                .add_extension(_CA_KEY_USAGE, critical=True)
                .add_extension(_crl_dp(None if level == "regional" else REGION), critical=False)
            )
        signer = parent.key
    cert = builder.sign(signer, hashes.SHA384())
    return Level(name=level, certificate=cert, der=cert.public_bytes(serialization.Encoding.DER), key=key)


def new_instance_id() -> str:
    """A fresh EC2-style instance id, ``i-`` and 17 hex digits."""
    return "i-" + secrets.token_hex(9)[:17]


def new_module_id(instance_id: str, *, at: datetime) -> str:
    """An enclave id as nitro-cli makes them: ``<instance>-enc<16 hex>``, start time in ms then randomness.

    In real ids the first 12 hex digits are the enclave's start time in milliseconds.
    """
    if not INSTANCE_ID_RE.fullmatch(instance_id):
        raise ValueError(f"not an instance id (i- and 17 hex digits): {instance_id!r}")
    millis = int(at.timestamp() * 1000) & 0xFFFF_FFFF_FFFF
    return f"{instance_id}-enc{millis:012x}{secrets.token_hex(2)}"


def issue_leaf(instance: Level, *, module_id: str, at: datetime) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    """A fresh document-signing leaf (DER) and its key, issued by ``instance`` at ``at``."""
    match = MODULE_ID_RE.fullmatch(module_id)
    seconds = int(at.timestamp()) & 0xFFFF_FFFF_FFFF_FFFF
    # Real leaves: serial = enclave id (8 bytes) || issue time in seconds (8 bytes).
    serial = (int(match.group(2), 16) << 64 | seconds) if match else _random_serial(128)
    key = ec.generate_private_key(ec.SECP384R1())
    subject = _name(
        (NameOID.COUNTRY_NAME, "US"),
        (NameOID.STATE_OR_PROVINCE_NAME, "Washington"),
        (NameOID.LOCALITY_NAME, "Seattle"),
        (NameOID.ORGANIZATION_NAME, "Amazon"),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, "AWS"),
        (NameOID.COMMON_NAME, f"{module_id}.{REGION}.aws"),
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(instance.certificate.subject)
        .public_key(key.public_key())
        .serial_number(serial or 1)
        .not_valid_before(at - LEAF_BACKDATE)
        .not_valid_after(at + LEAF_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_LEAF_KEY_USAGE, critical=False)
        .sign(instance.key, hashes.SHA384())
    )
    return cert.public_bytes(serialization.Encoding.DER), key
