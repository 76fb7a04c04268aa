"""vsock transport for the enclave: real ``AF_VSOCK``, or the Unix socket that stands for it in simulation.

An address is ``(cid, port)``. The enclave reaches its parent instance at CID 3 (``PARENT_CID``), where
vsock-proxy listens (port 8000 by default, as kmstool-enclave-cli's ``DEFAULT_PROXY_PORT``).

Simulation rule (DESIGN.md, "Simulation conventions"): a process is a simulated enclave's app when any of
``NITRO_SIM_HOME``, ``NITRO_SIM_CID`` or ``NITRO_SIM_NSM`` is set; then ``(cid, port)`` is the Unix socket
:func:`attestation.sim.vsock_socket_path` names. Otherwise the socket is a real ``AF_VSOCK`` one.
"""

from __future__ import annotations

import socket

from attestation.errors import SimulationError
from attestation.sim import MAX_VSOCK_U32, PARENT_CID, is_simulated, vsock_socket_path
from enclave.errors import ConnectTimeoutError, EndpointConnectionError

__all__ = [
    "DEFAULT_PROXY_PORT",
    "MAX_PORT",
    "PARENT_CID",
    "connect",
    "endpoint_name",
    "is_simulated",
    "vsock_socket",
]

#: kmstool-enclave-cli's default vsock-proxy port (``DEFAULT_PROXY_PORT "8000"``).
DEFAULT_PROXY_PORT = 8000
#: vsock CIDs and ports are u32 (struct sockaddr_vm).
MAX_PORT = MAX_VSOCK_U32


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
