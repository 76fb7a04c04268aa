"""nsm-sim's idle timeout: idle clients are closed and their slots come back, busy ones are not, and the
close never loses or half-serves a request sent at that moment.

The processes are real (``nsm-sim --idle-timeout`` with a short timeout); waits are bounded, never timed.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import cbor2
import pytest

from attestation.nsm import NSM
from attestation.nsm_wire import GetRandomResponse, decode_response, encode_frame
from attestation.pki import SimulatedPKI, new_module_id
from host._nsm_framing import Framer
from host.nsm_sim import MAX_CONNECTIONS, DeviceServer

READY = "nsm-sim listening on "
#: Short enough to keep the tests quick, long enough that a busy client's next request always comes first.
IDLE = 0.5
#: Bound on every wait for something the device does (far above IDLE; never reached when all is well).
WAIT_SECONDS = 30.0
GET_RANDOM = encode_frame(cbor2.dumps("GetRandom"))


def start_device(home: Path, path: Path, idle: float = IDLE) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "host.nsm_sim", "--socket", str(path), "--idle-timeout", str(idle)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NITRO_SIM_HOME": str(home)},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith(READY):
        proc.kill()
        pytest.fail(f"nsm-sim did not start: {line!r} {proc.communicate()[1]!r}")
    return proc


@pytest.fixture
def device(sim_home: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    path = sim_home / "idle.sock"
    proc = start_device(sim_home, path)
    try:
        yield path, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        assert "Traceback" not in err


def connect(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(WAIT_SECONDS)
    sock.connect(str(path))
    return sock


def recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def get_random(sock: socket.socket) -> None:
    sock.sendall(GET_RANDOM)
    body = recv_exact(sock, int.from_bytes(recv_exact(sock, 4), "big"))
    assert isinstance(decode_response(body), GetRandomResponse)


def threads(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))


def wait_for(condition: Callable[[], bool], what: str, meanwhile: Callable[[], None] | None = None) -> None:
    """Wait (bounded) until ``condition()``, doing ``meanwhile()`` (else a short sleep) between looks."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"still waiting after {WAIT_SECONDS:.0f} s for {what}")
        if meanwhile is None:
            time.sleep(0.02)
        else:
            meanwhile()


def test_idle_clients_are_closed_their_slots_come_back_and_a_busy_one_stays(
    device: tuple[Path, subprocess.Popen[str]],
) -> None:
    path, proc = device
    baseline = threads(proc.pid)
    busy = connect(path)
    get_random(busy)
    idle: list[socket.socket] = []
    try:
        for _ in range(MAX_CONNECTIONS - 1):  # with the busy one: every slot taken
            idle.append(connect(path))
            get_random(idle[-1])  # served: each holds a slot and a thread
            get_random(busy)
        # The busy client asks again and again (far more often than IDLE) until every idle one is closed.
        open_fds = {sock.fileno(): sock for sock in idle}
        poller = select.poll()
        for fd in open_fds:
            poller.register(fd, select.POLLIN)
        deadline = time.monotonic() + WAIT_SECONDS
        while open_fds:
            assert time.monotonic() < deadline, f"{len(open_fds)} idle clients still open"
            get_random(busy)
            for fd, _ in poller.poll(10):
                assert open_fds[fd].recv(1) == b""  # end of stream: the device closed it
                poller.unregister(fd)
                del open_fds[fd]
        wait_for(
            lambda: threads(proc.pid) == baseline + 1,
            "the idle clients' threads to end",
            meanwhile=lambda: get_random(busy),
        )
        # Their slots are free again: as many new clients as there were idle ones are all served.
        fresh: list[socket.socket] = []
        try:
            for _ in range(MAX_CONNECTIONS - 1):
                fresh.append(connect(path))
                get_random(fresh[-1])
                get_random(busy)
        finally:
            for sock in fresh:
                sock.close()
        get_random(busy)  # the busy client kept its connection all along
    finally:
        busy.close()
        for sock in idle:
            sock.close()


def test_a_request_in_progress_is_not_cut_but_a_stalled_one_is(
    device: tuple[Path, subprocess.Popen[str]],
) -> None:
    path, _ = device
    # Bytes keep coming, each piece well within IDLE, for longer than IDLE in all: served.
    with connect(path) as sock:
        pieces = [GET_RANDOM[i : i + 3] for i in range(0, len(GET_RANDOM), 3)]
        assert len(pieces) * IDLE / 4 > IDLE
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(IDLE / 4)
        body = recv_exact(sock, int.from_bytes(recv_exact(sock, 4), "big"))
        assert isinstance(decode_response(body), GetRandomResponse)
    # Half a frame, then nothing: the connection is closed (an idle client, even in mid-frame).
    with connect(path) as sock:
        sock.sendall(GET_RANDOM[:5])
        assert sock.recv(1) == b""


def test_a_client_that_takes_none_of_its_answers_is_closed(
    device: tuple[Path, subprocess.Popen[str]],
) -> None:
    path, proc = device
    baseline = threads(proc.pid)
    count = 5000  # 70 KB of requests, over 1 MB of answers: far past what the socket buffers hold
    with connect(path) as sock:
        sock.sendall(GET_RANDOM * count)
        # The device gives up on the answer it cannot send and closes: the client's socket hangs up.
        hangup = select.poll()
        hangup.register(sock.fileno(), 0)  # POLLHUP and POLLERR are always reported
        assert hangup.poll(WAIT_SECONDS * 1000), "the device kept the stalled connection"
        wait_for(lambda: threads(proc.pid) == baseline, "the connection's thread to end")
        answers = 0
        received = bytearray()
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass  # closed with requests still unread: the kernel reports a reset after the data
        while len(received) >= 4:
            length = int.from_bytes(received[:4], "big")
            if len(received) < 4 + length:
                break
            del received[: 4 + length]
            answers += 1
        assert 0 < answers < count
    with connect(path) as sock:
        get_random(sock)


# -- The close itself, in process: deterministic, no timing ------------------------------------------------


@pytest.fixture
def server(sim_home: Path) -> DeviceServer:
    at = datetime.now(UTC)
    pki = SimulatedPKI.load_or_create(sim_home, at=at)
    return DeviceServer(NSM(pki=pki, module_id=new_module_id(pki.instance_id, at=at)), idle_timeout=IDLE)


def test_a_request_that_arrives_as_the_device_retires_the_connection_is_answered(
    server: DeviceServer,
) -> None:
    client, device_side = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with client, device_side:
        client.settimeout(WAIT_SECONDS)
        client.sendall(GET_RANDOM * 2 + GET_RANDOM[:3])  # two whole requests and the start of a third
        server._retire(device_side, Framer())
        for _ in range(2):
            body = recv_exact(client, int.from_bytes(recv_exact(client, 4), "big"))
            assert isinstance(decode_response(body), GetRandomResponse)
        # From the shutdown on, a request is refused before any byte of it is taken: provably not sent.
        with pytest.raises(BrokenPipeError):
            client.send(GET_RANDOM, socket.MSG_NOSIGNAL)


@pytest.mark.parametrize("seconds", [0.0, -1.0, float("nan"), float("inf"), 86401.0])
def test_a_device_server_refuses_a_bad_idle_timeout(sim_home: Path, seconds: float) -> None:
    at = datetime.now(UTC)
    pki = SimulatedPKI.load_or_create(sim_home, at=at)
    nsm = NSM(pki=pki, module_id=new_module_id(pki.instance_id, at=at))
    with pytest.raises(ValueError, match="idle_timeout must be in"):
        DeviceServer(nsm, idle_timeout=seconds)
