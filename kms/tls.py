"""``--tls``: a CA kept in ``$NITRO_SIM_HOME/kms/tls`` and a server certificate it issues for 127.0.0.1
and every region's KMS endpoint names.

Clients trust ``tls/ca.pem`` (boto3 ``verify=``, ``AWS_CA_BUNDLE``). Both are made on first use and kept;
the server certificate is re-issued when it is within a day of expiry or lacks one of
:data:`SERVER_DNS_NAMES` (a home made by an older kms-sim). Keys are P-256, files mode 0600.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CA_FILE_NAME", "KMS_REGIONS", "SERVER_DNS_NAMES", "TLSFiles", "ensure_tls"]

#: The CA certificate clients trust (``AWS_CA_BUNDLE``), in the home's ``kms/tls``.
CA_FILE_NAME = "ca.pem"
CA_LIFETIME = timedelta(days=3650)
SERVER_LIFETIME = timedelta(days=90)
RENEW_BEFORE = timedelta(days=1)
#: The regions whose KMS endpoints (``kms.<region>.amazonaws.com`` and ``kms-fips.<region>.amazonaws.com``)
#: the parent's vsock-proxy allows by default (aws-nitro-enclaves-cli vsock_proxy/configs/vsock-proxy.yaml,
#: commit 2950b369; the SDK connects with server name ``kms.<region>.amazonaws.com``, so a client in any of
#: them must find its name in the certificate). Listed here, not read from that file at run time.
KMS_REGIONS = (
    "us-east-2",
    "us-east-1",
    "us-west-1",
    "us-west-2",
    "af-south-1",
    "ap-east-1",
    "ap-south-2",
    "ap-southeast-3",
    "ap-southeast-5",
    "ap-southeast-4",
    "ap-south-1",
    "ap-southeast-6",
    "ap-northeast-3",
    "ap-northeast-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-east-2",
    "ap-southeast-7",
    "ap-northeast-1",
    "ca-central-1",
    "ca-west-1",
    "eu-central-1",
    "eu-west-1",
    "eu-west-2",
    "eu-south-1",
    "eu-west-3",
    "eu-south-2",
    "eu-north-1",
    "eu-central-2",
    "il-central-1",
    "mx-central-1",
    "me-south-1",
    "me-central-1",
    "sa-east-1",
    "us-gov-east-1",
    "us-gov-west-1",
    "cn-north-1",
    "cn-northwest-1",
)
#: Names the server certificate covers: localhost and every KMS endpoint name of :data:`KMS_REGIONS`
#: (plus the IP address 127.0.0.1).
SERVER_DNS_NAMES = (
    "localhost",
    *(f"kms.{region}.amazonaws.com" for region in KMS_REGIONS),
    *(f"kms-fips.{region}.amazonaws.com" for region in KMS_REGIONS),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSFiles:
    ca_cert: Path
    cert: Path
    key: Path


def _write(path: Path, data: bytes) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(temp, path)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _covers_every_name(cert: x509.Certificate) -> bool:
    """Whether ``cert`` names every one of :data:`SERVER_DNS_NAMES` (older homes' certificates do not)."""
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return set(SERVER_DNS_NAMES) <= set(names.get_values_for_type(x509.DNSName))


def ensure_tls(directory: Path, *, at: datetime) -> TLSFiles:
    """The CA and a current server certificate under ``directory`` (created or renewed as needed)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    files = TLSFiles(
        ca_cert=directory / CA_FILE_NAME, cert=directory / "server.pem", key=directory / "server.key"
    )
    ca_key_path = directory / "ca.key"
    if not (files.ca_cert.exists() and ca_key_path.exists()):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = (
            x509.CertificateBuilder()
            .subject_name(_name("kms-sim local CA"))
            .issuer_name(_name("kms-sim local CA"))
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(at - timedelta(minutes=5))
            .not_valid_after(at + CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write(ca_key_path, _pem_key(ca_key))
        _write(files.ca_cert, ca.public_bytes(serialization.Encoding.PEM))
        files.cert.unlink(missing_ok=True)
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    if files.cert.exists() and files.key.exists():
        current = x509.load_pem_x509_certificate(files.cert.read_bytes())
        if (
            current.not_valid_after_utc - RENEW_BEFORE > at
            and current.issuer == ca.subject
            and _covers_every_name(current)
        ):
            return files
    loaded = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{ca_key_path} is not an EC private key")
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in SERVER_DNS_NAMES]
    names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(at - timedelta(minutes=5))
        .not_valid_after(at + SERVER_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(loaded.public_key()), critical=False
        )
        .sign(loaded, hashes.SHA256())
    )
    _write(files.key, _pem_key(key))
    _write(files.cert, cert.public_bytes(serialization.Encoding.PEM))
    return files
