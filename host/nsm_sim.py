"""``nsm-sim``: the simulated NSM device, the hypervisor's side of an enclave's ``/dev/nsm``.

Serves :class:`attestation.nsm.NSM` on a Unix stream socket until SIGTERM (or SIGINT). Each message is a
4-byte big-endian length and a CBOR body in the nsm-api wire shape (interfaces.md, "NSM client"); answers
use the same framing. Many clients may be connected at once, each served by its own thread; connections are
persistent. A request costs a ``poll``, one ``recv``, the NSM call and one ``sendall``.

Robustness rules:
- A malformed request is answered with ``{"Error": ...}`` and the connection stays usable.
- A frame over ``MAX_REQUEST_BYTES`` (the driver's limit) is read, discarded and answered
  ``InputTooLarge``; one over ``MAX_DISCARD_BYTES`` (:mod:`host._nsm_framing`, the sans-IO framing) closes
  that connection (we cannot afford to read it).
- A client that disconnects mid-frame only ends its own connection; the server keeps serving.
- At most ``MAX_CONNECTIONS`` clients at once; more are closed at accept.
- Idle connections give their slot back: a client that sends no byte for ``--idle-timeout`` seconds
  (default :data:`DEFAULT_IDLE_TIMEOUT`), between requests or stalled partway through sending one, is
  closed; so is one that takes no byte of its answers for as long (``SO_SNDTIMEO``). A request in progress
  is never cut: the clock restarts at every byte received and runs only while the device waits for the
  client, never while it serves a request (an NSM call has no time bound of its own). The close is
  race-free for a client that sends just then: the device first shuts its receiving side (from that
  instant the client's ``send`` fails with ``EPIPE``, so its request provably was not delivered and it may
  send it again on a new connection), then answers every whole request that arrived before, then closes.
- Payloads are never logged (they carry user data and nonces).

The reference time of every request is read once, when the request arrives, and passed down.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import select
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from attestation.errors import AttestationError, SimulationError
from attestation.nsm import BOOT_LOCKED_PCRS, NSM, PCR_BYTES
from attestation.nsm_wire import (
    FRAME_HEADER_BYTES,
    MAX_REQUEST_BYTES,
    ErrorResponse,
    encode_frame,
    encode_response,
)
from attestation.pki import MODULE_ID_RE, SimulatedPKI, new_module_id
from attestation.sim import check_unix_path, remove_stale_socket, sim_home
from host._nsm_framing import Framer

PROG = "nsm-sim"
#: Concurrent client connections.
MAX_CONNECTIONS = 128
#: Seconds a connection may wait idle (no byte from the client, or none of an answer taken) before it is
#: closed and its slot comes back. An enclave's SDK reconnects silently (enclave.nsm).
DEFAULT_IDLE_TIMEOUT = 60.0
#: Bound on ``--idle-timeout`` (a day): past it a forgotten connection is as good as never closed.
MAX_IDLE_TIMEOUT = 24 * 3600.0
#: Listen backlog.
BACKLOG = 64
#: How long shutdown waits for connections to flush and close.
SHUTDOWN_SECONDS = 5.0


class UsageError(Exception):
    """A bad command line or an unusable socket path: one line to stderr, exit 2."""


def parse_pcr(text: str) -> tuple[int, bytes]:
    """``N=HEX`` with N a boot PCR (0-15) and HEX 48 bytes."""
    index_text, sep, hex_text = text.partition("=")
    index_text = index_text.strip()
    # ASCII digits only: str.isdigit() also takes e.g. "²", which int() refuses (as it does >4300 digits).
    if not sep or not index_text.isascii() or not index_text.isdigit():
        raise UsageError(f"--pcr must be N=HEX, got {text[:40]!r}")
    significant = index_text.lstrip("0") or "0"
    if len(significant) > 2 or not 0 <= int(significant) < BOOT_LOCKED_PCRS:
        raise UsageError(
            f"--pcr index must be a boot PCR in 0..{BOOT_LOCKED_PCRS - 1}, got {index_text[:20]}"
        )
    index = int(significant)
    try:
        value = bytes.fromhex(hex_text.strip())
    except ValueError:
        raise UsageError(f"--pcr {index}: value is not hexadecimal") from None
    if len(value) != PCR_BYTES:
        raise UsageError(f"--pcr {index}: value must be {PCR_BYTES} bytes ({2 * PCR_BYTES} hex digits)")
    return index, value


_INPUT_TOO_LARGE = encode_frame(encode_response(ErrorResponse(code="InputTooLarge")))
_INTERNAL_ERROR = encode_frame(encode_response(ErrorResponse(code="InternalError")))


class DeviceServer:
    """The shell around one :class:`NSM`: a blocking thread per connection, framing, shutdown.

    Deliberately thin (measured: an asyncio shell cost ~40 us more CPU per request here than a blocking
    ``recv``/``sendall`` pair): a request costs a ``poll``, one ``recv``, the NSM call and one ``sendall``.
    The NSM is thread-safe; connections are independent, so one slow or broken client never holds up
    another.

    Why the ``poll``: a thread asleep in ``recv`` on a Unix socket is also woken each time the client reads
    an answer this socket sent (``unix_write_space`` wakes every sleeper on the socket), finds nothing and
    sleeps again: one spurious wake-up (two context switches) per request, measured. A ``poll`` for
    POLLIN is not woken by those POLLOUT events.
    """

    def __init__(self, nsm: NSM, *, idle_timeout: float = DEFAULT_IDLE_TIMEOUT) -> None:
        if not _valid_idle_timeout(idle_timeout):
            raise ValueError(f"idle_timeout must be in (0, {MAX_IDLE_TIMEOUT:.0f}] seconds")
        self.nsm = nsm
        self.idle_timeout = idle_timeout
        self._idle_ms = max(1, math.ceil(idle_timeout * 1000))
        # SO_SNDTIMEO: a struct timeval (native longs), the same bound for an answer nobody takes.
        self._send_timeout = struct.pack("@ll", *divmod(math.ceil(idle_timeout * 1_000_000), 1_000_000))
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._mutex = threading.Lock()

    def answer(self, body: bytes) -> bytes:
        """The framed answer to one request body; the reference time is read here, once."""
        at = datetime.now(UTC)
        try:
            return self.nsm.handle_frame(body, at=at)
        except Exception as exc:  # never let one request take the device down
            print(
                f"{PROG}: internal error serving a request: {type(exc).__name__}", file=sys.stderr, flush=True
            )
            return _INTERNAL_ERROR

    def accept(self, conn: socket.socket) -> None:
        """Serve ``conn`` on its own thread, or close it if ``MAX_CONNECTIONS`` are open."""
        with self._mutex:
            if len(self._connections) >= MAX_CONNECTIONS:
                conn.close()
                return
            try:
                # A blocking send of an answer gives up (EAGAIN) after the idle timeout without progress.
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, self._send_timeout)
            except OSError:
                conn.close()  # the client is already gone
                return
            thread = threading.Thread(target=self._serve, args=(conn,), name="nsm-sim-conn", daemon=True)
            self._connections[conn] = thread
        thread.start()

    def _serve(self, conn: socket.socket) -> None:
        framer = Framer()
        readable = select.poll()
        readable.register(conn.fileno(), select.POLLIN | select.POLLPRI)
        try:
            while not framer.closed:
                # Returns on data, end of stream, error or shutdown; nothing for the idle timeout: idle.
                if not readable.poll(self._idle_ms):
                    self._retire(conn, framer)
                    return
                data = conn.recv(_RECV_BYTES)
                if not data:
                    return  # the client left (even mid-frame): only this connection ends
                self._answer_all(conn, framer, data)
        except OSError:
            pass  # the client went away, or shutdown closed the connection
        finally:
            with self._mutex:
                self._connections.pop(conn, None)
            conn.close()

    def _answer_all(self, conn: socket.socket, framer: Framer, data: bytes) -> None:
        for item in framer.feed(data):
            conn.sendall(self.answer(item) if isinstance(item, bytes) else _INPUT_TOO_LARGE)

    def _retire(self, conn: socket.socket, framer: Framer) -> None:
        """Close an idle connection without losing, or half-serving, a request sent at that moment.

        ``shutdown(SHUT_RD)`` is atomic against the client's send (both hold the receiving socket's state
        lock): a request is either already queued here, and is answered below, or refused with ``EPIPE``
        before any byte of it is accepted, which the client can tell from a request that was delivered.
        After the shutdown ``recv`` returns what is queued, then end of stream: it never waits.
        """
        conn.shutdown(socket.SHUT_RD)
        while not framer.closed:
            data = conn.recv(_RECV_BYTES, socket.MSG_DONTWAIT)
            if not data:
                return
            self._answer_all(conn, framer, data)

    def close_clients(self, *, timeout: float) -> None:
        """End every connection and wait (bounded) for their threads."""
        with self._mutex:
            connections = list(self._connections.items())
        for conn, _ in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv
        deadline = time.monotonic() + timeout
        for _, thread in connections:
            thread.join(max(0.0, deadline - time.monotonic()))


#: One read takes a whole request frame (and then some, for clients that pipeline).
_RECV_BYTES = 2 * (FRAME_HEADER_BYTES + MAX_REQUEST_BYTES)


def _prepare_socket_path(path: Path) -> None:
    check_unix_path(path)
    # Create directories only inside the simulation's home (e.g. its vsock/<cid>/ tree); elsewhere the
    # directory must already exist, as for any server socket.
    if path.parent.resolve().is_relative_to(sim_home().resolve()):
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):  # a file where a directory should be
            raise UsageError(f"{path.parent} is not a directory") from None
    elif not path.parent.is_dir():
        raise UsageError(f"{path.parent} is not a directory")
    try:
        remove_stale_socket(path, holder="another NSM device")
    except SimulationError as exc:  # the operator named a path that cannot be used: a usage error
        raise UsageError(str(exc)) from None


def _valid_idle_timeout(seconds: float) -> bool:
    # finite: NaN and infinity are no bound that poll() and SO_SNDTIMEO can wait for
    return math.isfinite(seconds) and 0 < seconds <= MAX_IDLE_TIMEOUT


def parse_idle_timeout(text: str) -> float:
    """``--idle-timeout S``: seconds, above 0 and up to :data:`MAX_IDLE_TIMEOUT`."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not _valid_idle_timeout(seconds):
        raise UsageError(
            f"--idle-timeout must be a number of seconds above 0 and up to {MAX_IDLE_TIMEOUT:.0f}, "
            f"got {text[:40]!r}"
        )
    return seconds


