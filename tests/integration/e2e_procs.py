"""Starting and stopping our programs as processes, for the end-to-end tests (one copy for every module).

Each process's stderr (and stdout, unless the test talks to it) goes to a log file in the simulation home,
never to an undrained pipe that could fill and block it. Every helper bounds its waits by
``STARTUP_SECONDS``, a generous bound for a loaded machine that no test asserts as a time.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

#: The console scripts of this environment (kms-sim, nsm-sim, vsock-proxy, kmstool-enclave-cli).
BIN = Path(sys.executable).parent
#: Generous bound for a process to come up or go down (never asserted as a time).
STARTUP_SECONDS = 30.0
#: The vsock-proxy's local port, as the real service's default.
PROXY_PORT = 8000


def env(home: Path, **extra: str) -> dict[str, str]:
    """This environment minus any AWS_/NITRO_SIM_ setting of the caller's, pointed at ``home``."""
    out = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "NITRO_SIM_"))}
    out.update({"NITRO_SIM_HOME": str(home), "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-such-file")})
    out.update(extra)
    return out


def spawn(
    args: list[str], environ: dict[str, str], log: Path, *, talk: bool = False
) -> subprocess.Popen[str]:
    """Start ``args`` logging to ``log``; with ``talk``, stdin and stdout are pipes for the test."""
    with log.open("a") as sink:
        return subprocess.Popen(
            args,
            env=environ,
            stdin=subprocess.PIPE if talk else subprocess.DEVNULL,
            stdout=subprocess.PIPE if talk else sink,
            stderr=sink,
            text=True,
        )


def stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM, then SIGKILL after ``STARTUP_SECONDS``; close the test's ends of the pipes."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STARTUP_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def wait_path(proc: subprocess.Popen[str], path: Path) -> None:
    """Wait until ``proc`` has created ``path`` (its listening socket); fail if it exits first."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args[0]} exited early (see the .log files in {path.parent})")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear")
        time.sleep(0.02)


def first_line(proc: subprocess.Popen[str]) -> str:
    """The first line ``proc`` prints (kms-sim prints its URL once it listens)."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], STARTUP_SECONDS)
    if not ready:
        raise AssertionError(f"no first line from {proc.args[0]}")
    line = proc.stdout.readline().strip()
    if not line:
        raise AssertionError(f"{proc.args[0]} exited before its first line (see the .log files)")
    return line


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(home: Path, name: str) -> str:
    """The end of ``home/<name>.log``, for failure messages."""
    path = home / f"{name}.log"
    return path.read_text()[-2000:] if path.exists() else ""
