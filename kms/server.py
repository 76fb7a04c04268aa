"""Assembly: settings of ``kms-sim serve`` -> a ready :class:`Service` (in the parent and in each worker).

The parent builds the service once before binding, so every configuration error (credentials, policy
file, trust roots, PKI) is one clear line and a non-zero exit before any port is opened. With one process
that service is the one served (built after the URL line, it would read the state files while a client
that saw the line rewrites them); with ``--workers``, each uvicorn worker builds its own (its own SQLite
connection and audit descriptor) from the same settings, passed in the ``KMS_SIM_SETTINGS`` environment
variable, and a state file caught mid-edit then is not fatal (``build_service(worker=True)``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType

from cryptography import x509

from attestation.errors import SimulationError
from attestation.pki import SimulatedPKI
from kms.audit import AuditLog
from kms.iam import IAMPolicies, load_policies
from kms.keys import KeyRing
from kms.keystores import KeyStores
from kms.operations import Operations
from kms.recipient import DEFAULT_MAX_DOC_AGE, RecipientCheck
from kms.reload import RECHECK_S, Watched
from kms.service import FaultInjector, Service, TokenBucket, check_fault_names
from kms.state import Principal, ensure_home, load_principals

__all__ = [
    "SETTINGS_ENV",
    "Settings",
    "build_service",
    "load_faults",
    "settings_from_environment",
    "trust_roots",
]

SETTINGS_ENV = "KMS_SIM_SETTINGS"
#: Largest ``--trust-root`` file read (a PEM bundle of every public root CA is ~250 KB).
MAX_TRUST_ROOT_FILE_BYTES = 1024 * 1024
#: Largest faults file read, and largest count it may arm (a fault per request for ~a day at 10k req/s).
MAX_FAULTS_FILE_BYTES = 64 * 1024
MAX_FAULT_COUNT = 1_000_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything ``kms-sim serve`` was told (JSON-serializable, for the workers)."""

    sim_home: str
    policy: str | None = None
    trust_roots: tuple[str, ...] = ()
    max_doc_age_s: float = DEFAULT_MAX_DOC_AGE.total_seconds()
    #: ``--attestation-time``: the fixed instant Recipient documents are checked at (None: each request's).
    attestation_time: str | None = None
    rate_limit: float | None = None
    burst: float | None = None
    workers: int = 1
    fault_counts: dict[str, int] = field(default_factory=dict)
    fault_rates: dict[str, float] = field(default_factory=dict)
    #: ``--reload-interval``: how often a request may re-read changed state files (kms.reload).
    reload_interval_s: float = RECHECK_S
    audit: bool = True
    #: The pid of ``kms-sim serve`` whose uvicorn workers run the app (None: no supervisor).
    supervisor_pid: int | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Settings:
        raw = json.loads(text)
        raw["trust_roots"] = tuple(raw["trust_roots"])
        return cls(**raw)


def settings_from_environment() -> Settings:
    text = os.environ.get(SETTINGS_ENV)
    if not text:
        raise SimulationError(f"{SETTINGS_ENV} is not set: start the app with `kms-sim serve`")
    return Settings.from_json(text)


def _read_bounded(path: str) -> bytes:
    """A ``--trust-root`` file's bytes, read up to the bound (the path may be /dev/zero or a FIFO)."""
    with Path(path).open("rb") as handle:
        data = handle.read(MAX_TRUST_ROOT_FILE_BYTES + 1)
    if len(data) > MAX_TRUST_ROOT_FILE_BYTES:
        raise ValueError(f"over the {MAX_TRUST_ROOT_FILE_BYTES}-byte limit")
    return data


