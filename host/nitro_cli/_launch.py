"""How a simulated enclave runs its application: argv, working directory and environment.

The real bootstrap (aws-nitro-enclaves-sdk-bootstrap ``init/init.c``) reads ``/cmd`` and ``/env``, chroots
into ``/rootfs`` and ``execvpe``s the argv with exactly the image's environment. A simulated enclave has no
kernel, no chroot and no base image, so these rules stand in:

- **Working directory**: ``/`` of the image, i.e. the unpacked ``rootfs/``, as the real init does
  (``chdir("/")`` after the chroot): WORKDIR is not read, so an image that runs here runs in a real enclave.
- **Program** (``cmd[0]``), in this order:
  1. ``python``, ``python3`` or ``pythonX.Y`` (by file name, at any path, e.g. ``/usr/local/bin/python3``)
     is the interpreter running nitro-cli (``sys.executable``): the stand-in for the base image's Python,
     so the image's code runs with the same installed packages (the enclave SDK among them).
  2. A name with a ``/`` is a path inside the image (absolute from ``rootfs/``, relative from the working
     directory). Symbolic links inside the image are followed as the image sees them (an absolute link
     target is inside ``rootfs/`` too); a path that leaves the image is refused. A script whose ``#!``
     line names a Python (directly or through ``/usr/bin/env``) is run by that same interpreter.
  3. A bare name is looked up in the image's ``PATH`` directories inside ``rootfs/``, then on the host's
     ``PATH``.
- **Arguments**: one that is exactly an absolute path naming something that exists in the image
  (``python3 /app/main.py``) is passed as that thing's path under ``rootfs/``; all others as they are.
- **Environment**: the image's ``env`` entries, then ``NITRO_SIM_HOME``, ``NITRO_SIM_CID`` and
  ``NITRO_SIM_NSM``. ``PATH`` is the image's ``PATH`` directories that exist inside ``rootfs/``, then the
  directory of the interpreter above, then the caller's ``PATH``. Nothing else of the caller's environment
  is passed. Other values (``PYTHONPATH=/app``...) are passed as they are: they name host paths.

A plan that cannot work (no such program, a working directory that is not a directory inside the image) is
reported by :class:`LaunchError`, which ``run-enclave`` turns into E36 (the enclave fails to boot).
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import stat
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attestation.sim import ENV_CID, ENV_HOME, ENV_NSM

#: ``python``, ``python3``, ``python3.12``: names that mean "the image's Python".
PYTHON_NAME = re.compile(r"python(\d+(\.\d+)?)?")
#: The PATH a Docker image has when its Dockerfile sets none.
DEFAULT_IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Symbolic links followed while resolving one path inside the image (the kernel's MAXSYMLINKS).
MAX_SYMLINK_HOPS = 40
#: Bytes of a script read to find its ``#!`` line.
MAX_SHEBANG_BYTES = 256


class LaunchError(Exception):
    """The application cannot be started as the image describes it (one line)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Launch:
    """The process a supervisor starts: argv (program resolved), working directory, environment."""

    argv: list[str]
    cwd: str
    env: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {"argv": self.argv, "cwd": self.cwd, "env": self.env}

    @classmethod
    def from_json(cls, value: object) -> Launch:
        if not isinstance(value, dict):
            raise LaunchError("the launch plan is unreadable")
        argv, cwd, env = value.get("argv"), value.get("cwd"), value.get("env")
        if not (
            isinstance(argv, list)
            and argv
            and all(isinstance(a, str) for a in argv)
            and isinstance(cwd, str)
            and isinstance(env, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
        ):
            raise LaunchError("the launch plan is unreadable")
        return cls(argv=argv, cwd=cwd, env=env)


def resolve_in_image(rootfs: Path, image_path: str) -> Path | None:
    """The host path of ``image_path`` (absolute, as the image sees it), links followed inside the image.

    None when a component is missing; LaunchError when the links loop. A ``..`` at the image's ``/``
    stays there, as in a chroot, so no path resolves outside ``rootfs``.
    """
    pending = [p for p in image_path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    hops = 0
    while pending:
        part = pending.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        host = rootfs.joinpath(*resolved, part)
        try:
            info = os.lstat(host)
        except OSError:
            return None
        if stat.S_ISLNK(info.st_mode):
            hops += 1
            if hops > MAX_SYMLINK_HOPS:
                raise LaunchError(f"too many levels of symbolic links in {image_path[:200]!r}")
            target = os.readlink(host)
            if target.startswith("/"):
                resolved = []
            pending[:0] = [p for p in target.split("/") if p not in ("", ".")]
            continue
        resolved.append(part)
    return rootfs.joinpath(*resolved)


def _image_path_of(rootfs: Path, host: Path) -> str:
    return "/" + host.relative_to(rootfs).as_posix() if host != rootfs else "/"


def _is_executable_file(path: Path) -> bool:
    try:
        info = os.stat(path)
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and bool(info.st_mode & 0o111)


def _shebang_is_python(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            head = handle.read(MAX_SHEBANG_BYTES)
    except OSError:
        return False
    if not head.startswith(b"#!"):
        return False
    words = head[2:].split(b"\n", 1)[0].decode("utf-8", "replace").split()
    if words and posixpath.basename(words[0]) == "env":
        words = [w for w in words[1:] if not w.startswith("-")]
    return bool(words) and PYTHON_NAME.fullmatch(posixpath.basename(words[0])) is not None


def _image_path_dirs(rootfs: Path, image_env: Mapping[str, str]) -> list[Path]:
    dirs: list[Path] = []
    for entry in image_env.get("PATH", DEFAULT_IMAGE_PATH).split(":"):
        if not entry.startswith("/"):
            continue
        host = resolve_in_image(rootfs, entry)
        if host is not None and host.is_dir() and host not in dirs:
            dirs.append(host)
    return dirs


def _program(rootfs: Path, cwd_image: str, name: str, image_dirs: list[Path], host_path: str) -> list[str]:
    """The argv prefix that runs ``name`` (the interpreter for Python, else one resolved path)."""
    python = [sys.executable]
    if PYTHON_NAME.fullmatch(posixpath.basename(name)):
        return python
    if "/" in name:
        image_path = name if name.startswith("/") else posixpath.join(cwd_image, name)
        host = resolve_in_image(rootfs, image_path)
        if host is None or not host.is_file():
            raise LaunchError(f"execvpe: {name}: No such file or directory (in the image)")
    else:
        candidates = (resolve_in_image(rootfs, _image_path_of(rootfs, d) + "/" + name) for d in image_dirs)
        host = next((c for c in candidates if c is not None and _is_executable_file(c)), None)
        if host is None:
            found = shutil.which(name, path=host_path)
            if found is None:
                raise LaunchError(f"execvpe: {name}: No such file or directory (not in the image or on PATH)")
            return [found]
    if PYTHON_NAME.fullmatch(host.name):
        return python
    if _shebang_is_python(host):
        return [*python, str(host)]
    if not _is_executable_file(host):
        raise LaunchError(f"execvpe: {name}: Permission denied (not executable)")
    return [str(host)]


def plan(
    *,
    rootfs: Path,
    argv: Sequence[str],
    image_env: Sequence[tuple[str, str]],
    home: Path,
    cid: int,
    nsm_socket: Path,
    host_path: str,
) -> Launch:
    """The process to start for an image unpacked at ``rootfs`` (see the module rules)."""
    env = dict(image_env)
    cwd = resolve_in_image(rootfs, "/")
    if cwd is None or not cwd.is_dir():
        raise LaunchError("chdir: /: the image has no root directory")
    image_dirs = _image_path_dirs(rootfs, env)
    prefix = _program(rootfs, _image_path_of(rootfs, cwd), argv[0], image_dirs, host_path)
    path_dirs = [*(str(d) for d in image_dirs), os.path.dirname(sys.executable)]
    env["PATH"] = ":".join([*path_dirs, host_path] if host_path else path_dirs)
    env[ENV_HOME] = str(home)
    env[ENV_CID] = str(cid)
    env[ENV_NSM] = str(nsm_socket)
    args = [_argument(rootfs, arg) for arg in argv[1:]]
    return Launch(argv=[*prefix, *args], cwd=str(cwd), env=env)


def _argument(rootfs: Path, arg: str) -> str:
    """An argument that is an absolute path of something in the image becomes its path under rootfs/."""
    if not arg.startswith("/"):
        return arg
    try:
        host = resolve_in_image(rootfs, arg)
    except LaunchError:
        return arg
    return str(host) if host is not None and host.exists() else arg
