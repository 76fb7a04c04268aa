"""``python -m stress`` (``make stress``): one run, its table printed, its results written.

    python -m stress [--quick] [--clients N] [--requests N] [--batch N] [--out DIR] [--keep]

Exit status: 0 when every zero-target is met (no unexpected failure, no record lost, no corrupt file, no
leak, flat descriptors/threads/RSS, the hostile clients and the swapped answer handled as their rules say),
1 when one is missed, 2 for bad arguments or a run that could not be carried out (one line on stderr),
130 on Ctrl-C (everything started is stopped first).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from nitro_sim.procs import ProcessError
from stress.outcome import Settings
from stress.report import machine_info, tables, write
from stress.run import run

__all__ = ["QUICK", "main"]

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
#: ``--quick``: the smallest schedule, seconds long (the smoke test's): every fault, tiny counts.
QUICK = Settings(
    clients=2,
    requests=24,
    batch=2,
    request_timeout_s=2.0,
    drip_interval_s=0.25,
    flood_bytes=2_000_000,
    key_stores=2,
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m stress", description="attested-random under load and faults (issue 14)"
    )
    p.add_argument(
        "--quick", action="store_true", help="tiny counts: proves the harness, every fault included"
    )
    p.add_argument("--clients", type=int, help="enclave clients (processes), default 16")
    p.add_argument("--requests", type=int, help="attested GenerateRandom calls per client, default 500")
    p.add_argument("--batch", type=int, help="calls per client per round, default 25")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results directory (default {DEFAULT_OUT})")
    p.add_argument("--keep", action="store_true", help="keep the run's home, logs and capture (path printed)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = QUICK if args.quick else Settings()
    for name in ("clients", "requests", "batch"):
        if getattr(args, name) is not None:
            settings = replace(settings, **{name: getattr(args, name)})
    try:
        settings.check()
    except ValueError as error:
        print(f"python -m stress: error: {error}", file=sys.stderr)
        return 2
    machine = machine_info()
    run_dir = Path(tempfile.mkdtemp(prefix="ars-", dir="/tmp"))  # short: Unix socket paths must fit
    what = f"{settings.clients} enclave clients x {settings.requests} attested GenerateRandom"
    print(f"make stress: {what}, with crashes, hostile clients and a full disk", flush=True)
    try:
        outcome = run(run_dir, settings)
    except KeyboardInterrupt:
        print("interrupted: every process started was stopped", file=sys.stderr)
        return 130
    except (ProcessError, OSError, ValueError) as error:
        print(
            f"python -m stress: the run could not be carried out: {str(error).splitlines()[0]}",
            file=sys.stderr,
        )
        return 2
    finally:
        if args.keep:
            print(f"run directory kept: {run_dir}")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
    print(tables(outcome))
    write(args.out, machine, outcome)
    print(f"results: {args.out / 'results.md'}, {args.out / 'results.json'}")
    return 1 if outcome.missed() else 0
