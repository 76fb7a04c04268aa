"""The enclave's NSM client: the nsm-api calls over the simulated device or the real ``/dev/nsm``.

Backends (DESIGN.md, "Inside a simulated enclave"):

- ``NITRO_SIM_NSM`` set: the simulated device, a Unix stream socket served by ``nsm-sim``; each message is
  a 4-byte big-endian length and the CBOR body. One persistent connection per process, re-opened after a
  fork or a lost connection. A request is sent at most once:

  - The device closes a connection left idle (``nsm-sim --idle-timeout``). The next call finds it closed
    when its first ``send`` fails with ``EPIPE`` (or ``ECONNRESET``) having taken no byte: a Unix stream
    socket refuses, atomically and before taking anything, a send to a peer that has closed or shut its
    receiving side (Linux ``unix_stream_sendmsg``). The request provably was not sent, so it is sent once
    more, on a new connection, and the caller sees nothing of it. Only a reused connection is retried so.
  - Any failure once a byte of the request was taken (the device closed before answering, a broken or
    oversized answer, a timeout) is never retried: it raises :class:`NSMDeviceError` (nsm-api's
    ``InternalError``, as the driver maps a device failure), and the next call opens a new connection.
- else ``/dev/nsm`` exists: the Nitro driver's ioctl, laid out as nsm-api ``src/driver/mod.rs`` does: a
  ``struct { struct iovec request; struct iovec response; }`` passed to ``_IOWR(0x0A, 0, sizeof)``, request
  at most 0x1000 bytes, response buffer 0x3000 bytes, the driver writing the response length back into
  ``response.iov_len``. ``EMSGSIZE`` is ``InputTooLarge``; any other errno is ``InternalError``.
- neither: :class:`NSMDeviceError` saying so.

Every NSM error answer raises :class:`attestation.errors.NSMError` with the nsm-api ErrorCode name. A
request over the driver's size limit raises ``InputTooLarge`` before anything is sent, as the driver does.
"""

from __future__ import annotations

import atexit
import ctypes
import errno
import fcntl
import os
import socket
import struct
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol, TypeVar

from attestation.errors import MalformedNSMMessageError, NSMError
from attestation.nsm_wire import (
    FRAME_HEADER_BYTES,
    MAX_REQUEST_BYTES,
    MAX_RESPONSE_BYTES,
    Attestation,
    AttestationResponse,
    DescribeNSM,
    DescribeNSMResponse,
    DescribePCR,
    DescribePCRResponse,
    ErrorResponse,
    ExtendPCR,
    ExtendPCRResponse,
    GetRandom,
    GetRandomResponse,
    LockPCR,
    LockPCRResponse,
    LockPCRs,
    LockPCRsResponse,
    Request,
    Response,
    decode_response,
    encode_frame,
    encode_request,
    frame_length,
)
from attestation.sim import ENV_NSM, check_unix_path
from enclave._sockets import PlainSocketIO, fork_generation

__all__ = [
    "DEV_NSM",
    "DevNSMTransport",
    "NSMClient",
    "NSMDeviceError",
    "SimulatedDeviceTransport",
    "open_nsm",
]

#: The Nitro NSM character device.
DEV_NSM = Path("/dev/nsm")
#: nsm-api driver: ``NSM_IOCTL_MAGIC`` and the ioctl number 0.
NSM_IOCTL_MAGIC = 0x0A
NSM_IOCTL_NR = 0
#: ``struct nsm_message { struct iovec request; struct iovec response; }``: native pointer + size_t, twice.
NSM_MESSAGE_FORMAT = "@PNPN"
NSM_MESSAGE_SIZE = struct.calcsize(NSM_MESSAGE_FORMAT)
#: Linux ``_IOC`` layout (asm-generic/ioctl.h, used by x86-64 and arm64): dir 2 bits, size 14, type 8, nr 8.
_IOC_WRITE, _IOC_READ = 1, 2
_IOC_NRSHIFT, _IOC_TYPESHIFT, _IOC_SIZESHIFT, _IOC_DIRSHIFT = 0, 8, 16, 30
#: Seconds to wait for the simulated device before calling it gone.
SIM_TIMEOUT_SECONDS = 30.0


