"""Fixtures for the verifier tests: Nitro-shaped certificate chains built here with cryptography.

They are independent of the simulated PKI in ``attestation.pki`` on purpose: the verifier is tested against
chains it did not produce (root -> regional -> zonal -> instance -> leaf, P-384, the real extensions), and
against deliberately broken variants the simulated PKI would never issue.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from attestation.document import AttestationDocument, encode_document

#: The reference time of fixture chains and documents.
T0 = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
MODULE_ID = "i-0123456789abcdef0-enc0123456789abcdef"
PCR0 = bytes(range(48))


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Amazon"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "AWS"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


_CA_KU = x509.KeyUsage(
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


def leaf_key_usage(*, digital_signature: bool = True) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=digital_signature,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def issue(
    *,
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    not_before: datetime,
    not_after: datetime,
    ca: bool,
    path_length: int | None = None,
    key_usage: x509.KeyUsage | None = _CA_KU,
    basic_constraints: bool = True,
) -> x509.Certificate:
    """One certificate shaped like the real Nitro ones (aws-facts.md §3)."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.subject if issuer else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if basic_constraints:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
    if key_usage is not None:
        builder = builder.add_extension(key_usage, critical=True)
    if ca:
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        if issuer is not None:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
            )
    return builder.sign(issuer_key, hashes.SHA384())


@dataclass(frozen=True, kw_only=True)
class NitroChain:
    """root -> regional -> zonal -> instance -> leaf, with every private key (for re-signing)."""

    certs: tuple[x509.Certificate, ...]  # root, regional, zonal, instance, leaf
    keys: tuple[ec.EllipticCurvePrivateKey, ...] = field(repr=False)

    @property
    def root(self) -> x509.Certificate:
        return self.certs[0]

    @property
    def root_der(self) -> bytes:
        return self.certs[0].public_bytes(serialization.Encoding.DER)

    @property
    def cabundle(self) -> tuple[bytes, ...]:
        return tuple(c.public_bytes(serialization.Encoding.DER) for c in self.certs[:-1])

    @property
    def leaf_der(self) -> bytes:
        return self.certs[-1].public_bytes(serialization.Encoding.DER)

    @property
    def leaf_key(self) -> ec.EllipticCurvePrivateKey:
        return self.keys[-1]

    def document(self, **changes: object) -> AttestationDocument:
        fields: dict[str, object] = {
            "module_id": MODULE_ID,
            "digest": "SHA384",
            "timestamp": int(T0.timestamp() * 1000),
            "pcrs": {0: PCR0, 1: b"\x01" * 48, 2: b"\x02" * 48, 3: bytes(48), 4: b"\x04" * 48},
            "certificate": self.leaf_der,
            "cabundle": self.cabundle,
            "public_key": None,
            "user_data": None,
            "nonce": None,
        }
        fields.update(changes)
        return AttestationDocument(**fields)  # type: ignore[arg-type]

    def sign(self, doc: AttestationDocument | None = None, **changes: object) -> bytes:
        """A document (default: ``document(**changes)``) signed by this chain's leaf key."""
        return encode_document(doc if doc is not None else self.document(**changes), self.leaf_key)


def build_chain(
    at: datetime = T0,
    *,
    leaf_ca: bool = False,
    leaf_digital_signature: bool = True,
    leaf_curve: ec.EllipticCurve | None = None,
    instance_path_length: int | None = 0,
    leaf_basic_constraints: bool = True,
    root: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
) -> NitroChain:
    """A fresh Nitro-shaped chain valid around ``at`` (lifetimes as AWS's), with optional defects."""
    if root is None:
        root_key = ec.generate_private_key(ec.SECP384R1())
        root_cert = issue(
            subject="sim.nitro-enclaves",
            key=root_key,
            issuer=None,
            issuer_key=root_key,
            not_before=datetime(2019, 10, 28, tzinfo=UTC),
            not_after=datetime(2049, 10, 28, tzinfo=UTC),
            ca=True,
        )
    else:
        root_cert, root_key = root
    levels = [
        ("abcdef0123456789.us-east-1.aws.nitro-enclaves", timedelta(days=10), timedelta(days=10), 2),
        ("0123456789abcdef.zonal.us-east-1.aws.nitro-enclaves", timedelta(days=3), timedelta(days=3), 1),
        ("i-0123456789abcdef0.us-east-1.aws.nitro-enclaves", timedelta(hours=12), timedelta(hours=12), None),
    ]
    certs = [root_cert]
    keys = [root_key]
    for subject, before, after, pathlen in levels:
        key = ec.generate_private_key(ec.SECP384R1())
        plen = instance_path_length if pathlen is None else pathlen
        certs.append(
            issue(
                subject=subject,
                key=key,
                issuer=certs[-1],
                issuer_key=keys[-1],
                not_before=at - before,
                not_after=at + after,
                ca=True,
                path_length=plen,
            )
        )
        keys.append(key)
    leaf_key = ec.generate_private_key(leaf_curve or ec.SECP384R1())
    certs.append(
        issue(
            subject=f"{MODULE_ID}.us-east-1.aws",
            key=leaf_key,
            issuer=certs[-1],
            issuer_key=keys[-1],
            not_before=at - timedelta(minutes=1),
            not_after=at + timedelta(hours=3),
            ca=leaf_ca,
            key_usage=leaf_key_usage(digital_signature=leaf_digital_signature),
            basic_constraints=leaf_basic_constraints,
        )
    )
    keys.append(leaf_key)  # type: ignore[arg-type]
    return NitroChain(certs=tuple(certs), keys=tuple(keys))


@pytest.fixture(scope="session")
def chain() -> NitroChain:
    """One valid Nitro-shaped chain for the session (valid around T0)."""
    return build_chain()


@pytest.fixture(scope="session")
def other_chain() -> NitroChain:
    """A second, unrelated chain (its own root)."""
    return build_chain()


@dataclass(frozen=True)
class Nitro:
    """What tests need from here, as one fixture (test modules cannot import conftest)."""

    t0: datetime = T0
    module_id: str = MODULE_ID
    pcr0: bytes = PCR0
    build_chain: Callable[..., NitroChain] = build_chain
    issue: Callable[..., x509.Certificate] = issue
    leaf_key_usage: Callable[..., x509.KeyUsage] = leaf_key_usage


@pytest.fixture(scope="session")
def nitro() -> Nitro:
    return Nitro()
