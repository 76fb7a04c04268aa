"""The enclave NSM client: /dev/nsm ioctl layout (no device needed), the simulated backend, open_nsm."""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import cbor2
import pytest

import enclave.nsm as client_module
from attestation.document import decode_document
from attestation.errors import NSMError
from attestation.nsm import NSM
from attestation.pki import SimulatedPKI, new_module_id
from enclave.nsm import (
    NSM_IOCTL_REQUEST,
    NSM_MESSAGE_SIZE,
    DevNSMTransport,
    NSMClient,
    NSMDeviceError,
    SimulatedDeviceTransport,
    open_nsm,
    pack_message,
    response_length,
)

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)

# -- The ioctl layout ----------------------------------------------------------------------------------------


def test_message_struct_is_two_iovecs() -> None:
    # struct iovec { void *iov_base; size_t iov_len; } x 2: 32 bytes on 64-bit Linux (x86-64, arm64).
    assert struct.calcsize("P") == 8
    assert NSM_MESSAGE_SIZE == 32
    packed = pack_message(0x1111, 0x22, 0x3333, 0x3000)
    assert bytes(packed) == struct.pack("=QQQQ", 0x1111, 0x22, 0x3333, 0x3000)
    assert response_length(packed) == 0x3000


def test_ioctl_number_is_iowr_0x0a_0_sizeof_message() -> None:
    # _IOWR('\x0a', 0, 32) = dir(3) << 30 | size(32) << 16 | type(0x0A) << 8 | nr(0)
    assert NSM_IOCTL_REQUEST == 0xC0200A00


class FakeDriver:
    """Plays the kernel's part of the ioctl against a real NSM core, reading and writing user memory."""

    def __init__(self, nsm: NSM) -> None:
        self.nsm = nsm
        self.calls: list[int] = []
        self.fail_with: int | None = None

    def __call__(self, fd: int, request: int, arg: bytearray, mutate: bool) -> int:
        assert mutate
        assert len(arg) == NSM_MESSAGE_SIZE
        self.calls.append(request)
        if request != NSM_IOCTL_REQUEST:
            raise OSError(errno.ENOTTY, os.strerror(errno.ENOTTY))
        if self.fail_with is not None:
            raise OSError(self.fail_with, os.strerror(self.fail_with))
        req_base, req_len, resp_base, resp_cap = struct.unpack("@PNPN", bytes(arg))
        request_bytes = ctypes.string_at(req_base, req_len)
        response = self.nsm.handle(request_bytes, at=T0)
        assert len(response) <= resp_cap
        ctypes.memmove(resp_base, response, len(response))
        struct.pack_into("@PNPN", arg, 0, req_base, req_len, resp_base, len(response))
        return 0


@pytest.fixture
def nsm_core(sim_home: Path) -> NSM:
    pki = SimulatedPKI.load_or_create(sim_home, at=T0)
    return NSM(pki=pki, module_id=new_module_id(pki.instance_id, at=T0))


@pytest.fixture
def driver(nsm_core: NSM) -> FakeDriver:
    return FakeDriver(nsm_core)


@pytest.fixture
def dev_client(driver: FakeDriver) -> Iterator[NSMClient]:
    fd = os.open(os.devnull, os.O_RDWR)
    with NSMClient(DevNSMTransport(fd, ioctl=driver)) as nsm:
        yield nsm


def test_every_call_over_the_ioctl_path(dev_client: NSMClient, driver: FakeDriver, nsm_core: NSM) -> None:
    assert dev_client.describe_nsm().module_id == nsm_core.module_id
    value = dev_client.extend_pcr(16, b"x")
    assert dev_client.describe_pcr(16).data == value
    dev_client.lock_pcr(16)
    dev_client.lock_pcrs(17)
    assert len(dev_client.get_random()) == 256
    doc = decode_document(dev_client.attestation(user_data=b"u", public_key=b"k")).document
    assert doc.user_data == b"u"
    assert 16 in doc.pcrs
    assert set(driver.calls) == {NSM_IOCTL_REQUEST}


def test_ioctl_errors_map_like_the_driver(dev_client: NSMClient, driver: FakeDriver) -> None:
    driver.fail_with = errno.EMSGSIZE
    with pytest.raises(NSMError) as info:
        dev_client.get_random()
    assert info.value.code == "InputTooLarge"
    driver.fail_with = errno.EIO
    with pytest.raises(NSMDeviceError) as device_info:
        dev_client.get_random()
    assert device_info.value.code == "InternalError"


def test_oversized_request_never_reaches_the_driver(dev_client: NSMClient, driver: FakeDriver) -> None:
    with pytest.raises(NSMError) as info:
        dev_client.extend_pcr(16, bytes(5000))
    assert info.value.code == "InputTooLarge"
    assert driver.calls == []


def test_nsm_error_answers_raise_with_their_code(dev_client: NSMClient) -> None:
    with pytest.raises(NSMError) as info:
        dev_client.describe_pcr(40)
    assert info.value.code == "InvalidIndex"
    with pytest.raises(NSMError) as info:
        dev_client.extend_pcr(0, b"x")
    assert info.value.code == "ReadOnlyIndex"


class CannedTransport:
    def __init__(self, answer: bytes) -> None:
        self.answer = answer

    def roundtrip(self, request: bytes) -> bytes:
        return self.answer

    def close(self) -> None:
        pass


def test_undecodable_or_mismatched_responses() -> None:
    with pytest.raises(NSMDeviceError, match="undecodable NSM response"):
        NSMClient(CannedTransport(b"\xff")).get_random()
    with pytest.raises(NSMError) as info:
        NSMClient(CannedTransport(b"\x67LockPCR")).get_random()
    assert info.value.code == "InvalidResponse"


