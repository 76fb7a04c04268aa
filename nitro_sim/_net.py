"""Process identity and the safety net under :mod:`nitro_sim.procs` (which documents the rules).

- A process is named by ``(pid, start token)`` (:class:`Recorded`): the token is ``starttime``, field 22
  of ``/proc/<pid>/stat`` (proc(5)), so a pid reused by a stranger is never mistaken for ours, and a
  zombie counts as gone. Only verified processes, each the leader of its own group, are signalled.
  A zombie's exit status is field 52 (``exit_code``, in waitpid(2)'s form; Linux 3.5), which is how the
  owner of a process forked by the zygote (:mod:`nitro_sim._zygote`), not its parent, sees it end.
- The net: every registered process is stopped by an ``atexit`` hook and by SIGTERM/SIGHUP handlers
  (installed only where the signal has its default disposition; after stopping, the handler dies of the
  signal as the default would have). It takes no lock, so it may run inside a signal handler.
- The parent-death signal: ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` (prctl(2), Linux) in the child; the kernel
  then kills it when the *thread* that forked it ends, even by SIGKILL. :func:`parent_death` sets it by
  starting the child through util-linux's ``setpriv --pdeathsig KILL --`` (which execs the program), not
  through a ``preexec_fn``: Python code run between fork and exec is unsafe while other threads run (a
  starter under load printed "Exception ignored ... release unlocked lock" from ``_fork_exec``). Where
  ``setpriv`` is missing it falls back to :func:`die_with_parent`, that ``preexec_fn`` (prctl through
  ctypes; if the parent is already gone, the child exits).

``host/nitro_cli/_procs.py`` applies the same (pid, start token) rule to an enclave's processes, on its
own: ``host`` may import only ``attestation`` (DESIGN.md, "Packages"), and ``attestation`` holds no
processes, so there is no shared home for the ~20 lines both read from ``/proc``.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import FrameType

__all__ = [
    "POLL_INTERVAL_S",
    "STOP_TIMEOUT_S",
    "Recorded",
    "alive",
    "die_with_parent",
    "exit_status_of_zombie",
    "forget",
    "live",
    "parent_death",
    "register",
    "signal_group",
    "start_token",
    "stop_recorded",
]

#: How long a process group may take to exit after SIGTERM before it gets SIGKILL.
STOP_TIMEOUT_S = 10.0
#: How often waits look again.
POLL_INTERVAL_S = 0.005
#: The longest ``/proc/<pid>/stat`` read (the kernel's is a few hundred bytes).
_MAX_STAT_BYTES = 4096
#: proc(5): fields after ``comm`` are numbered from 3; ``starttime`` is field 22, ``exit_code`` field 52.
_FIRST_FIELD = 3
_STARTTIME_FIELD = 22
_EXIT_CODE_FIELD = 52
#: linux/prctl.h
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Recorded:
    """A process as a state file records it: its pid and its start token (proc(5) ``starttime``)."""

    pid: int
    token: int


def _stat(pid: int) -> list[bytes]:
    """The fields of ``/proc/<pid>/stat`` from field 3 (state) on; empty if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read(_MAX_STAT_BYTES)
    except OSError:
        return []
    return raw.rpartition(b")")[2].split()  # after ``comm``, which may hold spaces and parentheses


def _field(fields: list[bytes], number: int) -> int | None:
    index = number - _FIRST_FIELD
    return int(fields[index]) if len(fields) > index and fields[index].isdigit() else None


def start_token(pid: int) -> int | None:
    """Field 22 of ``/proc/<pid>/stat`` for a live (non-zombie) process, else None."""
    fields = _stat(pid)
    if not fields or fields[0] in (b"Z", b"X", b"x"):
        return None
    return _field(fields, _STARTTIME_FIELD)


def exit_status_of_zombie(recorded: Recorded) -> int | None:
    """If ``recorded`` has ended and is not reaped yet (a zombie), its exit status (negative: the signal
    that ended it, as ``Popen.returncode``); None while it runs or once it is gone."""
    fields = _stat(recorded.pid)
    if not fields or fields[0] != b"Z" or _field(fields, _STARTTIME_FIELD) != recorded.token:
        return None
    status = _field(fields, _EXIT_CODE_FIELD)
    return None if status is None else os.waitstatus_to_exitcode(status)


