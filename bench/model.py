"""What a scenario hands back: table rows, same-run ratios with their targets, notes, raw data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.harness import Summary


class BenchError(Exception):
    """A scenario could not run (a program missing, a server that never came up): one line for the user."""


def reason(error: BaseException) -> str:
    """``error`` as one line for the report: a process failure (nitro_sim's ProcessError, which quotes the
    process's last lines) is its first line and its last quoted line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else type(error).__name__
    return f"{lines[0]} {lines[-1]}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    """One measured configuration: a rate or a per-op time, its spread, and optionally latencies."""

    case: str
    unit: str  # "req/s", "us/op", "MB/s", "conn/s", "verif/s"
    value: Summary
    p50_us: float | None = None
    p99_us: float | None = None
    layout: str = ""  # how the cooperating processes were pinned

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"case": self.case, "unit": self.unit} | self.value.as_dict()
        if self.p50_us is not None:
            out["p50_us"] = round(self.p50_us, 1)
        if self.p99_us is not None:
            out["p99_us"] = round(self.p99_us, 1)
        if self.layout:
            out["layout"] = self.layout
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Ratio:
    """A ratio of two numbers measured in the same run, with the issue's target when there is one."""

    name: str
    value: float
    target: float | None = None  # met when value >= target
    detail: str = ""
    noisy: bool = False  # measured while other work shared the machine: the verdict says not to trust it

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.value >= self.target

    def verdict(self) -> str:
        if self.target is None:
            return ""
        if self.met:
            text = f"met (target >= {self.target:g})"
        else:
            short = 100.0 * (1 - self.value / self.target)
            text = f"MISSED by {short:.{0 if short >= 1 else 1}f}% (target >= {self.target:g})"
        return f"{text}; noisy run, not to be trusted" if self.noisy else text

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": round(self.value, 3),
            "target": self.target,
            "met": self.met,
            "detail": self.detail,
            "noisy": self.noisy,
        }


@dataclass(slots=True, kw_only=True)
class ScenarioResult:
    key: str  # "1".."8"
    title: str
    rows: list[Row] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # raw extras (profiles, per-op floors, ...)
    error: str | None = None  # set when the scenario could not run (a component missing)

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "error": self.error,
            "rows": [r.as_dict() for r in self.rows],
            "ratios": [r.as_dict() for r in self.ratios],
            "notes": self.notes,
            "data": self.data,
        }
