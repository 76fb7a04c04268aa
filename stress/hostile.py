"""Hostile enclave clients: they connect to the parent's vsock port as the real clients do, and misbehave.

- **idle**: connects and sends nothing. kms-sim closes it when its request deadline passes (no answer,
  no audit record: nothing was asked).
- **drip**: sends a request head one byte every ``interval`` seconds (the target header first, then a
  header field that never ends). kms-sim closes it at its deadline and audits the request it cut
  (RequestTimeoutException, AWS's Common Errors name).
- **flood**: announces and sends a body of ``size`` bytes (100 MB in ``make stress``). kms-sim reads one
  byte past its body bound, answers ValidationException and closes; the sender stops at the first send
  that fails and reads the answer.

Each runs in a thread of the orchestrator, talks only to a Unix socket, and is bounded in time
(``deadline``: the server's deadline plus :data:`GRACE_S`) and in what it reads (:data:`MAX_ANSWER_BYTES`).
The outcome is one line; ``ok`` says whether the server did what the rule above says.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["GRACE_S", "Hostile", "HostileResult", "drip", "flood", "idle"]

#: Time past the server's request deadline a hostile connection may take to be closed.
GRACE_S = 10.0
#: Bound on the answer bytes a hostile client reads.
MAX_ANSWER_BYTES = 64 * 1024
#: One send of the flood.
FLOOD_CHUNK = 1024 * 1024
#: The head the drip sends one byte at a time: a target (so the cut request names its operation), then a
#: field that never ends.
DRIP_HEAD = (
    b"POST / HTTP/1.1\r\nX-Amz-Target: TrentService.GenerateRandom\r\n"
    b"Host: kms.us-east-1.amazonaws.com\r\nX-Slow: " + b"s" * 4096
)

#: The flood's head: a GenerateRandom announcing ``size`` bytes of body.
FLOOD_HEAD = (
    b"POST / HTTP/1.1\r\nHost: kms.us-east-1.amazonaws.com\r\n"
    b"X-Amz-Target: TrentService.GenerateRandom\r\n"
    b"Content-Type: application/x-amz-json-1.1\r\n"
    b"Content-Length: %d\r\n\r\n"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class HostileResult:
    name: str
    ok: bool
    outcome: str
    seconds: float
    sent: int


def _connect(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(path))
    return sock


def _closed(sock: socket.socket, wait: float) -> tuple[bool, bytes]:
    """Wait up to ``wait`` for the peer to close; (closed, what it sent first)."""
    sock.settimeout(max(wait, 0.001))
    data = b""
    try:
        while len(data) <= MAX_ANSWER_BYTES:
            piece = sock.recv(MAX_ANSWER_BYTES)
            if not piece:
                return True, data
            data += piece
    except TimeoutError:
        return False, data
    except OSError:
        return True, data
    return False, data


def idle(path: Path, *, deadline: float) -> HostileResult:
    start = time.monotonic()
    with _connect(path) as sock:
        closed, answer = _closed(sock, deadline)
    seconds = time.monotonic() - start
    ok = closed and not answer
    outcome = f"closed by the server after {seconds:.1f} s, no answer" if ok else _unexpected(closed, answer)
    return HostileResult(name="idle", ok=ok, outcome=outcome, seconds=seconds, sent=0)


def drip(path: Path, *, deadline: float, interval: float) -> HostileResult:
    start = time.monotonic()
    sent = 0
    closed, answer = False, b""
    with _connect(path) as sock:
        while sent < len(DRIP_HEAD) and time.monotonic() - start < deadline:
            try:
                sock.sendall(DRIP_HEAD[sent : sent + 1])
            except OSError:
                closed = True
                break
            sent += 1
            closed, answer = _closed(sock, interval)
            if closed:
                break
    seconds = time.monotonic() - start
    ok = closed and not answer
    outcome = (
        f"closed by the server after {seconds:.1f} s and {sent} bytes, no answer"
        if ok
        else _unexpected(closed, answer)
    )
    return HostileResult(name="drip", ok=ok, outcome=outcome, seconds=seconds, sent=sent)


def flood(path: Path, *, size: int, deadline: float) -> HostileResult:
    start = time.monotonic()
    head = FLOOD_HEAD % size
    chunk = b"{" + b" " * (FLOOD_CHUNK - 1)
    sent = 0
    with _connect(path) as sock:
        sock.settimeout(deadline)
        try:
            sock.sendall(head)
            while sent < size and time.monotonic() - start < deadline:
                piece = chunk[: size - sent]
                sock.sendall(piece)
                sent += len(piece)
        except OSError:
            pass  # the server answered and closed: read what it said
        closed, answer = _closed(sock, deadline - (time.monotonic() - start))
    seconds = time.monotonic() - start
    code = _error_code(answer)
    ok = code == "ValidationException"
    outcome = (
        f"answered {code} after {sent / 1e6:.1f} of {size / 1e6:.0f} MB, connection closed"
        if ok
        else _unexpected(closed, answer)
    )
    return HostileResult(name="flood", ok=ok, outcome=outcome, seconds=seconds, sent=sent)


def _error_code(answer: bytes) -> str | None:
    head, _, body = answer.partition(b"\r\n\r\n")
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    code = parsed.get("__type") if isinstance(parsed, dict) else None
    return code if isinstance(code, str) and head.startswith(b"HTTP/1.1 4") else None


def _unexpected(closed: bool, answer: bytes) -> str:
    first = answer.split(b"\r\n", 1)[0][:80].decode("latin-1")
    return (
        f"{'closed' if closed else 'still open'}; answer {first!r}"
        if answer
        else ("closed with no answer" if closed else "still open at the deadline")
    )


class Hostile:
    """The three hostile clients, each in a thread, started together; :meth:`join` waits (bounded)."""

    def __init__(self, path: Path, *, request_timeout: float, drip_interval: float, flood_bytes: int) -> None:
        deadline = request_timeout + GRACE_S
        self.deadline = deadline
        self.results: list[HostileResult] = []
        self._lock = threading.Lock()
        jobs: dict[str, Callable[[], HostileResult]] = {
            "idle": lambda: idle(path, deadline=deadline),
            "drip": lambda: drip(path, deadline=deadline, interval=drip_interval),
            "flood": lambda: flood(path, size=flood_bytes, deadline=deadline),
        }
        self._threads = [
            threading.Thread(target=self._run, args=(name, job), name=f"hostile-{name}", daemon=True)
            for name, job in jobs.items()
        ]
        self.started = time.monotonic()
        for thread in self._threads:
            thread.start()

    def _run(self, name: str, job: Callable[[], HostileResult]) -> None:
        started = time.monotonic()
        try:
            result = job()
        except OSError as error:
            result = HostileResult(
                name=name, ok=False, outcome=f"failed: {error}", seconds=time.monotonic() - started, sent=0
            )
        with self._lock:
            self.results.append(result)

    def alive(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def join(self) -> list[HostileResult]:
        end = self.started + self.deadline + GRACE_S
        for thread in self._threads:
            thread.join(max(0.0, end - time.monotonic()))
        with self._lock:
            done = {r.name for r in self.results}
            missing = [
                t.name.removeprefix("hostile-")
                for t in self._threads
                if t.name.removeprefix("hostile-") not in done
            ]
            for name in missing:
                self.results.append(
                    HostileResult(
                        name=name, ok=False, outcome="still running past its bound", seconds=0, sent=0
                    )
                )
            return sorted(self.results, key=lambda r: r.name)
