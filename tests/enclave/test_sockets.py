"""Kernel socket timeouts (one system call per I/O) and the fork generation, as the SDK's shells use them."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from enclave._sockets import fork_generation, use_kernel_timeouts
from enclave.nsm import NSMClient, NSMDeviceError, SimulatedDeviceTransport


def test_a_silent_peer_times_out_as_blocking_io_error() -> None:
    left, right = socket.socketpair()
    with left, right:
        use_kernel_timeouts(left, 0.05)
        assert left.gettimeout() is None  # blocking: no poll() before each call
        with pytest.raises(BlockingIOError):
            left.recv(1)
        right.sendall(b"x")
        assert left.recv(1) == b"x"  # a timeout does not break the socket


@pytest.mark.parametrize("seconds", [1e-9, 0.5, 0.9999999, 1.0, 3600.0])
def test_timeout_values_are_never_zero(seconds: float) -> None:
    # A zero timeval would mean "wait forever".
    left, right = socket.socketpair()
    with left, right:
        use_kernel_timeouts(left, seconds)
        raw = left.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16)
        assert raw != bytes(len(raw))


@pytest.mark.parametrize("seconds", [0.0, -1.0, float("nan")])
def test_non_positive_timeouts_are_refused(seconds: float) -> None:
    with (
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock,
        pytest.raises(ValueError, match="positive number of seconds"),
    ):
        use_kernel_timeouts(sock, seconds)


def test_fork_generation_changes_in_the_child_only() -> None:
    before = fork_generation()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe and exits at once
        os.write(write, b"1" if fork_generation() != before else b"0")
        os._exit(0)
    os.close(write)
    try:
        assert os.read(read, 1) == b"1"
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    assert fork_generation() == before


def test_a_silent_simulated_nsm_is_a_timeout(tmp_path: Path) -> None:
    path = tmp_path / "silent.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    done = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            done.wait(10)  # reads nothing, answers nothing

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with (
            NSMClient(SimulatedDeviceTransport(path, timeout=0.2)) as nsm,
            pytest.raises(NSMDeviceError, match=r"timed out$"),
        ):
            nsm.get_random()
    finally:
        done.set()
        thread.join(timeout=10)
        listener.close()
