"""Simulation conventions, each stated once (DESIGN.md, "Simulation conventions").

- State home: ``$NITRO_SIM_HOME``, default ``~/.nitro-sim``.
- vsock in simulation: address ``(cid, port)`` is the Unix socket ``$NITRO_SIM_HOME/vsock/<cid>/<port>.sock``.
  The enclave, the proxy and nitro-cli all call :func:`vsock_socket_path`; nobody builds the path by hand.
- The parent instance is CID 3 (``VMADDR_CID_PARENT``), as on Nitro.
- Inside a simulated enclave, ``NITRO_SIM_CID`` holds its CID and ``NITRO_SIM_NSM`` its NSM socket.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Mapping
from pathlib import Path

from attestation.errors import SimulationError

ENV_HOME = "NITRO_SIM_HOME"
ENV_CID = "NITRO_SIM_CID"
ENV_NSM = "NITRO_SIM_NSM"
DEFAULT_HOME = "~/.nitro-sim"

#: CID of the parent instance (linux/vm_sockets.h VMADDR_CID_HOST, Nitro's VMADDR_CID_PARENT).
PARENT_CID = 3
#: vsock CIDs and ports are 32-bit unsigned (struct sockaddr_vm).
MAX_VSOCK_U32 = 0xFFFF_FFFF
#: ``sun_path`` is 108 bytes on Linux including the terminating NUL, so 107 usable bytes.
MAX_UNIX_PATH_BYTES = 107


def sim_home(environ: Mapping[str, str] | None = None) -> Path:
    """The simulation's state directory: ``$NITRO_SIM_HOME`` or ``~/.nitro-sim`` (not created here)."""
    env = os.environ if environ is None else environ
    raw = env.get(ENV_HOME) or DEFAULT_HOME
    return Path(raw).expanduser()


def is_simulated(environ: Mapping[str, str] | None = None) -> bool:
    """True when any of ``NITRO_SIM_HOME``, ``NITRO_SIM_CID``, ``NITRO_SIM_NSM`` is set (non-empty).

    The one rule by which every tool, on either side of the vsock, decides between the simulated transport
    (Unix sockets under the home) and the real one (``AF_VSOCK``, ``/dev/nsm``).
    """
    env = os.environ if environ is None else environ
    return any(env.get(name) for name in (ENV_HOME, ENV_CID, ENV_NSM))


def check_unix_path(path: Path) -> Path:
    """Return ``path`` if it fits in ``sun_path``; raise SimulationError (never truncate) otherwise."""
    size = len(os.fsencode(path))
    if size > MAX_UNIX_PATH_BYTES:
        raise SimulationError(
            f"Unix socket path is {size} bytes, over the {MAX_UNIX_PATH_BYTES}-byte limit: {path} "
            f"(set {ENV_HOME} to a shorter directory)"
        )
    return path


def remove_stale_socket(path: Path, *, holder: str) -> None:
    """Make room to bind a Unix socket at ``path``: remove only a socket nobody listens on any more.

    Anything but a socket is refused, and so is a live socket, found by connecting to it (a Unix socket,
    never a network address): unlinking it would silently orphan the ``holder`` behind it. Raises
    SimulationError with one line: "PATH exists and is not a socket", "PATH is in use by HOLDER".
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise SimulationError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(os.fspath(path))
    except ConnectionRefusedError:  # stale: its server is gone
        path.unlink(missing_ok=True)
        return
    except OSError as exc:  # e.g. no permission: whether a server holds it cannot be told, so keep it
        raise SimulationError(f"{path} cannot be checked for a listening server: {exc.strerror}") from None
    finally:
        probe.close()
    raise SimulationError(f"{path} is in use by {holder}")


def vsock_socket_path(cid: int, port: int, home: Path | None = None) -> Path:
    """The Unix socket that stands for vsock address ``(cid, port)`` in simulation."""
    for name, value in (("cid", cid), ("port", port)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_VSOCK_U32:
            raise SimulationError(f"vsock {name} must be an integer in 0..{MAX_VSOCK_U32}, got {value!r}")
    base = sim_home() if home is None else home
    return check_unix_path(base / "vsock" / str(cid) / f"{port}.sock")
