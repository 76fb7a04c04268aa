"""The enclave's vsock transport: simulated Unix sockets, and real AF_VSOCK sockets (constructed only)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from attestation.sim import PARENT_CID, vsock_socket_path
from enclave import vsock
from enclave.errors import EndpointConnectionError


def test_simulation_rule() -> None:
    assert vsock.is_simulated({"NITRO_SIM_HOME": "/x"})
    assert vsock.is_simulated({"NITRO_SIM_NSM": "/x/nsm.sock"})
    assert vsock.is_simulated({"NITRO_SIM_CID": "16"})
    assert not vsock.is_simulated({})
    assert not vsock.is_simulated({"NITRO_SIM_HOME": ""})


def test_real_socket_is_af_vsock_and_never_connected() -> None:
    with vsock.vsock_socket(simulated=False) as sock:
        assert sock.family == socket.AF_VSOCK
        assert sock.type == socket.SOCK_STREAM


def test_connects_to_simulated_parent(sim_home: Path) -> None:
    path = vsock_socket_path(PARENT_CID, 8000, sim_home)
    path.parent.mkdir(parents=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen(1)
        with vsock.connect(PARENT_CID, 8000, timeout=5, simulated=True) as client:
            peer, _ = server.accept()
            with peer:
                client.sendall(b"ping")
                assert peer.recv(4) == b"ping"
                assert client.gettimeout() == 5


def test_nobody_listening_is_a_connection_error(sim_home: Path) -> None:
    with pytest.raises(EndpointConnectionError, match="vsock://3:8123"):
        vsock.connect(PARENT_CID, 8123, timeout=1, simulated=True)


@pytest.mark.parametrize(("cid", "port"), [(-1, 1), (3, 2**32), (True, 1), (3, "80")])
def test_bad_addresses(cid: object, port: object) -> None:
    with pytest.raises(ValueError, match="vsock"):
        vsock.connect(cid, port, timeout=1, simulated=True)  # type: ignore[arg-type]