# -- The simulated backend and open_nsm ----------------------------------------------------------------------


def start_device(home: Path, path: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "host.nsm_sim", "--socket", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NITRO_SIM_HOME": str(home)},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("nsm-sim listening on ")
    return proc


def stop_device(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()


@pytest.fixture(autouse=True)
def fresh_client_cache(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    clients: dict[str, NSMClient] = {}
    monkeypatch.setattr(client_module, "_clients", clients)
    yield
    for client in clients.values():
        client.close()


def test_open_nsm_without_any_device_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(client_module, "DEV_NSM", tmp_path / "no-nsm")
    with pytest.raises(NSMDeviceError, match="no NSM device: NITRO_SIM_NSM is not set"):
        open_nsm({})


def test_open_nsm_uses_the_simulated_device_and_is_shared(sim_home: Path) -> None:
    path = sim_home / "nsm.sock"
    proc = start_device(sim_home, path)
    try:
        first = open_nsm({"NITRO_SIM_NSM": str(path)})
        assert open_nsm({"NITRO_SIM_NSM": str(path)}) is first
        documents = [first.attestation(nonce=bytes([i])) for i in range(3)]
        assert [decode_document(d).document.nonce for d in documents] == [b"\0", b"\1", b"\2"]
    finally:
        stop_device(proc)


def test_the_shared_client_is_closed_at_exit(sim_home: Path) -> None:
    """A process that used open_nsm() exits without an unclosed socket to nsm-sim (ResourceWarning under
    -X dev, printed after everything else, e.g. after a pytest run's summary)."""
    path = sim_home / "nsm.sock"
    proc = start_device(sim_home, path)
    try:
        code = "from enclave.nsm import open_nsm; open_nsm().describe_nsm(); print('used')"
        done = subprocess.run(
            [sys.executable, "-X", "dev", "-c", code],
            env={**os.environ, "NITRO_SIM_NSM": str(path)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        stop_device(proc)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "used\n"
    assert "ResourceWarning" not in done.stderr


def test_device_gone_then_back(sim_home: Path) -> None:
    path = sim_home / "nsm.sock"
    with NSMClient(SimulatedDeviceTransport(path, timeout=5)) as nsm:
        with pytest.raises(NSMDeviceError, match="cannot connect to the simulated NSM"):
            nsm.describe_nsm()
        proc = start_device(sim_home, path)
        try:
            assert nsm.describe_nsm().max_pcrs == 32
        finally:
            stop_device(proc)
        with pytest.raises(NSMDeviceError):
            nsm.describe_nsm()
        proc = start_device(sim_home, path)
        try:
            assert len(nsm.get_random()) == 256  # reconnects on the next call
        finally:
            stop_device(proc)


def test_a_device_that_breaks_the_framing_is_a_device_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(4096)
            conn.sendall((0x3001).to_bytes(4, "big"))  # one byte over the driver's response buffer

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with (
            NSMClient(SimulatedDeviceTransport(path, timeout=5)) as nsm,
            pytest.raises(NSMDeviceError, match="over 12288"),
        ):
            nsm.get_random()
    finally:
        thread.join(timeout=10)
        listener.close()


def _one_answer_device(path: Path, answer: bytes) -> tuple[socket.socket, threading.Thread]:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(answer)
            conn.recv(1)  # hold the connection until the client is done

    thread = threading.Thread(target=serve)
    thread.start()
    return listener, thread


@pytest.mark.parametrize("split", [1, 3, 4, 5, 20])
def test_answers_split_across_reads_are_reassembled(tmp_path: Path, split: int) -> None:
    body = cbor2.dumps({"GetRandom": {"random": bytes(range(256))}})
    frame = len(body).to_bytes(4, "big") + body
    path = tmp_path / "split.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(frame[:split])
            time.sleep(0.05)  # let the client see a partial frame (ordering only; nothing asserts on time)
            conn.sendall(frame[split:])
            conn.recv(1)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with NSMClient(SimulatedDeviceTransport(path, timeout=5)) as nsm:
            assert nsm.get_random() == bytes(range(256))
    finally:
        thread.join(timeout=10)
        listener.close()


def test_bytes_past_the_answer_are_a_device_error(tmp_path: Path) -> None:
    body = cbor2.dumps("LockPCR")
    frame = len(body).to_bytes(4, "big") + body
    listener, thread = _one_answer_device(tmp_path / "extra.sock", frame + frame)
    try:
        with (
            NSMClient(SimulatedDeviceTransport(tmp_path / "extra.sock", timeout=5)) as nsm,
            pytest.raises(NSMDeviceError, match="past its answer"),
        ):
            nsm.lock_pcr(16)
    finally:
        thread.join(timeout=10)
        listener.close()


class _RecordingTransport:
    """Answers every request with an attestation response; keeps what was sent (no device needed)."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def roundtrip(self, request: bytes) -> bytes:
        self.sent.append(request)
        return cbor2.dumps({"Attestation": {"document": b"doc"}})

    def close(self) -> None:
        pass


def test_repeated_attestation_requests_are_encoded_as_new_ones() -> None:
    # The client keeps the last Attestation request's encoding: every request must still be the bytes
    # encode_request makes for it, whatever came before.
    from attestation.nsm_wire import Attestation, encode_request

    transport = _RecordingTransport()
    nsm = NSMClient(transport)
    calls = [
        {"public_key": b"k1"},
        {"public_key": b"k1"},
        {"public_key": b"k2"},
        {"public_key": b"k1", "nonce": b"n"},
        {"public_key": b"k1"},
        {},
        {"user_data": b"u"},
    ]
    for kwargs in calls:
        assert nsm.attestation(**kwargs) == b"doc"
    assert transport.sent == [encode_request(Attestation(**kwargs)) for kwargs in calls]
