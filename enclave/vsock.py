"""vsock transport for the enclave: real ``AF_VSOCK``, or the Unix socket that stands for it in simulation.

An address is ``(cid, port)``. The enclave reaches its parent instance at CID 3 (``PARENT_CID``), where
vsock-proxy listens (port 8000 by default, as kmstool-enclave-cli's ``DEFAULT_PROXY_PORT``). An enclave app
that serves the parent (``enclave.provider``) listens with :func:`listen` on ``(VMADDR_CID_ANY, port)``.

Simulation rule (DESIGN.md, "Simulation conventions"): a process is a simulated enclave's app when any of
``NITRO_SIM_HOME``, ``NITRO_SIM_CID`` or ``NITRO_SIM_NSM`` is set; then ``(cid, port)`` is the Unix socket
:func:`attestation.sim.vsock_socket_path` names. Otherwise the socket is a real ``AF_VSOCK`` one. A
simulated enclave listens at its own CID, ``NITRO_SIM_CID`` (set by ``nitro-cli run-enclave``).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path

from attestation.errors import SimulationError
from attestation.sim import (
    ENV_CID,
    MAX_VSOCK_U32,
    PARENT_CID,
    is_simulated,
    remove_stale_socket,
    sim_home,
    vsock_socket_path,
)
from enclave.errors import ConnectTimeoutError, EndpointConnectionError

__all__ = [
    "DEFAULT_PROXY_PORT",
    "LISTEN_BACKLOG",
    "MAX_PORT",
    "PARENT_CID",
    "connect",
    "endpoint_name",
    "is_simulated",
    "listen",
    "listen_address",
    "simulated_cid",
    "vsock_socket",
]

#: kmstool-enclave-cli's default vsock-proxy port (``DEFAULT_PROXY_PORT "8000"``).
DEFAULT_PROXY_PORT = 8000
#: vsock CIDs and ports are u32 (struct sockaddr_vm).
MAX_PORT = MAX_VSOCK_U32
#: Pending connections a listening socket queues.
LISTEN_BACKLOG = 64
#: Longest ``NITRO_SIM_CID`` read (a u32 has at most 10 digits).
MAX_CID_DIGITS = 10


def endpoint_name(cid: int, port: int) -> str:
    """How an endpoint is named in every message: ``vsock://CID:PORT``."""
    return f"vsock://{cid}:{port}"


def _check(cid: int, port: int) -> None:
    for name, value in (("cid", cid), ("port", port)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_VSOCK_U32:
            raise ValueError(f"vsock {name} must be an integer in 0..{MAX_VSOCK_U32}, got {value!r}")


def vsock_socket(*, simulated: bool) -> socket.socket:
    """A new, unconnected stream socket of the right family (``AF_UNIX`` in simulation, else ``AF_VSOCK``)."""
    if simulated:
        return socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    return socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)


def connect(cid: int, port: int, *, timeout: float, simulated: bool | None = None) -> socket.socket:
    """Connect a stream socket to vsock ``(cid, port)``; the socket keeps ``timeout`` for its reads.

    Raises :class:`EndpointConnectionError` (nobody listens) or :class:`ConnectTimeoutError`.
    """
    _check(cid, port)
    sim = is_simulated() if simulated is None else simulated
    try:
        address: str | tuple[int, int] = str(vsock_socket_path(cid, port)) if sim else (cid, port)
    except SimulationError as exc:
        raise EndpointConnectionError(endpoint_name(cid, port), str(exc)) from None
    sock = vsock_socket(simulated=sim)
    try:
        sock.settimeout(timeout)
        sock.connect(address)
    except TimeoutError:
        sock.close()
        raise ConnectTimeoutError(endpoint_name(cid, port)) from None
    except OSError as exc:
        sock.close()
        raise EndpointConnectionError(endpoint_name(cid, port), exc.strerror or str(exc)) from None
    return sock


def simulated_cid(environ: Mapping[str, str] | None = None) -> int:
    """This simulated enclave's CID, from ``NITRO_SIM_CID``; SimulationError (one line) if unset or bad."""
    env = os.environ if environ is None else environ
    text = env.get(ENV_CID, "")
    if not text:
        raise SimulationError(f"{ENV_CID} is not set: a simulated enclave listens at its own CID")
    if not text.isascii() or not text.isdigit() or len(text) > MAX_CID_DIGITS or int(text) > MAX_VSOCK_U32:
        raise SimulationError(f"{ENV_CID} must be a CID in 0..{MAX_VSOCK_U32}, got {text[:20]!r}")
    return int(text)


def listen_address(
    port: int, *, simulated: bool | None = None, environ: Mapping[str, str] | None = None
) -> Path | tuple[int, int]:
    """Where an enclave app listens on vsock ``port``: the simulated Unix socket of ``(NITRO_SIM_CID, port)``,
    or, in a real enclave, ``(VMADDR_CID_ANY, port)`` (any of the enclave's CIDs, as AWS's samples bind)."""
    _check(0, port)
    sim = is_simulated(environ) if simulated is None else simulated
    if sim:
        return vsock_socket_path(simulated_cid(environ), port, sim_home(environ))
    return (socket.VMADDR_CID_ANY, port)


def listen(
    port: int,
    *,
    backlog: int = LISTEN_BACKLOG,
    simulated: bool | None = None,
    environ: Mapping[str, str] | None = None,
) -> socket.socket:
    """A stream socket listening on vsock ``port`` of this enclave (see :func:`listen_address`).

    In simulation the socket's directory is created (mode 0700) and a stale socket left by a dead app is
    removed; one another live process listens on is refused. Raises SimulationError (one line) or OSError.
    """
    sim = is_simulated(environ) if simulated is None else simulated
    address = listen_address(port, simulated=sim, environ=environ)
    if isinstance(address, Path):
        address.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        remove_stale_socket(address, holder="another enclave app")
    sock = vsock_socket(simulated=sim)
    try:
        sock.bind(str(address) if isinstance(address, Path) else address)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock
