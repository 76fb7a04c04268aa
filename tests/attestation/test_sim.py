from __future__ import annotations

import socket
from pathlib import Path

import pytest

from attestation.errors import SimulationError
from attestation.sim import PARENT_CID, remove_stale_socket, sim_home, vsock_socket_path


def test_home_from_env_and_default() -> None:
    assert sim_home({"NITRO_SIM_HOME": "/x/y"}) == Path("/x/y")
    assert sim_home({}) == Path("~/.nitro-sim").expanduser()


def test_vsock_path_rule(tmp_path: Path) -> None:
    assert vsock_socket_path(PARENT_CID, 8000, tmp_path) == tmp_path / "vsock" / "3" / "8000.sock"


def test_vsock_path_too_long_is_refused_not_truncated(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 120)
    with pytest.raises(SimulationError, match="107-byte limit"):
        vsock_socket_path(16, 5000, deep)


@pytest.mark.parametrize(("cid", "port"), [(-1, 1), (1, 2**32), (True, 1), ("3", 1)])
def test_vsock_address_range(cid: object, port: object, tmp_path: Path) -> None:
    with pytest.raises(SimulationError):
        vsock_socket_path(cid, port, tmp_path)  # type: ignore[arg-type]


def test_one_simulation_rule_for_every_tool() -> None:
    from attestation.sim import is_simulated
    from enclave import vsock

    assert vsock.is_simulated is is_simulated  # the SDK and vsock-proxy call the same rule
    for name in ("NITRO_SIM_HOME", "NITRO_SIM_CID", "NITRO_SIM_NSM"):
        assert is_simulated({name: "x"})
    assert not is_simulated({"NITRO_SIM_HOME": ""})


def test_remove_stale_socket_clears_only_a_dead_socket(tmp_path: Path) -> None:
    missing = tmp_path / "none.sock"
    remove_stale_socket(missing, holder="another server")  # nothing there: nothing to do
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(stale))  # bound, never listening: connecting is refused
    remove_stale_socket(stale, holder="another server")
    assert not stale.exists()


def test_remove_stale_socket_keeps_files_and_live_sockets(tmp_path: Path) -> None:
    regular = tmp_path / "precious.txt"
    regular.write_text("keep me")
    with pytest.raises(SimulationError, match=r"precious\.txt exists and is not a socket$"):
        remove_stale_socket(regular, holder="another server")
    assert regular.read_text() == "keep me"
    live = tmp_path / "live.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(live))
        server.listen(1)
        with pytest.raises(SimulationError, match=r"live\.sock is in use by another NSM device$"):
            remove_stale_socket(live, holder="another NSM device")
    assert live.exists()
