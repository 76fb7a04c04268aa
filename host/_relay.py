"""The byte relay behind ``vsock-proxy``: accept on vsock ``(3, port)``, connect TCP, copy both ways.

Rules this module keeps:

- It never parses, inspects or logs payload bytes; it counts them. One log line per connection.
- At most ``max_connections`` connections are served at once; further ones wait in the listen backlog,
  as with the real proxy's fixed worker pool (``-w``, "the maximum number of simultaneous connections").
- A connection with no bytes in either direction for ``idle_timeout`` seconds is closed.
- ``shutdown()`` stops accepting at once, lets live connections finish for up to ``grace`` seconds, then
  closes what is left. Half-closes are forwarded (EOF one way becomes ``shutdown(SHUT_WR)`` on the other).
- Each direction is one thread doing ``recv_into`` a preallocated buffer and ``send`` of a memoryview of it
  (no per-chunk buffer); one thread per direction means neither side's writes can block the other's.
- Both sockets are non-blocking; each pump waits with ``poll`` for exactly the event it needs. A relayed
  chunk costs a ``poll``, a ``recv`` and a ``send`` (Python's ``settimeout`` would add a ``poll`` before the
  send too); a send waits for POLLOUT only when the socket buffer is full. Waiting in ``poll`` rather than
  a blocking ``recv`` matters on a Unix socket: a thread asleep in ``recv`` is woken, for nothing, each
  time the peer reads what the other pump sent (``unix_write_space``), a POLLIN ``poll`` is not.
  A wait of ``idle_timeout`` with nothing to read checks the idle clock; a send stuck that long closes.

Listening: in simulation, the Unix socket that :func:`attestation.sim.vsock_socket_path` maps ``(3, port)``
to; otherwise a real ``AF_VSOCK`` socket bound to ``(3, port)`` (Nitro's ``VSOCK_PROXY_CID``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import select
import socket
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from attestation.sim import PARENT_CID, remove_stale_socket, vsock_socket_path

__all__ = ["RelayConfig", "RelayServer", "bind_vsock_listener", "check_timeouts"]

log = logging.getLogger("vsock_proxy")

#: Bytes moved per recv/send. Large buffers keep syscalls and GIL hand-offs per byte low (the real proxy
#: copies 8192-byte chunks with select()). Measured here, one stream: ~3x socat's default 8 KiB buffer,
#: on par with ``socat -b 262144``.
RELAY_BUFFER_BYTES = 256 * 1024
#: Kernel socket buffer size requested on both legs of a connection.
SOCKET_BUFFER_BYTES = 1024 * 1024
#: Listen backlog: connections beyond ``max_connections`` wait here, as with the real proxy's pool.
LISTEN_BACKLOG = 128
#: Upper bound for ``max_connections`` (each connection costs two threads).
MAX_CONNECTIONS_LIMIT = 1024
#: Timeout for the TCP connect to the remote.
CONNECT_TIMEOUT_SECONDS = 10.0
#: Upper bounds for the idle timeout and the shutdown grace (finite: ``settimeout`` refuses NaN and
#: values past its range, and an infinite grace would never end a shutdown).
MAX_IDLE_TIMEOUT_SECONDS = 7 * 24 * 3600.0
MAX_GRACE_SECONDS = 3600.0
#: poll() events a pump waits for.
_READABLE = select.POLLIN | select.POLLPRI
_WRITABLE = select.POLLOUT


def check_timeouts(idle_timeout: float, grace: float) -> None:
    """Raise ValueError unless ``0 < idle_timeout <= MAX`` and ``0 <= grace <= MAX`` (finite: no NaN/inf)."""
    if not (math.isfinite(idle_timeout) and 0 < idle_timeout <= MAX_IDLE_TIMEOUT_SECONDS):
        raise ValueError(
            f"Idle timeout must be a number of seconds in (0, {MAX_IDLE_TIMEOUT_SECONDS:.0f}], "
            f"got {idle_timeout!r}"
        )
    if not (math.isfinite(grace) and 0 <= grace <= MAX_GRACE_SECONDS):
        raise ValueError(
            f"Shutdown timeout must be a number of seconds in [0, {MAX_GRACE_SECONDS:.0f}], got {grace!r}"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayConfig:
    """What the relay serves; validated at construction."""

    remote: tuple[str, int]
    max_connections: int = 4
    idle_timeout: float = 300.0
    grace: float = 10.0
    family: int = socket.AF_UNSPEC

    def __post_init__(self) -> None:
        if not 1 <= self.max_connections <= MAX_CONNECTIONS_LIMIT:
            raise ValueError(f"the connection bound must be in 1..{MAX_CONNECTIONS_LIMIT}")
        check_timeouts(self.idle_timeout, self.grace)


def _simulated_listener(port: int) -> socket.socket:
    path = vsock_socket_path(PARENT_CID, port)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_socket(path, holder="another vsock-proxy")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(path))
        listener.listen(LISTEN_BACKLOG)
    except BaseException:
        listener.close()
        raise
    return listener


def bind_vsock_listener(port: int, *, simulated: bool) -> socket.socket:
    """A listening socket for vsock ``(3, port)``: the simulated Unix socket, or real ``AF_VSOCK``."""
    if simulated:
        return _simulated_listener(port)
    listener = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    try:
        listener.bind((PARENT_CID, port))
        listener.listen(LISTEN_BACKLOG)
    except BaseException:
        listener.close()
        raise
    return listener


@dataclass(slots=True)
class _Connection:
    """One relayed connection's sockets and counters (mutable: two pump threads update it)."""

    ident: int
    peer: str
    client: socket.socket
    remote: socket.socket
    started: float
    last_activity: float
    up_bytes: int = 0
    down_bytes: int = 0
    closed: threading.Event = field(default_factory=threading.Event)

    def close_both(self) -> None:
        """Wake both pumps: shut down both sockets in both directions (closing happens on exit)."""
        self.closed.set()
        for sock in (self.client, self.remote):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class RelayServer:
    """Accepts on ``listener`` and relays each connection to ``config.remote`` until :meth:`shutdown`."""

    def __init__(
        self, listener: socket.socket, config: RelayConfig, *, socket_file: Path | None = None
    ) -> None:
        self._listener = listener
        self._socket_file = socket_file
        self._config = config
        self._slots = threading.BoundedSemaphore(config.max_connections)
        self._live: dict[int, _Connection] = {}
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._wake_r, self._wake_w = os.pipe()
        self._stopping = threading.Event()
        self._next_id = 0

    # -- accept loop ---------------------------------------------------------------------------------------

    def serve_forever(self) -> None:
        """Accept and relay until :meth:`shutdown` is called (from a signal handler or another thread)."""
        try:
            while not self._stopping.is_set():
                # Take a slot before accepting, so connections over the bound wait in the backlog.
                while not self._slots.acquire(timeout=0.5):
                    if self._stopping.is_set():
                        return
                if not self._wait_readable():
                    self._slots.release()
                    return
                try:
                    client, address = self._listener.accept()
                except OSError:
                    self._slots.release()
                    if self._stopping.is_set():
                        return
                    continue
                self._start(client, address)
        finally:
            self._drain()

    def _wait_readable(self) -> bool:
        while True:
            listen_fd = self._listener.fileno()
            ready, _, _ = select.select([listen_fd, self._wake_r], [], [])
            if self._wake_r in ready or self._stopping.is_set():
                return False
            if listen_fd in ready:
                return True

    def shutdown(self) -> None:
        """Stop accepting now; live connections get ``config.grace`` seconds before being closed.

        Safe to call from a signal handler (it only sets a flag and writes one byte to a pipe).
        """
        self._stopping.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"\0")

    def _drain(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.close()
        if self._socket_file is not None:
            remove_socket_file(self._socket_file)  # new connections now fail at once
        deadline = time.monotonic() + self._config.grace
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            leftovers = list(self._live.values())
        for conn in leftovers:
            conn.close_both()
        for thread in list(self._threads):
            thread.join()
        os.close(self._wake_r)
        os.close(self._wake_w)

    @property
    def live_connections(self) -> int:
        """How many connections are being relayed now."""
        with self._lock:
            return len(self._live)

    # -- one connection ------------------------------------------------------------------------------------

    def _start(self, client: socket.socket, address: object) -> None:
        self._next_id += 1
        ident = self._next_id
        starter = threading.Thread(
            target=self._run, args=(ident, client, address), name=f"relay-{ident}", daemon=True
        )
        self._threads.add(starter)
        starter.start()

    def _run(self, ident: int, client: socket.socket, address: object) -> None:
        peer = f"vsock{address}" if isinstance(address, tuple) else "vsock(simulated)"
        try:
            remote = self._connect_remote()
        except OSError as exc:
            log.warning(
                "connection %d from %s: could not connect to %s: %s", ident, peer, self._remote(), exc
            )
            client.close()
            self._slots.release()
            self._threads.discard(threading.current_thread())
            return
        now = time.monotonic()
        conn = _Connection(
            ident=ident, peer=peer, client=client, remote=remote, started=now, last_activity=now
        )
        with self._lock:
            self._live[ident] = conn
        for sock in (client, remote):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER_BYTES)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER_BYTES)
            sock.setblocking(False)
        down = threading.Thread(
            target=self._pump, args=(conn, False), name=f"relay-{ident}-down", daemon=True
        )
        down.start()
        try:
            self._pump(conn, True)
            down.join()
        finally:
            with self._lock:
                del self._live[ident]
            client.close()
            remote.close()
            self._slots.release()
            log.info(
                "connection %d from %s to %s closed: %d bytes to remote, %d bytes from remote, %.3f s",
                ident,
                peer,
                self._remote(),
                conn.up_bytes,
                conn.down_bytes,
                time.monotonic() - conn.started,
            )
            self._threads.discard(threading.current_thread())

    def _remote(self) -> str:
        host, port = self._config.remote
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def _connect_remote(self) -> socket.socket:
        host, port = self._config.remote
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(CONNECT_TIMEOUT_SECONDS)
            sock.connect((host, port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except BaseException:
            sock.close()
            raise
        return sock

    def _pump(self, conn: _Connection, upstream: bool) -> None:
        """Copy one direction until EOF, error, idle timeout or close; count bytes, never look at them."""
        src, dst = (conn.client, conn.remote) if upstream else (conn.remote, conn.client)
        buffer = bytearray(RELAY_BUFFER_BYTES)
        view = memoryview(buffer)
        idle = self._config.idle_timeout
        wait_ms = max(1, math.ceil(idle * 1000))
        readable = select.poll()
        readable.register(src.fileno(), _READABLE)
        writable = select.poll()
        writable.register(dst.fileno(), _WRITABLE)
        total = 0
        try:
            while True:
                if not readable.poll(wait_ms):
                    if time.monotonic() - conn.last_activity >= idle:
                        log.info("connection %d idle for %.0f s, closing", conn.ident, idle)
                        conn.close_both()
                        return
                    continue
                try:
                    n = src.recv_into(buffer)
                except BlockingIOError:
                    continue  # woken with nothing to read after all
                if n == 0:
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                    return
                sent = 0
                while sent < n:
                    try:
                        sent += dst.send(view[sent:n])
                    except BlockingIOError:
                        if not writable.poll(wait_ms):
                            raise TimeoutError(
                                "the receiving side took nothing for the idle timeout"
                            ) from None
                total += n
                conn.last_activity = time.monotonic()
        except OSError:
            conn.close_both()
        finally:
            if upstream:
                conn.up_bytes = total
            else:
                conn.down_bytes = total


def remove_socket_file(path: Path) -> None:
    """Unlink a simulated vsock socket file if it is still a socket (best effort, at shutdown)."""
    with contextlib.suppress(OSError):
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()
