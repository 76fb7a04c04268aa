"""Two cheap primitives the SDK's I/O shells share: kernel socket timeouts and a fork generation.

Kernel timeouts. A Python socket with ``settimeout(t)`` is non-blocking underneath: every ``recv``/``send``
is a ``poll()`` then the call, two system calls. A blocking socket with ``SO_RCVTIMEO``/``SO_SNDTIMEO``
(socket(7)) waits in the call itself, so each I/O is one system call; when the timeout passes, the call
fails with ``EAGAIN``, which Python raises as :class:`BlockingIOError`. The
bound is the same as ``settimeout``'s: per call, not per message. Only for plain sockets (``AF_UNIX``,
``AF_VSOCK``, TCP): an ``ssl.SSLSocket`` needs Python's own timeout handling.

Fork generation. A connection or worker made before ``fork()`` belongs to the parent; the child must not
use it. :func:`fork_generation` changes in every child (``os.register_at_fork``), so holders compare one
integer per call instead of asking the kernel for the pid (``getpid`` is a system call).
"""

from __future__ import annotations

import os
import socket
import struct

__all__ = ["fork_generation", "use_kernel_timeouts"]

#: ``struct timeval`` (two native ``long``: seconds, microseconds), as SO_RCVTIMEO/SO_SNDTIMEO take it.
_TIMEVAL = struct.Struct("@ll")

#: One cell, bumped in every forked child.
_generation = [0]


def _forked() -> None:
    _generation[0] += 1


os.register_at_fork(after_in_child=_forked)


def fork_generation() -> int:
    """A number that differs in a forked child from its value in the parent before the fork."""
    return _generation[0]


def use_kernel_timeouts(sock: socket.socket, seconds: float) -> None:
    """Make ``sock`` blocking, its receives and sends failing with EAGAIN after ``seconds`` (> 0).

    A zero ``timeval`` would mean "wait forever", so the bound is at least one microsecond.
    """
    if not seconds > 0:
        raise ValueError("a socket timeout must be a positive number of seconds")
    whole = int(seconds)
    micros = round((seconds - whole) * 1_000_000)
    if micros >= 1_000_000:
        whole, micros = whole + 1, 0
    if whole == 0:
        micros = max(micros, 1)
    value = _TIMEVAL.pack(whole, micros)
    sock.settimeout(None)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
