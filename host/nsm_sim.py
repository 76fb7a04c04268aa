"""``nsm-sim``: the simulated NSM device, the hypervisor's side of an enclave's ``/dev/nsm``.

Serves :class:`attestation.nsm.NSM` on a Unix stream socket until SIGTERM (or SIGINT). Each message is a
4-byte big-endian length and a CBOR body in the nsm-api wire shape (interfaces.md, "NSM client"); answers
use the same framing. Many clients may be connected at once; connections are persistent. The shell is an
asyncio ``Protocol`` (no streams), so a request costs one read, the NSM call and one write.

Robustness rules:
- A malformed request is answered with ``{"Error": ...}`` and the connection stays usable.
- A frame over ``MAX_REQUEST_BYTES`` (the driver's limit) is read, discarded and answered
  ``InputTooLarge``; one over ``MAX_DISCARD_BYTES`` closes that connection (we cannot afford to read it).
- A client that disconnects mid-frame only ends its own connection; the server keeps serving.
- At most ``MAX_CONNECTIONS`` clients at once; more are closed at accept.
- Payloads are never logged (they carry user data and nonces).

The reference time of every request is read once, when the request arrives, and passed down.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import stat
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from attestation.errors import AttestationError
from attestation.nsm import BOOT_LOCKED_PCRS, NSM, PCR_BYTES
from attestation.nsm_wire import (
    FRAME_HEADER_BYTES,
    MAX_REQUEST_BYTES,
    ErrorResponse,
    encode_frame,
    encode_response,
    frame_length,
)
from attestation.pki import MODULE_ID_RE, SimulatedPKI, new_module_id
from attestation.sim import check_unix_path, sim_home

PROG = "nsm-sim"
#: Oversized frames up to this size are drained and answered; larger ones close the connection.
MAX_DISCARD_BYTES = 64 * 1024
#: Concurrent client connections.
MAX_CONNECTIONS = 128
#: Listen backlog.
BACKLOG = 64
#: How long shutdown waits for connections to flush and close.
SHUTDOWN_SECONDS = 5.0


class UsageError(Exception):
    """A bad command line or an unusable socket path: one line to stderr, exit 2."""


def parse_pcr(text: str) -> tuple[int, bytes]:
    """``N=HEX`` with N a boot PCR (0-15) and HEX 48 bytes."""
    index_text, sep, hex_text = text.partition("=")
    if not sep or not index_text.strip().isdigit():
        raise UsageError(f"--pcr must be N=HEX, got {text!r}")
    index = int(index_text)
    if not 0 <= index < BOOT_LOCKED_PCRS:
        raise UsageError(f"--pcr index must be a boot PCR in 0..{BOOT_LOCKED_PCRS - 1}, got {index}")
    try:
        value = bytes.fromhex(hex_text.strip())
    except ValueError:
        raise UsageError(f"--pcr {index}: value is not hexadecimal") from None
    if len(value) != PCR_BYTES:
        raise UsageError(f"--pcr {index}: value must be {PCR_BYTES} bytes ({2 * PCR_BYTES} hex digits)")
    return index, value


class DeviceServer:
    """The asyncio shell around one :class:`NSM`: connections and shutdown (framing is per connection).

    Deliberately thin: each request costs one wake-up, one read, the NSM call and one write; no streams,
    no task per request. The NSM call is synchronous (the device serves one request at a time, as the
    driver does), so nothing here awaits between reading a request and answering it.
    """

    def __init__(self, nsm: NSM) -> None:
        self.nsm = nsm
        self._connections: set[_Connection] = set()
        self._all_closed = asyncio.Event()
        self._all_closed.set()

    def protocol(self) -> _Connection:
        return _Connection(self)

    def attach(self, connection: _Connection) -> bool:
        if len(self._connections) >= MAX_CONNECTIONS:
            return False
        self._connections.add(connection)
        self._all_closed.clear()
        return True

    def detach(self, connection: _Connection) -> None:
        self._connections.discard(connection)
        if not self._connections:
            self._all_closed.set()

    def answer(self, body: bytes) -> bytes:
        """The framed answer to one request body; the reference time is read here, once."""
        at = datetime.now(UTC)
        try:
            answer = self.nsm.handle(body, at=at)
        except Exception as exc:  # never let one request take the device down
            print(
                f"{PROG}: internal error serving a request: {type(exc).__name__}", file=sys.stderr, flush=True
            )
            answer = _INTERNAL_ERROR
        return encode_frame(answer)

    async def close_clients(self, *, timeout: float) -> None:
        """Close every connection (pending answers are flushed first) and wait, bounded, until they are."""
        for connection in list(self._connections):
            connection.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all_closed.wait(), timeout)


_INPUT_TOO_LARGE = encode_frame(encode_response(ErrorResponse(code="InputTooLarge")))
_INTERNAL_ERROR = encode_response(ErrorResponse(code="InternalError"))


class _Connection(asyncio.Protocol):
    """One client: reassembles frames from whatever chunks arrive and answers each in order."""

    def __init__(self, device: DeviceServer) -> None:
        self._device = device
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        #: Bytes of an oversized (but drainable) frame still to be read and dropped.
        self._discard = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if not self._device.attach(self):
            transport.close()
            return
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        # A client that left (even mid-frame) ends only its own connection.
        if self._transport is not None:
            self._transport = None
            self._device.detach(self)

    # Back-pressure: a client that does not read its answers stops being read.
    def pause_writing(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None:
            self._transport.resume_reading()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        buffer = self._buffer
        if not buffer and not self._discard and len(data) >= FRAME_HEADER_BYTES:
            # The common case: exactly one whole request in one read; no copy into the buffer.
            length = frame_length(data[:FRAME_HEADER_BYTES])
            if length <= MAX_REQUEST_BYTES and len(data) == FRAME_HEADER_BYTES + length:
                transport.write(self._device.answer(data[FRAME_HEADER_BYTES:]))
                return
        buffer += data
        self._drain(transport)

    def _drain(self, transport: asyncio.Transport) -> None:
        buffer = self._buffer
        while True:
            if self._discard:
                dropped = min(self._discard, len(buffer))
                del buffer[:dropped]
                self._discard -= dropped
                if self._discard:
                    return
                transport.write(_INPUT_TOO_LARGE)
            if len(buffer) < FRAME_HEADER_BYTES:
                return
            length = frame_length(bytes(buffer[:FRAME_HEADER_BYTES]))
            if length > MAX_REQUEST_BYTES:
                del buffer[:FRAME_HEADER_BYTES]
                if length > MAX_DISCARD_BYTES:
                    # Too large to drain: answer, then close this connection (the answer is flushed first).
                    buffer.clear()
                    transport.write(_INPUT_TOO_LARGE)
                    transport.close()
                    return
                self._discard = length
                continue
            end = FRAME_HEADER_BYTES + length
            if len(buffer) < end:
                return
            body = bytes(buffer[FRAME_HEADER_BYTES:end])
            del buffer[:end]
            transport.write(self._device.answer(body))
            if transport.is_closing():
                return


def _prepare_socket_path(path: Path) -> None:
    check_unix_path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise UsageError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(os.fspath(path))
    except OSError:
        os.unlink(path)  # stale socket from a process that is gone
    else:
        raise UsageError(f"{path} is in use by another NSM device")
    finally:
        probe.close()


async def serve(socket_path: Path, nsm: NSM, *, ready_line: bool = True) -> None:
    """Serve ``nsm`` on ``socket_path`` until SIGTERM or SIGINT, then remove the socket."""
    _prepare_socket_path(socket_path)
    device = DeviceServer(nsm)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = await loop.create_unix_server(device.protocol, path=os.fspath(socket_path), backlog=BACKLOG)
    try:
        os.chmod(socket_path, 0o600)
        if ready_line:
            print(f"{PROG} listening on {socket_path}", flush=True)
            print(
                f"{PROG}: module_id {nsm.module_id}, debug mode {'on' if nsm.debug else 'off'}",
                file=sys.stderr,
            )
        await stop.wait()
    finally:
        server.close()
        await device.close_clients(timeout=SHUTDOWN_SECONDS)
        await server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(socket_path)


def _check_module_id(module_id: str | None) -> None:
    if module_id is not None and not MODULE_ID_RE.fullmatch(module_id):
        raise UsageError(f"--module-id must be i-<17 hex>-enc<16 hex>, got {module_id!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Serve a simulated Nitro Secure Module on a Unix socket (set NITRO_SIM_NSM to it).",
    )
    parser.add_argument("--socket", required=True, type=Path, help="Unix socket path to listen on")
    parser.add_argument(
        "--pcr",
        action="append",
        default=[],
        metavar="N=HEX",
        help="boot measurement for PCR N (0-15), 48 bytes in hex; repeatable",
    )
    parser.add_argument(
        "--debug-mode", action="store_true", help="enclave in debug mode: PCR0-2 read as zeros"
    )
    parser.add_argument("--module-id", help="module id i-<17 hex>-enc<16 hex> (default: a fresh one)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        pcrs = dict(parse_pcr(item) for item in args.pcr) or None
        _check_module_id(args.module_id)
        now = datetime.now(UTC)
        pki = SimulatedPKI.load_or_create(sim_home(), at=now)
        module_id = args.module_id or new_module_id(pki.instance_id, at=now)
        nsm = NSM(pki=pki, module_id=module_id, pcrs=pcrs, debug=args.debug_mode)
        asyncio.run(serve(args.socket, nsm))
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except (AttestationError, OSError, ValueError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
