"""A simulated Nitro PKI, shaped like AWS's, persisted under ``$NITRO_SIM_HOME/pki/``.

Chain (aws-facts.md §3 "Payload map", mirrored from the certificates inside real documents)::

    root      30 years   CA, no pathlen      KU crit: digitalSignature, keyCertSign, cRLSign   SKI
    regional  ~20 days   CA, pathlen 2       KU crit: digitalSignature, keyCertSign, cRLSign   AKI SKI CRL-DP
    zonal     ~6 days    CA, pathlen 1       KU crit: digitalSignature, keyCertSign, cRLSign   AKI SKI CRL-DP
    instance  1 day      CA, pathlen 0       KU crit: keyCertSign                              SKI AKI
    leaf      ~3 hours   CA false            KU: digitalSignature, nonRepudiation (not critical), no SKI/AKI

All keys are P-384 and every certificate is signed with ecdsa-with-SHA384. :meth:`SimulatedPKI.issue_signer`
makes a fresh leaf each call; the NSM reuses one for hours, as the real one does. A leaf's serial is the
enclave id followed by the issue time in seconds, as in real leaves.

Rules:
- A level is used only inside its validity window, and only while it outlives the level below it by that
  level's full lifetime, so a child never outlives its issuer. Otherwise it is re-issued with a new key,
  and so is everything below it. The root is re-issued only when expired or absent.
- Each level is one file ``<level>.pem`` (certificate then PKCS#8 key, mode 0600) written atomically, so a
  key and its certificate change together. ``root.crt`` holds the root alone for relying parties.
- Creation and renewal hold an exclusive ``flock`` on ``pki/.lock``, so two processes starting at once on a
  fresh home agree on one root. Between renewals everything is served from memory; each renewal bumps
  :attr:`SimulatedPKI.generation`, so what callers derived from the old chain (the NSM's leaf, its window
  and pre-encoded CBOR) is known to be stale without looking at any certificate.
- CRL distribution points name ``.invalid`` hosts: nothing is ever fetched.

The certificate shapes live in :mod:`attestation._pki_profile`; this module owns the state (files, lock,
cache, renewal).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from attestation._pki_profile import (
    CHILD_LIFETIME,
    INSTANCE_ID_RE,
    INSTANCE_LIFETIME,
    LEAF_LIFETIME,
    LEVELS,
    MODULE_ID_RE,
    REGION,
    REGIONAL_LIFETIME,
    ROOT_LIFETIME,
    ZONAL_LIFETIME,
    Level,
    issue_ca,
    issue_leaf,
    new_instance_id,
    new_module_id,
)
from attestation.errors import SimulationError

__all__ = [
    "INSTANCE_ID_RE",
    "INSTANCE_LIFETIME",
    "LEAF_LIFETIME",
    "MODULE_ID_RE",
    "REGION",
    "REGIONAL_LIFETIME",
    "ROOT_LIFETIME",
    "ZONAL_LIFETIME",
    "DocumentSigner",
    "SimulatedPKI",
    "new_instance_id",
    "new_module_id",
    "simulate_document",
]

# -- State files ---------------------------------------------------------------------------------------------
_LOCK_FILE = ".lock"
_KEY_MODE = 0o600
_DIR_MODE = 0o700


@dataclass(frozen=True, slots=True, kw_only=True)
class DocumentSigner:
    """A leaf and its chain: what attestation documents are signed with (the NSM reuses it for hours)."""

    #: The leaf certificate, DER.
    certificate: bytes
    #: DER certificates root first: ``(root, regional, zonal, instance)``, as in the document.
    cabundle: tuple[bytes, ...]
    private_key: ec.EllipticCurvePrivateKey


class SimulatedPKI:
    """The four CA levels of one simulated parent instance, and the leaves they issue."""

    def __init__(self, directory: Path, levels: dict[str, Level], instance_id: str) -> None:
        self._dir = directory
        self._levels = levels
        self._mutex = threading.Lock()
        #: Bumped whenever the in-memory levels are replaced (renewal), so holders of derived state (the
        #: NSM's leaf and pre-encoded chain) can tell their chain is no longer the current one.
        self._generation = 0
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

    @property
    def generation(self) -> int:
        """Changes whenever the CA levels are renewed (the chain :meth:`cabundle` gives changes only then)."""
        return self._generation

    def usable_window(self) -> tuple[int, datetime, datetime]:
        """``(generation, first, last)``: for every ``at`` in ``[first, last]`` all levels are usable, so
        :meth:`cabundle` returns the current chain unchanged (no renewal) while ``generation`` is the same.
        """
        with self._mutex:
            chain = [self._levels[name] for name in LEVELS]
            first = max(level.certificate.not_valid_before_utc for level in chain)
            last = min(level.certificate.not_valid_after_utc - CHILD_LIFETIME[level.name] for level in chain)
            return self._generation, first, last

    def issue_signer(self, *, at: datetime, module_id: str | None = None) -> DocumentSigner:
        """A new leaf certificate and key, valid ~3 hours from ``at``."""
        _check_aware(at)
        chain = self._current(at)
        instance = chain[-1]
        if module_id is None:
            module_id = new_module_id(self.instance_id, at=at)
        certificate, key = issue_leaf(instance, module_id=module_id, at=at)
        return DocumentSigner(
            certificate=certificate,
            cabundle=tuple(level.der for level in chain),
            private_key=key,
        )

    # -- Renewal ---------------------------------------------------------------------------------------------

    def _usable(self, at: datetime) -> bool:
        with self._mutex:
            return all(level.usable(at) for level in self._levels.values())

    def _current(self, at: datetime) -> list[Level]:
        with self._mutex:
            chain = [self._levels[name] for name in LEVELS]
            if all(level.usable(at) for level in chain):
                return chain
            with _locked(self._dir):
                self._levels, _ = _load_and_renew(self._dir, self._levels, at=at)
            self._generation += 1
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


def _read_level(directory: Path, name: str) -> Level | None:
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
    return Level(name=name, certificate=cert, der=cert.public_bytes(serialization.Encoding.DER), key=key)


def _issued_by(child: Level, parent: Level) -> bool:
    try:
        child.certificate.verify_directly_issued_by(parent.certificate)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _load_and_renew(
    directory: Path, known: dict[str, Level], *, at: datetime
) -> tuple[dict[str, Level], str]:
    """Under the lock: read each level (disk wins over memory), re-issue unusable ones and their children."""
    levels: dict[str, Level] = {}
    renewed = False
    instance_id: str | None = None
    old_instance = _read_level(directory, "instance") or known.get("instance")
    if old_instance is not None:
        cn = old_instance.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        candidate = str(cn[0].value).split(".", 1)[0] if cn else ""
        instance_id = candidate if INSTANCE_ID_RE.fullmatch(candidate) else None
    instance_id = instance_id or new_instance_id()
    parent: Level | None = None
    for name in LEVELS:
        level = None if renewed else _read_level(directory, name)
        if level is not None and parent is not None and not _issued_by(level, parent):
            level = None
        if level is None or not level.usable(at):
            level = issue_ca(name, parent, at=at, instance_id=instance_id)
            _write_level(directory, level)
            renewed = True
        levels[name] = level
        parent = level
    _write_atomic(directory / "root.crt", levels["root"].certificate.public_bytes(serialization.Encoding.PEM))
    return levels, instance_id


def _write_level(directory: Path, level: Level) -> None:
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