def alive(recorded: Recorded) -> bool:
    """Whether ``recorded`` is still the running process it was recorded as (a zombie is not)."""
    return start_token(recorded.pid) == recorded.token


def signal_group(pgid: int, signum: int) -> None:
    """``killpg``, quiet if the group is gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def stop_recorded(procs: Iterable[Recorded], *, timeout: float = STOP_TIMEOUT_S) -> None:
    """Stop processes that lead their groups: SIGTERM, then SIGKILL to what is left after ``timeout``."""
    targets = [p for p in procs if alive(p)]
    for proc in targets:
        signal_group(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while (targets := [p for p in targets if alive(p)]) and time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL_S)
    for proc in targets:
        signal_group(proc.pid, signal.SIGKILL)


#: util-linux's setpriv sets the parent-death signal, then execs the program (setpriv(1) ``--pdeathsig``).
_SETPRIV = ("--pdeathsig", "KILL", "--")


def parent_death(argv: Sequence[str]) -> tuple[list[str], Callable[[], None] | None]:
    """``(argv, preexec_fn)`` that start ``argv`` with the parent-death signal (module docstring)."""
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    # A program that cannot be found is started directly, so that Popen says so (OSError), not setpriv.
    if setpriv is not None and argv and shutil.which(argv[0]) is not None:
        return [setpriv, *_SETPRIV, *argv], None
    return list(argv), die_with_parent()


#: Bound on the wait for setpriv to have set the signal and exec'd the program (a millisecond, usually).
SETPRIV_EXEC_WITHIN_S = 5.0
_SETPRIV_POLL_S = 0.0005


def await_parent_death(pid: int, started: Sequence[str]) -> None:
    """Return once the parent-death signal of a child started by :func:`parent_death` is in place.

    With setpriv, Popen returns when setpriv is exec'd, before it has called prctl: a parent killed in that
    window leaves an orphan. setpriv execs the program only after prctl, so once ``/proc/<pid>/exe`` is no
    longer setpriv (or the child is gone), the signal is set. Bounded by :data:`SETPRIV_EXEC_WITHIN_S`.
    """
    if not started or os.path.basename(started[0]) != "setpriv":
        return  # the preexec_fn ran before Popen returned
    wrapper = os.path.realpath(started[0])
    deadline = time.monotonic() + SETPRIV_EXEC_WITHIN_S
    while time.monotonic() < deadline:
        try:
            if os.readlink(f"/proc/{pid}/exe") != wrapper:
                return
        except OSError:  # gone, or a zombie: nothing left to orphan
            return
        time.sleep(_SETPRIV_POLL_S)


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that sets PR_SET_PDEATHSIG to SIGKILL (Linux), or None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork, only called after it
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


_LIVE: dict[int, Recorded] = {}
_LIVE_MUTEX = threading.Lock()
_NET_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
_installed = False


def register(recorded: Recorded) -> None:
    """Put a started process under the net (installing the net on first use)."""
    global _installed  # noqa: PLW0603 - installed once per interpreter
    with _LIVE_MUTEX:
        _LIVE[recorded.pid] = recorded
        if _installed:
            return
        _installed = True
    atexit.register(stop_live)
    if threading.current_thread() is threading.main_thread():
        for signum in _NET_SIGNALS:
            if signal.getsignal(signum) is signal.SIG_DFL:
                signal.signal(signum, _on_signal)


def forget(pid: int) -> None:
    """Take a stopped process off the net."""
    with _LIVE_MUTEX:
        _LIVE.pop(pid, None)


def live() -> list[Recorded]:
    """The processes under the net: started here, not stopped yet."""
    return list(_LIVE.values())


def stop_live() -> None:
    """Stop every process under the net (no lock: this may run inside a signal handler)."""
    procs = list(_LIVE.values())
    _LIVE.clear()
    stop_recorded(procs)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    """Stop our processes, then die of the signal as the default disposition would have."""
    stop_live()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
