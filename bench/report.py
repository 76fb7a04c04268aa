"""Writing the results: a Markdown table (also printed), JSON with everything, a PNG of latency CDFs.

Files in the output directory (``bench/results/`` by default), overwritten by each run:
``results.md``, ``results.json``, ``latency.png``.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.model import ScenarioResult

MARKDOWN = "results.md"
JSON = "results.json"
PLOT = "latency.png"


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def markdown(
    machine: Mapping[str, Any], settings: Mapping[str, Any], scenarios: Sequence[ScenarioResult]
) -> str:
    out: list[str] = ["# attested-random benchmark results", ""]
    out.append(f"Reproduce with `make bench`. Taken {machine['date']} at `{machine['git']}`.")
    out.append("")
    out.append(
        f"Machine: {machine['cpu']}, {machine['cpus']} CPUs, Linux {machine['kernel']}, "
        f"Python {machine['python']}; load average (1, 5, 15 min) at start {machine['load_at_start']}, "
        f"at end {machine.get('load_at_end', '?')}."
    )
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
    out.append(f"Versions: {versions}.")
    out.append(
        f"Settings: {settings['rounds']} rounds of {settings['round_seconds']} s after "
        f"{settings['warmup_seconds']} s warm-up; values are the median of the rounds, with min..max and "
        "the spread (max - min) / median. Every ratio compares numbers measured in this same run."
    )
    noisy = _noisy(scenarios)
    if noisy is not None:
        out += ["", str(noisy.data["noise"])]
    ratios = [(s, r) for s in scenarios for r in s.ratios]
    if ratios:
        out += [
            "",
            "## Ratios and targets",
            "",
            "| scenario | ratio | value | verdict |",
            "| --- | --- | ---: | --- |",
        ]
        for s, r in ratios:
            out.append(f"| {s.key} | {r.name} | {r.value:.2f} | {r.verdict()} |")
    for s in scenarios:
        out += ["", f"## {s.key}. {s.title}", ""]
        if s.error is not None:
            out.append(f"**Not run or incomplete**: {s.error}")
            out.append("")
        if s.rows:
            out += [
                "| case | median | unit | min..max | spread | p50 us | p99 us | pinning |",
                "| --- | ---: | --- | --- | ---: | ---: | ---: | --- |",
            ]
            for row in s.rows:
                v = row.value
                p50 = "" if row.p50_us is None else _fmt(row.p50_us)
                p99 = "" if row.p99_us is None else _fmt(row.p99_us)
                out.append(
                    f"| {row.case} | {_fmt(v.median)} | {row.unit} | {_fmt(v.low)}..{_fmt(v.high)} | "
                    f"{v.spread_pct:.0f}% | {p50} | {p99} | {row.layout} |"
                )
        for r in s.ratios:
            if r.detail:
                out.append(f"- {r.name}: {r.detail}")
        out.extend(f"- {note}" for note in s.notes)
    out.append("")
    return "\n".join(out)


def _noisy(scenarios: Sequence[ScenarioResult]) -> ScenarioResult | None:
    return next((s for s in scenarios if "noise" in s.data), None)


def write(
    out_dir: Path,
    machine: Mapping[str, Any],
    settings: Mapping[str, Any],
    scenarios: Sequence[ScenarioResult],
    latency_series: Mapping[str, Sequence[float]],
) -> str:
    """Write the three files and return the Markdown (for the terminal)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    text = markdown(machine, settings, scenarios)
    (out_dir / MARKDOWN).write_text(text, encoding="utf-8")
    doc = {"machine": machine, "settings": settings, "scenarios": [s.as_dict() for s in scenarios]}
    (out_dir / JSON).write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    if latency_series and importlib.util.find_spec("matplotlib") is not None:
        title = f"GenerateRandom latency: scenario 1 (attested, SDK) vs 2 (plain, boto3), {machine['date']}"
        plot(out_dir / PLOT, latency_series, title=title)
    elif latency_series:
        text += "\n(no PNG: matplotlib is not installed; make bench installs .[bench])\n"
    return text


def plot(path: Path, series: Mapping[str, Sequence[float]], *, title: str) -> None:
    """Latency distributions as CDFs on a log time axis (one line per measured configuration)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=110)
    for name, samples in series.items():
        if not samples:
            continue
        xs = sorted(x / 1000.0 for x in samples)
        ys = [(i + 1) / len(xs) for i in range(len(xs))]
        ax.plot(xs, ys, label=f"{name} (n={len(xs)}, p50 {xs[len(xs) // 2]:.2f} ms)", linewidth=1.6)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("latency per request (ms, log scale)")
    ax.set_ylabel("fraction of requests")
    ax.set_ylim(0, 1.0)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
