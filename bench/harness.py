"""Measurement primitives: rounds, medians and spreads, CPU pinning, and the machine description.

Rules every scenario follows (issue 6):
- warm up first, then measure several rounds; report the median and the spread (min..max) of the rounds;
- every comparison is a ratio of two numbers measured in the same run (rounds interleaved where possible);
- cooperating processes are pinned with ``taskset`` (or ``os.sched_setaffinity`` in-process), or the
  result says they were not: on this 2-core VM a cross-core wake-up costs ~25-30 us and unpinned
  ping-pong benchmarks come out bimodal (deps-and-costs §3, "Unix-socket transport").
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import os
import platform
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Packages whose versions go into every report (the numbers depend on them).
VERSIONED_PACKAGES = (
    "attested-random",
    "cryptography",
    "cbor2",
    "asn1crypto",
    "uvicorn",
    "httptools",
    "boto3",
    "botocore",
    "moto",
    "matplotlib",
)


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far, all its threads (``/proc/PID/stat`` utime, stime).

    Resolution is one clock tick (10 ms): fine over rounds of a second. 0.0 if the process is gone.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def now_ns() -> int:
    """CLOCK_MONOTONIC in ns: one clock shared by every process on the machine (Linux)."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


@dataclass(frozen=True, slots=True, kw_only=True)
class Summary:
    """Median and spread of per-round values (a rate or a per-op time)."""

    median: float
    low: float
    high: float
    rounds: int

    @property
    def spread_pct(self) -> float:
        """(max - min) / median, in percent: how much the rounds disagree."""
        return 0.0 if self.median == 0 else 100.0 * (self.high - self.low) / self.median

    def as_dict(self) -> dict[str, float]:
        return {
            "median": self.median,
            "min": self.low,
            "max": self.high,
            "rounds": self.rounds,
            "spread_pct": round(self.spread_pct, 1),
        }


def summarize(values: Sequence[float]) -> Summary:
    if not values:
        raise ValueError("no rounds to summarize")
    return Summary(median=statistics.median(values), low=min(values), high=max(values), rounds=len(values))


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted sequence."""
    if not sorted_values:
        raise ValueError("no samples")
    rank = max(1, round(pct / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass(frozen=True, slots=True, kw_only=True)
class Latencies:
    """Per-request latencies pooled over all measured rounds (microseconds)."""

    samples_us: tuple[float, ...]

    @classmethod
    def of(cls, samples_us: Sequence[float]) -> Latencies:
        return cls(samples_us=tuple(sorted(samples_us)))

    def p(self, pct: float) -> float:
        return percentile(self.samples_us, pct)

    def as_dict(self) -> dict[str, float]:
        return {
            "count": len(self.samples_us),
            "p50_us": round(self.p(50), 1),
            "p90_us": round(self.p(90), 1),
            "p99_us": round(self.p(99), 1),
            "max_us": round(self.samples_us[-1], 1),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """How much to measure. ``quick()`` is for the smoke test: it proves the code runs, not numbers."""

    rounds: int = 7
    # Short enough that a worker idle through the other groups' rounds (3-4 x this) stays under uvicorn's
    # 5 s keep-alive timeout.
    round_seconds: float = 1.0
    warmup_seconds: float = 0.5
    op_rounds: int = 7  # in-process micro-benchmarks (timeit-style repeats)
    op_seconds: float = 0.2  # target time of one in-process repeat
    proxy_bytes: int = 256 * 1024 * 1024  # one relay stream per round
    concurrency: tuple[int, ...] = (1, 4, 16)
    sizes: tuple[int, ...] = (32, 1024)
    quick: bool = False

    @classmethod
    def quick_settings(cls) -> Settings:
        return cls(
            rounds=1,
            round_seconds=0.3,
            warmup_seconds=0.1,
            op_rounds=2,
            op_seconds=0.02,
            proxy_bytes=4 * 1024 * 1024,
            concurrency=(1, 2),
            sizes=(32,),
            quick=True,
        )


def time_op(fn: Callable[[], object], *, repeats: int, seconds: float) -> Summary:
    """Per-op time in microseconds, timeit-style: size ``number`` so one repeat takes ~``seconds``."""
    fn()  # warm-up (and caches)
    number = 1
    while True:
        start = time.perf_counter()
        for _ in range(number):
            fn()
        took = time.perf_counter() - start
        if took >= seconds / 4 or number >= 1 << 20:
            break
        number *= 2
    number = max(1, int(number * seconds / max(took, 1e-9)))
    per_op: list[float] = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        per_op.append((time.perf_counter() - start) * 1e6 / number)
    return summarize(per_op)


# ---------------------------------------------------------------- pinning


@dataclass(slots=True)
class Pinning:
    """Which CPUs cooperating processes get. Disabled (and said so) without taskset or with < 2 CPUs."""

    enabled: bool
    reason: str = ""
    notes: list[str] = field(default_factory=list)

    @classmethod
    def detect(cls, *, want: bool = True) -> Pinning:
        if not want:
            return cls(enabled=False, reason="pinning disabled by --no-pin")
        if shutil.which("taskset") is None:
            return cls(enabled=False, reason="taskset not found")
        if len(os.sched_getaffinity(0)) < 2:
            return cls(enabled=False, reason="fewer than 2 CPUs available")
        return cls(enabled=True)

    def cpus(self) -> list[int]:
        return sorted(os.sched_getaffinity(0))

    def wrap(self, cmd: Sequence[str], cpu: int | None) -> list[str]:
        """``cmd`` under ``taskset -c cpu``, or unchanged when unpinned (``cpu`` None or pinning off)."""
        if not self.enabled or cpu is None:
            return list(cmd)
        return ["taskset", "-c", str(cpu), *cmd]

    def describe(self, layout: str) -> str:
        return layout if self.enabled else f"unpinned ({self.reason})"


@contextlib.contextmanager
def pinned_self(pinning: Pinning, cpu: int) -> Iterator[None]:
    """Pin this process to one CPU for an in-process measurement, then restore its affinity."""
    if not pinning.enabled:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


# ---------------------------------------------------------------- the machine


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo", encoding="utf-8"):  # noqa: SIM115
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _tool_version(cmd: Sequence[str]) -> str:
    if shutil.which(cmd[0]) is None:
        return "not installed"
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = (out.stdout or out.stderr).splitlines()
    return next((ln.strip() for ln in lines if "version" in ln.lower()), lines[0] if lines else "unknown")


def git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"


def machine_info() -> dict[str, Any]:
    """Where and with what the numbers were taken: goes verbatim into the JSON and Markdown results."""
    load1, load5, load15 = os.getloadavg()
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "git": git_revision(),
        "load_at_start": [round(load1, 2), round(load5, 2), round(load15, 2)],
        "versions": {name: _version(name) for name in VERSIONED_PACKAGES}
        | {"openssl": _tool_version(["openssl", "version"]), "socat": _tool_version(["socat", "-V"])},
    }
