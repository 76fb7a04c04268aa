"""The stress report: the same tables printed and written as Markdown, everything as JSON.

Files in the output directory (``stress/results/`` by default), overwritten by each run: ``results.md``,
``results.json``. The machine, CPU, date and versions head both (the numbers depend on them).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.harness import _version
from bench.harness import machine_info as bench_machine_info
from stress.outcome import Outcome
from stress.sampling import Usage

__all__ = ["JSON", "MARKDOWN", "machine_info", "summary", "tables", "write"]

MARKDOWN = "results.md"
JSON = "results.json"


def machine_info() -> dict[str, Any]:
    """Where and with what the run was taken: the benchmark's machine description, plus uvloop's version."""
    info = bench_machine_info()
    info["versions"]["uvloop"] = _version("uvloop")
    return info


def _n(value: int) -> str:
    return f"{value:,}"


def summary(out: Outcome) -> list[tuple[str, str]]:
    """The headline rows: what the issue asks to be printed, with the evidence beside each number."""
    s, led = out.settings, out.ledger
    failed = out.calls - out.answered - out.abandoned
    expected = ", ".join(f"{k} x{v}" for k, v in sorted(out.expected.items())) or "none"
    unexpected = "; ".join(
        f"client {u['client']}: {u['err']} {u.get('msg') or ''}".strip() for u in out.unexpected[:5]
    )
    hostile = "; ".join(f"{h.name}: {h.outcome}" for h in out.hostile)
    values = ", ".join(f"{_n(n)} {kind}{'s' if n != 1 else ''}" for kind, n in out.values.items())
    scanned = sum(out.scanned.values())
    flat = out.flat()
    return [
        (
            "requests",
            f"{_n(out.calls)} attested GenerateRandom calls ({s.clients} clients x {s.requests}): "
            f"{_n(out.answered)} answered ({_n(out.retried)} after SDK retries), {failed} failed, "
            f"{out.abandoned} abandoned by the client killed mid-request",
        ),
        (
            "failures (expected / unexpected)",
            f"{sum(out.expected.values())} / {len(out.unexpected)}: {expected}"
            + (f"; UNEXPECTED: {unexpected}" if unexpected else ""),
        ),
        (
            "restarts survived",
            f"{len(out.restarts)} (kms-sim, a kms-sim worker, vsock-proxy, an nsm-sim, a client); "
            "each back by the same command line, nothing cleaned up by hand",
        ),
        ("hostile clients", f"{hostile} ({_n(out.hostile_overlap_calls)} calls answered meanwhile)"),
        (
            "audit log's disk full",
            f"{DISK_FULL_TEXT}: {_n(led.missing_in_disk_full)} records not written, "
            f"{_n(led.dropped_reported)} reported lost by kms-sim; every call still answered",
        ),
        (
            "records lost",
            f"{led.lost} ({_n(led.acknowledged)} answers acknowledged: {_n(led.recorded)} recorded, "
            f"{_n(led.missing_in_disk_full)} dropped while the disk was full; {led.key_stores_found}/"
            f"{led.key_stores_acknowledged} key stores in the database, "
            f"{led.key_stores_acknowledged - led.key_store_records_missing} in the audit log)",
        ),
        (
            "corrupt files",
            f"{int(led.corrupt)} ({_n(led.audit_lines)} audit lines, {led.audit_corrupt} unparsable; "
            f"keystores.db integrity_check: {led.key_store_integrity})",
        ),
        (
            "leaks found",
            f"{len(out.leaks)} ({values}; {_n(out.needles)} needles, each value in each written form, "
            f"searched in {scanned / 1e6:,.0f} MB: proxy capture, logs, every file under the home, argv and "
            f"environment, error messages; the secret key found in its own file {len(out.allowed_hits)} "
            "time(s), as it must be)",
        ),
        (
            "cross-decryption",
            f"client {out.swap.get('to_client')} handed client {out.swap.get('from_client')}'s "
            f"CiphertextForRecipient: {out.swap.get('decryption_errors')} DecryptionError",
        ),
        ("fd / thread / RSS", f"{sum(flat.values())}/{len(flat)} services flat, first -> last below"),
        ("runtime", f"{out.seconds:.1f} s"),
    ]


DISK_FULL_TEXT = "RLIMIT_FSIZE of kms-sim's workers at the log's size for two rounds"


def _usage_rows(out: Outcome) -> list[tuple[str, str, str, str, str]]:
    rows = []
    flat = out.flat()
    nsm = [r for r in out.first if r.startswith("nsm-sim ")]
    for role, first in out.first.items():
        if role in nsm:
            continue
        last = out.last.get(role)
        rows.append((role, *_cells(first, last), "yes" if flat[role] else "NO"))
    if nsm:
        total_first = Usage(
            pid=0,
            fds=sum(out.first[r].fds for r in nsm),
            threads=sum(out.first[r].threads for r in nsm),
            rss_kib=sum(out.first[r].rss_kib for r in nsm),
        )
        lasts = [out.last[r] for r in nsm if r in out.last]
        total_last = Usage(
            pid=0,
            fds=sum(u.fds for u in lasts),
            threads=sum(u.threads for u in lasts),
            rss_kib=sum(u.rss_kib for u in lasts),
        )
        ok = sum(flat[r] for r in nsm)
        rows.append((f"nsm-sim x{len(nsm)} (sums)", *_cells(total_first, total_last), f"{ok}/{len(nsm)}"))
    return rows


def _cells(first: Usage, last: Usage | None) -> tuple[str, str, str]:
    if last is None:
        return (f"{first.fds} -> gone", f"{first.threads} -> gone", f"{first.rss_kib / 1024:.1f} -> gone")
    return (
        f"{first.fds} -> {last.fds}",
        f"{first.threads} -> {last.threads}",
        f"{first.rss_kib / 1024:.1f} -> {last.rss_kib / 1024:.1f}",
    )


def tables(out: Outcome) -> str:
    """The two tables as Markdown (also what is printed)."""
    lines = ["| what | result |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in summary(out)]
    lines += [
        "",
        "fd / thread / RSS (MiB) of every service, first -> last, at quiet points (every client's "
        "connection closed): first after the crashes and a warm round, last after the load.",
        "",
        "| process | fds | threads | RSS MiB | flat |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {' | '.join(row)} |" for row in _usage_rows(out)]
    missed = out.missed()
    lines += ["", "Verdict: " + ("every zero-target met." if not missed else "MISSED: " + "; ".join(missed))]
    return "\n".join(lines)


def markdown(machine: Mapping[str, Any], out: Outcome) -> str:
    s = out.settings
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
    head = [
        "# attested-random stress results",
        "",
        f"Reproduce with `make stress`. Taken {machine['date']} at `{machine['git']}`.",
        "",
        f"Machine: {machine['cpu']}, {machine['cpus']} CPUs, Linux {machine['kernel']}, "
        f"Python {machine['python']}; load average (1, 5, 15 min) at start {machine['load_at_start']}.",
        f"Versions: {versions}.",
        "",
        f"Settings: {s.clients} enclave clients (processes, each with its own nsm-sim and RSA key pair) x "
        f"{s.requests} attested GenerateRandom of {s.n_bytes} bytes, in rounds of {s.batch} per client, "
        f"through one vsock-proxy to one `kms-sim --workers {s.kms_workers} --request-timeout "
        f"{s.request_timeout_s:g}`; flood {s.flood_bytes / 1e6:g} MB, "
        f"drip one byte per {s.drip_interval_s:g} s; {s.key_stores} key stores.",
        "",
        "",
    ]
    events = ["", "## What happened", ""]
    events += [
        f"- {note} (the first call it hit begun after it: answered {out.recovery_s.get(w.name)} s after it)"
        for note, w in zip(out.restarts, out.windows, strict=False)
    ]
    events += [f"- hostile {h.name}: {h.outcome}" for h in out.hostile]
    events += ["- " + ", ".join(f"{name} at {at:.1f} s" for name, at in out.phases.items())]
    return "\n".join(head) + tables(out) + "\n" + "\n".join(events) + "\n"


def write(directory: Path, machine: dict[str, Any], out: Outcome) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MARKDOWN).write_text(markdown(machine, out), encoding="utf-8")
    document = {"machine": machine, **out.as_dict()}
    (directory / JSON).write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
