"""The SDK's simulated NSM transport when the device closes connections: a silent reconnect when the request
provably was not sent, the documented error (and no second send) when it may have been.

The reconnect runs against the real ``nsm-sim --idle-timeout``; ExtendPCR shows each request was carried
out exactly once (a second send would extend the PCR twice). Failures after sending need a device that
misbehaves on cue: a small fake on a Unix socket.
"""

from __future__ import annotations

import hashlib
import os
import select
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from attestation.nsm_wire import GetRandomResponse, encode_frame, encode_response
from enclave.nsm import NSMClient, NSMDeviceError, SimulatedDeviceTransport

#: Short, so the test waits little for the device to close an idle connection.
IDLE = 0.3
#: Bound on every wait (never reached when all is well).
WAIT_SECONDS = 30.0


@pytest.fixture
def device(sim_home: Path) -> Iterator[Path]:
    path = sim_home / "nsm.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "host.nsm_sim", "--socket", str(path), "--idle-timeout", str(IDLE)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NITRO_SIM_HOME": str(sim_home)},
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("nsm-sim listening on ")
        yield path
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
        assert "Traceback" not in err


def wait_until_closed_by_device(transport: SimulatedDeviceTransport) -> None:
    """Bounded wait for the device to close the transport's connection (end of stream readable)."""
    sock = transport._sock
    assert sock is not None
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    assert poller.poll(WAIT_SECONDS * 1000), "the device did not close the idle connection"
    assert sock.recv(1, socket.MSG_PEEK) == b""


def test_a_connection_the_device_closed_while_idle_is_replaced_silently(device: Path) -> None:
    transport = SimulatedDeviceTransport(device, timeout=WAIT_SECONDS)
    with NSMClient(transport) as nsm:
        value = nsm.extend_pcr(16, b"first")
        for step in (b"second", b"third", b"fourth"):
            before = transport._sock
            wait_until_closed_by_device(transport)
            value_after = nsm.extend_pcr(16, step)  # no error: the client reconnected
            assert value_after == hashlib.sha384(value + step).digest()  # extended once, not twice
            assert transport._sock is not before
            value = value_after
        assert nsm.describe_pcr(16).data == value


def test_get_random_and_attestation_after_idle_closes(device: Path) -> None:
    transport = SimulatedDeviceTransport(device, timeout=WAIT_SECONDS)
    with NSMClient(transport) as nsm:
        nsm.get_random()
        wait_until_closed_by_device(transport)
        assert nsm.attestation(nonce=b"n")
        wait_until_closed_by_device(transport)
        assert len(nsm.get_random()) == 256


# -- A device that misbehaves on cue -------------------------------------------------------------------


class FakeDevice:
    """Accepts connections one at a time and answers every request but request ``answered + 1``, which it
    reads and then closes the connection without answering (a device that died mid-request); with
    ``close_at_accept`` it closes each connection as soon as it is accepted."""

    def __init__(self, path: Path, *, answered: int = 0, close_at_accept: bool = False) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(8)
        self.answered = answered
        self.close_at_accept = close_at_accept
        self.connections = 0
        self.requests = 0
        self.answer = encode_frame(encode_response(GetRandomResponse(random=bytes(256))))
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                if self.close_at_accept:
                    continue
                while True:
                    header = conn.recv(4, socket.MSG_WAITALL)
                    if len(header) < 4:
                        break
                    conn.recv(int.from_bytes(header, "big"), socket.MSG_WAITALL)
                    self.requests += 1
                    if self.requests == self.answered + 1:
                        break  # read this one request, then close without answering
                    conn.sendall(self.answer)

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join(timeout=10)


@pytest.fixture
def fake_path(tmp_path: Path) -> Path:
    return tmp_path / "fake.sock"


def test_a_device_that_closes_after_the_request_is_an_error_and_nothing_is_resent(fake_path: Path) -> None:
    fake = FakeDevice(fake_path, answered=1)
    try:
        with NSMClient(SimulatedDeviceTransport(fake_path, timeout=WAIT_SECONDS)) as nsm:
            assert len(nsm.get_random()) == 256
            with pytest.raises(NSMDeviceError, match="closed the connection") as info:
                nsm.get_random()  # sent on the reused connection; the device reads it and closes
            assert info.value.code == "InternalError"
            assert (fake.connections, fake.requests) == (1, 2)  # the request went out once
            assert len(nsm.get_random()) == 256  # the next call opens a new connection
            assert fake.connections == 2
    finally:
        fake.close()


def test_a_fresh_connection_closed_at_once_is_an_error_not_a_loop(fake_path: Path) -> None:
    fake = FakeDevice(fake_path, close_at_accept=True)
    try:
        with (
            NSMClient(SimulatedDeviceTransport(fake_path, timeout=WAIT_SECONDS)) as nsm,
            pytest.raises(NSMDeviceError, match="simulated NSM at"),
        ):
            nsm.get_random()
        assert fake.connections == 1
    finally:
        fake.close()


def test_a_device_gone_for_good_is_an_error_after_one_reconnect(device: Path) -> None:
    transport = SimulatedDeviceTransport(device, timeout=WAIT_SECONDS)
    with NSMClient(transport) as nsm:
        nsm.get_random()
        wait_until_closed_by_device(transport)
        device.unlink()  # nobody can connect any more
        with pytest.raises(NSMDeviceError, match="cannot connect to the simulated NSM"):
            nsm.get_random()
