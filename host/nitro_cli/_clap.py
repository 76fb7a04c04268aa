"""nitro-cli's command-line grammar (aws-nitro-enclaves-cli ``src/lib.rs`` ``create_app!``) and clap's checks.

The subcommands and flags are the real ones (:data:`SUBCOMMANDS`). Presence and conflicts are checked as
clap checks them, with clap's wording: ``error: ...``, a usage line, ``For more information, try
'--help'.`` on stderr and exit status 2, for an unknown subcommand or flag, a repeated flag, a missing
value, two conflicting flags (conflicts are symmetric; the first flag given is named first) and missing
required flags (all listed). No subcommand prints the help on stderr (``arg_required_else_help``, exit 2).
The help text itself is argparse's, and the usage line is the short ``Usage: nitro-cli <command>
[OPTIONS]``. Values stay strings here; ``commands_parser.rs``'s parsing is the commands' business.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

from host.nitro_cli.errors import NITRO_CLI_VERSION

PROG = "nitro-cli"
EXIT_USAGE = 2
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


#: The signing pair of build-enclave and sign-eif (each requires the other, as clap's ``requires``).
_SIGNING = (
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
)


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
            *_SIGNING,
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
            *_SIGNING,
        ),
    ),
}


class UsageError(Exception):
    """A clap-style usage error: the full text to print, exit status 2."""


class DoneError(Exception):
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
        raise DoneError(status)


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
        raise DoneError(EXIT_USAGE)
    ns, extras = parser.parse_known_args(argv)
    if extras:
        prog = PROG if ns.command is None else f"{PROG} {ns.command}"
        raise UsageError(_clap_text(prog, f"unrecognized arguments: {' '.join(extras)}"))
    if ns.command is None:
        parser.print_help(sys.stderr)
        raise DoneError(EXIT_USAGE)
    _check_clap_rules(ns.command, ns, argv[argv.index(ns.command) + 1 :])
    return ns