def _iowr(kind: int, nr: int, size: int) -> int:
    return (
        ((_IOC_READ | _IOC_WRITE) << _IOC_DIRSHIFT)
        | (size << _IOC_SIZESHIFT)
        | (kind << _IOC_TYPESHIFT)
        | (nr << _IOC_NRSHIFT)
    )


#: ``request_code_readwrite!(NSM_IOCTL_MAGIC, 0, size_of::<NsmMessage>())``: 0xC0200A00 on 64-bit Linux.
NSM_IOCTL_REQUEST = _iowr(NSM_IOCTL_MAGIC, NSM_IOCTL_NR, NSM_MESSAGE_SIZE)


class NSMDeviceError(NSMError):
    """The NSM device is unreachable or broke the protocol (code ``InternalError``, as the driver maps it)."""

    def __init__(self, message: str) -> None:
        super().__init__("InternalError", message)


class Transport(Protocol):
    """One request's CBOR in, the response's CBOR out."""

    def roundtrip(self, request: bytes) -> bytes: ...

    def close(self) -> None: ...


# -- The simulated device ------------------------------------------------------------------------------------


class SimulatedDeviceTransport:
    """A persistent connection to ``nsm-sim`` on a Unix socket (thread-safe, fork-aware)."""

    def __init__(self, path: Path, *, timeout: float = SIM_TIMEOUT_SECONDS) -> None:
        self.path = check_unix_path(Path(path))
        self._timeout = timeout
        self._sock: socket.socket | None = None
        self._io: PlainSocketIO | None = None
        self._generation = -1
        self._mutex = threading.Lock()
        #: Receive buffer for one whole frame, reused by every call (calls are serialized by the mutex).
        self._view = memoryview(bytearray(FRAME_HEADER_BYTES + MAX_RESPONSE_BYTES))

    def _connection(self) -> tuple[PlainSocketIO, bool]:
        """The connection, and whether it is an existing one (reused) rather than opened just now."""
        if self._io is not None and self._generation == fork_generation():
            return self._io, True
        self._sock = self._io = None  # after a fork the parent's connection is not ours to use
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self._timeout)
        try:
            sock.connect(os.fspath(self.path))
        except OSError as exc:
            sock.close()
            raise NSMDeviceError(
                f"cannot connect to the simulated NSM at {self.path}: {_reason(exc)}"
            ) from None
        # Connected: sends go out at once; reads wait in poll() first (enclave._sockets says why).
        self._io = PlainSocketIO(sock, self._timeout)
        self._sock, self._generation = sock, fork_generation()
        return self._io, False

    def _receive_frame(self, io: PlainSocketIO) -> bytes:
        """One whole response frame's body, read into the connection's buffer (usually one ``recv_into``).

        The device answers each request with exactly one frame, so bytes past it break the protocol.
        """
        view = self._view
        got = 0
        while got < FRAME_HEADER_BYTES:
            got += self._recv_into(io, view[got:])
        length = frame_length(bytes(view[:FRAME_HEADER_BYTES]))
        if length > MAX_RESPONSE_BYTES:
            raise NSMDeviceError(f"the simulated NSM sent {length} bytes, over {MAX_RESPONSE_BYTES}")
        end = FRAME_HEADER_BYTES + length
        while got < end:
            got += self._recv_into(io, view[got:end])
        if got != end:
            raise NSMDeviceError(f"the simulated NSM at {self.path} sent bytes past its answer")
        return bytes(view[FRAME_HEADER_BYTES:end])

    def _recv_into(self, io: PlainSocketIO, view: memoryview) -> int:
        count = io.recv_into(view)
        if not count:
            raise NSMDeviceError(f"the simulated NSM at {self.path} closed the connection")
        return count

    def roundtrip(self, request: bytes) -> bytes:
        frame = encode_frame(request)
        with self._mutex:
            io, sent = self._send_first(frame)
            try:
                if sent < len(frame):
                    io.sendall(frame[sent:])  # rare: the socket buffer was full
                return self._receive_frame(io)
            except NSMDeviceError:
                self._drop()
                raise
            except OSError as exc:
                self._drop()
                raise NSMDeviceError(f"simulated NSM at {self.path}: {_reason(exc)}") from None

    def _send_first(self, frame: bytes) -> tuple[PlainSocketIO, int]:
        """The first ``send`` of ``frame``, and the connection it went out on (see the module rules).

        A reused connection the device has closed refuses the send before taking any byte: the request
        provably was not sent, and it is sent once more on a new connection.
        """
        io, reused = self._connection()
        try:
            return io, io.send(frame)
        except (BrokenPipeError, ConnectionResetError):
            self._drop()
            if not reused:
                raise NSMDeviceError(f"the simulated NSM at {self.path} closed the connection") from None
        except OSError as exc:
            self._drop()
            raise NSMDeviceError(f"simulated NSM at {self.path}: {_reason(exc)}") from None
        io, _ = self._connection()  # nothing was sent: once more, on a new connection
        try:
            return io, io.send(frame)
        except OSError as exc:
            self._drop()
            raise NSMDeviceError(f"simulated NSM at {self.path}: {_reason(exc)}") from None

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = self._io = None

    def close(self) -> None:
        with self._mutex:
            self._drop()

    def close_if_idle(self) -> None:
        """Close unless a call is in flight (never waits: for the process's exit)."""
        if self._mutex.acquire(blocking=False):
            try:
                self._drop()
            finally:
                self._mutex.release()


