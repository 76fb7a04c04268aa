"""Starting, waiting for and stopping our programs: the one module that does it (DESIGN.md, "Tools").

Rules:

- **Output** of a process (stdout and stderr together) goes to one log file, ``<log_dir>/<name>.log``,
  never to a pipe nobody drains (a full pipe stalls the writer). Logs are appended to; a process reads
  only what it wrote since it started.
- **Talk** (``talk=True``): stdin and stdout are pipes for the starter, which sends lines
  (:meth:`Process.send`) and reads them (:meth:`Process.read_line`, bounded by a timeout and
  :data:`MAX_LINE_BYTES`); stderr still goes to the log. The starter must read what it asked for.
- **Readiness** is one of :class:`OutputLine` (a line of its output matching a pattern: the line is
  returned, e.g. kms-sim's URL), :class:`UnixSocket` (a connect succeeds) or :class:`TcpPort` (a connect
  to ``127.0.0.1`` succeeds; no other address is ever connected to). Waits poll every
  :data:`POLL_INTERVAL_S` up to :data:`READY_TIMEOUT_S`, a bound for a loaded machine, never a measured time.
- **Failure** is a :class:`ProcessError` that names the process and quotes the last :data:`TAIL_LINES`
  lines of its output (a process that exits before it is ready, or is not ready in time, is stopped).
- **Stopping**: each process leads its own process group (``start_new_session``), so stopping reaches
  what it started (kms-sim's workers): SIGTERM (or the signal the caller chooses) to the group, SIGKILL
  after :data:`STOP_TIMEOUT_S`. :meth:`ProcessGroup.restart` stops a process and starts the same command
  again under the same name (a server on a fixed port comes back where its clients look for it).
- **Commands** that run to their end (``nitro-cli build-enclave``) go through :func:`run`: bounded by
  :data:`COMMAND_TIMEOUT_S`, killed on timeout or interruption, a failure named with its last lines.
- **Safety net** for every process not started ``detached`` (:mod:`nitro_sim._net`):
  1. it is registered until stopped; an ``atexit`` hook, and SIGTERM/SIGHUP handlers (installed only where
     the signal still has its default disposition), stop whatever is registered. SIGINT needs none:
     Python raises KeyboardInterrupt, which unwinds through the owners' ``finally`` blocks and then atexit.
  2. Linux: the child asks the kernel for a parent-death signal (``prctl(PR_SET_PDEATHSIG, SIGKILL)``
     set by ``setpriv --pdeathsig`` before the program is exec'd; prctl(2)), so even a runner killed with
     SIGKILL leaves no orphan.
     The signal follows the *thread* that forked the child: start processes from a thread that lives as
     long as they should (a test runner's main thread does). Other systems get the first net only.
  A process we did not start ourselves (an enclave's supervisor, which ``nitro-cli run-enclave``
  daemonizes) is put under the first net by its record with :func:`register`, and taken off with
  :func:`forget` once stopped.
- **Forked** (``ProcessGroup(zygote=...)``): kms-sim, vsock-proxy and nsm-sim are forked by a zygote that
  has imported their code (:mod:`nitro_sim._zygote`, :mod:`nitro_sim._zygote_main`): a few milliseconds a
  start instead of ~100. The same rules hold (own group, log, readiness, stop, both nets: the zygote has the
  parent-death signal towards its starter, each child towards the zygote); only their parent differs. What
  the zygote cannot fork (another program, ``talk``, ``detached``, other ``PYTHON*`` settings) is exec'd.
- **Detached** processes (``nitro-sim up``) outlive their starter: no parent-death signal, no registry.
  They are named by ``(pid, start token)`` (:class:`Recorded`; the token is ``starttime``, field 22 of
  ``/proc/<pid>/stat``, proc(5)), so :func:`stop_recorded` never signals a stranger that reused a pid.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from nitro_sim._net import (
    POLL_INTERVAL_S,
    STOP_TIMEOUT_S,
    Recorded,
    alive,
    await_parent_death,
    forget,
    live,
    parent_death,
    register,
    start_token,
    stop_recorded,
)
from nitro_sim._process import (
    MAX_LINE_BYTES,
    MAX_TAIL_BYTES,
    READY_TIMEOUT_S,
    TAIL_LINES,
    Command,
    OutputLine,
    Process,
    ProcessError,
    Ready,
    TcpPort,
    UnixSocket,
)

if TYPE_CHECKING:  # the zygote's module imports this one
    from nitro_sim._zygote import Zygote

__all__ = [
    "COMMAND_TIMEOUT_S",
    "MAX_LINE_BYTES",
    "MAX_TAIL_BYTES",
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
    "forget",
    "live",
    "register",
    "run",
    "start",
    "start_token",
    "stop_recorded",
]

#: Bound on a command that runs to its end (:func:`run`), e.g. ``nitro-cli build-enclave``.
COMMAND_TIMEOUT_S = 120.0


def start(
    argv: Sequence[str],
    *,
    name: str,
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    detached: bool = False,
    talk: bool = False,
) -> Process:
    """Start ``argv`` with its output in ``log_dir/<name>.log``; ProcessError if it cannot be started.

    Not ``detached``: registered in the safety net and given a parent-death signal (module docstring).
    ``talk``: stdin and stdout are pipes (:meth:`Process.send`, :meth:`Process.read_line`).
    """
    command = Command(
        argv=tuple(argv), env=dict(os.environ if env is None else env), cwd=cwd, detached=detached, talk=talk
    )
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    started, preexec = (list(command.argv), None) if detached else parent_death(command.argv)
    with log.open("ab") as sink:
        offset = sink.tell()
        try:
            popen = subprocess.Popen(  # noqa: S603 - our own programs, an argv list, no shell
                started,
                stdin=subprocess.PIPE if talk else subprocess.DEVNULL,
                stdout=subprocess.PIPE if talk else sink,
                stderr=sink,
                env=command.env,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=preexec,  # noqa: PLW1509 - only where setpriv is missing: see the docstring
            )
        except OSError as error:
            raise ProcessError(f"cannot start {name} ({argv[0]}): {error.strerror or error}") from None
    if not detached:
        await_parent_death(popen.pid, started)
    process = Process(name, popen, log, offset, command)
    if not detached and process.token is not None:
        register(process.recorded)
    return process


def run(
    argv: Sequence[str],
    *,
    name: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = COMMAND_TIMEOUT_S,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` to its end, its stdout and stderr captured as text.

    ProcessError naming ``name`` if it cannot start, does not end within ``timeout`` (it is killed, as it
    is when this process is interrupted), or, with ``check``, exits non-zero (quoting its last lines of
    stderr, else stdout). The command gets the parent-death signal (module docstring).
    """
    started, preexec = parent_death(argv)
    try:
        return _checked(
            subprocess.run(  # noqa: S603 - our own programs, an argv list, no shell
                started,
                env=dict(os.environ if env is None else env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
                check=False,
                preexec_fn=preexec,
            ),
            name,
            check=check,
        )
    except OSError as error:
        raise ProcessError(f"cannot start {name} ({argv[0]}): {error.strerror or error}") from None
    except subprocess.TimeoutExpired:
        raise ProcessError(f"{name} did not finish within {timeout:g} s (killed)") from None


def _checked(
    done: subprocess.CompletedProcess[str], name: str, *, check: bool
) -> subprocess.CompletedProcess[str]:
    if check and done.returncode != 0:
        text = done.stderr.strip() or done.stdout.strip()
        lines = text.splitlines()[-TAIL_LINES:]
        quoted = "\n".join(f"  | {line}" for line in lines) if lines else "  (no output)"
        raise ProcessError(
            f"{name} exited with status {done.returncode}; last lines of its output:\n{quoted}"
        )
    return done


class ProcessGroup:
    """The processes of one owner; :meth:`stop_all` (and leaving the ``with`` block) stops them all.

    With a ``zygote``, what it :meth:`~nitro_sim._zygote.Zygote.serves` is forked by it (module docstring).
    """

    def __init__(
        self,
        log_dir: Path,
        *,
        env: Mapping[str, str] | None = None,
        detached: bool = False,
        zygote: Zygote | None = None,
    ) -> None:
        self.log_dir = log_dir
        self.env = dict(os.environ if env is None else env)
        self.detached = detached
        self.zygote = zygote
        self.processes: list[Process] = []

    def start(
        self,
        argv: Sequence[str],
        *,
        name: str,
        ready: Ready | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = READY_TIMEOUT_S,
        talk: bool = False,
    ) -> Process:
        """Start ``argv`` (``env`` added to the group's) and, with ``ready``, wait for it."""
        process = self.spawn(argv, name=name, env=env, talk=talk)
        if ready is not None:
            self._await(process, ready, timeout)
        return process

    def spawn(
        self, argv: Sequence[str], *, name: str, env: Mapping[str, str] | None = None, talk: bool = False
    ) -> Process:
        """Start ``argv`` without waiting (wait later with :meth:`Process.wait_ready`)."""
        taken = {p.name for p in self.processes}
        unique, n = name, 1
        while unique in taken:
            n += 1
            unique = f"{name}-{n}"
        process = self._start(
            argv, name=unique, env=self.env | dict(env or {}), cwd=None, detached=self.detached, talk=talk
        )
        self.processes.append(process)
        return process

    def restart(
        self,
        process: Process,
        *,
        argv: Sequence[str] | None = None,
        ready: Ready | None = None,
        timeout: float = READY_TIMEOUT_S,
    ) -> Process:
        """Stop ``process``, start its command again (``argv`` instead, if given) under its name, with its
        environment; its log goes on. With ``ready``, wait for it."""
        self.stop(process)
        command = process.command
        again = self._start(
            command.argv if argv is None else argv,
            name=process.name,
            env=command.env,
            cwd=command.cwd,
            detached=command.detached,
            talk=command.talk,
        )
        self.processes.append(again)
        if ready is not None:
            self._await(again, ready, timeout)
        return again

    def _start(
        self,
        argv: Sequence[str],
        *,
        name: str,
        env: Mapping[str, str],
        cwd: Path | None,
        detached: bool,
        talk: bool,
    ) -> Process:
        """Forked by the zygote when it serves ``argv`` in ``env``, else exec'd (:func:`start`)."""
        zygote = self.zygote
        if zygote is not None and not detached and not talk and zygote.serves(argv, env):
            return zygote.spawn(argv, name=name, log_dir=self.log_dir, env=env, cwd=cwd)
        return start(argv, name=name, log_dir=self.log_dir, env=env, cwd=cwd, detached=detached, talk=talk)

    def _await(self, process: Process, ready: Ready, timeout: float) -> None:
        try:
            process.wait_ready(ready, timeout=timeout)
        finally:
            if not process.running():
                self.stop(process)

    def stop(self, process: Process, *, signum: int = signal.SIGTERM) -> int:
        """Stop one process (``signum``, then SIGKILL after :data:`STOP_TIMEOUT_S`); its exit status."""
        code = process.stop(signum=signum)
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
