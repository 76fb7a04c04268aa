"""vsock.listen: the simulated enclave's Unix socket at its own CID; the real address constructed only."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from attestation.errors import SimulationError
from attestation.sim import vsock_socket_path
from enclave import vsock


def test_real_address_is_any_cid_and_never_bound() -> None:
    assert vsock.listen_address(5005, simulated=False, environ={}) == (socket.VMADDR_CID_ANY, 5005)
    assert socket.VMADDR_CID_ANY == 0xFFFF_FFFF


def test_simulated_address_is_the_enclaves_own_cid(sim_home: Path) -> None:
    address = vsock.listen_address(5005, environ={"NITRO_SIM_HOME": str(sim_home), "NITRO_SIM_CID": "16"})
    assert address == vsock_socket_path(16, 5005, sim_home)


def test_listen_creates_the_directory_and_accepts(sim_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NITRO_SIM_CID", "21")
    path = vsock_socket_path(21, 5005, sim_home)
    with vsock.listen(5005) as listener:
        assert path.is_socket()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(path))
            peer, _ = listener.accept()
            peer.close()


def test_stale_socket_is_replaced_live_one_refused(sim_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NITRO_SIM_CID", "22")
    path = vsock_socket_path(22, 5005, sim_home)
    stale = vsock.listen(5005)
    stale.close()  # the file stays; nobody listens
    with vsock.listen(5005):
        with pytest.raises(SimulationError, match="is in use by another enclave app"):
            vsock.listen(5005)
        assert path.is_socket()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "NITRO_SIM_CID is not set"),
        ("", "NITRO_SIM_CID is not set"),
        ("x", "NITRO_SIM_CID must be a CID"),
        ("-1", "NITRO_SIM_CID must be a CID"),
        ("²", "NITRO_SIM_CID must be a CID"),
        ("4294967296", "NITRO_SIM_CID must be a CID"),
        ("9" * 5000, "NITRO_SIM_CID must be a CID"),
    ],
)
def test_bad_simulated_cid(sim_home: Path, value: str | None, message: str) -> None:
    environ = {"NITRO_SIM_HOME": str(sim_home)}
    if value is not None:
        environ["NITRO_SIM_CID"] = value
    with pytest.raises(SimulationError, match=message):
        vsock.listen_address(5005, environ=environ)


@pytest.mark.parametrize("port", [-1, 2**32, True])
def test_bad_ports(port: int) -> None:
    with pytest.raises(ValueError, match="vsock port"):
        vsock.listen_address(port, simulated=False, environ={})
