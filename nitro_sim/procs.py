"""Starting, waiting for and stopping our programs: the one module that does it (DESIGN.md, "Tools").

Rules:

- **Output** of a process (stdout and stderr together) goes to one log file, ``<log_dir>/<name>.log``,
  never to a pipe nobody drains (a full pipe stalls the writer). Logs are appended to; a process reads
  only what it wrote since it started.
- **Readiness** is one of :class:`OutputLine` (a line of its output matching a pattern: the line is
  returned, e.g. kms-sim's URL), :class:`UnixSocket` (a connect succeeds) or :class:`TcpPort` (a connect
  to ``127.0.0.1`` succeeds; no other address is ever connected to). Waits poll every
  :data:`POLL_INTERVAL_S` up to :data:`READY_TIMEOUT_S`, a bound for a loaded machine, never a measured time.
- **Failure** is a :class:`ProcessError` that names the process and quotes the last :data:`TAIL_LINES`
  lines of its output (a process that exits before it is ready, or is not ready in time, is stopped).
- **Stopping**: each process leads its own process group (``start_new_session``), so stopping reaches
  what it started (kms-sim's workers): SIGTERM to the group, SIGKILL after :data:`STOP_TIMEOUT_S`.
- **Safety net** for every process not started ``detached`` (:mod:`nitro_sim._net`):
  1. it is registered until stopped; an ``atexit`` hook, and SIGTERM/SIGHUP handlers (installed only where
     the signal still has its default disposition), stop whatever is registered. SIGINT needs none:
     Python raises KeyboardInterrupt, which unwinds through the owners' ``finally`` blocks and then atexit.
  2. Linux: the child asks the kernel for a parent-death signal (``prctl(PR_SET_PDEATHSIG, SIGKILL)``
     through ctypes in ``preexec_fn``; prctl(2)), so even a runner killed with SIGKILL leaves no orphan.
     The signal follows the *thread* that forked the child: start processes from a thread that lives as
     long as they should (a test runner's main thread does). Other systems get the first net only.
- **Detached** processes (``nitro-sim up``) outlive their starter: no parent-death signal, no registry.
  They are named by ``(pid, start token)`` (:class:`Recorded`; the token is ``starttime``, field 22 of
  ``/proc/<pid>/stat``, proc(5)), so :func:`stop_recorded` never signals a stranger that reused a pid.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from nitro_sim._net import (
    POLL_INTERVAL_S,
    STOP_TIMEOUT_S,
    Recorded,
    alive,
    die_with_parent,
    forget,
    live,
    register,
    signal_group,
    start_token,
    stop_recorded,
)

__all__ = [
    "POLL_INTERVAL_S",
    "READY_TIMEOUT_S",
    "STOP_TIMEOUT_S",
    "TAIL_LINES",
    "OutputLine",
    "Process",
    "ProcessError",
    "ProcessGroup",
    "Ready",
    "Recorded",
    "TcpPort",
    "UnixSocket",
    "alive",
    "live",
    "start",
    "stop_recorded",
]

#: Bound on how long a process may take to be ready (a loaded CI machine; never asserted as a time).
READY_TIMEOUT_S = 30.0
#: Lines of output quoted in a failure, and the most bytes read from the end of a log to find them.
TAIL_LINES = 20
MAX_TAIL_BYTES = 16 * 1024
#: A line longer than this is cut while waiting for a ready line (bounds memory on a runaway writer).
MAX_LINE_BYTES = 64 * 1024


class ProcessError(Exception):
    """A process failed to start, exited before it was ready, or was not ready in time."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputLine:
    """Ready when a line of the process's output matches ``pattern`` (``re.search``)."""

    pattern: str


@dataclass(frozen=True, slots=True, kw_only=True)
class UnixSocket:
    """Ready when a connection to the Unix socket ``path`` succeeds."""

    path: Path


