"""``nitro-cli``: the real tool's command line (aws-nitro-enclaves-cli ``src/main.rs``, ``create_app!``).

Subcommands and flags are the real ones. Presence and conflicts are checked as clap checks them, with
clap's wording: ``error: ...``, a usage line, ``For more information, try '--help'.`` on stderr and exit
status 2 (an unknown or repeated flag, a missing value, a missing required flag, two conflicting flags;
no subcommand prints the help on stderr, exit 2). Values are then parsed as ``commands_parser.rs`` does
and everything after that fails with nitro-cli's own errors (:mod:`host.nitro_cli.errors`): the message on
stderr and the code's number as exit status. ``--help`` and ``--version`` ("Nitro CLI 1.5.0") exit 0.

Image commands (build-enclave, describe-eif, pcr, sign-eif) are :mod:`host.nitro_cli._images`; the
enclave lifecycle is :mod:`host.nitro_cli._run` (run-enclave), :mod:`host.nitro_cli._manage`
(describe-enclaves, terminate-enclave) and :mod:`host.nitro_cli._console` (console). JSON goes to stdout
as ``serde_json::to_string_pretty`` prints it (:mod:`host.nitro_cli._json`). Settings of the simulation
itself that are unusable (``NITRO_SIM_*``) are one line ``nitro-cli: error: ...``, exit 1.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

from attestation.sim import sim_home
from host.nitro_cli import _console, _manage, _resources, _run_args
from host.nitro_cli._json import pretty
from host.nitro_cli._run import EnclaveProcessError, run_enclave
from host.nitro_cli.errors import NITRO_CLI_VERSION, NitroCliError, SimConfigError, explain

PROG = "nitro-cli"
EXIT_USAGE = 2
EXIT_SIM_CONFIG = 1
EXIT_INTERRUPTED = 130
_MORE = "For more information, try '--help'."


@dataclass(frozen=True, slots=True)
class Opt:
    """One flag as ``create_app!`` declares it."""

    long: str
    help: str
    kind: str = "value"  # "value" | "flag" | "many"
    dest: str | None = None
    value_name: str | None = None
    required: bool = False
    required_unless: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.dest or self.long.replace("-", "_")

    def shown(self) -> str:
        """How clap names the flag in messages: ``--memory <memory>``, ``--cpu-ids <cpu-ids>...``."""
        if self.kind == "flag":
            return f"--{self.long}"
        value = f"<{self.value_name or self.dest or self.long}>"
        return f"--{self.long} {value}..." if self.kind == "many" else f"--{self.long} {value}"


_NOT_IDS = ("cpu-count", "config")
_NOT_COUNT = ("cpu-ids", "config")
_CPU = "List of cpu-ids that will be provided to the enclave"
SUBCOMMANDS: dict[str, tuple[str, tuple[Opt, ...]]] = {
    "run-enclave": (
        "Starts a new enclave",
        (
            Opt("cpu-ids", _CPU, "many", required_unless=_NOT_IDS, conflicts=_NOT_IDS),
            Opt("cpu-count", "Number of cpus", required_unless=_NOT_COUNT, conflicts=_NOT_COUNT),
            Opt(
                "memory",
                "Memory to allocate for the enclave in MB. Depending on the available pages, more might be "
                "allocated.",
                required_unless=("config",),
                conflicts=("config",),
            ),
            Opt(
                "eif-path",
                "Path pointing to a prebuilt Eif image",
                required_unless=("config",),
                conflicts=("config",),
            ),
            Opt("enclave-cid", "CID to be used for the newly started enclave", conflicts=("config",)),
            Opt(
                "debug-mode",
                "Starts enclave in debug-mode. This makes the console of the enclave available over vsock "
                "at CID: VMADDR_CID_HYPERVISOR (0), port: enclave_cid + 10000. The stream could be accessed "
                "with the console sub-command",
                "flag",
                conflicts=("config",),
            ),
            Opt(
                "attach-console",
                "Attach the enclave console immediately after starting the enclave. (implies debug-mode)",
                "flag",
            ),
            Opt("enclave-name", "Custom name assigned to the enclave by the user", conflicts=("config",)),
            Opt(
                "config",
                "Config is used to read enclave settings from JSON file",
                value_name="json-config",
            ),
        ),
    ),
    "terminate-enclave": (
        "Terminates an enclave",
        (
            Opt(
                "enclave-id",
                "Enclave ID, used to uniquely identify an enclave",
                required_unless=("all", "enclave-name"),
                conflicts=("all", "enclave-name"),
            ),
            Opt(
                "all",
                "Terminate all running enclave instances belonging to the current user",
                "flag",
                required_unless=("enclave-id", "enclave-name"),
                conflicts=("enclave-id", "enclave-name"),
            ),
            Opt(
                "enclave-name",
                "Enclave name, used to uniquely identify an enclave",
                required_unless=("enclave-id", "all"),
                conflicts=("enclave-id", "all"),
            ),
        ),
    ),
    "build-enclave": (
        "Builds an enclave image and saves it to a file",
        (
            Opt(
                "docker-uri",
                "Uri pointing to an existing docker container or to be created locally when docker-dir is "
                "present",
                required=True,
            ),
            Opt("docker-dir", "Local path to a directory containing a Dockerfile"),
            Opt("output-file", "Location where the Enclave Image should be saved", required=True),
            Opt(
                "signing-certificate",
                "Local path to developer's X509 signing certificate.",
                requires=("private-key",),
            ),
            Opt(
                "private-key",
                "KMS key ARN or local path to developer's Eliptic Curve private key.",
                requires=("signing-certificate",),
            ),
            Opt("name", "Name for enclave image", value_name="image_name"),
            Opt("version", "Version of the enclave image", dest="image_version"),
            Opt("metadata", "Path to JSON containing the custom metadata provided by the user."),
        ),
    ),
    "describe-eif": (
        "Returns information about the EIF found at a given path.",
        (Opt("eif-path", "Path to the EIF to describe.", required=True),),
    ),
    "describe-enclaves": (
        "Returns a list of the running enclaves",
        (Opt("metadata", "Adds EIF metadata of the current enclaves to the command output.", "flag"),),
    ),
    "console": (
        "Connect to the console of an enclave",
        (
            Opt(
                "enclave-id",
                "Enclave ID, used to uniquely identify an enclave",
                required_unless=("enclave-name",),
                conflicts=("enclave-name",),
            ),
            Opt(
                "disconnect-timeout",
                "The time in seconds after the console disconnects from the enclave",
            ),
            Opt(
                "enclave-name",
                "Enclave name, used to uniquely identify an enclave",
                required_unless=("enclave-id",),
                conflicts=("enclave-id",),
            ),
        ),
    ),
    "pcr": (
        "Return the PCR hash value of the given input",
        (
            Opt(
                "signing-certificate",
                "Takes the path to the '.pem' signing certificate and returns PCR8. Can be used to identify "
                "the certificate used to sign an EIF",
                required_unless=("input",),
                conflicts=("input",),
            ),
            Opt(
                "input",
                "Given a path to a file, returns the PCR hash of the bytes it contains",
                required_unless=("signing-certificate",),
                conflicts=("signing-certificate",),
            ),
        ),
    ),
    "explain": (
        "Display detailed information about an error returned by a misbehaving Nitro CLI command",
        (Opt("error-code", "Error code, as returned by the misbehaving Nitro CLI command", required=True),),
    ),
    "sign-eif": (
        "Sign EIF with the given key",
        (
            Opt("eif-path", "Path pointing to a prebuilt Eif image"),
            Opt(
                "signing-certificate",
                "Local path to developer's X509 signing certificate.",
                requires=("private-key",),
            ),
            Opt(
                "private-key",
                "KMS key ARN or local path to developer's Eliptic Curve private key.",
                requires=("signing-certificate",),
            ),
        ),
    ),
}


class UsageError(Exception):
    """A clap-style usage error: the full text to print, exit status 2."""


class _DoneError(Exception):
    """--help or --version was printed; exit with ``code``."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(_clap_text(self.prog, message))

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            sys.stderr.write(message)
        raise _DoneError(status)


