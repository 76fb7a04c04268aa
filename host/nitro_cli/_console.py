"""The enclave console: ``nitro-cli console`` and ``run-enclave --attach-console``.

Facts (aws-nitro-enclaves-cli ``src/main.rs``, ``src/lib.rs`` ``console_enclaves``, ``src/utils.rs``
``Console::read_to``): only a debug-mode enclave has a console (otherwise E44, "The enclave was not started
with the debug flag set, ..."); the command prints "Connecting to the console for enclave <cid>..." and
"Successfully connected to the console." on stdout, then copies the console to stdout until the enclave
ends or, with ``--disconnect-timeout S``, until S seconds have passed.

Simulation: the console is the app's stdout and stderr, which the supervisor writes to ``console.log``
(bounded and rotated, see :mod:`host.nitro_cli._supervisor`). Streaming starts at the beginning of the
current file and follows it across rotations; it ends once the supervisor has exited and the file is
drained, or at the timeout (a monotonic deadline).
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import BinaryIO

from host.nitro_cli import _procs, _records
from host.nitro_cli._records import Record
from host.nitro_cli.errors import NitroCliError

#: Read size when copying the console.
CHUNK = 64 * 1024
#: Wait between reads when the console has nothing new (the real tool's is 100 ms).
IDLE_SECONDS = 0.05


def check_debug(record: Record) -> None:
    """E44 unless the enclave runs in debug mode."""
    if not record.debug:
        raise NitroCliError(
            "E44",
            subaction="The enclave was not started with the debug flag set, include '--debug-mode' in the "
            "run-enclave command",
        ).add_subaction("Failed to connect to enclave console")


def stream(record: Record, home: Path, out: BinaryIO, *, timeout: float | None) -> None:
    """Print the connection lines, then copy the console to ``out`` (see the module rules)."""
    out.write(f"Connecting to the console for enclave {record.cid}...\n".encode())
    out.write(b"Successfully connected to the console.\n")
    out.flush()
    path = _records.enclave_dir(record.enclave_id, home) / _records.CONSOLE_FILE
    supervisor = _records.load_procs(record.enclave_id, home).supervisor
    deadline = None if timeout is None else time.monotonic() + timeout
    fd: int | None = None
    try:
        while True:
            ended = not _procs.alive(supervisor)
            if fd is None:
                with contextlib.suppress(OSError):
                    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            copied = _copy(fd, out) if fd is not None else False
            if copied:
                continue
            if fd is not None and _rotated(fd, path):
                os.close(fd)
                fd = None
                continue
            if ended or (deadline is not None and time.monotonic() >= deadline):
                return
            time.sleep(IDLE_SECONDS)
    finally:
        if fd is not None:
            os.close(fd)


def _copy(fd: int, out: BinaryIO) -> bool:
    chunk = os.read(fd, CHUNK)
    if chunk:
        out.write(chunk)
        out.flush()
    return bool(chunk)


def _rotated(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino != os.fstat(fd).st_ino
    except OSError:
        return False
