"""The host's view of vsock traffic: ``python -m stress.tap --listen SOCK --upstream SOCK --capture FILE``.

A test instrument on the parent instance, in front of vsock-proxy: it listens on the Unix socket that stands
for vsock ``(3, 8000)`` (where the enclave clients connect) and relays each connection to vsock-proxy's own
socket, keeping a copy of every byte both ways in ``FILE`` (the proxy capture the leak scan reads). It sees
exactly what vsock-proxy relays, and it is in the host's position, so it can also act as a hostile host:

- it knows each connection's client by its process ID (``SO_PEERCRED`` on the Unix socket, unix(7));
- it reads each KMS answer (an HTTP/1.1 response with a Content-Length) and remembers, per client, the
  request ID and ``CiphertextForRecipient`` of the last one;
- armed with ``swap PID BLOB``, it replaces the ``CiphertextForRecipient`` of that client's next answer by
  ``BLOB`` (another client's, of the same length, so the answer stays well-formed): the client must fail
  with the one DecryptionError.

Rules: answers are forwarded whole, in order (a response split across reads is held until complete); a
stream that is not such HTTP is relayed untouched from then on. When either side ends or fails, both are
closed at once (the clients never half-close), so a proxy or kms-sim crash reaches the client as an EOF.
Bounds: :data:`MAX_CONNECTIONS` at once (more are closed), :data:`MAX_CAPTURE_BYTES` captured in all (past
it the capture is incomplete, and ``stats`` says so: the run then fails, a scan of part of it proves
nothing), :data:`MAX_HEAD_BYTES` per response head.

Control (stdin, one command a line, run on the relay's event loop; stdout, one JSON object a line):
``last PID`` -> ``{"id": ..., "blob": ...}`` (or nulls); ``swap PID BLOB`` -> ``{"armed": true}``, later
``{"swapped": REQUEST_ID, "pid": PID}``; ``stats`` -> ``{"connections": N, "relayed": BYTES, "captured":
BYTES}`` (the capture flushed); ``quit``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import socket
import struct
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

#: Connections relayed at once (16 clients, the hostile ones, reconnects: far below).
MAX_CONNECTIONS = 256
#: Bytes captured in all (``make stress`` relays ~170 MB: 8,000 calls of ~8 KB and the 100 MB upload).
MAX_CAPTURE_BYTES = 4 * 1024 * 1024 * 1024
#: Longest response head read before the stream is relayed untouched.
MAX_HEAD_BYTES = 64 * 1024
#: One read from either side.
READ_BYTES = 256 * 1024

_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d{1,9})[ \t]*\r\n", re.IGNORECASE)
_REQUEST_ID = re.compile(rb"\r\nx-amzn-requestid:[ \t]*([0-9A-Za-z-]{1,64})[ \t]*\r\n", re.IGNORECASE)
_BLOB = re.compile(rb'"CiphertextForRecipient"\s*:\s*"([A-Za-z0-9+/=]+)"')


@dataclass(slots=True)
class _Conn:
    pid: int
    pending: bytearray = field(default_factory=bytearray)  # answer bytes not yet forwarded
    raw: bool = False  # not our HTTP: relay untouched


class Tap:
    """The relay's state: capture file, per-client last answers, the armed swap, live connections."""

    def __init__(self, upstream: Path, capture: BinaryIO) -> None:
        self.upstream = upstream
        self.capture = capture
        self.captured = 0
        self.relayed = 0
        self.live = 0
        self.last: dict[int, tuple[str, str]] = {}
        self.armed: tuple[int, bytes] | None = None

    def record(self, data: bytes) -> None:
        self.relayed += len(data)
        if self.captured + len(data) <= MAX_CAPTURE_BYTES:
            self.capture.write(data)
            self.captured += len(data)

    def answers(self, conn: _Conn, data: bytes) -> bytes:
        """What to forward to the client of ``data`` from upstream: whole answers, maybe one swapped."""
        if conn.raw:
            return data
        conn.pending += data
        out = bytearray()
        while True:
            end = conn.pending.find(b"\r\n\r\n")
            if end < 0:
                if len(conn.pending) > MAX_HEAD_BYTES:
                    conn.raw = True
                break
            head = bytes(conn.pending[: end + 2])
            length = _LENGTH.search(head)
            if length is None:
                conn.raw = True
                break
            total = end + 4 + int(length.group(1))
            if len(conn.pending) < total:
                break
            answer = bytes(conn.pending[:total])
            del conn.pending[:total]
            out += self._inspect(conn, head, answer)
        if conn.raw:
            out += conn.pending
            conn.pending.clear()
        return bytes(out)

    def _inspect(self, conn: _Conn, head: bytes, answer: bytes) -> bytes:
        blob = _BLOB.search(answer)
        found = _REQUEST_ID.search(head)
        if blob is None or found is None:
            return answer
        request_id = found.group(1).decode()
        self.last[conn.pid] = (request_id, blob.group(1).decode())
        armed = self.armed
        if armed is None or armed[0] != conn.pid or len(armed[1]) != len(blob.group(1)):
            return answer
        self.armed = None
        _say({"swapped": request_id, "pid": conn.pid})
        return answer[: blob.start(1)] + armed[1] + answer[blob.end(1) :]

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("socket")
        pid = struct.unpack("3i", peer.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
        if self.live >= MAX_CONNECTIONS:
            writer.close()
            return
        self.live += 1
        conn = _Conn(pid=pid)
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(str(self.upstream))
        except OSError:  # vsock-proxy is down: the client sees the connection end, as without the tap
            self.live -= 1
            writer.close()
            return
        try:
            pumps = [
                asyncio.ensure_future(self._pump(reader, up_writer, conn, forward=False)),
                asyncio.ensure_future(self._pump(up_reader, writer, conn, forward=True)),
            ]
            _, rest = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            for task in rest:
                task.cancel()
        finally:
            self.live -= 1
            for end in (writer, up_writer):
                end.close()

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, conn: _Conn, *, forward: bool
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await source.read(READ_BYTES):
                self.record(data)
                out = self.answers(conn, data) if forward else data
                if out:
                    sink.write(out)
                    await sink.drain()
            if forward and conn.pending:  # a last, incomplete answer: pass it on as it is
                sink.write(bytes(conn.pending))
                await sink.drain()

    def command(self, line: str) -> None:
        """One control command (``quit`` is the control thread's)."""
        words = line.split()
        if not words:
            return
        if words[0] == "last" and len(words) == 2 and words[1].isdigit():
            request_id, blob = self.last.get(int(words[1]), (None, None))
            _say({"id": request_id, "blob": blob})
        elif words[0] == "swap" and len(words) == 3 and words[1].isdigit():
            self.armed = (int(words[1]), words[2].encode())
            _say({"armed": True})
        elif words[0] == "stats":
            self.capture.flush()
            _say({"connections": self.live, "relayed": self.relayed, "captured": self.captured})
        else:
            _say({"error": f"unknown command {line.strip()[:80]!r}"})


def _say(obj: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def _run(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    with args.capture.open("ab") as capture:
        tap = Tap(args.upstream, capture)

        def control() -> None:  # commands run on the loop's thread, one at a time
            for line in sys.stdin:
                if line.split()[:1] == ["quit"]:
                    break
                loop.call_soon_threadsafe(tap.command, line)
            loop.call_soon_threadsafe(stop.set)

        args.listen.unlink(missing_ok=True)
        server = await asyncio.start_unix_server(tap.serve, path=str(args.listen), limit=READ_BYTES)
        threading.Thread(target=control, daemon=True).start()
        async with server:
            await stop.wait()
        capture.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stress.tap")
    parser.add_argument("--listen", type=Path, required=True, help="the Unix socket clients connect to")
    parser.add_argument("--upstream", type=Path, required=True, help="vsock-proxy's Unix socket")
    parser.add_argument("--capture", type=Path, required=True, help="file that gets every byte relayed")
    asyncio.run(_run(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