@dataclass(frozen=True, slots=True, kw_only=True)
class TcpPort:
    """Ready when a connection to ``127.0.0.1:port`` succeeds."""

    port: int


Ready = OutputLine | UnixSocket | TcpPort


class Process:
    """One started program: its log, its readiness, its stop. See :func:`start`.

    The process is not reaped before :meth:`stop` (exits are seen with ``waitid(WNOWAIT)``): until then its
    pid, and so its process group id, cannot be reused, and signalling the group never hits a stranger.
    """

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log: Path, offset: int) -> None:
        self.name = name
        self.popen = popen
        self.log = log
        self._offset = offset
        self.token = start_token(popen.pid)
        #: The line :class:`OutputLine` readiness matched (set by :meth:`ProcessGroup.start`).
        self.ready_line: str | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def recorded(self) -> Recorded:
        return Recorded(pid=self.pid, token=self.token if self.token is not None else -1)

    def exit_status(self) -> int | None:
        """The exit status (negative: killed by that signal) once it has ended, else None; never reaps."""
        if self.popen.returncode is not None:
            return self.popen.returncode
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped behind our back
            return self.popen.poll()
        if info is None or info.si_pid == 0:
            return None
        return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status

    def running(self) -> bool:
        return self.exit_status() is None

    def output(self) -> str:
        """Everything this process has written so far."""
        with self.log.open("rb") as handle:
            handle.seek(self._offset)
            return handle.read().decode("utf-8", "replace")

    def tail(self, lines: int = TAIL_LINES) -> str:
        """The last ``lines`` lines of this process's output."""
        try:
            with self.log.open("rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                handle.seek(max(self._offset, size - MAX_TAIL_BYTES))
                text = handle.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def error(self, what: str) -> ProcessError:
        """A :class:`ProcessError` naming this process, with the last lines of its output."""
        tail = self.tail()
        quoted = "\n".join(f"  | {line}" for line in tail.splitlines()) if tail else "  (no output)"
        return ProcessError(f"{self.name} (pid {self.pid}) {what}; last lines of {self.log}:\n{quoted}")

    def wait_ready(self, ready: Ready, *, timeout: float = READY_TIMEOUT_S) -> str | None:
        """Wait until ``ready`` holds; return the matching line for :class:`OutputLine`.

        On failure the process is stopped and :class:`ProcessError` raised.
        """
        check = self._line_check(ready) if isinstance(ready, OutputLine) else _connect_check(ready)
        deadline = time.monotonic() + timeout
        while True:
            found = check()
            if found is not None:
                if isinstance(ready, OutputLine):
                    self.ready_line = found
                return found if isinstance(ready, OutputLine) else None
            code = self.exit_status()
            if code is not None:
                if isinstance(ready, OutputLine) and (found := check()) is not None:
                    self.ready_line = found  # it said it, then exited at once: the caller will see
                    return found
                error = self.error(f"exited with status {code} before it was ready")
                self.stop()
                raise error
            if time.monotonic() >= deadline:
                error = self.error(f"was not ready within {timeout:g} s")
                self.stop()
                raise error
            time.sleep(POLL_INTERVAL_S)

    def _line_check(self, ready: OutputLine) -> Callable[[], str | None]:
        pattern = re.compile(ready.pattern)
        position = self._offset
        partial = b""

        def check() -> str | None:
            nonlocal position, partial
            with self.log.open("rb") as handle:
                handle.seek(position)
                data = handle.read()
            position += len(data)
            *lines, partial = (partial + data).split(b"\n")
            partial = partial[-MAX_LINE_BYTES:]
            for raw in lines:
                line = raw.decode("utf-8", "replace").rstrip("\r")
                if pattern.search(line):
                    return line
            return None

        return check

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to the process's group, unless it has ended."""
        if self.running():
            signal_group(self.pid, signum)

    def wait_exit(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the process to end (without reaping it); True if it did."""
        deadline = time.monotonic() + timeout
        while self.running():
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_INTERVAL_S)
        return True

    def stop(self, *, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM the group, SIGKILL after ``timeout``, sweep the group's stragglers; the exit status."""
        if self.popen.returncode is None:
            self.signal_group(signal.SIGTERM)
            if not self.wait_exit(timeout):
                signal_group(self.pid, signal.SIGKILL)
            signal_group(self.pid, signal.SIGKILL)  # members that outlive their (unreaped) leader
        code = self.popen.wait()
        forget(self.pid)
        return code

    def __repr__(self) -> str:
        return f"<Process {self.name} pid={self.pid} {'running' if self.running() else 'exited'}>"


def _connect_check(ready: UnixSocket | TcpPort) -> Callable[[], str | None]:
    """A check that returns "" once a connection succeeds (Unix socket, or 127.0.0.1 only)."""
    family = socket.AF_UNIX if isinstance(ready, UnixSocket) else socket.AF_INET
    address: str | tuple[str, int]
    address = str(ready.path) if isinstance(ready, UnixSocket) else ("127.0.0.1", ready.port)

    def check() -> str | None:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(address)
            except OSError:
                return None
        return ""

    return check


def start(
    argv: Sequence[str],
    *,
    name: str,
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    detached: bool = False,
) -> Process:
    """Start ``argv`` with its output in ``log_dir/<name>.log``; ProcessError if it cannot be started.

    Not ``detached``: registered in the safety net and given a parent-death signal (module docstring).
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    with log.open("ab") as sink:
        offset = sink.tell()
        try:
            popen = subprocess.Popen(  # noqa: S603 - our own programs, an argv list, no shell
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=sink,
                env=dict(os.environ if env is None else env),
                cwd=cwd,
                start_new_session=True,
                preexec_fn=None if detached else die_with_parent(),  # noqa: PLW1509 - see the docstring
            )
        except OSError as error:
            raise ProcessError(f"cannot start {name} ({argv[0]}): {error.strerror or error}") from None
    process = Process(name, popen, log, offset)
    if not detached and process.token is not None:
        register(process.recorded)
    return process


class ProcessGroup:
    """The processes of one owner; :meth:`stop_all` (and leaving the ``with`` block) stops them all."""

    def __init__(
        self, log_dir: Path, *, env: Mapping[str, str] | None = None, detached: bool = False
    ) -> None:
        self.log_dir = log_dir
        self.env = dict(os.environ if env is None else env)
        self.detached = detached
        self.processes: list[Process] = []

    def start(
        self,
        argv: Sequence[str],
        *,
        name: str,
        ready: Ready | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = READY_TIMEOUT_S,
    ) -> Process:
        """Start ``argv`` (``env`` added to the group's) and, with ``ready``, wait for it."""
        process = self.spawn(argv, name=name, env=env)
        if ready is not None:
            try:
                process.wait_ready(ready, timeout=timeout)
            finally:
                if not process.running():
                    self.stop(process)
        return process

    def spawn(self, argv: Sequence[str], *, name: str, env: Mapping[str, str] | None = None) -> Process:
        """Start ``argv`` without waiting (wait later with :meth:`Process.wait_ready`)."""
        taken = {p.name for p in self.processes}
        unique, n = name, 1
        while unique in taken:
            n += 1
            unique = f"{name}-{n}"
        process = start(
            argv, name=unique, log_dir=self.log_dir, env=self.env | dict(env or {}), detached=self.detached
        )
        self.processes.append(process)
        return process

    def stop(self, process: Process) -> int:
        code = process.stop()
        if process in self.processes:
            self.processes.remove(process)
        return code

    def stop_all(self, *, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM every group at once, SIGKILL what is left after ``timeout``; newest first."""
        processes = list(reversed(self.processes))
        for process in processes:
            process.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in processes:
            process.wait_exit(max(0.0, deadline - time.monotonic()))
            process.stop(timeout=0.0)
        self.processes.clear()

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_all()