def _reason(exc: OSError) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    return exc.strerror or type(exc).__name__


# -- The real device -----------------------------------------------------------------------------------------

IoctlFunction = Callable[[int, int, bytearray, bool], object]


def pack_message(
    request_address: int, request_length: int, response_address: int, response_capacity: int
) -> bytearray:
    """The ``nsm_message`` struct the driver reads: two iovecs (base pointer, length)."""
    return bytearray(
        struct.pack(NSM_MESSAGE_FORMAT, request_address, request_length, response_address, response_capacity)
    )


def response_length(message: bytes | bytearray) -> int:
    """The response length the driver wrote back into ``response.iov_len``."""
    return int(struct.unpack(NSM_MESSAGE_FORMAT, bytes(message))[3])


class DevNSMTransport:
    """The Nitro NSM driver: one ioctl per request on an open ``/dev/nsm``."""

    def __init__(self, fd: int, *, ioctl: IoctlFunction | None = None) -> None:
        self._fd = fd
        self._ioctl: IoctlFunction = ioctl or fcntl.ioctl

    @classmethod
    def open(cls, path: Path = DEV_NSM) -> DevNSMTransport:
        try:
            return cls(os.open(path, os.O_RDWR | os.O_CLOEXEC))
        except OSError as exc:
            raise NSMDeviceError(f"cannot open {path}: {_reason(exc)}") from None

    def roundtrip(self, request: bytes) -> bytes:
        if len(request) > MAX_REQUEST_BYTES:
            raise NSMError("InputTooLarge", f"request is over {MAX_REQUEST_BYTES} bytes")
        request_buffer = ctypes.create_string_buffer(request, len(request))
        response_buffer = ctypes.create_string_buffer(MAX_RESPONSE_BYTES)
        message = pack_message(
            ctypes.addressof(request_buffer),
            len(request),
            ctypes.addressof(response_buffer),
            MAX_RESPONSE_BYTES,
        )
        try:
            self._ioctl(self._fd, NSM_IOCTL_REQUEST, message, True)
        except OSError as exc:
            if exc.errno == errno.EMSGSIZE:
                raise NSMError("InputTooLarge", "the NSM driver refused the request size") from None
            raise NSMDeviceError(f"NSM ioctl failed: {_reason(exc)}") from None
        length = response_length(message)
        if not 0 < length <= MAX_RESPONSE_BYTES:
            raise NSMDeviceError(f"the NSM driver returned a response of {length} bytes")
        return ctypes.string_at(response_buffer, length)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


