"""``kms-sim``: serve the simulated KMS, and operate its simulation.

    kms-sim serve [--listen HOST:PORT | --listen unix:PATH] [--tls] [--trust-root PEM ...]
                  [--policy FILE] [--max-doc-age S] [--workers N] [--max-connections N]
                  [--request-timeout S] [--rate-limit R [--burst B]]
                  [--fault NAME:COUNT ...] [--fault-rate NAME:P ...]
    kms-sim env                      shell exports that point AWS SDKs and the AWS CLI at the home's files
    kms-sim keystore list            the custom key stores, as JSON
    kms-sim keystore set --id ID [--state STATE] [--error-code CODE] [--hsm-timeout on|off]

``serve`` prints the URL it listens on as its first line (the real port when given port 0), then serves
until SIGTERM or SIGINT. The credentials, policy and faults files (``$NITRO_SIM_HOME/kms/faults.json``:
``{"KMSInternalException": 2}`` fails the next two requests) are re-read when they change, looked at
no more than once per ``--reload-interval`` seconds (1; 0 on every request). Errors are one line on
stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import shlex
import signal
import socket
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

from attestation.errors import AttestationError, SimulationError
from attestation.sim import check_unix_path, remove_stale_socket, sim_home
from kms.errors import KMSError
from kms.keystores import CONNECTION_ERROR_CODES, STATES, KeyStores
from kms.operations import list_entry
from kms.reload import MAX_RECHECK_S, RECHECK_S
from kms.server import SETTINGS_ENV, Settings, build_service
from kms.state import DEFAULT_PROFILE, ensure_home
from kms.tls import CA_FILE_NAME, ensure_tls

__all__ = ["main"]

DEFAULT_LISTEN = "127.0.0.1:8080"
#: Listen backlog: enough for a benchmark's bursts of concurrent connections.
LISTEN_BACKLOG = 1024
MAX_WORKERS = 64
#: How long a connection may take to deliver a whole request (head and body) while nothing of it is being
#: answered; then it is closed (``--request-timeout``, enforced by kms/transport.py, which takes its
#: defaults from here: this module must not import uvicorn). uvicorn bounds only the idle time after a
#: response (``timeout_keep_alive``, reset by any byte), so a client sending a header a minute held its
#: connection, and a descriptor, forever.
DEFAULT_REQUEST_TIMEOUT_S = 60.0
MAX_REQUEST_TIMEOUT_S = 3600.0
#: Open connections one server process keeps by default (``--max-connections``); one past it is closed
#: as soon as it is accepted, before any byte is read. Without it, idle or slow clients could hold every
#: descriptor the process may open (then accept fails for everyone until they go).
DEFAULT_MAX_CONNECTIONS = 1000
MAX_MAX_CONNECTIONS = 65536
#: Descriptors a server process needs besides its connections: the listening socket, the key-store
#: database, the audit log, the event loop's own, standard streams.
DESCRIPTOR_RESERVE = 64
#: Largest ``--max-doc-age``: ten years (a timedelta of 1e300 s would not even be constructible).
MAX_DOC_AGE_S = 10 * 365 * 24 * 3600.0


def _bind(listen: str) -> tuple[socket.socket, str]:
    """Bind and listen; return the socket and the URL authority (``host:port`` or ``unix:PATH``)."""
    if listen.startswith("unix:"):
        path = check_unix_path(Path(listen[len("unix:") :]))
        remove_stale_socket(path, holder="another server")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(path))
            sock.listen(LISTEN_BACKLOG)
        except OSError:
            sock.close()
            raise
        return sock, f"unix:{path}"
    host, sep, port_text = listen.rpartition(":")
    # ASCII digits only: str.isdigit also takes "٣", which int() reads as 3 (a port nobody asked for).
    port_ok = port_text.isascii() and port_text.isdigit() and len(port_text) <= 5
    if not sep or not host or not port_ok or int(port_text) > 65535:
        raise ValueError(f"--listen must be HOST:PORT or unix:PATH, got {listen!r}")
    # proto must be IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted sockets only then (base_events.
    # _set_nodelay); with proto 0, Nagle + delayed ACK stall every two-write response by ~40 ms.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, int(port_text)))
        sock.listen(LISTEN_BACKLOG)
    except OSError:
        sock.close()
        raise
    bound_host, bound_port = sock.getsockname()[:2]
    return sock, f"{bound_host}:{bound_port}"


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line (``kms-sim: error: ...``) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"kms-sim: error: {message} (see kms-sim --help)\n")


def _finite(text: str, *, minimum: float, strict: bool, maximum: float | None = None) -> float:
    """A finite number >= (or >, when ``strict``) ``minimum`` and <= ``maximum``; ArgumentTypeError else."""
    bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
    if maximum is not None:
        bound += f" and <= {maximum:g}"
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if (
        not math.isfinite(value)
        or value < minimum
        or (strict and value == minimum)
        or (maximum is not None and value > maximum)
    ):
        raise argparse.ArgumentTypeError(f"must be a finite number {bound}, got {text!r}")
    return value


def _positive(text: str) -> float:
    return _finite(text, minimum=0.0, strict=True)


def _non_negative(text: str) -> float:
    return _finite(text, minimum=0.0, strict=False)


def _request_timeout(text: str) -> float:
    return _finite(text, minimum=0.0, strict=True, maximum=MAX_REQUEST_TIMEOUT_S)


def _max_connections(text: str) -> int:
    # ASCII digits, few of them: int() also reads "٣" and refuses over 4,300 digits with a ValueError.
    digits = text.isascii() and text.isdigit() and len(text) <= 6
    if not digits or not 1 <= int(text) <= MAX_MAX_CONNECTIONS:
        raise argparse.ArgumentTypeError(
            f"must be a whole number 1..{MAX_MAX_CONNECTIONS}, got {text[:32]!r}"
        )
    return int(text)


def _reload_interval(text: str) -> float:
    return _finite(text, minimum=0.0, strict=False, maximum=MAX_RECHECK_S)


def _doc_age(text: str) -> float:
    return _finite(text, minimum=0.0, strict=False, maximum=MAX_DOC_AGE_S)


def _instant(text: str) -> str:
    """An ISO 8601 instant (``Z`` or an offset; none means UTC), kept as its UTC ISO text."""
    try:
        at = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"must be an ISO 8601 time, got {text[:40]!r}") from None
    return at.isoformat()


def _fault_rate(text: str) -> str:
    """``NAME:P`` with P a probability (the name is checked with the others when the service is built)."""
    name, sep, number = text.partition(":")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"must be NAME:P, got {text!r}")
    _finite(number, minimum=0.0, strict=False, maximum=1.0)
    return text


def _faults(values: Sequence[str], convert: type[int] | type[float], flag: str) -> dict[str, int | float]:
    out: dict[str, int | float] = {}
    for value in values:
        name, sep, number = value.partition(":")
        try:
            out[name] = convert(number)
        except ValueError:
            out[name] = -1
        if not sep or out[name] < 0:
            raise ValueError(f"{flag} must be NAME:{convert.__name__.upper()}, got {value!r}")
    return out


#: The Unix socket ``serve`` listens on (removed when it stops), if it listens on one.
_unix_socket: Path | None = None
#: Set once uvicorn has taken the signals over (it gives them back, re-raised, when it has shut down).
_uvicorn_took_over = False


def _exit_cleanly(signum: int, frame: object) -> None:
    """SIGTERM/SIGINT outside uvicorn's own handling: a clean stop with exit status 0.

    Before uvicorn takes the signals over, exit at once (removing a Unix socket we created): a SystemExit
    raised then can land inside a weakref callback or a finalizer during start-up, where it is dropped
    ("Exception ignored") and the server would run on with the signal spent; nothing is served yet, so
    nothing needs a clean-up. After uvicorn has shut down and re-raised the signal, raise SystemExit in
    the normal flow, so ``finally`` blocks and exit hooks (a profiler's, say) still run.
    """
    if _uvicorn_took_over:
        raise SystemExit(0)
    if _unix_socket is not None:
        _unix_socket.unlink(missing_ok=True)
    os._exit(0)


def _descriptors_for(asked: int | None) -> int:
    """The connection bound this process can keep, with the descriptors it needs made available.

    Raises the soft RLIMIT_NOFILE as far as needed (the usual soft limit, 1,024, is just under what the
    default bound needs); workers inherit it. Otherwise accept would fail with EMFILE, logged by the event
    loop on every try, before the bound ever applied. Under a lower hard limit, the default bound shrinks
    to fit it, and an explicit ``--max-connections`` over it is a usage error.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    connections = DEFAULT_MAX_CONNECTIONS if asked is None else asked
    if hard != resource.RLIM_INFINITY and hard < connections + DESCRIPTOR_RESERVE:
        if asked is not None or hard <= DESCRIPTOR_RESERVE:
            raise ValueError(
                f"--max-connections {connections} needs {connections + DESCRIPTOR_RESERVE} file "
                f"descriptors; this process may open {hard}"
            )
        connections = hard - DESCRIPTOR_RESERVE
    needed = connections + DESCRIPTOR_RESERVE
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return connections


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn  # noqa: PLC0415 - only ``serve`` needs the server stack
    from uvicorn.supervisors import Multiprocess  # noqa: PLC0415

    class _Server(uvicorn.Server):
        """uvicorn's server, telling :func:`_exit_cleanly` when it has the signals."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            global _uvicorn_took_over  # noqa: PLW0603 - read by the signal handler
            with super().capture_signals():
                _uvicorn_took_over = True
                yield

    from kms.transport import CoalescingHttpToolsProtocol, ServeConfig  # noqa: PLC0415 - imports uvicorn

    if not 1 <= args.workers <= MAX_WORKERS:
        raise ValueError(f"--workers must be 1..{MAX_WORKERS}")
    settings = Settings(
        sim_home=str(sim_home()),
        policy=str(Path(args.policy).resolve()) if args.policy else None,
        trust_roots=tuple(str(Path(p).resolve()) for p in args.trust_root),
        max_doc_age_s=args.max_doc_age,
        attestation_time=args.attestation_time,
        rate_limit=args.rate_limit,
        burst=args.burst,
        workers=args.workers,
        fault_counts={k: int(v) for k, v in _faults(args.fault, int, "--fault").items()},
        fault_rates={k: float(v) for k, v in _faults(args.fault_rate, float, "--fault-rate").items()},
        reload_interval_s=args.reload_interval,
        supervisor_pid=os.getpid(),
    )
    # Fail here, before binding, on any configuration error. One process serves this very service: built
    # after the URL line, it would read the state files while a client that saw the line rewrites them.
    service = build_service(settings)
    if args.workers > 1:
        service.close()  # each worker builds its own (kms.app)
    ssl_options: dict[str, str] = {}
    scheme = "http"
    if args.tls:
        files = ensure_tls(ensure_home(Path(settings.sim_home)).tls, at=datetime.now(UTC))
        ssl_options = {"ssl_certfile": str(files.cert), "ssl_keyfile": str(files.key)}
        scheme = "https"
    max_connections = _descriptors_for(args.max_connections)
    sock, authority = _bind(args.listen)
    url = authority if authority.startswith("unix:") else f"{scheme}://{authority}"
    global _unix_socket  # noqa: PLW0603 - the one socket this process serves, for the signal handler
    _unix_socket = Path(authority[len("unix:") :]) if authority.startswith("unix:") else None
    # From the moment the URL is out, SIGTERM/SIGINT mean a clean stop with exit status 0: before uvicorn
    # takes the signals over, and after it re-raises the one that stopped it once it has shut down.
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, _exit_cleanly)
    print(url, flush=True)
    os.environ[SETTINGS_ENV] = settings.to_json()
    from kms.app import KMSApp  # noqa: PLC0415 - imports the server stack too

    config = ServeConfig(
        KMSApp(service) if args.workers == 1 else "kms.app:create_app",
        request_timeout_s=args.request_timeout,
        max_connections=max_connections,
        factory=args.workers > 1,
        workers=args.workers,
        # uvicorn's httptools protocol, each response written as one segment (kms/transport.py).
        http=CoalescingHttpToolsProtocol,
        loop="auto",  # uvloop (a dependency: ~50-100 us less CPU per request), else asyncio
        lifespan="off",
        log_level="warning",
        access_log=False,
        server_header=False,
        # The audit log records the peer address; no client may rewrite it with X-Forwarded-For.
        proxy_headers=False,
        timeout_graceful_shutdown=5,
        **ssl_options,
    )
    try:
        if args.workers == 1:
            _Server(config).run(sockets=[sock])
        else:
            global _uvicorn_took_over  # noqa: PLW0603 - the supervisor installs its handlers in run()
            _uvicorn_took_over = True
            Multiprocess(config, sockets=[sock]).run()
    finally:
        if args.workers == 1:
            service.close()
        sock.close()
        if authority.startswith("unix:"):
            Path(authority[len("unix:") :]).unlink(missing_ok=True)
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    # Absolute paths: the exports are used from other directories than a relative NITRO_SIM_HOME's.
    home = ensure_home(sim_home().absolute())
    print(f"export AWS_SHARED_CREDENTIALS_FILE={shlex.quote(str(home.credentials))}")
    print(f"export AWS_CONFIG_FILE={shlex.quote(str(home.config))}")
    print(f"export AWS_PROFILE={shlex.quote(DEFAULT_PROFILE)}")
    ca = home.tls / CA_FILE_NAME
    if ca.exists():  # made by the first `kms-sim serve --tls`
        print(f"export AWS_CA_BUNDLE={shlex.quote(str(ca))}")
    return 0


def cmd_keystore(args: argparse.Namespace) -> int:
    home = ensure_home(sim_home())
    try:
        stores = KeyStores(home.keystores)
    except sqlite3.Error as error:  # not a database, unreadable, locked: one line, as `serve` says it
        raise SimulationError(f"cannot open kms-sim state in {home.root}: {error}") from None
    try:
        if args.keystore_command == "list":
            print(
                json.dumps([list_entry(s) | {"HsmTimeout": s.hsm_timeout} for s in stores.find()], indent=2)
            )
            return 0
        timeout = None if args.hsm_timeout is None else args.hsm_timeout == "on"
        stores.set_simulation(args.id, state=args.state, error_code=args.error_code, hsm_timeout=timeout)
    except sqlite3.Error as error:
        raise SimulationError(f"cannot use the key stores in {home.keystores}: {error}") from None
    finally:
        stores.close()
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kms-sim", description="A local AWS KMS for attested GenerateRandom.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the KMS JSON API")
    serve.add_argument(
        "--listen", default=DEFAULT_LISTEN, help=f"HOST:PORT or unix:PATH (default {DEFAULT_LISTEN})"
    )
    serve.add_argument("--tls", action="store_true", help="serve HTTPS with a certificate from the home's CA")
    serve.add_argument(
        "--trust-root", action="extend", nargs="+", default=[], metavar="PEM", help="add trusted root(s)"
    )
    serve.add_argument(
        "--policy", metavar="FILE", help="policy file (default $NITRO_SIM_HOME/kms/policy.json)"
    )
    serve.add_argument(
        "--max-doc-age",
        type=_doc_age,
        default=300.0,
        metavar="S",
        help="max Recipient document age, s (300)",
    )
    serve.add_argument(
        "--attestation-time",
        type=_instant,
        metavar="ISO8601",
        help="check Recipient documents as of this fixed time (recorded or test documents); "
        "default: each request's own time",
    )
    serve.add_argument("--workers", type=int, default=1, help="worker processes sharing the socket")
    serve.add_argument(
        "--max-connections",
        type=_max_connections,
        default=None,
        metavar="N",
        help=f"open connections per worker; more are closed unread ({DEFAULT_MAX_CONNECTIONS}, or "
        "what the descriptor limit allows)",
    )
    serve.add_argument(
        "--request-timeout",
        type=_request_timeout,
        default=DEFAULT_REQUEST_TIMEOUT_S,
        metavar="S",
        help=f"close a connection slower to send a whole request, s ({DEFAULT_REQUEST_TIMEOUT_S:g})",
    )
    serve.add_argument(
        "--rate-limit", type=_positive, metavar="R", help="requests per second before throttling"
    )
    serve.add_argument("--burst", type=_positive, metavar="B", help="burst size for --rate-limit")
    serve.add_argument(
        "--reload-interval",
        type=_reload_interval,
        default=RECHECK_S,
        metavar="S",
        help=f"re-read changed credentials, policy and faults files at most every S s ({RECHECK_S:g}; "
        "0: on every request)",
    )
    names = "KMSInternalException, DependencyTimeoutException or ThrottlingException"
    serve.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="NAME:COUNT",
        help=f"fail the first COUNT with {names}",
    )
    serve.add_argument(
        "--fault-rate",
        type=_fault_rate,
        action="append",
        default=[],
        metavar="NAME:P",
        help="then fail each with probability P",
    )
    serve.set_defaults(func=cmd_serve)
    env = commands.add_parser("env", help="print AWS_* exports for the home's credentials")
    env.set_defaults(func=cmd_env)
    keystore = commands.add_parser("keystore", help="inspect or steer the simulated key stores")
    keystore_commands = keystore.add_subparsers(dest="keystore_command", required=True)
    keystore_commands.add_parser("list")
    setter = keystore_commands.add_parser("set")
    setter.add_argument("--id", required=True)
    setter.add_argument("--state", choices=STATES)
    setter.add_argument("--error-code", choices=CONNECTION_ERROR_CODES, metavar="CODE")
    setter.add_argument("--hsm-timeout", choices=("on", "off"))
    keystore.set_defaults(func=cmd_keystore)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exited:  # --help (0), or a usage error argparse printed in one line (2)
        return exited.code if isinstance(exited.code, int) else 0
    try:
        result: int = args.func(args)
    except (AttestationError, KMSError, ValueError, OSError) as error:
        print(f"kms-sim: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
