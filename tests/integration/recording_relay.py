"""A relay in the host's position that keeps every byte it carries, for the integration tests that check the
host never sees a secret (on pythonpath, as tests/packaging/wheel_user.py is)."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ["RecordingRelay"]

#: Bound on waiting for the accepting thread at close.
JOIN_TIMEOUT_S = 10.0
#: Bytes read per recv.
CHUNK_BYTES = 65536


class RecordingRelay:
    """Relays each connection accepted on ``listener`` to a new one from ``connect``, both ways, keeping a
    copy of every byte in ``captured`` (read it under ``lock``)."""

    def __init__(
        self,
        listener: socket.socket,
        connect: Callable[[], socket.socket],
        on_close: Callable[[], None] = lambda: None,
    ) -> None:
        self.listener = listener
        self._connect = connect
        self._on_close = on_close
        self.captured = bytearray()
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.listener.listen(16)
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @classmethod
    def tcp(cls, port: int) -> RecordingRelay:
        """On a free port of 127.0.0.1 (``.port``), to 127.0.0.1:``port``."""
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        return cls(listener, lambda: socket.create_connection(("127.0.0.1", port)))

    @classmethod
    def in_front_of(cls, path: Path) -> RecordingRelay:
        """At the Unix socket ``path``, whose server keeps listening on its inode moved aside; put back by
        :meth:`close`."""
        moved = path.with_name(path.name + ".real")
        os.rename(path, moved)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))

        def connect() -> socket.socket:
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(str(moved))
            except OSError:
                upstream.close()
                raise
            return upstream

        return cls(listener, connect, on_close=lambda: os.replace(moved, path))

    @property
    def port(self) -> int:
        return int(self.listener.getsockname()[1])

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = self._connect()
            except OSError:
                client.close()
                continue
            self.sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(CHUNK_BYTES):
                with self.lock:
                    self.captured += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for s in self.sockets:
            s.close()
        self.thread.join(timeout=JOIN_TIMEOUT_S)
        self._on_close()
