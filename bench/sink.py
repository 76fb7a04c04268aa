"""The far end of scenario 5: a single-threaded TCP sink/source on 127.0.0.1 (``python -m bench.sink``).

It prints its URL first, then serves until SIGTERM. Each connection starts with one command:

    b"U" + size (8 bytes, big-endian)   upload: read exactly ``size`` bytes, then answer b"K"
    b"D" + size (8 bytes, big-endian)   download: send ``size`` bytes
    b"P"                                ping: answer b"P" (the connection-rate test)

Non-blocking sockets on one ``selectors`` loop, so the sink costs the same few syscalls per connection for
whichever relay sits in front of it, and never a thread per connection.
"""

from __future__ import annotations

import argparse
import selectors
import signal
import socket
import sys
from dataclasses import dataclass, field

#: Read buffer: large reads keep the sink's per-byte cost far below the relay's.
BUFFER_BYTES = 1 << 20
HEADER_BYTES = 9
#: Bound on simultaneously open connections (the benchmark uses one at a time).
MAX_CONNECTIONS = 256


@dataclass(slots=True)
class _Conn:
    sock: socket.socket
    header: bytearray = field(default_factory=bytearray)
    mode: bytes = b""
    left: int = 0


def serve(listener: socket.socket) -> None:
    sel = selectors.DefaultSelector()
    listener.setblocking(False)
    sel.register(listener, selectors.EVENT_READ, None)
    buffer = bytearray(BUFFER_BYTES)
    view = memoryview(buffer)
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    conns: dict[int, _Conn] = {}

    def close(c: _Conn) -> None:
        sel.unregister(c.sock)
        conns.pop(c.sock.fileno(), None)
        c.sock.close()

    while not stopping:
        for key, events in sel.select(timeout=0.5):
            if key.data is None:
                try:
                    sock, _ = listener.accept()
                except BlockingIOError:
                    continue
                if len(conns) >= MAX_CONNECTIONS:
                    sock.close()
                    continue
                sock.setblocking(False)
                conn = _Conn(sock=sock)
                conns[sock.fileno()] = conn
                sel.register(sock, selectors.EVENT_READ, conn)
                continue
            c: _Conn = key.data
            if events & selectors.EVENT_WRITE:
                try:
                    sent = c.sock.send(view[: min(c.left, BUFFER_BYTES)])
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    close(c)
                    continue
                c.left -= sent
                if c.left == 0:
                    sel.modify(c.sock, selectors.EVENT_READ, c)
                continue
            try:
                got = c.sock.recv_into(buffer)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                close(c)
                continue
            if got == 0:
                close(c)
                continue
            if c.mode == b"U":
                c.left -= got
                if c.left <= 0:
                    c.mode = b"-"
                    c.sock.send(b"K")
                continue
            if c.mode:
                continue  # bytes after the exchange: ignore until the peer closes
            if buffer[0:1] == b"P" and not c.header:
                c.mode = b"-"
                c.sock.send(b"P")
                continue
            c.header += view[:got]
            if len(c.header) < HEADER_BYTES:
                continue
            mode, size = bytes(c.header[:1]), int.from_bytes(c.header[1:HEADER_BYTES], "big")
            extra = len(c.header) - HEADER_BYTES
            if mode == b"U":
                c.mode, c.left = b"U", size - extra
                if c.left <= 0:
                    c.mode = b"-"
                    c.sock.send(b"K")
            elif mode == b"D":
                c.mode, c.left = b"D", size
                sel.modify(c.sock, selectors.EVENT_WRITE, c)
            else:
                close(c)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sink")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(128)
    print(f"tcp://127.0.0.1:{listener.getsockname()[1]}", flush=True)
    serve(listener)
    listener.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
