"""Unpacking an enclave's application ramdisk into its directory, safely.

The application ramdisk (the EIF's second ramdisk, as nitro-cli and linuxkit lay it out) holds
``rootfs/...`` (the image's files) and two files at the top: ``cmd`` (the argv, one element per line) and
``env`` (``KEY=VALUE`` per line), each line ending in ``\\n`` (``enclave_build/src/docker.rs``; the
bootstrap's ``init.c`` reads them as ``/cmd`` and ``/env``). Nothing else may be at the top.

Safety rules (the archive is untrusted input: anyone can hand ``run-enclave`` an EIF):
- Names are relative and free of ``.``/``..``/empty components (:func:`attestation.cpio.read_newc`).
- Every parent of an entry must be a directory this unpacking created; a symbolic link is created but
  never followed, so no entry can land outside the enclave's directory.
- Regular files are created with ``O_EXCL | O_NOFOLLOW``; a repeated name replaces the earlier file or
  link (as the kernel's initramfs unpacker does), a directory never turns into a file or back.
- Modes keep only the permission bits (no set-id, no sticky), plus the owner's read/write (and search
  for directories): the real enclave runs its app as root, which permissions never stop.
- Bounds: :data:`MAX_UNPACK_BYTES` of file data, :data:`MAX_UNPACK_ENTRIES` entries, and ``cmd``/``env`` up
  to :data:`MAX_CONFIG_BYTES` each. Any breach raises :class:`UnpackError` with one line.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from pathlib import Path

from attestation.cpio import CpioEntry, CpioError, read_newc

ROOTFS = "rootfs"
CMD = "cmd"
ENV = "env"
#: Total file data an application ramdisk may unpack to.
MAX_UNPACK_BYTES = 2 * 1024 * 1024 * 1024
#: Entries an application ramdisk may hold.
MAX_UNPACK_ENTRIES = 200_000
#: Largest ``cmd`` or ``env`` file (the kernel's ARG_MAX for argv plus environment is 2 MiB; ours is less).
MAX_CONFIG_BYTES = 256 * 1024
#: Most argv elements or environment entries.
MAX_CONFIG_LINES = 4096


class UnpackError(Exception):
    """The application ramdisk cannot be unpacked safely (one line)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AppImage:
    """What the application ramdisk says to run."""

    rootfs: Path
    argv: list[str]
    env: list[tuple[str, str]]


def _lines(name: str, data: bytes) -> list[str]:
    if len(data) > MAX_CONFIG_BYTES:
        raise UnpackError(f"`{name}` is {len(data)} bytes, over the {MAX_CONFIG_BYTES}-byte bound")
    if b"\x00" in data:
        raise UnpackError(f"`{name}` holds a NUL byte")
    text = data.decode("utf-8", "surrogateescape")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) > MAX_CONFIG_LINES:
        raise UnpackError(f"`{name}` has {len(lines)} lines, over the {MAX_CONFIG_LINES}-line bound")
    return lines


def parse_cmd(data: bytes) -> list[str]:
    """The argv in a ``cmd`` file; at least one element, the first not empty."""
    argv = _lines(CMD, data)
    if not argv or not argv[0]:
        raise UnpackError("`cmd` names no program to run")
    return argv


def parse_env(data: bytes) -> list[tuple[str, str]]:
    """The ``KEY=VALUE`` pairs of an ``env`` file, in order."""
    out: list[tuple[str, str]] = []
    for number, line in enumerate(_lines(ENV, data), start=1):
        key, sep, value = line.partition("=")
        if not sep or not key:
            raise UnpackError(f"`env` line {number} is not KEY=VALUE")
        out.append((key, value))
    return out


def _top_allowed(entry: CpioEntry) -> bool:
    top = entry.path.split("/", 1)[0]
    if top == ROOTFS:
        return entry.path != ROOTFS or entry.is_dir
    return entry.path in (CMD, ENV) and entry.is_file


def unpack(ramdisk: bytes, dest: Path) -> AppImage:
    """Unpack ``ramdisk`` into the empty directory ``dest``; return the rootfs and what to run."""
    try:
        entries = read_newc(ramdisk)
    except CpioError as exc:
        raise UnpackError(f"the application ramdisk is not a valid cpio archive: {exc}") from None
    if len(entries) > MAX_UNPACK_ENTRIES:
        raise UnpackError(f"the application ramdisk has {len(entries)} entries, over {MAX_UNPACK_ENTRIES}")
    created: dict[str, str] = {"": "d"}
    config: dict[str, bytes] = {}
    total = 0
    for entry in entries:
        if not _top_allowed(entry):
            raise UnpackError(f"unexpected entry {entry.path[:100]!r} in the application ramdisk")
        if entry.path in (CMD, ENV):
            config[entry.path] = entry.data
            continue
        total += len(entry.data)
        if total > MAX_UNPACK_BYTES:
            raise UnpackError(f"the application ramdisk unpacks to over {MAX_UNPACK_BYTES} bytes")
        _place(entry, dest, created)
    if CMD not in config:
        raise UnpackError("the application ramdisk has no `cmd` file")
    rootfs = dest / ROOTFS
    if created.get(ROOTFS) != "d":
        _place(CpioEntry(path=ROOTFS, mode=0o40755), dest, created)
    return AppImage(rootfs=rootfs, argv=parse_cmd(config[CMD]), env=parse_env(config.get(ENV, b"")))


def _ensure_parents(path: str, dest: Path, created: dict[str, str]) -> None:
    parent = posixpath.dirname(path)
    missing: list[str] = []
    while parent not in created:
        missing.append(parent)
        parent = posixpath.dirname(parent)
    if created[parent] != "d":
        raise UnpackError(f"{path[:100]!r} would be placed under {parent[:100]!r}, which is not a directory")
    for name in reversed(missing):
        os.mkdir(dest / name, 0o755)
        created[name] = "d"


def _place(entry: CpioEntry, dest: Path, created: dict[str, str]) -> None:
    path = entry.path
    _ensure_parents(path, dest, created)
    previous = created.get(path)
    if previous is not None and (previous == "d") != entry.is_dir:
        raise UnpackError(f"{path[:100]!r} is both a directory and a file")
    try:
        _write(entry, dest / path, previous)
    except (OSError, ValueError) as exc:
        raise UnpackError(f"cannot unpack {path[:100]!r}: {exc}") from None
    created[path] = "d" if entry.is_dir else "l" if entry.is_symlink else "f"


def _write(entry: CpioEntry, target: Path, previous: str | None) -> None:
    perms = entry.mode & 0o777
    if entry.is_dir:
        if previous is None:
            os.mkdir(target, 0o700)
        os.chmod(target, perms | 0o700)
        return
    if previous is not None:
        os.unlink(target)
    if entry.is_symlink:
        os.symlink(entry.data.decode("utf-8", "surrogateescape"), target)
        return
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(entry.data)
        os.fchmod(handle.fileno(), perms | 0o600)
