"""``vsock-proxy``: the parent instance's vsock-to-TCP relay, command-line compatible with AWS's.

    vsock-proxy [-4|-6] [-w N] [--config FILE] LOCAL_PORT REMOTE_ADDR REMOTE_PORT

Flags, defaults and messages follow aws-nitro-enclaves-cli ``vsock_proxy/src/main.rs`` (aws-facts §5): the
allowlist is checked once at start and the proxy exits with "Error at checking the allowlist: ..." when the
destination is not allowed; errors print as ``Error: "<message>"`` with exit status 1, as a Rust ``main``
returning ``Err(String)`` does. ``-w`` is the real proxy's "maximum number of simultaneous connections".

Beyond the real one: ``--idle-timeout`` closes silent connections, SIGTERM/SIGINT stop accepting and give
live connections ``--shutdown-timeout`` seconds to finish, and each connection ends with one log line of
byte counts (never payload). Both timeouts must be finite and within named bounds (NaN and inf are refused
at start with one line); at most ``MAX_RESOLVED_ENTRIES`` allowlist entries are resolved per start.

Simulation (``attestation.sim.is_simulated``, the rule every tool shares): the proxy listens on the Unix
socket that stands for vsock ``(3, LOCAL_PORT)`` (``attestation.sim.vsock_socket_path``); otherwise on a real
``AF_VSOCK`` socket.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from attestation.errors import SimulationError
from attestation.sim import PARENT_CID, is_simulated, vsock_socket_path
from host._allowlist import AllowlistError, check_allowlist
from host._relay import RelayConfig, RelayServer, bind_vsock_listener, check_timeouts

__all__ = ["main"]

log = logging.getLogger("vsock_proxy")

DEFAULT_CONFIG = "/etc/nitro_enclaves/vsock-proxy.yaml"
DEFAULT_WORKERS = "4"
#: Default idle timeout (seconds) for a connection with no bytes either way.
DEFAULT_IDLE_TIMEOUT = 300.0
#: Default grace period (seconds) for live connections after SIGTERM.
DEFAULT_SHUTDOWN_TIMEOUT = 10.0
#: vsock ports are u32; ports 0..3 are not usable for a proxy listener.
MAX_LOCAL_PORT = 0xFFFF_FFFF
MAX_REMOTE_PORT = 0xFFFF


class _FatalError(Exception):
    """A startup error; printed as the real proxy prints its ``Err(String)``."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vsock-proxy", description="Vsock-TCP proxy")
    family = parser.add_mutually_exclusive_group()
    family.add_argument(
        "-4", "--ipv4", action="store_true", help="Force the proxy to use IPv4 addresses only."
    )
    family.add_argument(
        "-6", "--ipv6", action="store_true", help="Force the proxy to use IPv6 addresses only."
    )
    parser.add_argument(
        "-w",
        "--num_workers",
        default=DEFAULT_WORKERS,
        help="Set the maximum number of simultaneous connections supported.",
    )
    parser.add_argument("local_port", help="Local Vsock port to listen for incoming connections.")
    parser.add_argument("remote_addr", help="Address of the server to be proxyed.")
    parser.add_argument("remote_port", help="Remote TCP port of the server to be proxyed.")
    parser.add_argument(
        "--config", default=DEFAULT_CONFIG, help="YAML file containing the services that can be forwarded."
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=DEFAULT_IDLE_TIMEOUT,
        help="Close a connection idle this many seconds (not in the real proxy).",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=DEFAULT_SHUTDOWN_TIMEOUT,
        help="Seconds live connections get after SIGTERM (not in the real proxy).",
    )
    return parser


def _parse_int(text: str, limit: int, message: str) -> int:
    # Rust's str::parse::<uN> accepts an optional '+' and ASCII digits only (leading zeros too). The length
    # check comes first: int() refuses strings of over 4300 digits with a ValueError.
    digits = text[1:] if text.startswith("+") else text
    if not digits.isascii() or not digits.isdigit():
        raise _FatalError(message)
    significant = digits.lstrip("0") or "0"
    if len(significant) > len(str(limit)) or int(significant) > limit:
        raise _FatalError(message)
    return int(significant)


def _setup_logging() -> None:
    # env_logger's look; RUST_LOG picks the level as with the real proxy (default info here, since the
    # per-connection line is part of our contract).
    level = os.environ.get("RUST_LOG", "info").upper()
    handler = logging.StreamHandler(sys.stderr)
    formatter = logging.Formatter(
        "[%(asctime)s %(levelname)-5s vsock_proxy] %(message)s", "%Y-%m-%dT%H:%M:%SZ"
    )
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    log.handlers[:] = [handler]
    log.setLevel(level if level in ("ERROR", "WARN", "WARNING", "INFO", "DEBUG") else "INFO")
    log.propagate = False


def _run(args: argparse.Namespace) -> int:
    local_port = _parse_int(args.local_port, MAX_LOCAL_PORT, "Local port is not valid")
    remote_port = _parse_int(args.remote_port, MAX_REMOTE_PORT, "Remote port is not valid")
    workers = _parse_int(args.num_workers, sys.maxsize, "Number of workers is not valid")
    if workers == 0:
        raise _FatalError("Number of workers must not be 0")
    family = socket.AF_INET if args.ipv4 else socket.AF_INET6 if args.ipv6 else socket.AF_UNSPEC
    try:
        check_timeouts(args.idle_timeout, args.shutdown_timeout)  # before any lookup: NaN/inf are refused
    except ValueError as exc:
        raise _FatalError(str(exc)) from None

    log.info("Checking allowlist configuration")
    try:
        remote_ip = check_allowlist(args.remote_addr, remote_port, Path(args.config), family=family)
    except AllowlistError as exc:
        raise _FatalError(f"Error at checking the allowlist: {exc}") from None
    log.info("Using IP %r for the given server %r", remote_ip, args.remote_addr)

    try:
        config = RelayConfig(
            remote=(remote_ip, remote_port),
            max_connections=workers,
            idle_timeout=args.idle_timeout,
            grace=args.shutdown_timeout,
        )
    except ValueError as exc:
        raise _FatalError(f"Could not create proxy: {exc}") from None

    simulated = is_simulated()
    address = f"VsockAddr {{ cid: {PARENT_CID}, port: {local_port} }}"
    try:
        listener = bind_vsock_listener(local_port, simulated=simulated)
    except (OSError, SimulationError) as exc:
        raise _FatalError(f"Could not listen for connections: Could not bind to {address} ({exc})") from None
    where = vsock_socket_path(PARENT_CID, local_port) if simulated else None
    log.info("Bound to %s%s", address, f" (simulated at {where})" if where else "")

    server = RelayServer(listener, config, socket_file=where)

    def stop(signum: int, _frame: FrameType | None) -> None:
        server.shutdown()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("Proxy is now in listening state")
    server.serve_forever()
    # Shutdown is done: a late SIGTERM must not turn a clean exit into a signal death.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    log.info("Proxy stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``vsock-proxy``; returns the exit status."""
    args = _parser().parse_args(argv)
    _setup_logging()
    try:
        return _run(args)
    except _FatalError as exc:
        # Rust prints `Error: {:?}` of the String: quoted, with escapes.
        print(f'Error: "{exc}"', file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
