"""``nitro-cli``: the real tool's command line (aws-nitro-enclaves-cli ``src/main.rs``, ``create_app!``).

The grammar and clap's usage errors (exit 2) are :mod:`host.nitro_cli._clap`. Values are then parsed as
``commands_parser.rs`` does and everything after that fails with nitro-cli's own errors
(:mod:`host.nitro_cli.errors`): the message on stderr and the code's number as exit status. ``--help`` and
``--version`` ("Nitro CLI 1.5.0") exit 0.

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
from datetime import UTC, datetime
from pathlib import Path

from attestation.sim import sim_home
from host.nitro_cli import _console, _manage, _resources, _run_args
from host.nitro_cli._clap import EXIT_USAGE, PROG, DoneError, UsageError, parse
from host.nitro_cli._json import pretty
from host.nitro_cli._run import EnclaveProcessError, run_enclave
from host.nitro_cli.errors import NitroCliError, SimConfigError, explain

EXIT_SIM_CONFIG = 1
EXIT_INTERRUPTED = 130


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
    except DoneError as done:
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
