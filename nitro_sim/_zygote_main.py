"""The zygote: a long-lived process that has imported our servers' code and forks a fresh server on request.

Started by :class:`nitro_sim._zygote.Zygote` as ``python -P -m nitro_sim._zygote_main --scripts DIR``, with
pipes as its stdin and stdout (the control channel) and its stderr in its log. A fork costs a few
milliseconds where an exec costs ~100 (Python's start and these imports). Rules:

- **Preload**: it imports each program's module (:data:`PROGRAMS`) and what they import lazily once running
  (:data:`PRELOAD`), then only forks: it never runs a program's code itself, so every child starts from the
  state a fresh interpreter reaches after those imports, not from what an earlier child did. It has one
  thread, no event loop and no descriptors but its standard ones and the control channel.
- **Control**: one JSON object a line each way, at most :data:`MAX_REQUEST_BYTES` a line. A spawn,
  ``{"spawn": NAME, "argv": [...], "env": {...}, "cwd": DIR, "log": FILE}``, answers
  ``{"pid": N, "token": T}`` (T: its start token, read before anyone could reap it) or
  ``{"error": "one line"}``; ``{"reap": PID}`` answers ``{"status": S}`` (negative: the signal that ended
  it), or an error once :data:`REAP_TIMEOUT_S` has passed. A child is reaped only when its owner asks, so
  its pid, and so its process group id, is never reused while the owner may still signal it
  (:mod:`nitro_sim.procs`). At most :data:`MAX_CHILDREN` children are unreaped at once.
- **A child**, before it runs the program's ``main()`` as its console script would (``sys.argv[0]`` the
  script's path, then ``sys.exit(main())``):
  1. its own session and process group (``setsid``), as ``start_new_session`` gives an exec'd program;
  2. ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` towards the zygote (prctl(2)), which has the same towards the
     thread that started it; if the zygote is already gone, it exits;
  3. the signal dispositions of a fresh interpreter: signals are blocked across the fork, the zygote's
     SIGTERM/SIGHUP handlers are undone, then the mask is restored;
  4. stdin from ``/dev/null``, stdout and stderr appended to its log, every other descriptor closed;
  5. the request's environment (``os.environ`` replaced whole), working directory and argv; its ``comm``
     (what ``ps -e``, ``top`` and ``pgrep`` see) set to the program's name; ``/proc/<pid>/cmdline`` and
     ``/proc/<pid>/environ`` (what the kernel saw at exec) stay the zygote's.
  It ends as an interpreter does up to its finalization: ``SystemExit``'s code (a message printed, status
  1), an uncaught exception's traceback (status 1) or KeyboardInterrupt's SIGINT death, non-daemon threads
  joined, atexit hooks run, standard streams flushed; then ``os._exit``. The finalization itself (every
  object released) is skipped: in a fork it writes to every page the zygote's imports made, copying the
  whole heap (~15 ms of CPU a server, measured), and an exiting process needs none of it.
  What it shares with its siblings, unlike exec'd programs: the string hash seed, and interpreter settings
  read at start (the ``PYTHON*`` variables: the client forks only for an environment whose ``PYTHON*``
  variables are the zygote's, and execs otherwise). ``random`` reseeds itself in a child (its own fork
  hook), and OpenSSL's generator reseeds after a fork.
- **Stop**: at the end of its input (the owner closed the pipe, or died) or on SIGTERM/SIGHUP: SIGTERM to
  every unreaped child's group, SIGKILL after :data:`STOP_TIMEOUT_S` to what is left, all reaped, exit 0. If
  the zygote dies any other way, the kernel kills its children (their parent-death signal).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import gc
import importlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

__all__ = ["MAX_CHILDREN", "MAX_REQUEST_BYTES", "PRELOAD", "PROGRAMS", "READY_LINE", "main"]

#: The programs it forks: console-script name -> (module, function), as pyproject.toml's [project.scripts].
PROGRAMS = {
    "kms-sim": ("kms.cli", "main"),
    "vsock-proxy": ("host.vsock_proxy", "main"),
    "nsm-sim": ("host.nsm_sim", "main"),
}
#: Modules the programs import only once running (kms-sim serve: uvicorn and what its Config loads by name;
#: vsock-proxy: the idna codec of its address lookup). A name missing from an installed version is skipped.
PRELOAD = (
    "asyncio",
    "encodings.idna",
    "logging.config",
    "uvloop",
    "uvicorn",
    "uvicorn.config",
    "uvicorn.server",
    "uvicorn.supervisors",
    "uvicorn.lifespan.off",
    "uvicorn.loops.auto",
    "uvicorn.loops.uvloop",
    "uvicorn.protocols.http.httptools_impl",
    "uvicorn.protocols.websockets.auto",
    "uvicorn.middleware.proxy_headers",
    "kms.transport",
    "kms.app",
)
#: Its first line on the control channel once it has imported everything.
READY_LINE = "nitro-sim-zygote ready"
#: Longest control line either way (a request carries a whole environment).
MAX_REQUEST_BYTES = 1024 * 1024
#: Children forked and not yet reaped (a bound on what one owner can leave behind).
MAX_CHILDREN = 1024
#: How long a reap may wait for a child to end (its owner asks once it has ended, or after SIGKILL).
REAP_TIMEOUT_S = 10.0
#: How long children get between SIGTERM and SIGKILL when the zygote stops (nitro_sim._net.STOP_TIMEOUT_S).
STOP_TIMEOUT_S = 10.0
#: How often waits look again.
POLL_INTERVAL_S = 0.005
#: One read of the control channel.
_READ_BYTES = 64 * 1024
#: linux/prctl.h
_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15
#: The zygote's own stop signals (a child gets the defaults back).
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class _StopRequestedError(Exception):
    """SIGTERM or SIGHUP reached the zygote."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _Job:
    """What a forked child runs: the program's entry point, as its console script at ``script`` would."""

    entry: Callable[[], Any]
    script: str
    argv: list[str]


