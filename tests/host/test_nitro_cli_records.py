"""Enclave records and process identity (host/nitro_cli/_records.py, _procs.py), without enclaves."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from host.nitro_cli import _procs, _records
from host.nitro_cli._procs import Proc
from host.nitro_cli._records import Record

IGNORES_SIGTERM = (
    "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint(1, flush=True)\ntime.sleep(60)"
)
ENCLAVE_ID = "i-0123456789abcdef0-enc0123456789abcdef"


def record(state: str, owner: Proc | None, **changes: object) -> Record:
    fields: dict[str, object] = {
        "enclave_id": ENCLAVE_ID,
        "name": "x",
        "cid": 16,
        "cpu_ids": [1],
        "memory_mib": 64,
        "debug": False,
        "eif_path": "/x.eif",
        "measurements": {},
        "state": state,
        "owner": None if owner is None else owner.to_json(),
    }
    fields.update(changes)
    return Record(**fields)  # type: ignore[arg-type]


def test_a_process_is_its_pid_and_start_token() -> None:
    me = _procs.this_process()
    assert _procs.alive(me)
    assert not _procs.alive(Proc(pid=me.pid, token=me.token + 1))
    assert not _procs.alive(None)
    assert Proc.from_json(me.to_json()) == me
    for bad in (None, [], {"pid": "1", "token": 2}, {"pid": True, "token": 2}, {"pid": 1, "token": 2}):
        assert Proc.from_json(bad) is None


def test_a_zombie_is_dead() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    token = _procs.start_token(child.pid)
    deadline = time.monotonic() + 30
    while _procs.start_token(child.pid) is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _procs.start_token(child.pid) is None  # exited, not yet reaped: a zombie
    os.kill(child.pid, 0)  # ... which kill(0) still finds
    assert token is not None
    assert not _procs.alive(Proc(pid=child.pid, token=token))
    child.wait()


def test_stop_all_terms_then_kills() -> None:
    stubborn = subprocess.Popen(
        [sys.executable, "-c", IGNORES_SIGTERM],
        stdout=subprocess.PIPE,
    )
    assert stubborn.stdout is not None
    stubborn.stdout.readline()
    proc = _procs.describe(stubborn.pid)
    reaper = threading.Thread(target=stubborn.wait)
    reaper.start()
    _procs.stop_all([proc], group=None, grace_seconds=0.2)
    reaper.join(timeout=30)
    assert stubborn.returncode == -9
    stubborn.stdout.close()


def test_records_round_trip_and_are_validated(sim_home: Path) -> None:
    (sim_home / "enclaves" / ENCLAVE_ID).mkdir(parents=True)
    me = _procs.this_process()
    _records.save(record(_records.STARTING, me), sim_home)
    assert _records.load(ENCLAVE_ID, sim_home) == record(_records.STARTING, me)
    for change in ({"state": "ZOMBIE"}, {"cid": "16"}, {"cpu_ids": [True]}, {"enclave_id": "../x"}):
        raw = record(_records.RUNNING, None).to_json() | change
        assert Record.from_json(raw) is None
    assert Record.from_json({"unknown": 1}) is None


def test_reap_keeps_owned_and_removes_orphaned_records(sim_home: Path) -> None:
    directory = sim_home / "enclaves" / ENCLAVE_ID
    directory.mkdir(parents=True)
    me = _procs.this_process()
    with _records.locked(sim_home):
        _records.save(record(_records.STARTING, me), sim_home)
        census = _records.reap(sim_home)
    assert [r.enclave_id for r in census.present] == [ENCLAVE_ID]
    assert census.running == []
    with _records.locked(sim_home):
        _records.save(record(_records.STARTING, Proc(pid=me.pid, token=me.token + 1)), sim_home)
        assert _records.reap(sim_home).present == []
    assert not directory.exists()
    with _records.locked(sim_home):
        directory.mkdir()
        _records.save(record(_records.RUNNING, None), sim_home)  # no supervisor: lost
        census = _records.reap(sim_home)
    assert [r.enclave_id for r in census.lost] == [ENCLAVE_ID]
    assert not directory.exists()
    directory.mkdir()
    (directory / _records.RECORD_FILE).write_text("{not json")
    with _records.locked(sim_home):
        _records.reap(sim_home)
    assert not directory.exists()


def test_the_lock_times_out_as_e15(sim_home: Path) -> None:
    with _records.locked(sim_home):
        child = subprocess.run(
            [sys.executable, "-c", "from host.nitro_cli import _records\n"
             "from pathlib import Path\nimport sys\n"
             "try:\n    with _records.locked(Path(sys.argv[1]), timeout=0.2): pass\n"
             "except Exception as e: print(e.code)", str(sim_home)],
            capture_output=True, text=True, check=True, timeout=30,
        )  # fmt: skip
    assert child.stdout.strip() == "E15"
    with _records.locked(sim_home, timeout=0.2):
        pass


def test_vsock_sockets_of_the_cid_are_removed(sim_home: Path) -> None:
    vsock = sim_home / "vsock" / "16"
    vsock.mkdir(parents=True)
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(vsock / "5005.sock"))
    server.close()
    (sim_home / "vsock" / "17").mkdir()
    _records.remove(ENCLAVE_ID, 16, sim_home)
    assert not vsock.exists()
    assert (sim_home / "vsock" / "17").exists()
