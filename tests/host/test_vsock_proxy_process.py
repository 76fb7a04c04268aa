"""vsock-proxy as a process: relay, real start-up errors, connection bound, idle timeout, SIGTERM."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from attestation.sim import PARENT_CID, vsock_socket_path

#: Generous bound for a process to come up or go down on a loaded CI machine (never asserted as a time).
STARTUP_SECONDS = 20.0


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.server.connections += 1  # type: ignore[attr-defined]
        while data := self.request.recv(65536):
            self.request.sendall(data)


class _EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    connections = 0


@pytest.fixture
def echo() -> Iterator[_EchoServer]:
    server = _EchoServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _allowlist(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "allow.yaml"
    path.write_text(f"allowlist:\n- {{address: 127.0.0.1, port: {port}}}\n")
    return path


def _start(sim_home: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "NITRO_SIM_HOME": str(sim_home)}
    return subprocess.Popen(
        [sys.executable, "-m", "host.vsock_proxy", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_listening(proc: subprocess.Popen[str], path: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"vsock-proxy exited early: {proc.communicate()}")
        if path.exists():
            return
        time.sleep(0.02)
    raise AssertionError("vsock-proxy did not start listening")


def _stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=STARTUP_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return proc.returncode, err


def _connect(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(STARTUP_SECONDS)
    sock.connect(str(path))
    return sock


def _roundtrip(sock: socket.socket, data: bytes) -> bytes:
    sender = threading.Thread(target=sock.sendall, args=(data,))
    sender.start()
    got = bytearray()
    while len(got) < len(data):
        chunk = sock.recv(1 << 20)
        assert chunk, "connection closed early"
        got += chunk
    sender.join()
    return bytes(got)


@pytest.fixture
def proxy_port() -> int:
    return 8000


def test_relays_both_ways_and_logs_counts(sim_home: Path, tmp_path: Path, echo: _EchoServer) -> None:
    port = echo.server_address[1]
    proc = _start(sim_home, "--config", str(_allowlist(tmp_path, port)), "8000", "127.0.0.1", str(port))
    path = vsock_socket_path(PARENT_CID, 8000, sim_home)
    try:
        _wait_listening(proc, path)
        data = os.urandom(3 * 1024 * 1024 + 17)
        with _connect(path) as sock:
            assert _roundtrip(sock, data) == data
            sock.shutdown(socket.SHUT_WR)
            assert sock.recv(10) == b""
    finally:
        code, err = _stop(proc)
    assert code == 0, err
    assert "Proxy is now in listening state" in err
    assert f"{len(data)} bytes to remote, {len(data)} bytes from remote" in err
    assert not path.exists()


def test_disallowed_destination_refuses_to_start(sim_home: Path, vectors: Path) -> None:
    shipped = vectors / "vsock-proxy" / "vsock-proxy.yaml"
    proc = _start(sim_home, "--config", str(shipped), "8000", "127.0.0.1", "9")
    try:
        _, err = proc.communicate(timeout=STARTUP_SECONDS)
    finally:
        code, _ = _stop(proc)
    assert code == 1
    assert (
        err.splitlines()[-1]
        == 'Error: "Error at checking the allowlist: The given address and port are not allowed"'
    )
    assert not vsock_socket_path(PARENT_CID, 8000, sim_home).exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-w", "0", "8000", "127.0.0.1", "1"], "Number of workers must not be 0"),
        (["-w", "x", "8000", "127.0.0.1", "1"], "Number of workers is not valid"),
        (["80x", "127.0.0.1", "1"], "Local port is not valid"),
        (["8000", "127.0.0.1", "70000"], "Remote port is not valid"),
        (["1" * 5000, "127.0.0.1", "1"], "Local port is not valid"),
        (["8000", "127.0.0.1", "9" * 5000], "Remote port is not valid"),
        (["-w", "7" * 5000, "8000", "127.0.0.1", "1"], "Number of workers is not valid"),
        (
            ["--config", "/nonexistent/allow.yaml", "8000", "127.0.0.1", "1"],
            "Error at checking the allowlist: Could not open the file",
        ),
    ],
    ids=[
        "zero-workers",
        "bad-workers",
        "bad-local-port",
        "bad-remote-port",
        "huge-local-port",  # over int()'s 4300 digits: was a ValueError traceback
        "huge-remote-port",
        "huge-workers",
        "no-config",
    ],
)
def test_startup_errors(
    sim_home: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from host.vsock_proxy import main

    assert main(args) == 1
    assert capsys.readouterr().err.splitlines()[-1] == f'Error: "{message}"'


def test_startup_error_text(sim_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from host.vsock_proxy import main

    assert main(["-w", "0", "8000", "127.0.0.1", "1"]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == 'Error: "Number of workers must not be 0"'


def test_ipv4_and_ipv6_conflict(sim_home: Path) -> None:
    from host.vsock_proxy import main

    with pytest.raises(SystemExit) as info:
        main(["-4", "-6", "8000", "127.0.0.1", "1"])
    assert info.value.code == 2


def test_connection_bound_and_sigterm_grace(sim_home: Path, tmp_path: Path, echo: _EchoServer) -> None:
    port = echo.server_address[1]
    proc = _start(
        sim_home, "-w", "1", "--config", str(_allowlist(tmp_path, port)), "8001", "127.0.0.1", str(port)
    )
    path = vsock_socket_path(PARENT_CID, 8001, sim_home)
    try:
        _wait_listening(proc, path)
        first = _connect(path)
        assert _roundtrip(first, b"first") == b"first"
        second = _connect(path)  # waits in the backlog: the single slot is taken
        second.sendall(b"second")
        assert _roundtrip(first, b"again") == b"again"
        assert echo.connections == 1
        first.close()
        assert _roundtrip(second, b"") == b""
        got = b""
        while len(got) < len(b"second"):
            got += second.recv(100)
        assert got == b"second"
        # SIGTERM: stop accepting (the socket file goes away) but keep serving the live connection.
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STARTUP_SECONDS
        while path.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not path.exists()
        assert _roundtrip(second, b"still here") == b"still here"
        assert proc.poll() is None
        second.close()
        proc.wait(timeout=STARTUP_SECONDS)  # the last connection ended: the proxy exits by itself
    finally:
        code, err = _stop(proc)
    assert code == 0, err
    assert err.count(" closed: ") == 2


def test_idle_connection_is_closed(sim_home: Path, tmp_path: Path, echo: _EchoServer) -> None:
    port = echo.server_address[1]
    proc = _start(
        sim_home,
        "--idle-timeout",
        "0.2",
        "--config",
        str(_allowlist(tmp_path, port)),
        "8002",
        "127.0.0.1",
        str(port),
    )
    path = vsock_socket_path(PARENT_CID, 8002, sim_home)
    try:
        _wait_listening(proc, path)
        with _connect(path) as sock:
            assert _roundtrip(sock, b"x") == b"x"
            assert sock.recv(10) == b""  # the proxy closed it after the idle timeout
    finally:
        code, err = _stop(proc)
    assert code == 0
    assert "idle" in err


def _send_until_refused(sock: socket.socket, limit: int = 1 << 30) -> int:
    """Send zeros until the connection is refused (EPIPE, ECONNRESET); the bytes sent, or ``limit``."""
    chunk = bytes(1 << 16)
    sent = 0
    while sent < limit:
        try:
            sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            return sent
        sent += len(chunk)
    return sent


def test_a_receiver_that_takes_nothing_is_closed_after_the_idle_timeout(
    sim_home: Path, tmp_path: Path
) -> None:
    # The remote accepts and never reads: the proxy's send to it stalls (a poll for room that never comes)
    # and, after the idle timeout, the proxy closes the connection; it never hangs or spins.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # inherited: no receive autotuning
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    held: list[socket.socket] = []
    accepter = threading.Thread(target=lambda: held.append(listener.accept()[0]), daemon=True)
    accepter.start()
    port = listener.getsockname()[1]
    proc = _start(
        sim_home,
        "--idle-timeout",
        "0.3",
        "--config",
        str(_allowlist(tmp_path, port)),
        "8003",
        "127.0.0.1",
        str(port),
    )
    path = vsock_socket_path(PARENT_CID, 8003, sim_home)
    try:
        _wait_listening(proc, path)
        with _connect(path) as sock:
            assert _send_until_refused(sock) < 1 << 30  # far past every buffer on the way
    finally:
        code, err = _stop(proc)
        accepter.join(timeout=STARTUP_SECONDS)
        for conn in held:
            conn.close()
        listener.close()
    assert code == 0, err
    assert " closed: " in err


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--idle-timeout", "nan", "Idle timeout must be a number of seconds in (0, 604800], got nan"),
        ("--idle-timeout", "inf", "Idle timeout must be a number of seconds in (0, 604800], got inf"),
        ("--idle-timeout", "0", "Idle timeout must be a number of seconds in (0, 604800], got 0.0"),
        ("--idle-timeout", "1e300", "Idle timeout must be a number of seconds in (0, 604800], got 1e+300"),
        ("--shutdown-timeout", "nan", "Shutdown timeout must be a number of seconds in [0, 3600], got nan"),
        ("--shutdown-timeout", "-inf", "Shutdown timeout must be a number of seconds in [0, 3600], got -inf"),
        ("--shutdown-timeout", "-1", "Shutdown timeout must be a number of seconds in [0, 3600], got -1.0"),
    ],
)
def test_timeouts_must_be_finite_and_in_range(
    sim_home: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, message: str
) -> None:
    from host.vsock_proxy import main

    # Refused before the allowlist is read (the config file does not exist) and before binding.
    assert main([f"{flag}={value}", "--config", "/nonexistent/allow.yaml", "8000", "127.0.0.1", "1"]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == f'Error: "{message}"'
    assert not vsock_socket_path(PARENT_CID, 8000, sim_home).exists()


def _rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))


def test_hostile_peers_on_either_side_leave_the_proxy_bounded_and_serving(
    sim_home: Path, tmp_path: Path
) -> None:
    # The remote answers by its first byte: F streams without end, R resets mid-stream, E echoes.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    stop = threading.Event()
    cut_off = threading.Semaphore(0)  # released when the proxy cut a firehose off

    def handle(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            mode = conn.recv(1)
            if mode == b"F":
                try:
                    while not stop.is_set():
                        conn.sendall(bytes(1 << 16))
                finally:
                    cut_off.release()
            elif mode == b"R":
                conn.sendall(bytes(1 << 16))
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST on close
            elif mode == b"E":
                while data := conn.recv(1 << 16):
                    conn.sendall(data)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    port = listener.getsockname()[1]
    proc = _start(
        sim_home,
        "-w",
        "8",
        "--idle-timeout",
        "0.5",
        "--config",
        str(_allowlist(tmp_path, port)),
        "8004",
        "127.0.0.1",
        str(port),
    )
    path = vsock_socket_path(PARENT_CID, 8004, sim_home)
    try:
        _wait_listening(proc, path)
        start_rss = _rss_kib(proc.pid)
        # Clients that never read a remote that never stops: the proxy stalls, then closes each one.
        readers = [_connect(path) for _ in range(4)]
        for sock in readers:
            sock.sendall(b"F")
        for _ in readers:  # the proxy gives up on each after the idle timeout (bounded wait)
            assert cut_off.acquire(timeout=STARTUP_SECONDS)
        for sock in readers:
            got = 0
            with contextlib.suppress(ConnectionResetError):
                while chunk := sock.recv(1 << 20):  # read only now: whatever was buffered, then EOF
                    got += len(chunk)
            assert got < 64 << 20  # bounded by the socket buffers on the way, not by the remote
            sock.close()
        # A remote that resets mid-stream, and a client that leaves mid-stream.
        for _ in range(5):
            with _connect(path) as sock:
                sock.sendall(b"R")
                with contextlib.suppress(ConnectionResetError):
                    while sock.recv(1 << 16):
                        pass
            with _connect(path) as sock:
                sock.sendall(b"E" + bytes(100_000))
        # Memory stayed bounded and the proxy still relays.
        assert _rss_kib(proc.pid) - start_rss < 64 * 1024
        with _connect(path) as sock:
            sock.sendall(b"E")
            assert _roundtrip(sock, b"hello") == b"hello"
    finally:
        stop.set()
        listener.close()
        code, err = _stop(proc)
    assert code == 0, err
    assert "Traceback" not in err
