"""The topology floor: the attested call's four processes doing only its four public-key operations and its
socket I/O, with nothing else (no HTTP, SigV4, JSON, CBOR, CMS, policy or audit).

``python -m bench.chain ROLE`` runs one stand-in server; the client side is ``bench.worker chain``:

- ``nsm``: Unix socket; per request reads an NSM-sized request, signs (ECDSA P-384), answers document-sized;
- ``kms``: TCP on 127.0.0.1 (prints its port); reads a request-sized message, verifies (ECDSA P-384) and
  encrypts (RSA-2048 OAEP), answers response-sized;
- ``proxy``: Unix socket relayed to the ``kms`` port by one poll loop (socat's shape);
- client: NSM round trip, KMS round trip through the proxy, then RSA-2048 OAEP decrypt.

Message sizes are those of the real N=32 call (strace of the real processes). With every process pinned to
the one core, one call's time here is the least the real topology can cost: the crypto floor plus the
context switches, the kernel's socket paths and the caches each process finds cold after the other three.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from bench.floor import operations
from bench.harness import Pinning
from nitro_sim.procs import OutputLine, Process, ProcessGroup

#: Bytes on the wire per N=32 attested call (strace of nsm-sim and vsock-proxy, 2026-11-29).
NSM_REQUEST_BYTES = 344
NSM_RESPONSE_BYTES = 4_749
KMS_REQUEST_BYTES = 6_869
KMS_RESPONSE_BYTES = 864
#: recv() buffer of the relay, as vsock-proxy's.
RELAY_CHUNK = 262_144


def read_exactly(sock: socket.socket, size: int, buffer: bytearray) -> None:
    view = memoryview(buffer)[:size]
    got = 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            raise EOFError
        got += n


def _serve(listener: socket.socket, size_in: int, answer: bytes, work: Callable[[], object]) -> NoReturn:
    buffer = bytearray(size_in)
    while True:
        conn, _ = listener.accept()
        with conn:
            if conn.family == socket.AF_INET:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                while True:
                    read_exactly(conn, size_in, buffer)
                    work()
                    conn.sendall(answer)
            except (EOFError, ConnectionError):
                continue


def _pump(poller: select.poll, peer: dict[int, tuple[socket.socket, socket.socket]]) -> None:
    """Relay until either side closes."""
    while True:
        for fd, _ in poller.poll():
            src, dst = peer[fd]
            data = src.recv(RELAY_CHUNK)
            if not data:
                return
            dst.sendall(data)


def _relay(listener: socket.socket, port: int) -> NoReturn:
    while True:
        front, _ = listener.accept()
        back = socket.create_connection(("127.0.0.1", port))
        back.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        poller = select.poll()
        for s in (front, back):
            poller.register(s, select.POLLIN)
        with front, back, contextlib.suppress(ConnectionError):
            _pump(poller, {front.fileno(): (front, back), back.fileno(): (back, front)})


def _unix_listener(path: Path) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    return listener


def _run(args: argparse.Namespace) -> NoReturn:
    """Serve as the chosen stand-in until stopped (each server loops for ever)."""
    if args.role == "kms":
        ops = operations()
        listener = socket.create_server(("127.0.0.1", 0))
        print(listener.getsockname()[1], flush=True)
        answer = os.urandom(KMS_RESPONSE_BYTES)
        _serve(listener, KMS_REQUEST_BYTES, answer, lambda: (ops.verify(), ops.encrypt()))
    listener = _unix_listener(args.socket)
    print("ready", flush=True)
    if args.role == "nsm":
        _serve(listener, NSM_REQUEST_BYTES, os.urandom(NSM_RESPONSE_BYTES), operations().sign)
    _relay(listener, args.kms_port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chain")
    parser.add_argument("role", choices=("nsm", "kms", "proxy"))
    parser.add_argument("--socket", type=Path, help="nsm, proxy: the Unix socket to listen on")
    parser.add_argument("--kms-port", type=int, help="proxy: the kms stand-in's port on 127.0.0.1")
    args = parser.parse_args(argv)
    if args.role != "kms" and args.socket is None:
        parser.error(f"{args.role} needs --socket")
    if args.role == "proxy" and args.kms_port is None:
        parser.error("proxy needs --kms-port")
    try:
        _run(args)
    except KeyboardInterrupt:
        pass
    except OSError as e:  # one line for the orchestrator's log, never a traceback
        print(f"bench.chain {args.role}: {e}", file=sys.stderr)
        return 1
    return 0


#: What each stand-in is the floor of, by the name the report gives our program.
STANDS_IN_FOR = {"kms stand-in": "kms-sim", "nsm stand-in": "nsm-sim", "proxy stand-in": "vsock-proxy"}


@dataclass(frozen=True, slots=True)
class StandIns:
    worker_args: list[str]  # what ``bench.worker chain`` needs to reach them
    processes: dict[str, Process]  # by the keys of STANDS_IN_FOR


def start(procs: ProcessGroup, pinning: Pinning, home: Path, *, cpu: int | None) -> StandIns:
    """Start the three stand-ins (pinned like the programs they stand in for); each prints one line when
    it listens (the kms one, its port)."""
    nsm, proxy = home / "chain-nsm.sock", home / "chain-proxy.sock"
    started: dict[str, Process] = {}

    def run(*args: str) -> str:
        cmd = pinning.wrap([sys.executable, "-m", "bench.chain", *args], cpu)
        ready = OutputLine(pattern=r"^(\d+|ready)$")
        proc = started[f"{args[0]} stand-in"] = procs.start(cmd, name=f"chain-{args[0]}", ready=ready)
        return (proc.ready_line or "").strip()

    kms_port = run("kms")
    run("nsm", "--socket", str(nsm))
    run("proxy", "--socket", str(proxy), "--kms-port", kms_port)
    return StandIns(["--nsm-socket", str(nsm), "--proxy-socket", str(proxy)], started)


class ChainClient:
    """The enclave side: one call = NSM round trip, KMS round trip via the proxy, RSA-OAEP decrypt.

    The stand-ins serve one connection at a time, as one sequential client needs: close before reconnecting.
    """

    def __init__(self, nsm: Path, proxy: Path) -> None:
        self._ops = operations()
        self._nsm = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._nsm.connect(str(nsm))
        self._kms = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._kms.connect(str(proxy))
        self._nsm_request = os.urandom(NSM_REQUEST_BYTES)
        self._kms_request = os.urandom(KMS_REQUEST_BYTES)
        self._buffer = bytearray(max(NSM_RESPONSE_BYTES, KMS_RESPONSE_BYTES))

    def __call__(self) -> None:
        self._nsm.sendall(self._nsm_request)
        read_exactly(self._nsm, NSM_RESPONSE_BYTES, self._buffer)
        self._kms.sendall(self._kms_request)
        read_exactly(self._kms, KMS_RESPONSE_BYTES, self._buffer)
        self._ops.decrypt()

    def close(self) -> None:
        self._nsm.close()
        self._kms.close()


if __name__ == "__main__":
    sys.exit(main())