# -- The client ----------------------------------------------------------------------------------------------

_R = TypeVar("_R")


class NSMClient:
    """The NSM calls of the real API; each raises NSMError(code) when the NSM answers an error."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        #: The last Attestation request and its encoding: a KMS client asks with the same key every call.
        self._last_attestation: tuple[Attestation, bytes] | None = None

    def _call(self, request: Request, expected: type[_R]) -> _R:
        last = self._last_attestation  # one read: the pair is replaced whole
        if last is not None and last[0] == request:
            data = last[1]
        else:
            data = encode_request(request)
            if type(request) is Attestation:
                self._last_attestation = (request, data)
        if len(data) > MAX_REQUEST_BYTES:
            # nsm-api nsm_process_request: checked before the driver is called.
            raise NSMError("InputTooLarge", f"request is {len(data)} bytes, over {MAX_REQUEST_BYTES}")
        raw = self._transport.roundtrip(data)
        try:
            response: Response = decode_response(raw)
        except MalformedNSMMessageError as exc:
            # nsm-api maps an undecodable response to InternalError.
            raise NSMDeviceError(f"undecodable NSM response ({exc})") from None
        if isinstance(response, ErrorResponse):
            raise NSMError(response.code)
        if not isinstance(response, expected):
            raise NSMError("InvalidResponse", f"expected {expected.__name__}, got {type(response).__name__}")
        return response

    def describe_pcr(self, index: int) -> DescribePCRResponse:
        return self._call(DescribePCR(index=index), DescribePCRResponse)

    def extend_pcr(self, index: int, data: bytes) -> bytes:
        return self._call(ExtendPCR(index=index, data=data), ExtendPCRResponse).data

    def lock_pcr(self, index: int) -> None:
        self._call(LockPCR(index=index), LockPCRResponse)

    def lock_pcrs(self, range_: int) -> None:
        self._call(LockPCRs(range=range_), LockPCRsResponse)

    def describe_nsm(self) -> DescribeNSMResponse:
        return self._call(DescribeNSM(), DescribeNSMResponse)

    def get_random(self) -> bytes:
        return self._call(GetRandom(), GetRandomResponse).random

    def attestation(
        self, *, user_data: bytes | None = None, nonce: bytes | None = None, public_key: bytes | None = None
    ) -> bytes:
        """A fresh attestation document (COSE_Sign1 bytes) from the NSM."""
        request = Attestation(user_data=user_data, nonce=nonce, public_key=public_key)
        return self._call(request, AttestationResponse).document

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> NSMClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


_clients: dict[str, NSMClient] = {}
_clients_mutex = threading.Lock()


@atexit.register
def _close_shared_clients() -> None:
    """At exit, close the shared clients' connections to nsm-sim (a socket left to the collector is a
    ResourceWarning then), without waiting for a call another thread has in flight."""
    with _clients_mutex:
        clients = list(_clients.values())
        _clients.clear()
    for client in clients:
        transport = client._transport  # this module's own class
        if isinstance(transport, SimulatedDeviceTransport):
            transport.close_if_idle()


def open_nsm(environ: Mapping[str, str] | None = None) -> NSMClient:
    """The process's NSM client: the simulated device if ``NITRO_SIM_NSM`` is set, else ``/dev/nsm``.

    Shared and cheap to call per request: one client (and connection) per device, created on first use.
    """
    env = os.environ if environ is None else environ
    simulated = env.get(ENV_NSM)
    key = f"sim:{simulated}" if simulated else f"dev:{DEV_NSM}"
    with _clients_mutex:
        client = _clients.get(key)
        if client is not None:
            return client
        if simulated:
            client = NSMClient(SimulatedDeviceTransport(Path(simulated)))
        elif DEV_NSM.exists():
            client = NSMClient(DevNSMTransport.open(DEV_NSM))
        else:
            raise NSMDeviceError(
                f"no NSM device: {ENV_NSM} is not set and {DEV_NSM} does not exist "
                f"(run inside a Nitro Enclave, or start nsm-sim and set {ENV_NSM})"
            )
        _clients[key] = client
        return client
