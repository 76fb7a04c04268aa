"""The supervisor of one simulated enclave: the stand-in for nitro-cli's "enclave process" and the VM.

Started by ``run-enclave`` as ``python -m host.nitro_cli._supervisor ENCLAVE_ID --boot-fd N``; it forks
once and the child leads a new session (so it outlives ``run-enclave``, and its process group holds the
whole enclave). In order, it:

1. writes ``pid:<pid>`` on the boot pipe and records itself in ``procs.json``;
2. starts the enclave's NSM device, ``nsm-sim`` (a child), on ``nsm.sock`` with the PCRs ``run-enclave``
   measured (``record.json``, ``extra.nsm_pcrs``), the enclave id as module id and ``--debug-mode`` when
   set, and waits for its "listening" line (at most :data:`NSM_START_SECONDS`);
3. starts the application as ``launch.json`` says (:mod:`host.nitro_cli._launch`). Its stdout and stderr
   are the enclave's console: in debug mode they go to ``console.log`` (rotated at
   :data:`MAX_CONSOLE_LOG_BYTES`, one old file kept), otherwise nowhere, as on Nitro;
4. once the application has been exec'd, marks the record RUNNING and sends the heartbeat byte
   ``0xB7`` on the boot pipe (the real bootstrap sends it on vsock port 9000 to the parent). A failure
   before that is one line ``E<message>`` on the pipe instead;
5. waits. The enclave ends when its application exits (the real init then reboots, which ends the
   enclave), when the NSM device dies, or on SIGTERM/SIGINT/SIGHUP (``terminate-enclave``). Then it
   stops every process left in its group (SIGTERM, SIGKILL after :data:`STOP_GRACE_SECONDS`), lets the
   NSM device remove its socket, and removes the record and the CID's vsock sockets.

Nothing the application prints is logged anywhere but the debug console.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import BinaryIO

from attestation.sim import sim_home
from host.nitro_cli import _procs, _records
from host.nitro_cli._launch import Launch, LaunchError
from host.nitro_cli._records import Procs

#: The heartbeat byte (``HEART_BEAT`` of the bootstrap's init.c).
HEARTBEAT = 0xB7
#: How long the NSM device may take to listen.
NSM_START_SECONDS = 30.0
#: How long the enclave's processes get between SIGTERM and SIGKILL.
STOP_GRACE_SECONDS = 3.0
#: One console log file's size before it is rotated.
MAX_CONSOLE_LOG_BYTES = 1024 * 1024
#: Read size of the console pump.
CONSOLE_CHUNK = 64 * 1024
#: Longest failure message sent on the boot pipe.
MAX_BOOT_MESSAGE = 2000
LAUNCH_FILE = "launch.json"
_NSM_READY = b"nsm-sim listening on "
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class _BootError(Exception):
    """The enclave cannot boot (one line, sent to run-enclave)."""


class Supervisor:
    def __init__(self, enclave_id: str, home: Path, boot: BinaryIO) -> None:
        self.enclave_id = enclave_id
        self.home = home
        self.dir = _records.enclave_dir(enclave_id, home)
        self.boot: BinaryIO | None = boot
        self.stop = threading.Event()
        self.me = _procs.this_process()
        self.nsm: subprocess.Popen[bytes] | None = None
        self.app: subprocess.Popen[bytes] | None = None
        self.pump: threading.Thread | None = None
        self.cid: int | None = None

    # -- start

    def _save_procs(self) -> None:
        def proc(p: subprocess.Popen[bytes] | None) -> _procs.Proc | None:
            return None if p is None else _procs.describe(p.pid)

        _records.save_procs(
            self.enclave_id, Procs(supervisor=self.me, nsm=proc(self.nsm), app=proc(self.app)), self.home
        )

    def start(self) -> None:
        self._send(f"pid:{self.me.pid}\n".encode())
        self._save_procs()
        record = _records.load(self.enclave_id, self.home)
        if record is None:
            raise _BootError("the enclave's record is gone")
        self.cid = record.cid
        launch = Launch.from_json(_records.read_json(self.dir / LAUNCH_FILE))
        self._start_nsm(record)
        self._start_app(launch, debug=record.debug)
        with _records.locked(self.home):
            record = _records.load(self.enclave_id, self.home)
            if record is None or record.state != _records.STARTING or self.stop.is_set():
                raise _BootError("run-enclave gave the enclave up before it booted")
            record.state, record.owner = _records.RUNNING, None
            _records.save(record, self.home)
        self._send(bytes([HEARTBEAT]))
        self._close_boot()

    def _start_nsm(self, record: _records.Record) -> None:
        pcrs = record.extra.get("nsm_pcrs", {})
        args = [sys.executable, "-P", "-m", "host.nsm_sim", "--socket", str(self.dir / _records.NSM_SOCKET)]
        for index, value in sorted(pcrs.items(), key=lambda item: int(item[0])):
            args += ["--pcr", f"{index}={value}"]
        args += ["--module-id", self.enclave_id] + (["--debug-mode"] if record.debug else [])
        with open(self.dir / _records.SUPERVISOR_LOG, "ab") as log:
            # Our own interpreter and module, fixed arguments, no shell.
            self.nsm = subprocess.Popen(  # noqa: S603
                args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log
            )
        self._save_procs()
        assert self.nsm.stdout is not None
        deadline = time.monotonic() + NSM_START_SECONDS
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.nsm.stdout], [], [], max(0.0, min(left, 0.1)))
            if self.stop.is_set():
                raise _BootError("stopped while the NSM device was starting")
            if ready:
                chunk = os.read(self.nsm.stdout.fileno(), 4096)
                if not chunk:
                    raise _BootError("the enclave's NSM device exited before listening (see supervisor.log)")
                line += chunk
            elif left <= 0:
                raise _BootError(f"the enclave's NSM device did not listen within {NSM_START_SECONDS:.0f} s")
        if not line.startswith(_NSM_READY):
            raise _BootError("the enclave's NSM device did not start (see supervisor.log)")

    def _start_app(self, launch: Launch, *, debug: bool) -> None:
        sink = subprocess.PIPE if debug else subprocess.DEVNULL
        try:
            # Running the image's program is this process's purpose (argv from the EIF; no shell).
            self.app = subprocess.Popen(  # noqa: S603
                launch.argv,
                cwd=launch.cwd,
                env=launch.env,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT if debug else subprocess.DEVNULL,
            )
        except OSError as exc:
            raise _BootError(f"execvpe: {launch.argv[0]}: {exc.strerror or exc}") from None
        except ValueError as exc:  # e.g. an embedded NUL that slipped through
            raise _BootError(f"execvpe: {launch.argv[0]}: {exc}") from None
        self._save_procs()
        if debug:
            assert self.app.stdout is not None
            self.pump = threading.Thread(target=self._pump, args=(self.app.stdout,), daemon=True)
            self.pump.start()

    def _pump(self, source: BinaryIO) -> None:
        """Copy the app's output to ``console.log``, rotating it at :data:`MAX_CONSOLE_LOG_BYTES`."""
        path = self.dir / _records.CONSOLE_FILE
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(path, flags, 0o600)
        size = os.fstat(fd).st_size
        try:
            while chunk := os.read(source.fileno(), CONSOLE_CHUNK):
                if size + len(chunk) > MAX_CONSOLE_LOG_BYTES and size:
                    os.close(fd)
                    os.replace(path, path.with_name(path.name + ".1"))
                    fd = os.open(path, flags, 0o600)
                    size = 0
                os.write(fd, chunk)
                size += len(chunk)
        except OSError:
            pass  # the enclave directory went away: the enclave is being torn down
        finally:
            os.close(fd)

    # -- boot pipe

    def _send(self, data: bytes) -> None:
        if self.boot is None:
            return
        try:
            self.boot.write(data)
            self.boot.flush()
        except OSError:  # run-enclave is gone; the enclave runs on (as a real one would)
            self._close_boot()

    def _close_boot(self) -> None:
        if self.boot is not None:
            with contextlib.suppress(OSError):
                self.boot.close()
            self.boot = None

    def fail(self, message: str) -> None:
        self._send(b"E" + " ".join(message.split())[:MAX_BOOT_MESSAGE].encode() + b"\n")
        self._close_boot()

    # -- run and stop

    def wait(self) -> None:
        """Until the app or the NSM device ends, or a stop signal comes."""
        while not self.stop.is_set():
            if self.app is None or self.app.poll() is not None:
                return
            if self.nsm is None or self.nsm.poll() is not None:
                return
            self.stop.wait(_procs.POLL_SECONDS * 5)

    def shutdown(self) -> None:
        """Stop the app and everything else in our group, then the NSM device; remove the record."""
        others = [p for p in _procs.group_members(self.me.pid) if p.pid != self.me.pid]
        nsm = _procs.describe(self.nsm.pid) if self.nsm is not None else None
        first = [p for p in others if nsm is None or p.pid != nsm.pid]
        for proc in first:
            _procs.signal_proc(proc, signal.SIGTERM)
        self._reap(first)
        for proc in first:
            _procs.signal_proc(proc, signal.SIGKILL)
        self._reap(first)
        if self.pump is not None:
            self.pump.join(timeout=STOP_GRACE_SECONDS)
        _procs.stop_all([nsm], group=None, grace_seconds=STOP_GRACE_SECONDS)
        for child in (self.app, self.nsm):
            if child is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(timeout=STOP_GRACE_SECONDS)
        with _records.locked(self.home):
            _records.remove(self.enclave_id, self.cid, self.home)

    def _reap(self, procs: Sequence[_procs.Proc]) -> None:
        """Wait (bounded) for ``procs`` to end, collecting our own children so they do not linger."""
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while time.monotonic() < deadline:
            if self.app is not None:
                self.app.poll()
            if not any(_procs.alive(p) for p in procs):
                return
            time.sleep(_procs.POLL_SECONDS)


def _daemonize() -> None:
    """Fork; the parent exits at once (run-enclave reaps it), the child leads a new session."""
    if os.fork():
        os._exit(0)
    os.setsid()
    os.chdir("/")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nitro-cli-supervisor", description="(internal to nitro-cli)")
    parser.add_argument("enclave_id")
    parser.add_argument("--boot-fd", type=int, required=True)
    args = parser.parse_args(argv)
    _daemonize()
    home = sim_home().resolve()
    supervisor = Supervisor(args.enclave_id, home, os.fdopen(args.boot_fd, "wb", buffering=0))

    def on_signal(signum: int, frame: FrameType | None) -> None:
        supervisor.stop.set()

    for signum in _STOP_SIGNALS:
        signal.signal(signum, on_signal)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    status = 0
    try:
        supervisor.start()
        supervisor.wait()
    except (_BootError, LaunchError) as exc:
        supervisor.fail(str(exc))
        status = 1
    except Exception as exc:
        supervisor.fail(f"the enclave process failed: {type(exc).__name__}: {exc}")
        status = 1
    finally:
        supervisor.shutdown()
    return status


if __name__ == "__main__":
    sys.exit(main())
