"""describe-enclaves, terminate-enclave, and finding a running enclave by id or name.

Facts (aws-nitro-enclaves-cli ``src/main.rs``, ``src/lib.rs``, ``src/enclave_proc/commands.rs``,
``src/enclave_proc/utils.rs``, ``src/common/json_output.rs``):

- ``describe-enclaves`` prints a JSON array of ``EnclaveDescribeInfo`` (``[]`` when none): EnclaveName,
  EnclaveID, ProcessID (the enclave process: here the supervisor), EnclaveCID, NumberOfCPUs, CPUIDs,
  MemoryMiB, State, Flags (``NONE`` | ``DEBUG_MODE``), Measurements; with ``--metadata`` also ImageName,
  ImageVersion and Metadata when the EIF has a metadata section.
- ``terminate-enclave`` prints "Successfully terminated enclave <id>." on stderr and
  ``{"EnclaveName", "EnclaveID", "Terminated": true}`` on stdout; ``--all`` prints one such object per
  enclave as a JSON array (``[]`` when none).
- An unknown enclave id is E11 (nitro-cli cannot connect to that enclave's socket); a name that matches
  no enclave, or more than one, is E58.

Simulation: terminating sends SIGTERM to the enclave's process group (supervisor, NSM device, app) and
SIGKILL after :data:`host.nitro_cli._records.STOP_GRACE_SECONDS`; the records and the CID's vsock sockets
are then removed. Every command first reaps records whose processes died (see :func:`_records.reap`).
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

from host.nitro_cli import _procs, _records
from host.nitro_cli._json import image_identity, metadata_describe_info
from host.nitro_cli._records import Record
from host.nitro_cli.errors import NitroCliError

_NOT_FOUND = 'Os { code: 2, kind: NotFound, message: "No such file or directory" }'


def running(home: Path) -> list[Record]:
    """The running enclaves, after reaping the dead ones (and reporting those whose supervisor died)."""
    with _records.locked(home):
        census = _records.reap(home)
    _records.report_lost(census.lost)
    return census.running


def id_by_name(name: str, home: Path) -> str:
    """``get_id_by_name``: the id of the one running enclave called ``name`` (E58 otherwise)."""
    matches = [r.enclave_id for r in running(home) if r.name == name]
    if len(matches) != 1:
        reason = "Conflicting enclave names have been found."
        if not matches:
            reason = "No enclave matched the given name."
        raise NitroCliError("E58", subaction=reason).add_subaction("Get ID by Name")
    return matches[0]


def find(enclave_id: str, home: Path) -> Record:
    """The running enclave ``enclave_id`` (E11 as nitro-cli's failed connection otherwise)."""
    for record in running(home):
        if record.enclave_id == enclave_id:
            return record
    raise NitroCliError(
        "E11", subaction=f"Failed to connect to specific enclave process: {_NOT_FOUND}"
    ).add_subaction("Failed to connect to enclave process")


def describe_info(
    record: Record, procs: _records.Procs, *, with_metadata: bool, home: Path
) -> dict[str, Any]:
    """``EnclaveDescribeInfo`` of one enclave, in its field order."""
    info: dict[str, Any] = {
        "EnclaveName": record.name,
        "EnclaveID": record.enclave_id,
        "ProcessID": procs.supervisor.pid if procs.supervisor is not None else 0,
        "EnclaveCID": record.cid,
        "NumberOfCPUs": len(record.cpu_ids),
        "CPUIDs": record.cpu_ids,
        "MemoryMiB": record.memory_mib,
        "State": record.state,
        "Flags": "DEBUG_MODE" if record.debug else "NONE",
        "Measurements": record.measurements,
    }
    if with_metadata:
        raw = _records.read_json(_records.enclave_dir(record.enclave_id, home) / _records.METADATA_FILE)
        metadata = raw if isinstance(raw, dict) else None
        described = metadata_describe_info(metadata)
        if described is not None:
            name, version = image_identity(metadata)
            if name is not None:
                info["ImageName"] = name
            if version is not None:
                info["ImageVersion"] = version
            info["Metadata"] = described
    return info


def describe_enclaves(home: Path, *, with_metadata: bool) -> list[dict[str, Any]]:
    return [
        describe_info(r, _records.load_procs(r.enclave_id, home), with_metadata=with_metadata, home=home)
        for r in running(home)
    ]


def terminate(records: list[Record], home: Path) -> list[dict[str, Any]]:
    """Terminate ``records`` (running enclaves); their ``EnclaveTerminateInfo`` objects, in order."""
    me = _procs.this_process().to_json()
    claimed: list[Record] = []
    with _records.locked(home):
        for record in records:
            current = _records.load(record.enclave_id, home)
            if current is not None and current.state == _records.RUNNING:
                current.state, current.owner = _records.TERMINATING, me
                _records.save(current, home)
                claimed.append(current)
    targets: list[tuple[_procs.Proc | None, int | None]] = []
    for record in claimed:
        procs = _records.load_procs(record.enclave_id, home)
        group = procs.supervisor.pid if procs.supervisor is not None else None
        targets += [(proc, group) for _, proc in procs.items()]
    for proc, group in targets:
        _procs.signal_proc(proc, signal.SIGTERM, group=group)
    if not _procs.wait_gone([p for p, _ in targets], seconds=_records.STOP_GRACE_SECONDS):
        for proc, group in targets:
            _procs.signal_proc(proc, signal.SIGKILL, group=group)
        _procs.wait_gone([p for p, _ in targets], seconds=_records.STOP_GRACE_SECONDS)
    out: list[dict[str, Any]] = []
    with _records.locked(home):
        for record in claimed:
            _records.remove(record.enclave_id, record.cid, home)
    for record in claimed:
        print(f"Successfully terminated enclave {record.enclave_id}.", file=sys.stderr, flush=True)
        out.append({"EnclaveName": record.name, "EnclaveID": record.enclave_id, "Terminated": True})
    return out