def load_faults(path: Path) -> Mapping[str, int]:
    """The faults file: ``{"KMSInternalException": 2, ...}``, fail the next 2 requests with that error.

    Each load arms the counts it names (others keep what is left of theirs; 0 clears one); a missing file
    arms nothing. SimulationError (one line) if it is not such an object, names another error or a count
    outside 0..MAX_FAULT_COUNT.
    """
    try:
        with path.open("rb") as handle:  # bounded: the path may be /dev/zero or a FIFO
            data = handle.read(MAX_FAULTS_FILE_BYTES + 1)
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise SimulationError(f"cannot read faults file {path}: {error.strerror}") from None
    if len(data) > MAX_FAULTS_FILE_BYTES:
        raise SimulationError(f"faults file {path} is over {MAX_FAULTS_FILE_BYTES} bytes")
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        raise SimulationError(f"faults file {path} is not valid JSON") from None
    if not isinstance(document, dict):
        raise SimulationError(f"faults file {path} must be a JSON object of error name to count")
    try:
        check_fault_names(document)
    except ValueError as error:
        raise SimulationError(f"faults file {path}: {error}") from None
    for name, count in document.items():
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_FAULT_COUNT:
            raise SimulationError(f"faults file {path}: {name} must be a count in 0..{MAX_FAULT_COUNT}")
    return document


#: What a worker serves with while a watched file does not load at its start: nobody, nothing, no faults.
_NO_PRINCIPALS: Mapping[str, Principal] = MappingProxyType({})
_NO_POLICIES = IAMPolicies({})
_NO_FAULTS: Mapping[str, int] = MappingProxyType({})


def trust_roots(settings: Settings, *, at: datetime) -> list[x509.Certificate]:
    """The simulated root of the home (created if missing) plus every certificate in each ``--trust-root``."""
    pki = SimulatedPKI.load_or_create(Path(settings.sim_home), at=at)
    roots = [x509.load_der_x509_certificate(pki.root_der)]
    for path in settings.trust_roots:
        try:
            roots.extend(x509.load_pem_x509_certificates(_read_bounded(path)))
        except (OSError, ValueError) as error:
            raise SimulationError(f"cannot load trust root {path}: {error}") from None
    return roots


def build_service(settings: Settings, *, worker: bool = False) -> Service:
    """A service over the home's state; SimulationError (one line) if any of it is unusable.

    ``worker``: for a ``--workers`` process, started after the supervisor built (and so checked) the
    service: a watched file that does not load at that instant (an edit under way) is not fatal; the
    worker serves closed (no principals, no permissions, no faults) until it loads (kms.reload).
    """
    home = ensure_home(Path(settings.sim_home))
    tick = time.monotonic()
    every = settings.reload_interval_s
    principals = Watched(
        home.credentials,
        load_principals,
        what="credentials",
        tick=tick,
        recheck_s=every,
        fallback=_NO_PRINCIPALS if worker else None,
    )
    policy_path = Path(settings.policy) if settings.policy else home.policy
    policies = Watched(
        policy_path,
        load_policies,
        what="policy",
        tick=tick,
        recheck_s=every,
        fallback=_NO_POLICIES if worker else None,
    )
    fault_file = Watched(
        home.faults,
        load_faults,
        what="faults file",
        tick=tick,
        recheck_s=every,
        fallback=_NO_FAULTS if worker else None,
    )
    roots = trust_roots(settings, at=datetime.now(UTC))
    fixed = None if settings.attestation_time is None else datetime.fromisoformat(settings.attestation_time)
    check = RecipientCheck(roots=roots, max_age=timedelta(seconds=settings.max_doc_age_s), at=fixed)
    throttle = None
    if settings.rate_limit is not None:
        share = max(1, settings.workers)  # each worker enforces its share of the rate
        burst = settings.burst if settings.burst is not None else settings.rate_limit
        throttle = TokenBucket(settings.rate_limit / share, max(1.0, burst / share))
    faults = None
    if settings.fault_counts or settings.fault_rates:
        faults = FaultInjector(settings.fault_counts, settings.fault_rates)
    try:
        keystores = KeyStores(home.keystores)
        audit = AuditLog(home.audit) if settings.audit else None
    except Exception as error:
        raise SimulationError(f"cannot open kms-sim state in {home.root}: {error}") from None
    return Service(
        principals=principals,
        policies=policies,
        operations=Operations(keystores, KeyRing(home.keys)),
        recipient_verifier=check,
        audit=audit,
        throttle=throttle,
        faults=faults,
        fault_file=fault_file,
    )
