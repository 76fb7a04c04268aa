"""Two cheap primitives the SDK's I/O shells share: a plain socket's waits, and a fork generation.

:class:`PlainSocketIO` waits the way that costs least here (everything may share one core, where every
wake-up is two context switches and cold caches):

- Waits are ``poll()`` for the one event wanted. A thread blocked in ``recv`` on a Unix socket is also
  woken, for nothing, each time the peer reads what this socket sent (``unix_write_space`` wakes every
  sleeper on the socket; ``unix_stream_read_generic`` finds no data and sleeps again): measured, one
  spurious wake-up per message. A ``poll`` for POLLIN is not woken by those POLLOUT events.
- A send is tried at once (a request fits the socket buffer: one system call); only a full buffer waits
  for POLLOUT. Python's ``settimeout`` would ``poll`` before every send too. :meth:`PlainSocketIO.send` is
  that one try on its own: an ``OSError`` from it means the kernel took no byte of the data (a stream
  ``send`` that took some returns their count and reports the error on the next call), which is how a
  caller proves a request was not sent. Sends pass ``MSG_NOSIGNAL``: a closed peer is an ``EPIPE`` error,
  never a SIGPIPE, whatever the application did with that signal.
- A read waits first: what comes next needs the peer's work. (Trying first was measured on the NSM
  leg: the answer was already there only 31% of the time, so it cost more system calls than it saved.)
- A wait longer than the timeout raises :class:`TimeoutError`, as ``settimeout`` does; the bound applies
  per wait, as it does per call with ``settimeout``. A deadline (:meth:`PlainSocketIO.set_deadline`, a
  ``time.monotonic()`` value) bounds every wait as well, so a peer that sends a byte just inside each
  timeout still cannot stretch a whole exchange past it; past the deadline every wait raises at once.

Only for plain sockets (``AF_UNIX``, ``AF_VSOCK``, TCP): an ``ssl.SSLSocket`` keeps Python's own timeouts.

Fork generation: a connection or worker made before ``fork()`` belongs to the parent; the child must not
use it. :func:`fork_generation` changes in every child (``os.register_at_fork``), so holders compare one
integer per call instead of asking the kernel for the pid (``getpid`` is a system call).
"""

from __future__ import annotations

import math
import os
import select
import socket
import time

__all__ = ["PlainSocketIO", "fork_generation"]

_READABLE = select.POLLIN | select.POLLPRI
_WRITABLE = select.POLLOUT

#: One cell, bumped in every forked child.
_generation = [0]


def _forked() -> None:
    _generation[0] += 1


os.register_at_fork(after_in_child=_forked)


def fork_generation() -> int:
    """A number that differs in a forked child from its value in the parent before the fork."""
    return _generation[0]


class PlainSocketIO:
    """Sends and receives on a connected plain socket, made non-blocking; waits as the module says."""

    __slots__ = ("_deadline", "_fd", "_poll", "_sock", "_timeout_ms")

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        if not (math.isfinite(timeout) and timeout > 0):
            raise ValueError("a socket timeout must be a positive number of seconds")
        sock.setblocking(False)
        self._sock = sock
        self._fd = sock.fileno()
        self._timeout_ms = max(1, math.ceil(timeout * 1000))
        self._poll = select.poll()
        self._poll.register(self._fd, _READABLE)
        self._deadline: float | None = None

    def set_deadline(self, deadline: float | None) -> None:
        """Bound every later wait by ``deadline`` too (a ``time.monotonic()`` value), or by none."""
        self._deadline = deadline

    def _wait(self, events: int) -> None:
        timeout_ms = self._timeout_ms
        if self._deadline is not None:
            left_ms = math.ceil((self._deadline - time.monotonic()) * 1000)
            if left_ms <= 0:
                raise TimeoutError("timed out")
            timeout_ms = min(timeout_ms, left_ms)
        if events != _READABLE:
            self._poll.modify(self._fd, events)
        try:
            if not self._poll.poll(timeout_ms):
                raise TimeoutError("timed out")
        finally:
            if events != _READABLE:
                self._poll.modify(self._fd, _READABLE)

    def send(self, data: bytes) -> int:
        """One send, without waiting: the number of bytes the kernel took (0 when the buffer is full).

        An ``OSError`` (``BrokenPipeError``, ``ConnectionResetError``, ...) means none of ``data`` was taken.
        """
        try:
            return self._sock.send(data, socket.MSG_NOSIGNAL)
        except BlockingIOError:
            return 0

    def sendall(self, data: bytes) -> None:
        """Send all of ``data``: at once when the socket buffer has room, else waiting for room."""
        sent = self.send(data)
        if sent == len(data):
            return
        view = memoryview(data)
        while sent < len(data):
            self._wait(_WRITABLE)
            try:
                sent += self._sock.send(view[sent:], socket.MSG_NOSIGNAL)
            except BlockingIOError:
                continue

    def recv_into(self, buffer: bytearray | memoryview) -> int:
        """Wait until ``buffer`` can be filled, then receive into it (0 at end of stream)."""
        self._wait(_READABLE)
        while True:
            try:
                return self._sock.recv_into(buffer)
            except BlockingIOError:
                self._wait(_READABLE)
