"""Kernel socket timeouts (one system call per I/O) and the fork generation, as the SDK's shells use them."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from enclave._sockets import PlainSocketIO, fork_generation
from enclave.nsm import NSMClient, NSMDeviceError, SimulatedDeviceTransport


def test_a_silent_peer_times_out() -> None:
    left, right = socket.socketpair()
    with left, right:
        io = PlainSocketIO(left, 0.05)
        with pytest.raises(TimeoutError):
            io.recv_into(bytearray(8))
        right.sendall(b"x")
        buffer = bytearray(8)
        assert io.recv_into(buffer) == 1  # a timeout does not break the socket
        assert buffer[:1] == b"x"
        right.close()
        assert io.recv_into(buffer) == 0  # end of stream


def test_a_full_socket_buffer_waits_for_room_then_sends_everything() -> None:
    left, right = socket.socketpair()
    with left, right:
        left.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        io = PlainSocketIO(left, 5)
        data = bytes(range(256)) * 4096  # 1 MiB: far more than the socket buffers hold
        received = bytearray()

        def drain() -> None:
            while len(received) < len(data):
                chunk = right.recv(65536)
                if not chunk:
                    return
                received.extend(chunk)

        thread = threading.Thread(target=drain)
        thread.start()
        try:
            io.sendall(data)
        finally:
            thread.join(timeout=10)
        assert bytes(received) == data


def test_one_send_takes_what_fits_and_a_closed_peer_takes_nothing() -> None:
    left, right = socket.socketpair()
    with left, right:
        left.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        io = PlainSocketIO(left, 5)
        assert io.send(b"abc") == 3
        assert 0 < io.send(bytes(1024 * 1024)) < 1024 * 1024  # never waits: a part, then the rest later
        while io.send(b"x"):
            pass  # fill the buffer
        assert io.send(b"more") == 0  # full: nothing taken, nothing raised
        right.shutdown(socket.SHUT_RD)  # the peer stops receiving: a send is refused with EPIPE, not SIGPIPE
        with pytest.raises(BrokenPipeError):
            io.send(b"request")


def test_a_send_nobody_takes_times_out() -> None:
    left, right = socket.socketpair()
    with left, right:
        left.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        io = PlainSocketIO(left, 0.05)
        with pytest.raises(TimeoutError):
            io.sendall(bytes(1024 * 1024))


@pytest.mark.parametrize("seconds", [0.0, -1.0, float("nan"), float("inf")])
def test_non_positive_or_infinite_timeouts_are_refused(seconds: float) -> None:
    with (
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock,
        pytest.raises(ValueError, match="positive number of seconds"),
    ):
        PlainSocketIO(sock, seconds)


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
