"""``nitro-sim``: the simulated attested stack in the background, for a shell (as ``localstack start`` is).

    eval "$(nitro-sim up [--pcr N=HEX ...] [--debug-mode] [--policy FILE])"
    nitro-sim status
    nitro-sim down

``up`` starts kms-sim, the parent's vsock-proxy (vsock port 8000 to kms-sim) and the enclave's NSM device in
``$NITRO_SIM_HOME`` (default ``~/.nitro-sim``), detached: they outlive the command, their output goes to
``<home>/logs/``. It records them (pid and start token each, see :mod:`nitro_sim.procs`) in
``<home>/nitro-sim.json`` and prints, on stdout and nothing else, the ``export`` lines that make a shell the
simulated enclave app's shell (NITRO_SIM_HOME, NITRO_SIM_NSM, NITRO_SIM_CID, NITRO_SIM_KMS_TLS) with kms-sim's
credentials and endpoint for AWS SDKs and the AWS CLI. Run again while up, it prints the same lines.
``status`` lists the processes (exit 0: all running, 1: some stopped, 3: not up); ``down`` stops them.
A failure is one line on stderr (a process that did not start adds the last lines of its output) and
a non-zero exit; whatever ``up`` started is stopped again.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from attestation.errors import SimulationError
from attestation.sim import sim_home
from host.nsm_sim import UsageError, parse_pcr
from kms.iam import load_policies
from nitro_sim.procs import ProcessError, ProcessGroup, Recorded, alive, stop_recorded
from nitro_sim.stack import ENV_KMS_TLS, FIRST_NSM_CID, child_environment, start_all

__all__ = ["STATE_FILE", "main"]

PROG = "nitro-sim"
#: The state file in the home, and the most of it read.
STATE_FILE = "nitro-sim.json"
MAX_STATE_FILE_BYTES = 64 * 1024
#: ``status`` exit codes (LSB init-script convention: 3 is "not running").
EXIT_DEGRADED = 1
EXIT_NOT_UP = 3


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {message} (see {PROG} --help)\n")


def _home() -> Path:
    return sim_home().absolute()


def _read_state(home: Path) -> dict[str, Any] | None:
    """The state file's content, None if there is none; SimulationError (one line) if it is unusable."""
    path = home / STATE_FILE
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_STATE_FILE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise SimulationError(f"cannot read {path}: {error.strerror}") from None
    try:
        state = json.loads(data) if len(data) <= MAX_STATE_FILE_BYTES else None
        if isinstance(state, dict) and isinstance(state.get("environ"), dict):
            for entry in state["processes"]:
                Recorded(pid=int(entry["pid"]), token=int(entry["token"]))
            return state
    except (ValueError, TypeError, KeyError, RecursionError):
        pass
    raise SimulationError(f"{path} is not a nitro-sim state file (remove it if nothing of it runs)")


def _recorded(state: dict[str, Any]) -> list[tuple[dict[str, Any], Recorded]]:
    return [(e, Recorded(pid=int(e["pid"]), token=int(e["token"]))) for e in state["processes"]]


def _exports(environ: dict[str, str]) -> str:
    return "".join(f"export {name}={shlex.quote(str(value))}\n" for name, value in environ.items())


def _write_state(home: Path, state: dict[str, Any]) -> None:
    path = home / STATE_FILE
    temp = path.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
    temp.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    os.replace(temp, path)


def cmd_up(args: argparse.Namespace) -> int:
    home = _home()
    state = _read_state(home)
    if state is not None:
        running = [alive(recorded) for _, recorded in _recorded(state)]
        if all(running):
            print(f"{PROG}: already up in {home}", file=sys.stderr)
            sys.stdout.write(_exports(state["environ"]))
            return 0
        if any(running):
            raise SimulationError(f"the stack in {home} is partly running: run `{PROG} down` first")
    pcrs = dict(parse_pcr(item) for item in args.pcr)
    policy = Path(args.policy).absolute() if args.policy else None
    if policy is not None:
        load_policies(policy)  # kms-sim's own check, here, as one line
    home.mkdir(parents=True, exist_ok=True)
    group = ProcessGroup(home / "logs", env=child_environment(home), detached=True)
    try:
        kms, proxy, nsm = start_all(
            group, home, cid=FIRST_NSM_CID, pcrs=pcrs, debug=args.debug_mode, policy=policy, reload="1"
        )
    except BaseException:
        group.stop_all()
        raise
    environ = {**nsm.environ, ENV_KMS_TLS: "0", **kms.credentials.environ, "AWS_ENDPOINT_URL_KMS": kms.url}
    entries = [
        {"name": p.process.name, "pid": p.process.pid, "token": p.process.token, "log": str(p.process.log)}
        for p in (kms, proxy, nsm)
    ]
    details = {
        "kms-sim": kms.url,
        "vsock-proxy": f"vsock (3, {proxy.port}) -> 127.0.0.1:{kms.port}",
        nsm.process.name: f"{nsm.socket} (CID {nsm.cid}, PCR0 {nsm.pcrs[0].hex()[:16]}...)",
    }
    for entry in entries:
        entry["detail"] = details.get(str(entry["name"]), "")
    _write_state(home, {"processes": entries, "environ": environ})
    print(f"{PROG}: up in {home} (kms-sim {kms.url}; logs in {home / 'logs'})", file=sys.stderr)
    sys.stdout.write(_exports(environ))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    home = _home()
    state = _read_state(home)
    if state is None:
        print(f"{PROG}: not up in {home}")
        return EXIT_NOT_UP
    running = 0
    for entry, recorded in _recorded(state):
        up = alive(recorded)
        running += up
        word = "running" if up else "stopped"
        print(f"{entry.get('name', '?'):<14} {word:<8} pid {recorded.pid:<8} {entry.get('detail', '')}")
    if running == len(state["processes"]):
        return 0
    return EXIT_NOT_UP if running == 0 else EXIT_DEGRADED


def cmd_down(args: argparse.Namespace) -> int:
    home = _home()
    state = _read_state(home)
    if state is None:
        print(f"{PROG}: not up in {home}", file=sys.stderr)
        return 0
    stop_recorded(recorded for _, recorded in reversed(_recorded(state)))
    (home / STATE_FILE).unlink(missing_ok=True)
    print(f"{PROG}: down in {home}", file=sys.stderr)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="The simulated attested stack in the background, for a shell.")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help='start the stack; use as eval "$(nitro-sim up)"')
    up.add_argument(
        "--pcr", action="append", default=[], metavar="N=HEX", help="the enclave's boot PCR N; repeatable"
    )
    up.add_argument("--debug-mode", action="store_true", help="the enclave in debug mode (PCR0-2 zero)")
    up.add_argument("--policy", metavar="FILE", help="kms-sim's policy file (re-read when it changes)")
    up.set_defaults(func=cmd_up)
    commands.add_parser("status", help="list the stack's processes").set_defaults(func=cmd_status)
    commands.add_parser("down", help="stop the stack").set_defaults(func=cmd_down)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exited:  # --help (0), or a usage error printed in one line (2)
        return exited.code if isinstance(exited.code, int) else 0
    try:
        result: int = args.func(args)
    except UsageError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except (ProcessError, SimulationError, ValueError, OSError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
