"""Starting and stopping the real programs a scenario measures; every process started here is stopped here.

A :class:`Processes` group is a context manager: whatever happens inside (a failed scenario, Ctrl-C), on exit
it terminates every process it started, newest first, and kills the ones that do not exit in time.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType

#: How long a server may take to print its URL or create its socket.
START_TIMEOUT_S = 30.0
#: How long a process may take to exit after SIGTERM before it is killed.
STOP_TIMEOUT_S = 10.0
VENV_BIN = Path(sys.executable).parent


class BenchError(Exception):
    """A scenario could not run (a program missing, a server that never came up): one line for the user."""


def tool(name: str) -> str:
    """A console script of this project's venv (``kms-sim``), else one on PATH, else a clear error."""
    candidate = VENV_BIN / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise BenchError(f"{name} not found (in {VENV_BIN} or on PATH)")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def temp_home(prefix: str = "arb-") -> Iterator[Path]:
    """A fresh, short NITRO_SIM_HOME (Unix socket paths must stay under 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def wait_for_unix_socket(path: Path, proc: subprocess.Popen[str], timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{_name(proc)} exited with {proc.returncode}: {_stderr_tail(proc)}")
        if path.exists():
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                try:
                    s.connect(str(path))
                except OSError:
                    pass
                else:
                    return
        time.sleep(0.02)
    raise BenchError(f"{path} did not appear within {timeout:.0f} s")


def wait_for_tcp(port: int, proc: subprocess.Popen[str], timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{_name(proc)} exited with {proc.returncode}: {_stderr_tail(proc)}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.connect(("127.0.0.1", port))
            except OSError:
                time.sleep(0.02)
            else:
                return
    raise BenchError(f"nothing listened on 127.0.0.1:{port} within {timeout:.0f} s")


def read_line(proc: subprocess.Popen[str], timeout: float = START_TIMEOUT_S) -> str:
    """One line of a child's stdout, or a BenchError if it exits or stays silent too long."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise BenchError(f"{_name(proc)} printed nothing within {timeout:.0f} s: {_stderr_tail(proc)}")
        ready, _, _ = select.select([proc.stdout], [], [], min(left, 0.5))
        if ready:
            line = proc.stdout.readline()
            if line:
                return line.rstrip("\n")
            proc.wait(timeout=STOP_TIMEOUT_S)
            raise BenchError(f"{_name(proc)} exited with {proc.returncode}: {_stderr_tail(proc)}")


def _name(proc: subprocess.Popen[str]) -> str:
    args = proc.args
    if isinstance(args, (list, tuple)):
        shown = [os.path.basename(str(a)) if i == 0 else str(a) for i, a in enumerate(args)]
        return " ".join(shown[:6])
    return str(args)


#: pid -> stderr log file of every process started by a Processes group (for error messages).
_LOGS: dict[int, Path] = {}


def _stderr_tail(proc: subprocess.Popen[str]) -> str:
    log = _LOGS.get(proc.pid)
    if log is None:
        return "(no stderr)"
    with contextlib.suppress(OSError, ValueError):
        lines = [ln for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
        return lines[-1] if lines else "(empty stderr)"
    return "(stderr unreadable)"


def stderr_tail(proc: subprocess.Popen[str]) -> str:
    """The last non-empty line a started process wrote to stderr (its log file)."""
    return _stderr_tail(proc)


class Processes:
    """The processes of one scenario; all stopped on exit, newest first."""

    def __init__(self, *, log_dir: Path, env: Mapping[str, str] | None = None) -> None:
        self.env = dict(os.environ if env is None else env)
        self.log_dir = log_dir
        self._procs: list[subprocess.Popen[str]] = []
        self._logs: dict[int, Path] = {}

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_all()

    def start(
        self,
        cmd: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        stdin: bool = False,
        name: str = "proc",
    ) -> subprocess.Popen[str]:
        """Start ``cmd``; stdout is a pipe (servers print their URL there), stderr goes to a log file
        (a pipe nobody reads would fill up with per-request logs and stall the server)."""
        merged = self.env | dict(env or {})
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}-{len(self._logs)}.log"
        try:
            with open(log, "w", encoding="utf-8") as err:
                proc = subprocess.Popen(
                    list(cmd),
                    env=merged,
                    stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=err,
                    text=True,
                    bufsize=1,
                )
        except OSError as e:
            raise BenchError(f"cannot start {cmd[0]}: {e.strerror}") from None
        self._procs.append(proc)
        self._logs[proc.pid] = log
        _LOGS[proc.pid] = log
        return proc

    def stop(self, proc: subprocess.Popen[str], *, sig: signal.Signals = signal.SIGTERM) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        if proc in self._procs:
            self._procs.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self._procs)):
            self.stop(proc)