class _Zygote:
    def __init__(self, control_in: int, control_out: int, scripts: Path) -> None:
        self.control_in = control_in
        self.control_out = control_out
        self.scripts = scripts
        self.children: set[int] = set()
        self.pid = os.getpid()
        self._unread = b""
        libc = ctypes.CDLL(None, use_errno=True)
        self._prctl = libc.prctl
        self._dispositions: dict[int, Any] = {}

    def install_signals(self) -> None:
        for signum in _STOP_SIGNALS:
            self._dispositions[signum] = signal.signal(signum, _raise_stop)

    def serve(self) -> _Job | None:
        """Answer requests until the input ends; in a forked child, return what it must run."""
        self._reply({"ready": READY_LINE})
        while True:
            try:
                line = self._read_line()
            except ValueError as error:  # an oversized line: the channel is out of step, so it ends
                self._reply({"error": _one_line(error)})
                return None
            if line is None:
                return None
            try:
                request = _parse(line)
                if "reap" in request:
                    self._reply({"status": self._reap(int(request["reap"]))})
                    continue
                job = self._spawn(request)
            except (ValueError, TypeError, KeyError, OSError) as error:
                self._reply({"error": _one_line(error)})
                continue
            if job is not None:  # the child
                return job

    def stop_children(self) -> None:
        """SIGTERM every child's group, SIGKILL after STOP_TIMEOUT_S, reap them all."""
        for pid in self.children:
            _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while self.children:
            for pid in list(self.children):
                with contextlib.suppress(ChildProcessError):
                    if os.waitpid(pid, os.WNOHANG)[0] == 0:
                        continue
                self.children.discard(pid)
            if time.monotonic() >= deadline:
                for pid in self.children:
                    _signal_group(pid, signal.SIGKILL)
                deadline = float("inf")
            time.sleep(POLL_INTERVAL_S)

    # -- requests ------------------------------------------------------------------------------------------

    def _spawn(self, request: dict[str, Any]) -> _Job | None:
        name = request["spawn"]
        if name not in PROGRAMS:
            raise ValueError(f"not a program of the zygote: {name!r}")
        if len(self.children) >= MAX_CHILDREN:
            raise ValueError(f"{MAX_CHILDREN} children not reaped yet")
        argv, env, cwd, log = request["argv"], request["env"], request.get("cwd"), request["log"]
        if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
            raise TypeError("argv must be a list of strings")
        if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
            raise TypeError("env must map names to strings")
        module, function = PROGRAMS[name]
        entry = getattr(sys.modules[module], function)
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        pid = os.fork()
        if pid != 0:
            self.children.add(pid)  # before a stop signal can be handled: stop_children must see it
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            self._reply({"pid": pid, "token": _start_token(pid)})
            return None
        try:  # the child: anything that fails here ends it with status 127, its log saying why
            self._become(name, env, cwd, Path(log), blocked)
        except BaseException as error:  # the child must never return into the zygote's loop
            with contextlib.suppress(OSError):
                os.write(2, f"{name}: cannot start in the zygote: {_one_line(error)}\n".encode())
            os._exit(127)
        return _Job(entry=entry, script=str(self.scripts / name), argv=argv)

    def _become(self, name: str, env: dict[str, str], cwd: str | None, log: Path, blocked: set[int]) -> None:
        """The child's steps 1-5 (module docstring)."""
        os.setsid()  # (1)
        self._prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # (2)
        if os.getppid() != self.pid:
            os._exit(1)
        for signum, disposition in self._dispositions.items():  # (3)
            signal.signal(signum, disposition)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        null = os.open(os.devnull, os.O_RDONLY)  # (4)
        sink = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(null, 0)
        os.dup2(sink, 1)
        os.dup2(sink, 2)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        self.children.clear()
        os.environ.clear()  # (5)
        os.environ.update(env)
        if cwd is not None:
            os.chdir(cwd)
        self._prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)

    def _reap(self, pid: int) -> int:
        if pid not in self.children:
            raise ValueError(f"pid {pid} is not an unreaped child of the zygote")
        deadline = time.monotonic() + REAP_TIMEOUT_S
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                self.children.discard(pid)
                return os.waitstatus_to_exitcode(status)
            if time.monotonic() >= deadline:
                raise ValueError(f"pid {pid} did not end within {REAP_TIMEOUT_S:g} s")
            time.sleep(POLL_INTERVAL_S)

    # -- the channel ---------------------------------------------------------------------------------------

    def _read_line(self) -> bytes | None:
        """The next control line; None at the end of input; ValueError for a line over the bound."""
        while (end := self._unread.find(b"\n")) < 0:
            if len(self._unread) > MAX_REQUEST_BYTES:
                raise ValueError(f"a control line over {MAX_REQUEST_BYTES} bytes")
            data = os.read(self.control_in, _READ_BYTES)
            if not data:
                return None
            self._unread += data
        line, self._unread = self._unread[:end], self._unread[end + 1 :]
        return line

    def _reply(self, answer: dict[str, Any]) -> None:
        """One answer line; the owner gone (a broken pipe) stops the zygote."""
        data = (json.dumps(answer) + "\n").encode()
        try:
            while data:
                data = data[os.write(self.control_out, data) :]
        except BrokenPipeError:
            raise _StopRequestedError from None