def _clap_text(prog: str, message: str) -> str:
    """argparse's complaint in clap's words."""
    usage = f"Usage: {prog} [OPTIONS]" if prog != PROG else f"Usage: {PROG} [COMMAND]"
    if message.startswith("unrecognized arguments: "):
        first = message.removeprefix("unrecognized arguments: ").split(" ")[0]
        text = f"unexpected argument '{first}' found"
    elif "invalid choice: " in message:
        choice = message.split("invalid choice: ", 1)[1].split(" ", maxsplit=1)[0]
        text = f"unrecognized subcommand {choice}"
    elif "expected one argument" in message or "expected at least one argument" in message:
        flag = message.removeprefix("argument ").split(":")[0]
        text = f"a value is required for '{flag} <{flag.lstrip('-')}>' but none was supplied"
    else:
        text = message
    return f"error: {text}\n\n{usage}\n\n{_MORE}"


def build_parser() -> _Parser:
    parser = _Parser(prog=PROG, description="CLI for enclave lifetime management")
    parser.add_argument("-V", "--version", action="version", version=f"Nitro CLI {NITRO_CLI_VERSION}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (about, opts) in SUBCOMMANDS.items():
        sub = commands.add_parser(name, help=about, description=about)
        for opt in opts:
            flag = f"--{opt.long}"
            if opt.kind == "flag":
                sub.add_argument(flag, dest=opt.name, action="count", default=0, help=opt.help)
            else:
                sub.add_argument(
                    flag,
                    dest=opt.name,
                    action="append",
                    nargs="+" if opt.kind == "many" else None,
                    metavar=opt.value_name or opt.long,
                    help=opt.help,
                )
    return parser


def _check_clap_rules(command: str, ns: argparse.Namespace, argv: Sequence[str]) -> None:
    """Repeats, conflicts, then missing required flags, as clap reports them; values are unwrapped."""
    opts = {opt.long: opt for opt in SUBCOMMANDS[command][1]}
    usage = f"Usage: {PROG} {command} [OPTIONS]"
    given: list[str] = []
    for word in argv:
        long = word[2:].split("=", 1)[0] if word.startswith("--") else None
        if long in opts and long not in given:
            given.append(long)
    for opt in opts.values():
        value = getattr(ns, opt.name)
        count = value if opt.kind == "flag" else len(value or [])
        if count > 1:
            raise UsageError(
                f"error: the argument '{opt.shown()}' cannot be used multiple times\n\n{usage}\n\n{_MORE}"
            )
        if opt.kind == "flag":
            setattr(ns, opt.name, bool(value))
        elif value is not None:
            setattr(ns, opt.name, value[0])
    for long in given:  # clap's conflicts are symmetric; the first flag given is named first
        for other in given:
            if other in opts[long].conflicts or long in opts[other].conflicts:
                raise UsageError(
                    f"error: the argument '{opts[long].shown()}' cannot be used with '{opts[other].shown()}'"
                    f"\n\n{usage}\n\n{_MORE}"
                )
    missing = [
        opt
        for opt in opts.values()
        if opt.long not in given
        and (
            opt.required
            or (opt.required_unless and not any(o in given for o in opt.required_unless))
            or any(req == opt.long for g in given for req in opts[g].requires)
        )
    ]
    if missing:
        lines = "".join(f"\n  {opt.shown()}" for opt in missing)
        raise UsageError(
            f"error: the following required arguments were not provided:{lines}\n\n{usage}\n\n{_MORE}"
        )


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = build_parser()
    if not argv:
        parser.print_help(sys.stderr)
        raise _DoneError(EXIT_USAGE)
    ns, extras = parser.parse_known_args(argv)
    if extras:
        prog = PROG if ns.command is None else f"{PROG} {ns.command}"
        raise UsageError(_clap_text(prog, f"unrecognized arguments: {' '.join(extras)}"))
    if ns.command is None:
        parser.print_help(sys.stderr)
        raise _DoneError(EXIT_USAGE)
    _check_clap_rules(ns.command, ns, argv[argv.index(ns.command) + 1 :])
    return ns


# -- subcommands (each returns the exit status; NitroCliError is printed by main) --------------------------


def _out(value: object) -> None:
    print(pretty(value), flush=True)


def cmd_run(ns: argparse.Namespace, home: Path) -> int:
    try:
        args = _run_args.from_config(ns.config) if ns.config is not None else _run_args.from_flags(ns)
    except NitroCliError as err:
        raise err.add_subaction("Failed to construct RunEnclave arguments") from None
    started = run_enclave(args, home=home, now=datetime.now(UTC))
    _out(started.run_info())
    if args.attach_console:
        try:
            _console.stream(started.record, home, sys.stdout.buffer, timeout=None)
        except NitroCliError as err:
            raise err.set_action("Enclave Console") from None
    return 0


def cmd_describe(ns: argparse.Namespace, home: Path) -> int:
    _out(_manage.describe_enclaves(home, with_metadata=ns.metadata))
    return 0


def cmd_terminate(ns: argparse.Namespace, home: Path) -> int:
    if ns.all:
        try:
            _out(_manage.terminate(_manage.running(home), home))
        except NitroCliError as err:
            raise err.set_action("Terminate All Enclaves") from None
        return 0
    enclave_id = ns.enclave_id if ns.enclave_name is None else _manage.id_by_name(ns.enclave_name, home)
    record = _manage.find(enclave_id, home)
    for info in _manage.terminate([record], home):
        _out(info)
    return 0


def cmd_console(ns: argparse.Namespace, home: Path) -> int:
    enclave_id = ns.enclave_id if ns.enclave_name is None else _manage.id_by_name(ns.enclave_name, home)
    timeout = None
    if ns.disconnect_timeout is not None:
        timeout = _resources.parse_number_arg(
            "disconnect-timeout", ns.disconnect_timeout, "disconnect-timeout", bits=64
        )
    try:
        record = _manage.find(enclave_id, home)
    except NitroCliError as err:
        raise err.add_subaction("Failed to retrieve enclave CID") from None
    _console.check_debug(record)
    _console.stream(record, home, sys.stdout.buffer, timeout=timeout)
    return 0


def cmd_explain(ns: argparse.Namespace, home: Path) -> int:
    print(explain(ns.error_code), file=sys.stderr)
    return 0


def _image_command(name: str) -> Callable[[argparse.Namespace, Path], int]:
    def run(ns: argparse.Namespace, home: Path) -> int:
        from host.nitro_cli import _images  # noqa: PLC0415 (the image commands load only when used)

        if name == "sign_eif" and ns.eif_path is None:
            err = NitroCliError("E01", subaction="`eif-path` argument not found")
            raise err.add_subaction("Parse EIF path")
        handler: Callable[[argparse.Namespace], int] = getattr(_images, name)
        return handler(ns)

    return run


#: subcommand -> (handler, nitro-cli's action name, the step main.rs adds to the chain)
COMMANDS: dict[str, tuple[Callable[[argparse.Namespace, Path], int], str, str | None]] = {
    "run-enclave": (cmd_run, "Run Enclave", None),
    "describe-enclaves": (cmd_describe, "Describe Enclave", None),
    "terminate-enclave": (cmd_terminate, "Terminate Enclave", None),
    "console": (cmd_console, "Enclave Console", None),
    "explain": (cmd_explain, "Explain Error", None),
    "build-enclave": (_image_command("build_enclave"), "Build Enclave", "Failed to build enclave"),
    "describe-eif": (_image_command("describe_eif"), "Describe EIF", "Failed to describe EIF"),
    "pcr": (_image_command("pcr"), "File PCR", "Failed to get the PCR hash of the file contents"),
    "sign-eif": (_image_command("sign_eif"), "Sign EIF", "Failed to sign EIF"),
}


def _report(err: NitroCliError, home: Path) -> None:
    print(err.render(home), file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``nitro-cli``; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        ns = parse(args)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except _DoneError as done:
        return done.code
    home = sim_home().absolute()
    handler, action, step = COMMANDS[ns.command]
    try:
        return handler(ns, home)
    except NitroCliError as err:
        if step is not None:
            err.add_subaction(step)
        _report(err if err.action else err.set_action(action), home)
        return err.exit_status
    except EnclaveProcessError as exc:
        inner = exc.error.add_subaction("Failed to trigger enclave run").add_subaction(
            "Failed to execute command `Run`"
        )
        _report(inner.set_action(action), home)
        print("Failed connections: 1", file=sys.stderr)
        outer = NitroCliError("E39", subaction="Failed to connect to 1 enclave processes")
        _report(outer.add_subaction("Failed to handle all enclave process replies").set_action(action), home)
        return outer.exit_status
    except SimConfigError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_SIM_CONFIG
    except BrokenPipeError:
        # The reader of our output went away (e.g. `| head`); say nothing more on a closed pipe.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:  # a file operation of the simulation's own (records, logs) failed
        failure = NitroCliError("E19", subaction=f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
        _report(failure.set_action(action), home)
        return failure.exit_status
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