def serve(
    socket_path: Path, nsm: NSM, *, ready_line: bool = True, idle_timeout: float = DEFAULT_IDLE_TIMEOUT
) -> None:
    """Serve ``nsm`` on ``socket_path`` until SIGTERM or SIGINT, then remove the socket.

    Must run on the main thread (it installs the signal handlers). The signals only wake the accept loop
    through a wakeup pipe (``signal.set_wakeup_fd``); the loop then stops accepting and shuts down.
    """
    device = DeviceServer(nsm, idle_timeout=idle_timeout)
    _prepare_socket_path(socket_path)
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    previous = {signum: signal.signal(signum, _wake) for signum in _STOP_SIGNALS}
    previous_fd = signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(os.fspath(socket_path))
        os.chmod(socket_path, 0o600)
        listener.listen(BACKLOG)
        if ready_line:
            print(f"{PROG} listening on {socket_path}", flush=True)
            print(
                f"{PROG}: module_id {nsm.module_id}, debug mode {'on' if nsm.debug else 'off'}",
                file=sys.stderr,
            )
        while True:
            ready, _, _ = select.select([listener.fileno(), wake_read], [], [])
            if wake_read in ready and _stop_requested(wake_read):
                break
            if listener.fileno() not in ready:
                continue
            try:
                conn, _ = listener.accept()
            except OSError:
                continue  # a client that gave up before we accepted it
            device.accept(conn)
    finally:
        listener.close()
        device.close_clients(timeout=SHUTDOWN_SECONDS)
        signal.set_wakeup_fd(previous_fd)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        os.close(wake_read)
        os.close(wake_write)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(socket_path)


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _stop_requested(wake_read: int) -> bool:
    """Whether a stop signal is among those the wakeup pipe reports (each byte is a signal number; other
    signals with Python handlers, e.g. a profiler's SIGUSR1, write there too and must not stop the device)."""
    stop = False
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(wake_read, 64):
            stop = stop or any(signum in _STOP_SIGNALS for signum in chunk)
    return stop


def _wake(signum: int, frame: object) -> None:
    """A no-op Python handler: the C handler has already written to the wakeup pipe."""


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
    parser.add_argument(
        "--idle-timeout",
        default=str(DEFAULT_IDLE_TIMEOUT),
        metavar="S",
        help=(
            "close a connection whose client sends nothing (or takes none of an answer) for S seconds, "
            f"giving its slot back; a request being served is never cut (default {DEFAULT_IDLE_TIMEOUT:.0f})"
        ),
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        pcrs = dict(parse_pcr(item) for item in args.pcr) or None
        _check_module_id(args.module_id)
        idle_timeout = parse_idle_timeout(args.idle_timeout)
        now = datetime.now(UTC)
        pki = SimulatedPKI.load_or_create(sim_home(), at=now)
        module_id = args.module_id or new_module_id(pki.instance_id, at=now)
        nsm = NSM(pki=pki, module_id=module_id, pcrs=pcrs, debug=args.debug_mode)
        serve(args.socket, nsm, idle_timeout=idle_timeout)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except (AttestationError, OSError, ValueError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
