"""Enclave records: what is running, kept under ``$NITRO_SIM_HOME/enclaves/`` and readable by any process.

Layout, one directory per enclave, named by its enclave id (``i-<17 hex>-enc<16 hex>``):

- ``record.json``: the enclave as ``run-enclave`` set it up (:class:`Record`), with its state and owner;
- ``procs.json``: the supervisor's, the NSM device's and the app's ``(pid, start token)``, written by
  the supervisor as it starts them;
- ``metadata.json``: the EIF's metadata section, for ``describe-enclaves --metadata``;
- ``rootfs/``, ``cmd``, ``env``: the unpacked application ramdisk; ``console.log``: the debug console;
  ``nsm.sock``: the enclave's NSM device; ``supervisor.log``: the supervisor's own stderr.

Rules:
- Every change to the set of records, and every read that decides on resources (CPUs, memory, CIDs,
  names), happens under one exclusive ``flock`` on ``enclaves/.lock`` (:func:`locked`), so two
  ``run-enclave`` calls cannot both win a CID. Files are replaced atomically (write, then rename).
- States: ``STARTING`` (owned by the ``run-enclave`` process that reserved it), ``RUNNING``,
  ``TERMINATING`` (owned by the ``terminate-enclave`` process). Only RUNNING enclaves are listed.
- :func:`reap` (under the lock) removes what is no longer true: a STARTING or TERMINATING record whose
  owner died, a RUNNING one whose supervisor or app died; it stops any process of it still alive.
- Bounds: :data:`MAX_RECORD_BYTES` per JSON file read, :data:`MAX_ENCLAVE_DIRS` directories looked at.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import stat
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from attestation.pki import MODULE_ID_RE
from attestation.sim import sim_home
from host.nitro_cli import _procs
from host.nitro_cli._procs import Proc
from host.nitro_cli.errors import NitroCliError

ENCLAVES_DIR = "enclaves"
LOCK_FILE = ".lock"
RECORD_FILE = "record.json"
PROCS_FILE = "procs.json"
METADATA_FILE = "metadata.json"
CONSOLE_FILE = "console.log"
NSM_SOCKET = "nsm.sock"
SUPERVISOR_LOG = "supervisor.log"

STARTING = "STARTING"
RUNNING = "RUNNING"
TERMINATING = "TERMINATING"
_STATES = (STARTING, RUNNING, TERMINATING)

#: Largest record, processes or metadata file read back (metadata is bounded by the EIF reader's 1 MiB).
MAX_RECORD_BYTES = 2 * 1024 * 1024
#: At most this many enclave directories are looked at (more than any CPU pool can run).
MAX_ENCLAVE_DIRS = 4096
#: How long a command waits for the records lock before giving up (E15).
LOCK_TIMEOUT_SECONDS = 30.0
#: How long stopping an enclave's processes waits after SIGTERM before SIGKILL.
STOP_GRACE_SECONDS = 5.0


@dataclass(slots=True, kw_only=True)
class Record:
    """One enclave as ``run-enclave`` set it up (``record.json``)."""

    enclave_id: str
    name: str
    cid: int
    cpu_ids: list[int]
    memory_mib: int
    debug: bool
    eif_path: str
    measurements: dict[str, str]
    state: str
    #: The process that owns a STARTING or TERMINATING record.
    owner: dict[str, int] | None = None
    #: Order of creation (nanoseconds), for a stable listing.
    created_ns: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def owner_proc(self) -> Proc | None:
        return Proc.from_json(self.owner)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, value: object) -> Record | None:
        """The record in ``value``, or None if it is not one of ours (never trusted further than that)."""
        if not isinstance(value, dict):
            return None
        try:
            record = cls(**value)
        except TypeError:
            return None
        ints_ok = all(type(c) is int for c in record.cpu_ids) if isinstance(record.cpu_ids, list) else False
        if not (
            isinstance(record.enclave_id, str)
            and MODULE_ID_RE.fullmatch(record.enclave_id)
            and isinstance(record.name, str)
            and type(record.cid) is int
            and ints_ok
            and type(record.memory_mib) is int
            and isinstance(record.debug, bool)
            and isinstance(record.measurements, dict)
            and record.state in _STATES
        ):
            return None
        return record


def enclaves_dir(home: Path | None = None) -> Path:
    return (home or sim_home()) / ENCLAVES_DIR


def enclave_dir(enclave_id: str, home: Path | None = None) -> Path:
    return enclaves_dir(home) / enclave_id


@contextlib.contextmanager
def locked(home: Path | None = None, *, timeout: float = LOCK_TIMEOUT_SECONDS) -> Iterator[None]:
    """Hold the records lock (E15 if another process holds it for longer than ``timeout``)."""
    directory = enclaves_dir(home)
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise NitroCliError(
            "E19", (str(directory / LOCK_FILE), "Open"), subaction=f"Failed to open the records lock: {exc}"
        ) from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise NitroCliError(
                        "E15", subaction=f"The enclave records lock was held for over {timeout:.0f} s"
                    ) from None
                time.sleep(_procs.POLL_SECONDS)
        yield
    finally:
        os.close(fd)


def read_json(path: Path) -> object:
    """A JSON file of ours, bounded; None if missing, too large or not JSON."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_RECORD_BYTES + 1)
    except OSError:
        return None
    if len(raw) > MAX_RECORD_BYTES:
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def write_json(path: Path, value: object) -> None:
    """Replace ``path`` atomically with ``value`` as JSON."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(value, handle)
    os.replace(tmp, path)


def load(enclave_id: str, home: Path | None = None) -> Record | None:
    return Record.from_json(read_json(enclave_dir(enclave_id, home) / RECORD_FILE))


def save(record: Record, home: Path | None = None) -> None:
    write_json(enclave_dir(record.enclave_id, home) / RECORD_FILE, record.to_json())


@dataclass(frozen=True, slots=True, kw_only=True)
class Procs:
    """The processes of one enclave (``procs.json``)."""

    supervisor: Proc | None = None
    nsm: Proc | None = None
    app: Proc | None = None

    def to_json(self) -> dict[str, object]:
        return {k: None if p is None else p.to_json() for k, p in self.items()}

    def items(self) -> list[tuple[str, Proc | None]]:
        return [("supervisor", self.supervisor), ("nsm", self.nsm), ("app", self.app)]

    @classmethod
    def from_json(cls, value: object) -> Procs:
        if not isinstance(value, dict):
            return cls()
        return cls(
            supervisor=Proc.from_json(value.get("supervisor")),
            nsm=Proc.from_json(value.get("nsm")),
            app=Proc.from_json(value.get("app")),
        )


def load_procs(enclave_id: str, home: Path | None = None) -> Procs:
    return Procs.from_json(read_json(enclave_dir(enclave_id, home) / PROCS_FILE))


def save_procs(enclave_id: str, procs: Procs, home: Path | None = None) -> None:
    write_json(enclave_dir(enclave_id, home) / PROCS_FILE, procs.to_json())


def _scan(home: Path | None) -> tuple[list[Record], list[str]]:
    """The readable records, oldest first, and the enclave directories without a readable record."""
    directory = enclaves_dir(home)
    records: list[Record] = []
    broken: list[str] = []
    try:
        entries = os.scandir(directory)
    except OSError:
        return records, broken
    with entries:
        for count, entry in enumerate(entries):
            if count >= MAX_ENCLAVE_DIRS:
                break
            if MODULE_ID_RE.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
                record = load(entry.name, home)
                if record is not None and record.enclave_id == entry.name:
                    records.append(record)
                else:
                    broken.append(entry.name)
    records.sort(key=lambda r: (r.created_ns, r.enclave_id))
    return records, broken


def all_records(home: Path | None = None) -> list[Record]:
    """Every readable record, oldest first (call under the lock when deciding anything on them)."""
    return _scan(home)[0]


def stop_processes(enclave_id: str, home: Path | None = None, *, grace: float = STOP_GRACE_SECONDS) -> None:
    """Stop every recorded process of an enclave still alive (its process group first)."""
    procs = load_procs(enclave_id, home)
    group = procs.supervisor.pid if procs.supervisor is not None else None
    _procs.stop_all([p for _, p in procs.items()], group=group, grace_seconds=grace)


def remove(enclave_id: str, cid: int | None, home: Path | None = None) -> None:
    """Delete an enclave's directory and its CID's simulated vsock sockets (call under the lock)."""
    root = home or sim_home()
    shutil.rmtree(enclave_dir(enclave_id, root), ignore_errors=True)
    if cid is not None:
        vsock_dir = root / "vsock" / str(cid)
        with contextlib.suppress(OSError):
            for entry in os.scandir(vsock_dir):
                if entry.name.endswith(".sock") and stat.S_ISSOCK(entry.stat(follow_symlinks=False).st_mode):
                    os.unlink(entry.path)
            vsock_dir.rmdir()


def is_healthy(record: Record, procs: Procs) -> bool:
    """A RUNNING record is true while its supervisor and its app both run."""
    return _procs.alive(procs.supervisor) and _procs.alive(procs.app)


@dataclass(frozen=True, slots=True, kw_only=True)
class Census:
    """What :func:`reap` found: ``present`` holds resources, ``running`` is listed, ``lost`` is reported."""

    present: list[Record]
    running: list[Record]
    lost: list[Record]


def reap(home: Path | None = None) -> Census:
    """Remove records that are no longer true (call under the lock).

    A STARTING or TERMINATING record stays while its owner runs; a RUNNING one while its supervisor and
    app run. A RUNNING record whose app ended while its supervisor still runs is that supervisor's to
    take down: it keeps its resources (its CID's sockets are still being removed) but is not listed.
    Anything else is stopped and removed; RUNNING records whose supervisor died are returned as ``lost``.
    A directory without a readable record (a crash between creating it and writing the record, or a
    damaged file) is removed too, after stopping any process it lists.
    """
    present: list[Record] = []
    running: list[Record] = []
    lost: list[Record] = []
    records, broken = _scan(home)
    for enclave_id in broken:  # a record is written in the same locked step as its directory: a crash
        stop_processes(enclave_id, home)
        remove(enclave_id, None, home)
    for record in records:
        procs = load_procs(record.enclave_id, home)
        if record.state in (STARTING, TERMINATING):
            if _procs.alive(record.owner_proc):
                present.append(record)
                continue
        elif is_healthy(record, procs):
            present.append(record)
            running.append(record)
            continue
        elif _procs.alive(procs.supervisor):
            present.append(record)
            continue
        else:
            lost.append(record)
        stop_processes(record.enclave_id, home)
        remove(record.enclave_id, record.cid, home)
    return Census(present=present, running=running, lost=lost)


def report_lost(lost: list[Record]) -> None:
    """One stderr line per enclave found dead (its supervisor was killed), after it has been cleaned up."""
    import sys  # noqa: PLC0415 (only for this message)

    for record in lost:
        print(
            f"Enclave {record.enclave_id} ({record.name}) is no longer running: its enclave process died; "
            "its resources have been released.",
            file=sys.stderr,
        )
