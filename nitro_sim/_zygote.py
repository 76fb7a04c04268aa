"""Our servers forked by a zygote instead of exec'd: the owner's side (the program: :mod:`._zygote_main`).

Rules (what a forked child is given, and what it shares, are the zygote program's docstring):

- :class:`Zygote` holds one zygote process, started on its first :meth:`Zygote.spawn` through
  :func:`nitro_sim.procs.start` (so under the safety net and, on Linux, with a parent-death signal: start it
  from a thread that lives as long as its children should, as for any process of ours). Linux only.
- :meth:`Zygote.serves` says whether a command may be forked: one of the zygote's programs by the console
  script beside this interpreter (the zygote runs this interpreter), with the ``PYTHON*`` variables of the
  zygote's own environment (they act at an interpreter's start), the zygote still running. Anything else
  is exec'd as before (:class:`nitro_sim.procs.ProcessGroup` decides).
- A forked process is a :class:`nitro_sim.procs.Process` like any other (its own group, its log, its
  readiness, its stop, registered under the safety net by (pid, start token)); only its parent is the
  zygote. So its end is seen in /proc (a zombie's exit status, :func:`nitro_sim._net.exit_status_of_zombie`)
  and it is reaped by asking the zygote, which reaps nothing unasked (its pid stays reserved until then).
- Calls to the zygote are serialized by a lock (a reaper thread reaps while the main thread spawns), each
  answer bounded by :data:`nitro_sim.procs.READY_TIMEOUT_S`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from nitro_sim._net import (
    POLL_INTERVAL_S,
    STOP_TIMEOUT_S,
    Recorded,
    exit_status_of_zombie,
    register,
    start_token,
)
from nitro_sim._process import Command, Process, ProcessError
from nitro_sim._zygote_main import PROGRAMS, READY_LINE

__all__ = ["ForkedChild", "Zygote", "supported"]

#: What the zygote's log is called in its log directory.
ZYGOTE_NAME = "nitro-sim-zygote"
#: Environment variables read when an interpreter starts: a fork inherits the zygote's (see the rules).
_INTERPRETER_PREFIX = "PYTHON"


def supported() -> bool:
    """Whether this system can run the zygote (Linux: ``prctl``, ``/proc``)."""
    return sys.platform.startswith("linux")


class ForkedChild:
    """A process the zygote forked for us: what :class:`nitro_sim.procs.Process` uses of ``Popen``."""

    stdin: IO[bytes] | None = None
    stdout: IO[bytes] | None = None

    def __init__(self, pid: int, token: int, zygote: Zygote) -> None:
        self.pid = pid
        self.token = token
        self.returncode: int | None = None
        self._zygote = zygote

    def poll(self) -> int | None:
        """Its exit status once it has ended, else None; never reaps (the zygote does, on :meth:`wait`)."""
        if self.returncode is not None:
            return self.returncode
        if start_token(self.pid) == self.token:
            return None
        status = exit_status_of_zombie(Recorded(pid=self.pid, token=self.token))
        # Neither running nor our zombie: the zygote died, so the kernel killed it (its parent-death signal)
        # and init reaped it.
        return -signal.SIGKILL if status is None else status

    def wait(self) -> int:
        """Reap it (the zygote waits for it): its exit status. Call once it has ended, or after SIGKILL."""
        if self.returncode is None:
            self.returncode = self._zygote.reap(self)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)


class Zygote:
    """One zygote: started on first use, forking our servers (see the module docstring); :meth:`close`."""

    def __init__(self, log_dir: Path, *, env: Mapping[str, str] | None = None) -> None:
        self.log_dir = log_dir
        self.env = dict(os.environ if env is None else env)
        self.scripts = Path(sys.executable).parent
        self.process: Process | None = None
        self._lock = threading.Lock()
        self._closed = False

    def serves(self, argv: Sequence[str], env: Mapping[str, str]) -> bool:
        """Whether :meth:`spawn` can fork ``argv`` in ``env`` (module docstring); False once closed."""
        return (
            supported()
            and not self._closed
            and bool(argv)
            and self._program(argv[0]) is not None
            and _interpreter_settings(env) == _interpreter_settings(self.env)
            and (self.process is None or self.process.running())
        )

    def spawn(
        self, argv: Sequence[str], *, name: str, log_dir: Path, env: Mapping[str, str], cwd: Path | None
    ) -> Process:
        """Fork ``argv`` (one :meth:`serves`) with its output in ``log_dir/<name>.log``; ProcessError if the
        zygote cannot start or cannot fork it."""
        program = self._program(argv[0]) if argv else None
        if program is None:
            raise ValueError(f"the zygote does not run {argv[0] if argv else '(empty argv)'!r}")
        command = Command(argv=tuple(argv), env=dict(env), cwd=cwd, detached=False, talk=False)
        log_dir.mkdir(parents=True, exist_ok=True)
        log = log_dir / f"{name}.log"
        with log.open("ab") as sink:
            offset = sink.tell()
        where = cwd if cwd is not None else Path.cwd()  # an exec'd child would start where we are now
        request = {"spawn": program, "argv": list(argv[1:]), "env": command.env, "cwd": str(where)}
        answer = self._ask(request | {"log": str(log)})
        if "pid" not in answer:
            raise ProcessError(f"cannot start {name} ({argv[0]}) in the zygote: {answer.get('error')}")
        child = ForkedChild(int(answer["pid"]), int(answer["token"]), self)
        process = Process(name, child, log, offset, command, token=child.token)
        register(process.recorded)
        return process

    def reap(self, child: ForkedChild) -> int:
        """Have the zygote reap ``child``: its exit status (the zygote gone: the status it died with)."""
        try:
            answer = self._ask({"reap": child.pid}, start=False)
        except ProcessError:
            answer = {}
        if "status" in answer:
            return int(answer["status"])
        # The zygote is gone (its children were killed with it) or refused: wait, bounded, for the end.
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while start_token(child.pid) == child.token and time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL_S)
        status = child.poll()
        return -signal.SIGKILL if status is None else status

    def start(self) -> None:
        """Start the zygote now rather than on the first :meth:`spawn` (ProcessError if it cannot)."""
        with self._lock:
            if self._closed:
                raise ProcessError("the zygote is closed")
            if self.process is None:
                self.process = self._start()

    def close(self) -> None:
        """Stop the zygote: it stops what it still runs (SIGTERM, then SIGKILL), then exits."""
        with self._lock:
            self._closed = True
            process, self.process = self.process, None
        if process is None:
            return
        stdin = process.popen.stdin
        if stdin is not None:
            with contextlib.suppress(OSError):  # a zygote that died first: its pipe is broken
                stdin.close()  # end of input: the zygote stops its children and exits
        process.wait_exit(STOP_TIMEOUT_S + STOP_TIMEOUT_S)
        process.stop()

    def _program(self, script: str) -> str | None:
        name = Path(script).name
        return name if name in PROGRAMS and Path(script) == self.scripts / name else None

    def _ask(self, request: dict[str, Any], *, start: bool = True) -> dict[str, Any]:
        with self._lock:
            if self._closed:
                raise ProcessError("the zygote is closed")
            process = self.process
            if process is None:
                if not start:
                    raise ProcessError("the zygote is not running")
                process = self.process = self._start()
            process.send(json.dumps(request))
            answer = json.loads(process.read_line())
        if not isinstance(answer, dict):
            raise process.error("answered something other than a JSON object")
        return answer

    def _start(self) -> Process:
        from nitro_sim.procs import start  # noqa: PLC0415 - procs routes spawns here; imported when used

        argv = [sys.executable, "-P", "-m", "nitro_sim._zygote_main", "--scripts", str(self.scripts)]
        process = start(argv, name=ZYGOTE_NAME, log_dir=self.log_dir, env=self.env, talk=True)
        try:
            ready = json.loads(process.read_line())
            if not isinstance(ready, dict) or ready.get("ready") != READY_LINE:
                raise process.error(f"did not say it was ready (it said {ready!r})")
        except (ProcessError, ValueError) as error:
            failure = (
                error if isinstance(error, ProcessError) else process.error("wrote a line that is not JSON")
            )
            process.stop()
            raise failure from None
        return process


def _interpreter_settings(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(_INTERPRETER_PREFIX)}
