"""``python -m bench`` (``make bench``): every scenario in one run, then the report.

    python -m bench [--quick] [--only 1,2,3,4,5,6,7,8] [--out DIR] [--rounds N] [--seconds S] [--no-pin]

Order: 3 (crypto floor, needed by 1 and 4), 4 (verification alone), 5 (proxy alone), then 1 and 2
together (their sequential rounds interleave, so their ratios come from the same minutes), then 6 (enclave
images: build-enclave and run-enclave against their floors), then 7 (the pytest fixtures: stack start-up and a
function-scoped test against moto's mock_aws), then 8 (attested GenerateRandom and Decrypt, each with a fresh
document and with the SDK's document reuse, against their crypto floors measured in the same rounds).
A scenario whose programs are missing or fail is reported as not run with its one-line reason; the others
still run. Exit status: 0 when every selected scenario ran, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from bench import attested_ops, components, e2e, fixtures, floor, images, proxy, verify
from bench.analysis import explain
from bench.harness import Pinning, Settings, machine_info
from bench.model import BenchError, ScenarioResult, reason
from bench.report import write
from nitro_sim.procs import ProcessError, ProcessGroup

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
ALL = ("1", "2", "3", "4", "5", "6", "7", "8")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description="attested-random benchmarks (issue 6)")
    p.add_argument(
        "--quick", action="store_true", help="tiny round counts: proves the harness runs, no numbers"
    )
    p.add_argument("--only", default=",".join(ALL), help="comma-separated scenarios to run (default: all)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results directory (default {DEFAULT_OUT})")
    p.add_argument("--rounds", type=int, help="measured rounds per configuration")
    p.add_argument("--seconds", type=float, help="length of one round, seconds")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes (the report says so)")
    return p


@contextlib.contextmanager
def temp_home(prefix: str = "arb-") -> Iterator[Path]:
    """A fresh, short NITRO_SIM_HOME (Unix socket paths must stay under 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _guarded(result: ScenarioResult, fn: Callable[[], None]) -> None:
    try:
        fn()
    except (BenchError, ProcessError) as e:  # a program missing or failing: one line, with its last words
        result.error = reason(e)
    except Exception as e:  # a scenario failing must not lose the others' results
        result.error = f"{type(e).__name__}: {e}"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    selected = {s.strip() for s in args.only.split(",") if s.strip()}
    if not selected <= set(ALL):
        print(f"error: --only takes scenarios among {', '.join(ALL)}", file=sys.stderr)
        return 2
    settings = Settings.quick_settings() if args.quick else Settings()
    if args.rounds is not None:
        settings = dataclasses.replace(settings, rounds=max(1, args.rounds))
    if args.seconds is not None:
        settings = dataclasses.replace(settings, round_seconds=max(0.05, args.seconds))
    pinning = Pinning.detect(want=not args.no_pin)
    machine = machine_info()
    print(f"bench: {machine['cpu']}, {machine['cpus']} CPUs, load {machine['load_at_start']}", flush=True)
    if not pinning.enabled:
        print(f"bench: processes are NOT pinned ({pinning.reason}); expect bimodal numbers", flush=True)

    results: list[ScenarioResult] = []
    plot: dict[str, list[float]] = {}
    floors: dict[str, float] | None = None
    s3: ScenarioResult | None = None
    with temp_home() as home:
        if "3" in selected or "1" in selected or "4" in selected:
            print("bench: scenario 3 (crypto floor)", flush=True)
            s3 = floor.run(settings, pinning)
            floors = s3.data["floors"]
            try:
                components.run(settings, pinning, _sub(home, "components"), s3)
            except Exception as e:  # the breakdown is an extra: a failure is a note
                s3.notes.append(f"In-process breakdown not taken: {type(e).__name__}: {e}")
            if "3" in selected:
                results.append(s3)
        if "4" in selected:
            print("bench: scenario 4 (verification alone)", flush=True)
            s4 = ScenarioResult(key="4", title=verify.TITLE)
            _guarded(s4, lambda: verify.run(settings, pinning, home / "s4", floors, s4))
            results.append(s4)
        if "5" in selected:
            print("bench: scenario 5 (proxy vs socat)", flush=True)
            s5 = ScenarioResult(key="5", title=proxy.TITLE)
            with ProcessGroup(home / "logs") as procs:
                _guarded(s5, lambda: proxy.run(settings, pinning, _sub(home, "s5"), procs, s5))
            results.append(s5)
        if "1" in selected or "2" in selected:
            print("bench: scenarios 1 and 2 (sequential, interleaved with moto)", flush=True)
            outcome = e2e.E2EOutcome(
                s1=ScenarioResult(key="1", title=e2e.TITLE_1), s2=ScenarioResult(key="2", title=e2e.TITLE_2)
            )
            with ProcessGroup(home / "logs") as procs:
                _guarded(
                    outcome.s2,
                    lambda: e2e.run_sequential(
                        settings,
                        pinning=pinning,
                        home=_sub(home, "seq"),
                        procs=procs,
                        floors=floors,
                        out=outcome,
                    ),
                )
            if "1" in selected and outcome.s1.error is None and outcome.s2.error is None:
                print("bench: scenario 1 (1, 4, 16 concurrent clients)", flush=True)
                with ProcessGroup(home / "logs") as procs:
                    _guarded(
                        outcome.s1,
                        lambda: e2e.run_concurrency(settings, pinning, _sub(home, "conc"), procs, outcome),
                    )
            if s3 is not None and outcome.s1.error is None:
                print("bench: profile of one attested run (scenario 3, where the rest goes)", flush=True)
                with ProcessGroup(home / "logs") as procs:
                    try:
                        e2e.run_profile(settings, pinning, _sub(home, "prof"), procs, s3)
                    except Exception as e:  # the profile is an extra: a failure is a note
                        s3.notes.append(f"Profile not taken: {type(e).__name__}: {e}")
            plot = outcome.plot
            results += [r for r in (outcome.s1, outcome.s2) if r.key in selected]
        if "6" in selected:
            print("bench: scenario 6 (enclave images: build-enclave, run-enclave)", flush=True)
            s6 = ScenarioResult(key="6", title=images.TITLE)
            with ProcessGroup(home / "logs") as procs:
                _guarded(s6, lambda: images.run(settings, pinning, _sub(home, "s6"), procs, s6))
            results.append(s6)
        if "7" in selected:
            print("bench: scenario 7 (pytest fixtures: stack start-up, a test against mock_aws)", flush=True)
            s7 = ScenarioResult(key="7", title=fixtures.TITLE)
            _guarded(s7, lambda: fixtures.run(settings, s7))
            results.append(s7)
        if "8" in selected:
            print("bench: scenario 8 (attested GenerateRandom and Decrypt, fresh and reused)", flush=True)
            s8 = ScenarioResult(key="8", title=attested_ops.TITLE)
            with ProcessGroup(home / "logs") as procs:
                _guarded(s8, lambda: attested_ops.run(settings, pinning, _sub(home, "s8"), procs, s8))
            results.append(s8)
    machine["load_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results.sort(key=lambda r: r.key)
    explain({r.key: r for r in results})
    settings_doc = dataclasses.asdict(settings) | {
        "pinning": "taskset" if pinning.enabled else f"unpinned: {pinning.reason}"
    }
    text = write(args.out, machine, settings_doc, results, plot)
    print(text)
    print(f"bench: results written to {args.out}", flush=True)
    return 0 if all(r.error is None for r in results) else 1


def _sub(home: Path, name: str) -> Path:
    path = home / name
    path.mkdir(parents=True, exist_ok=True)
    return path
