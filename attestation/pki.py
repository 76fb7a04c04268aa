"""A simulated Nitro PKI, shaped like AWS's, persisted under ``$NITRO_SIM_HOME/pki/``.

Chain (aws-facts.md §3 "Payload map", mirrored from the certificates inside real documents)::

    root      30 years   CA, no pathlen      KU crit: digitalSignature, keyCertSign, cRLSign   SKI
    regional  ~20 days   CA, pathlen 2       KU crit: digitalSignature, keyCertSign, cRLSign   AKI SKI CRL-DP
    zonal     ~6 days    CA, pathlen 1       KU crit: digitalSignature, keyCertSign, cRLSign   AKI SKI CRL-DP
    instance  1 day      CA, pathlen 0       KU crit: keyCertSign                              SKI AKI
    leaf      ~3 hours   CA false            KU: digitalSignature, nonRepudiation (not critical), no SKI/AKI

All keys are P-384 and every certificate is signed with ecdsa-with-SHA384. The leaf is fresh per document,
as the real NSM does; its serial is the enclave id followed by the issue time in seconds, as in real leaves.

Rules:
- A level is used only inside its validity window, and only while it outlives the level below it by that
  level's full lifetime, so a child never outlives its issuer. Otherwise it is re-issued with a new key,
  and so is everything below it. The root is re-issued only when expired or absent.
- Each level is one file ``<level>.pem`` (certificate then PKCS#8 key, mode 0600) written atomically, so a
  key and its certificate change together. ``root.crt`` holds the root alone for relying parties.
- Creation and renewal hold an exclusive ``flock`` on ``pki/.lock``, so two processes starting at once on a
  fresh home agree on one root. Between renewals everything is served from memory (one P-384 keygen and
  one signature per document).
- CRL distribution points name ``.invalid`` hosts: nothing is ever fetched.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from attestation.errors import SimulationError

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
#: The root starts well before it is first used, so documents issued "in the past" still chain.
ROOT_BACKDATE = timedelta(days=366)

#: The simulated region and partition; the root's CN differs from AWS's so the two can never be confused.
REGION = "us-east-1"
ROOT_COMMON_NAME = "sim.aws.nitro-enclaves"
#: ``i-`` and 17 hex digits (EC2 instance id); the enclave part is ``-enc`` and 16 hex digits.
INSTANCE_ID_RE = re.compile(r"i-[0-9a-f]{17}")
MODULE_ID_RE = re.compile(r"(i-[0-9a-f]{17})-enc([0-9a-f]{16})")

LEVELS = ("root", "regional", "zonal", "instance")
_LIFETIMES = {
    "root": ROOT_LIFETIME,
    "regional": REGIONAL_LIFETIME,
    "zonal": ZONAL_LIFETIME,
    "instance": INSTANCE_LIFETIME,
}
#: What each level must still cover after ``at``: the lifetime of what it issues next.
_CHILD_LIFETIME = {
    "root": REGIONAL_LIFETIME,
    "regional": ZONAL_LIFETIME,
    "zonal": INSTANCE_LIFETIME,
    "instance": LEAF_LIFETIME,
}
_LOCK_FILE = ".lock"
_KEY_MODE = 0o600
_DIR_MODE = 0o700


@dataclass(frozen=True, slots=True, kw_only=True)
class DocumentSigner:
    """A fresh leaf and its chain: what one attestation document is signed with."""

    #: The leaf certificate, DER.
    certificate: bytes
    #: DER certificates root first: ``(root, regional, zonal, instance)``, as in the document.
    cabundle: tuple[bytes, ...]
    private_key: ec.EllipticCurvePrivateKey


@dataclass(frozen=True, slots=True, kw_only=True)
class _Level:
    name: str
    certificate: x509.Certificate
    der: bytes
    key: ec.EllipticCurvePrivateKey

    def usable(self, at: datetime) -> bool:
        """Valid at ``at`` and still valid for a whole child lifetime after it."""
        start = self.certificate.not_valid_before_utc
        end = self.certificate.not_valid_after_utc
        return start <= at and at + _CHILD_LIFETIME[self.name] <= end


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


def _issue_ca(level: str, parent: _Level | None, *, at: datetime, instance_id: str) -> _Level:
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
        .not_valid_after(start + _LIFETIMES[level])
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
    return _Level(name=level, certificate=cert, der=cert.public_bytes(serialization.Encoding.DER), key=key)


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


class SimulatedPKI:
    """The four CA levels of one simulated parent instance, with a fresh leaf per document."""

    def __init__(self, directory: Path, levels: dict[str, _Level], instance_id: str) -> None:
        self._dir = directory
        self._levels = levels
        self._mutex = threading.Lock()
        #: The simulated parent instance's id (``i-`` and 17 hex digits); enclaves' module ids start with it.
        self.instance_id = instance_id
        self.region = REGION

    # -- Construction ------------------------------------------------------------------------------------

    @classmethod
    def load_or_create(cls, home: Path, *, at: datetime) -> SimulatedPKI:
        """Load the PKI under ``home/pki/``, creating or renewing levels so all are usable at ``at``."""
        _check_aware(at)
        directory = Path(home).absolute() / "pki"
        stamp = _stamp(directory)
        with _CACHE_MUTEX:
            cached = _CACHE.get(directory)
        if cached is not None and cached[0] == stamp and cached[1]._usable(at):
            return cached[1]
        try:
            directory.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        except OSError as exc:
            raise SimulationError(f"cannot create the PKI directory {directory}: {exc.strerror}") from None
        with _locked(directory):
            levels, instance_id = _load_and_renew(directory, {}, at=at)
            stamp = _stamp(directory)
        pki = cls(directory, levels, instance_id)
        with _CACHE_MUTEX:
            _CACHE[directory] = (stamp, pki)
        return pki

    # -- Public surface ------------------------------------------------------------------------------------

    @property
    def root_der(self) -> bytes:
        return self._levels["root"].der

    @property
    def root_pem(self) -> bytes:
        return self._levels["root"].certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def root_certificate(self) -> x509.Certificate:
        return self._levels["root"].certificate

    def cabundle(self, *, at: datetime) -> tuple[bytes, ...]:
        """The CA chain (root first) usable at ``at``, renewing levels if needed."""
        return tuple(level.der for level in self._current(at))

    def issue_signer(self, *, at: datetime, module_id: str | None = None) -> DocumentSigner:
        """A fresh leaf certificate and key for one document issued at ``at`` (valid ~3 hours)."""
        _check_aware(at)
        chain = self._current(at)
        instance = chain[-1]
        if module_id is None:
            module_id = new_module_id(self.instance_id, at=at)
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
            (NameOID.COMMON_NAME, f"{module_id}.{self.region}.aws"),
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
        return DocumentSigner(
            certificate=cert.public_bytes(serialization.Encoding.DER),
            cabundle=tuple(level.der for level in chain),
            private_key=key,
        )

    # -- Renewal ---------------------------------------------------------------------------------------------

    def _usable(self, at: datetime) -> bool:
        with self._mutex:
            return all(level.usable(at) for level in self._levels.values())

    def _current(self, at: datetime) -> list[_Level]:
        with self._mutex:
            chain = [self._levels[name] for name in LEVELS]
            if all(level.usable(at) for level in chain):
                return chain
            with _locked(self._dir):
                self._levels, _ = _load_and_renew(self._dir, self._levels, at=at)
            return [self._levels[name] for name in LEVELS]


#: Parsed PKIs by directory, valid while the level files are unchanged (same inode, size, mtime).
_CACHE: dict[Path, tuple[tuple[tuple[int, int, int], ...], SimulatedPKI]] = {}
_CACHE_MUTEX = threading.Lock()


def _stamp(directory: Path) -> tuple[tuple[int, int, int], ...]:
    out = []
    for name in LEVELS:
        try:
            st = os.stat(directory / f"{name}.pem")
        except OSError:
            out.append((0, 0, 0))
        else:
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


def simulate_document(home: Path, **kwargs: Any) -> bytes:
    """Convenience re-export of :func:`attestation.nsm.simulate_document` (which needs the NSM core)."""
    from attestation.nsm import simulate_document as simulate  # noqa: PLC0415 (nsm imports this module)

    return simulate(home, **kwargs)


def _check_aware(at: datetime) -> None:
    if not isinstance(at, datetime) or at.tzinfo is None:
        raise TypeError("time must be a timezone-aware datetime")


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    try:
        fd = os.open(directory / _LOCK_FILE, os.O_RDWR | os.O_CREAT, _KEY_MODE)
    except OSError as exc:
        raise SimulationError(f"cannot open the PKI lock in {directory}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def _read_level(directory: Path, name: str) -> _Level | None:
    path = directory / f"{name}.pem"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SimulationError(f"cannot read {path}: {exc.strerror}") from None
    try:
        cert = x509.load_pem_x509_certificate(data)
        key = serialization.load_pem_private_key(data, password=None)
    except ValueError:
        raise SimulationError(
            f"{path} is not a certificate and key; remove {directory} to start over"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise SimulationError(f"{path}: key and certificate do not match; remove {directory} to start over")
    return _Level(name=name, certificate=cert, der=cert.public_bytes(serialization.Encoding.DER), key=key)


def _issued_by(child: _Level, parent: _Level) -> bool:
    try:
        child.certificate.verify_directly_issued_by(parent.certificate)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _load_and_renew(
    directory: Path, known: dict[str, _Level], *, at: datetime
) -> tuple[dict[str, _Level], str]:
    """Under the lock: read each level (disk wins over memory), re-issue unusable ones and their children."""
    levels: dict[str, _Level] = {}
    renewed = False
    instance_id: str | None = None
    old_instance = _read_level(directory, "instance") or known.get("instance")
    if old_instance is not None:
        cn = old_instance.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        candidate = str(cn[0].value).split(".", 1)[0] if cn else ""
        instance_id = candidate if INSTANCE_ID_RE.fullmatch(candidate) else None
    instance_id = instance_id or new_instance_id()
    parent: _Level | None = None
    for name in LEVELS:
        level = None if renewed else _read_level(directory, name)
        if level is not None and parent is not None and not _issued_by(level, parent):
            level = None
        if level is None or not level.usable(at):
            level = _issue_ca(name, parent, at=at, instance_id=instance_id)
            _write_level(directory, level)
            renewed = True
        levels[name] = level
        parent = level
    _write_atomic(directory / "root.crt", levels["root"].certificate.public_bytes(serialization.Encoding.PEM))
    return levels, instance_id


def _write_level(directory: Path, level: _Level) -> None:
    pem = level.certificate.public_bytes(serialization.Encoding.PEM) + level.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_atomic(directory / f"{level.name}.pem", pem, mode=_KEY_MODE)


def _write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write via a temporary file in the same directory and ``os.replace``: readers see old or new, whole."""
    if path.exists() and path.read_bytes() == data:
        return
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            os.fchmod(fd, mode)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as exc:
        raise SimulationError(f"cannot write {path}: {exc.strerror}") from None
