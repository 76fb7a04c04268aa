"""The orchestrator's side of ``bench.worker``: start client processes, run timed rounds, pool the results.

A round is a wall-clock window [start, end) on CLOCK_MONOTONIC, shared by all workers of the round, so
concurrent clients start within microseconds of each other; the round's rate is the number of completed
calls over the span from the first call's start to the last call's end.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.harness import Latencies, Pinning, Settings, Summary, cpu_seconds, now_ns, summarize
from bench.model import BenchError
from nitro_sim.procs import Process, ProcessGroup

#: Lead time between sending "run" and the round's start: every worker gets the command and makes its
#: untimed call first (16 clients on 2 cores at a few ms per call fit in it).
ROUND_LEAD_NS = 150_000_000
#: A round's results must arrive within its length plus this (a call in flight may finish late).
RESULT_GRACE_S = 30.0


@dataclass(slots=True)
class Worker:
    proc: Process  # started with talk=True: commands on its stdin, answers on its stdout
    label: str
    warmup_calls: int = 0

    def send(self, line: str) -> None:
        self.proc.send(line)

    def receive(self, timeout: float) -> dict[str, Any]:
        line = self.proc.read_line(timeout)
        try:
            obj: dict[str, Any] = json.loads(line)
        except ValueError:
            raise BenchError(f"{self.label}: unexpected output {line[:120]!r}") from None
        if "error" in obj:
            raise BenchError(f"{self.label}: {obj['error']}")
        return obj


def start_workers(
    procs: ProcessGroup,
    pinning: Pinning,
    *,
    kind: str,
    count: int,
    args: Sequence[str],
    cpu: int | None,
    settings: Settings,
    env: dict[str, str] | Sequence[dict[str, str]] | None = None,
    label: str = "",
    profile: str | None = None,
) -> list[Worker]:
    """Start ``count`` worker processes and wait until all have warmed up."""
    workers = []
    for i in range(count):
        cmd = [sys.executable, "-m", "bench.worker", kind, *args, "--warmup-s", str(settings.warmup_seconds)]
        if profile is not None and i == 0:
            cmd += ["--profile", profile]
        own_env = env[i] if isinstance(env, Sequence) else env  # one environment each, or one for all
        proc = procs.start(pinning.wrap(cmd, cpu), env=own_env, talk=True, name=f"worker-{kind}")
        workers.append(Worker(proc=proc, label=f"{label or kind} client {i}"))
    for w in workers:
        w.warmup_calls = int(w.receive(timeout=120).get("warmup_calls", 0))
    return workers


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundResult:
    rate: float  # calls per second over the round
    latencies_us: list[float]


def run_round(workers: Sequence[Worker], seconds: float) -> RoundResult:
    start = now_ns() + ROUND_LEAD_NS
    end = start + int(seconds * 1e9)
    for w in workers:
        w.send(f"run {start} {end}")
    results = [w.receive(timeout=seconds + RESULT_GRACE_S) for w in workers]
    total = sum(r["count"] for r in results)
    span_ns = max(r["last_ns"] for r in results) - min(r["first_ns"] for r in results)
    lat: list[float] = [x for r in results for x in r["lat_us"]]
    return RoundResult(rate=total * 1e9 / max(span_ns, 1), latencies_us=lat)


#: How long a worker may take to exit after "quit" (it dumps its profile first) before it is stopped.
QUIT_TIMEOUT_S = 30.0


def quit_workers(procs: ProcessGroup, workers: Sequence[Worker]) -> None:
    for w in workers:
        w.send("quit")
    for w in workers:
        w.proc.wait_exit(QUIT_TIMEOUT_S)
        procs.stop(w.proc)


@dataclass(slots=True)
class Series:
    """Rates and pooled latencies of one measured configuration over all its rounds."""

    name: str
    rates: list[float]
    latencies_us: list[float]
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU seconds per process over all rounds
    calls: int = 0  # calls made while cpu_s was counted

    def cpu_us_per_call(self) -> dict[str, float]:
        return {k: round(v * 1e6 / max(self.calls, 1), 1) for k, v in self.cpu_s.items()}

    @property
    def rate(self) -> Summary:
        return summarize(self.rates)

    def latencies(self) -> Latencies:
        return Latencies.of(self.latencies_us)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rate_per_s": self.rate.as_dict(),
            "round_rates": [round(r, 1) for r in self.rates],
            "latency": self.latencies().as_dict(),
            "cpu_us_per_call": self.cpu_us_per_call(),
        }


def interleave(
    groups: dict[str, Sequence[Worker]],
    settings: Settings,
    *,
    watch: Mapping[str, Process] | None = None,
    in_process: Mapping[str, Callable[[float], float]] | None = None,
) -> dict[str, Series]:
    """Run the groups' rounds alternately (A B C A B C ...), so slow drifts of the machine hit all alike.

    ``watch``: server processes whose CPU time is charged, round by round, to the group that was running
    (with the group's own client processes as "client"), to give CPU microseconds per call per process.
    ``in_process``: rates measured in this process (a callable running for the round's length and returning
    a rate), taking their turn in the same rotation (the crypto floor, so its ratio is of the same minutes).
    """
    series = {name: Series(name=name, rates=[], latencies_us=[]) for name in [*groups, *(in_process or {})]}
    watched = dict(watch or {})
    for _ in range(settings.rounds):
        for name, measure in (in_process or {}).items():
            series[name].rates.append(measure(settings.round_seconds))
        for name, workers in groups.items():
            procs = watched | {f"client {i}": w.proc for i, w in enumerate(workers)}
            before = {k: cpu_seconds(p.pid) for k, p in procs.items()}
            result = run_round(workers, settings.round_seconds)
            s = series[name]
            for k, p in procs.items():
                key = "client" if k.startswith("client ") else k
                s.cpu_s[key] = s.cpu_s.get(key, 0.0) + cpu_seconds(p.pid) - before[k]
            s.calls += len(result.latencies_us) + len(workers)  # + each worker's untimed call
            s.rates.append(result.rate)
            s.latencies_us.extend(result.latencies_us)
    return series
