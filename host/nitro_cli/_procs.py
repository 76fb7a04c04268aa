"""Processes of a simulated enclave: who is alive, and stopping them without hitting a stranger.

Rules:
- A process is named by ``(pid, start token)``; the token is field 22 (``starttime``) of
  ``/proc/<pid>/stat``, so a pid reused by another process is never mistaken for ours (proc(5)).
- A zombie (state ``Z``/``X``) is dead: it runs nothing and holds no resource worth waiting for.
- Signals go only to processes whose token still matches, and to a process group only when one of
  its verified members says it belongs to it (a group id cannot be reused while it has members).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass

#: How often waits poll ``/proc`` (no test asserts on it).
POLL_SECONDS = 0.02
#: The longest ``/proc/<pid>/stat`` we read (the kernel's is a few hundred bytes).
_MAX_STAT_BYTES = 4096


@dataclass(frozen=True, slots=True, kw_only=True)
class Proc:
    """A process as recorded: its pid and its start token."""

    pid: int
    token: int

    def to_json(self) -> dict[str, int]:
        return {"pid": self.pid, "token": self.token}

    @classmethod
    def from_json(cls, value: object) -> Proc | None:
        if not isinstance(value, dict):
            return None
        pid, token = value.get("pid"), value.get("token")
        if type(pid) is not int or type(token) is not int or pid <= 1 or token < 0:
            return None
        return cls(pid=pid, token=token)


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of ``/proc/<pid>/stat`` (after ``comm``, which may hold spaces and parentheses)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read(_MAX_STAT_BYTES)
    except OSError:
        return None
    _, sep, rest = raw.rpartition(b")")
    if not sep:
        return None
    return rest.decode("ascii", "replace").split()


def start_token(pid: int) -> int | None:
    """The start token of a live (non-zombie) ``pid``, or None."""
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20 or fields[0] in ("Z", "X", "x"):
        return None
    try:
        return int(fields[19])
    except ValueError:
        return None


def this_process() -> Proc:
    """The calling process as a :class:`Proc`."""
    pid = os.getpid()
    token = start_token(pid)
    if token is None:  # pragma: no cover - /proc is always there on Linux
        raise OSError("cannot read /proc/self/stat")
    return Proc(pid=pid, token=token)


def describe(pid: int) -> Proc | None:
    """``pid`` as a :class:`Proc`, if it is alive."""
    token = start_token(pid)
    return None if token is None else Proc(pid=pid, token=token)


def alive(proc: Proc | None) -> bool:
    """Whether ``proc`` is still the running process it was recorded as."""
    return proc is not None and start_token(proc.pid) == proc.token


def signal_proc(proc: Proc | None, signum: int, *, group: int | None = None) -> None:
    """Send ``signum`` to ``proc`` if it is still itself, and to ``group`` if ``proc`` is in that group."""
    if not alive(proc):
        return
    assert proc is not None
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group is not None and os.getpgid(proc.pid) == group:
            os.killpg(group, signum)
        os.kill(proc.pid, signum)


def wait_gone(procs: Iterable[Proc | None], *, seconds: float) -> bool:
    """Wait up to ``seconds`` for every process in ``procs`` to end; True if they all did."""
    pending = [p for p in procs if p is not None]
    deadline = time.monotonic() + seconds
    while True:
        pending = [p for p in pending if alive(p)]
        if not pending:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_SECONDS)


def stop_all(procs: Iterable[Proc | None], *, group: int | None, grace_seconds: float) -> None:
    """SIGTERM ``procs`` (and their verified ``group``), then SIGKILL whatever is left after the grace."""
    targets = list(procs)
    for proc in targets:
        signal_proc(proc, signal.SIGTERM, group=group)
    if not wait_gone(targets, seconds=grace_seconds):
        for proc in targets:
            signal_proc(proc, signal.SIGKILL, group=group)
        wait_gone(targets, seconds=grace_seconds)


#: At most this many ``/proc`` entries are looked at when listing a process group.
MAX_PROC_SCAN = 65536


def group_members(pgid: int) -> list[Proc]:
    """The live processes of process group ``pgid`` (from ``/proc``; field 5 is ``pgrp``)."""
    out: list[Proc] = []
    try:
        entries = os.scandir("/proc")
    except OSError:
        return out
    with entries:
        for count, entry in enumerate(entries):
            if count >= MAX_PROC_SCAN:
                break
            if not entry.name.isdigit():
                continue
            fields = _stat_fields(int(entry.name))
            if fields is None or len(fields) < 20 or fields[0] in ("Z", "X", "x"):
                continue
            if fields[2] == str(pgid):
                out.append(Proc(pid=int(entry.name), token=int(fields[19])))
    return out