def _parse(line: bytes) -> dict[str, Any]:
    request = json.loads(line)
    if not isinstance(request, dict):
        raise TypeError("a request is a JSON object")
    return request


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _StopRequestedError


def _start_token(pid: int) -> int:
    """Field 22 (``starttime``) of ``/proc/<pid>/stat`` (proc(5)), as nitro_sim._net reads it; a child not
    reaped yet always has one, zombie or not."""
    with open(f"/proc/{pid}/stat", "rb") as handle:
        fields = handle.read(4096).rpartition(b")")[2].split()
    return int(fields[19])


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _one_line(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return " ".join(text.split())[:500]


def _preload() -> None:
    for module, _ in PROGRAMS.values():
        importlib.import_module(module)
    for module in PRELOAD:
        with contextlib.suppress(ModuleNotFoundError):
            importlib.import_module(module)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nitro-sim-zygote")
    parser.add_argument("--scripts", type=Path, required=True, help="the directory of our console scripts")
    args = parser.parse_args(argv)
    # A console script's sys.path[0] is its own directory (``-P`` left the working directory out).
    sys.path.insert(0, str(args.scripts))
    # The control channel moves off descriptors 0 and 1, which become /dev/null and the log.
    control_in, control_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    zygote = _Zygote(control_in, control_out, args.scripts)
    zygote.install_signals()
    job: _Job | None = None
    try:
        _preload()
        gc.freeze()  # what the imports made is shared with every child, not copied when gc walks it
        job = zygote.serve()
    except _StopRequestedError:
        job = None
    if job is not None:  # the child: its console script's ``sys.exit(main())``, ended as said above
        sys.argv = [job.script, *job.argv]
        _exit(job.entry)
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    zygote.stop_children()
    return 0


def _exit(entry: Callable[[], Any]) -> NoReturn:
    """Run ``entry`` as ``sys.exit(entry())`` and end the process as an interpreter would, without its
    finalization (module docstring)."""
    try:
        status = _exit_status(entry())
    except SystemExit as exiting:
        status = _exit_status(exiting.code)
    except KeyboardInterrupt:
        status = -signal.SIGINT  # an interpreter dies of SIGINT then (after its hooks, as here)
    except BaseException:  # an uncaught exception: its traceback, as the interpreter prints it
        sys.excepthook(*sys.exc_info())
        status = 1
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()  # what the interpreter runs at exit (in typeshed's atexit stub)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    if status < 0:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        status = 128 + signal.SIGINT  # the shell's status for it, should the signal not end us
    os._exit(status)


def _exit_status(code: object) -> int:
    """What ``SystemExit(code)`` makes the exit status: None 0, an int itself, anything else printed, 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    with contextlib.suppress(Exception):
        print(code, file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
