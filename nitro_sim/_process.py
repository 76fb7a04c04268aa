"""One started program (:class:`Process`) and what it may wait for; the rules are :mod:`nitro_sim.procs`'s."""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from nitro_sim._net import POLL_INTERVAL_S, STOP_TIMEOUT_S, Recorded, forget, signal_group, start_token

#: Bound on how long a process may take to be ready (a loaded CI machine; never asserted as a time).
READY_TIMEOUT_S = 30.0
#: Lines of output quoted in a failure, and the most bytes read from the end of a log to find them.
TAIL_LINES = 20
MAX_TAIL_BYTES = 16 * 1024
#: A line longer than this is cut while waiting for a ready line (bounds memory on a runaway writer), and
#: is an error from :meth:`Process.read_line`.
MAX_LINE_BYTES = 64 * 1024
#: One ``read`` of a talking process's stdout.
_READ_BYTES = 64 * 1024


class ProcessError(Exception):
    """A process failed to start, exited before it was ready, was not ready in time, or a command failed."""


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


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    """What started a process, so :meth:`ProcessGroup.restart` can start it again."""

    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: Path | None
    detached: bool
    talk: bool


class Child(Protocol):
    """What :class:`Process` uses of a child: ``subprocess.Popen``, or a process the zygote forked
    (:class:`nitro_sim._zygote.ForkedChild`). ``poll`` of a child that is not ours must not reap it."""

    @property
    def pid(self) -> int: ...
    @property
    def returncode(self) -> int | None: ...
    @property
    def stdin(self) -> IO[bytes] | None: ...
    @property
    def stdout(self) -> IO[bytes] | None: ...
    def poll(self) -> int | None: ...
    def wait(self) -> int: ...
    def send_signal(self, sig: int) -> None: ...


class Process:
    """One started program: its log, its readiness, its pipes when it talks, its stop. See :func:`start`.

    The process is not reaped before :meth:`stop` (exits are seen with ``waitid(WNOWAIT)``, or in /proc
    for a process the zygote forked): until then its pid, and so its process group id, cannot be reused,
    and signalling the group never hits a stranger.
    """

    def __init__(
        self,
        name: str,
        popen: Child,
        log: Path,
        offset: int,
        command: Command,
        *,
        token: int | None = None,
    ) -> None:
        self.name = name
        self.popen = popen
        self.log = log
        self._offset = offset
        self.command = command
        self.token = token if token is not None else start_token(popen.pid)
        #: The line :class:`OutputLine` readiness matched (set by :meth:`wait_ready`).
        self.ready_line: str | None = None
        self._unread = bytearray()  # stdout of a talking process, read but not yet returned

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
        except ChildProcessError:  # the zygote's child (poll does not reap it), or reaped behind our back
            return self.popen.poll()
        if info is None or info.si_pid == 0:
            return None
        return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status

    def running(self) -> bool:
        return self.exit_status() is None

    def output(self) -> str:
        """Everything this process has written to its log so far."""
        with self.log.open("rb") as handle:
            handle.seek(self._offset)
            return handle.read().decode("utf-8", "replace")

    def tail(self, lines: int = TAIL_LINES) -> str:
        """The last ``lines`` lines of this process's log."""
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

    # -- talking (``talk=True``) ---------------------------------------------------------------------------

    def send(self, line: str) -> None:
        """Write ``line`` and a newline to the process's stdin; ProcessError if it no longer reads."""
        stdin = self.popen.stdin
        if stdin is None:
            raise RuntimeError(f"{self.name} was not started with talk=True")
        try:
            stdin.write(line.encode() + b"\n")
            stdin.flush()
        except (BrokenPipeError, ValueError):  # ValueError: our end is closed already
            raise self.error("no longer reads its input") from None

    def read_line(self, timeout: float = READY_TIMEOUT_S) -> str:
        """The next line of the process's stdout (without its newline), within ``timeout``.

        ProcessError, naming the process with the last lines of its log, if it closes its stdout (it
        exited), stays silent for ``timeout``, or writes a line over :data:`MAX_LINE_BYTES`.
        """
        stdout = self.popen.stdout
        if stdout is None:
            raise RuntimeError(f"{self.name} was not started with talk=True")
        deadline = time.monotonic() + timeout
        while (end := self._unread.find(b"\n")) < 0:
            if len(self._unread) > MAX_LINE_BYTES:
                raise self.error(f"wrote a line over {MAX_LINE_BYTES} bytes")
            left = deadline - time.monotonic()
            if left <= 0:
                raise self.error(f"printed no line within {timeout:g} s")
            ready, _, _ = select.select([stdout], [], [], left)
            if not ready:
                continue
            data = os.read(stdout.fileno(), _READ_BYTES)
            if not data:
                self.wait_exit(STOP_TIMEOUT_S)
                status = self.exit_status()
                raise self.error(f"closed its output (exit status {status})")
            self._unread += data
        line = bytes(self._unread[:end])
        del self._unread[: end + 1]
        return line.decode("utf-8", "replace").rstrip("\r")

    # -- stopping ------------------------------------------------------------------------------------------

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

    def stop(self, *, signum: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT_S) -> int:
        """``signum`` (SIGTERM) to the group, SIGKILL after ``timeout``, sweep the group's stragglers,
        close our ends of its pipes; the exit status (negative: the signal that ended it)."""
        if self.popen.returncode is None:
            self.signal_group(signum)
            if not self.wait_exit(timeout):
                signal_group(self.pid, signal.SIGKILL)
            signal_group(self.pid, signal.SIGKILL)  # members that outlive their (unreaped) leader
        code = self.popen.wait()
        forget(self.pid)
        for stream in (self.popen.stdin, self.popen.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):  # a broken pipe's unflushed data
                    stream.close()
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
