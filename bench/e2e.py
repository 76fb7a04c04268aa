"""Scenarios 1 and 2: attested GenerateRandom end to end, and the plain call against moto, in one run.

Sequential group (everything pinned to CPU 0, rounds interleaved A B C D A B C D ...):
- moto plain: boto3 -> ThreadedMotoServer (scenario 2's peer);
- kms-sim plain: the same boto3 client -> ``kms-sim serve`` (scenario 2);
- attested, N in sizes: SDK ``enclave.client("kms")`` -> ``vsock-proxy`` -> ``kms-sim``, NSM attestation
  through ``nsm-sim`` (scenario 1, one sequential client);
- the topology floor (``bench.chain``): the same four processes doing only the four public-key operations
  and the same socket I/O; with the in-process crypto floor, it splits what an attested call costs beyond
  the crypto into what the four-process topology costs and what our programs' own work costs.
Concurrency series (scenario 1, both cores, unpinned by design): 1, 4 and 16 SDK client processes against
``kms-sim serve --workers 2``, interleaved round by round.
"""

from __future__ import annotations

import importlib.util
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import chain, profile
from bench.clients import Series, Worker, interleave, quit_workers, run_round, start_workers
from bench.floor import floor_round
from bench.harness import Pinning, Settings
from bench.model import BenchError, Ratio, Row, ScenarioResult, reason
from bench.stack import KmsServer, enclave_env, kms_supports_workers, start_kms, start_nsm, start_proxy
from nitro_sim.procs import OutputLine, Process, ProcessError, ProcessGroup

SEQ_CPU = 0
#: Uvicorn worker processes of kms-sim in the concurrency series (one per core).
CONCURRENT_KMS_WORKERS = 2
TITLE_1 = "End to end, attested: SDK -> vsock-proxy -> kms-sim -> back"
TITLE_2 = "Peer, same run: plain GenerateRandom via boto3, moto vs kms-sim"
MOTO_CREDENTIALS = ("testing", "testing")
MOTO = "moto plain (boto3)"
FLOOR = "crypto floor (in-process, interleaved)"
CHAIN = "topology floor (bench.chain)"
PLAIN = "kms-sim plain (boto3)"
#: Above this spread of the interleaved crypto floor's rounds, the report calls the run noisy.
NOISY_SPREAD_PCT = 5.0
#: The server processes that work for each sequential configuration (besides its client); the other
#: watched processes idle through its rounds, and their background timers are not charged to it.
SERVERS = {
    MOTO: frozenset({"moto"}),
    PLAIN: frozenset({"kms-sim"}),
    CHAIN: frozenset(chain.STANDS_IN_FOR),
}
ATTESTED_SERVERS = frozenset({"kms-sim", "nsm-sim", "vsock-proxy"})


@dataclass(slots=True)
class E2EOutcome:
    s1: ScenarioResult
    s2: ScenarioResult
    plot: dict[str, list[float]] = field(default_factory=dict)


def _row(name: str, series: Series, unit: str, layout: str) -> Row:
    lat = series.latencies()
    return Row(case=name, unit=unit, value=series.rate, p50_us=lat.p(50), p99_us=lat.p(99), layout=layout)


def _boto3_args(endpoint: str, access: str, secret: str, region: str, n: int) -> list[str]:
    return [
        "--endpoint",
        endpoint,
        "--access-key",
        access,
        "--secret-key",
        secret,
        "--region",
        region,
        "--n",
        str(n),
    ]


def _sdk_args(kms: KmsServer, proxy_port: int, n: int) -> list[str]:
    return ["--access-key", kms.access_key, "--secret-key", kms.secret_key, "--region", kms.region,
            "--proxy-port", str(proxy_port), "--n", str(n)]  # fmt: skip


def run_sequential(
    settings: Settings,
    *,
    pinning: Pinning,
    home: Path,
    procs: ProcessGroup,
    floors: dict[str, float] | None,
    out: E2EOutcome,
) -> None:
    layout = pinning.describe(f"all processes on CPU {SEQ_CPU}")
    groups: dict[str, Sequence[Worker]] = {}
    watch: dict[str, Process] = {}  # servers whose CPU per call is reported
    if importlib.util.find_spec("moto") is None:
        out.s2.notes.append("moto not measured: moto[server] is not installed (make bench installs .[bench])")
    else:
        moto = procs.start(
            pinning.wrap([sys.executable, "-m", "bench.moto_peer"], SEQ_CPU),
            name="moto",
            ready=OutputLine(pattern=r"^http://"),
        )
        watch["moto"] = moto
        groups[MOTO] = start_workers(
            procs, pinning, kind="boto3", count=1, cpu=SEQ_CPU, settings=settings,
            args=_boto3_args(moto.ready_line or "", *MOTO_CREDENTIALS, "us-east-1", 32),
        )  # fmt: skip
    kms: KmsServer | None = None
    try:
        kms = start_kms(procs, pinning, home, cpu=SEQ_CPU)
        watch["kms-sim"] = kms.proc
        groups[PLAIN] = start_workers(
            procs, pinning, kind="boto3", count=1, cpu=SEQ_CPU, settings=settings,
            args=_boto3_args(kms.url, kms.access_key, kms.secret_key, kms.region, 32),
        )  # fmt: skip
    except (BenchError, ProcessError) as e:
        out.s2.notes.append(f"kms-sim not measured: {reason(e)}")
    attested: list[str] = []
    if kms is None:
        out.s1.error = "kms-sim is not available"
    else:
        try:
            nsm, watch["nsm-sim"] = start_nsm(procs, pinning, home, cpu=SEQ_CPU)
            proxy_port, watch["vsock-proxy"] = start_proxy(
                procs, pinning, home, cpu=SEQ_CPU, target_port=kms.port
            )
            for n in settings.sizes:
                name = f"attested N={n} (SDK)"
                groups[name] = start_workers(
                    procs, pinning, kind="sdk", count=1, cpu=SEQ_CPU, settings=settings,
                    args=_sdk_args(kms, proxy_port, n), env=enclave_env(home, nsm),
                )  # fmt: skip
                attested.append(name)
        except (BenchError, ProcessError) as e:
            out.s1.error = reason(e)
    if attested:
        try:  # the topology floor is an extra: without it the report still stands
            stand_ins = chain.start(procs, pinning, home, cpu=SEQ_CPU)
            groups[CHAIN] = start_workers(
                procs, pinning, kind="chain", count=1, cpu=SEQ_CPU, settings=settings,
                args=stand_ins.worker_args,
            )  # fmt: skip
            watch.update(stand_ins.processes)
        except (BenchError, ProcessError) as e:
            out.s1.notes.append(f"Topology floor not measured: {reason(e)}")
    if not groups:
        out.s2.error = "neither moto nor kms-sim could be started"
        return
    series = interleave(groups, settings, watch=watch, in_process={FLOOR: floor_round(pinning)})
    for ws in groups.values():
        quit_workers(procs, ws)
    procs.stop_all()
    _sequential_results(series, attested=attested, layout=layout, settings=settings, floors=floors, out=out)


def _own_cpu(name: str, series: Series) -> dict[str, float]:
    """CPU per call of the client and the servers that worked for this configuration."""
    servers = SERVERS.get(name, ATTESTED_SERVERS)
    return {k: v for k, v in series.cpu_us_per_call().items() if k == "client" or k in servers}


def pinning_layout_floor(layout: str) -> str:
    return layout if layout.startswith("unpinned") else f"bench process on CPU {SEQ_CPU}"


def _sequential_results(
    series: dict[str, Series],
    *,
    attested: list[str],
    layout: str,
    settings: Settings,
    floors: dict[str, float] | None,
    out: E2EOutcome,
) -> None:
    moto_s, plain = series.get(MOTO), series.get(PLAIN)
    noisy = series[FLOOR].rate.spread_pct > NOISY_SPREAD_PCT
    for label, s in (("moto plain, N=32", moto_s), ("kms-sim plain, N=32", plain)):
        if s is not None:
            out.s2.rows.append(_row(label, s, "req/s", layout))
            out.plot[f"{label} (boto3)"] = s.latencies_us
    if plain is not None and moto_s is not None:
        out.s2.ratios.append(
            Ratio(name="ours plain / moto plain", value=plain.rate.median / moto_s.rate.median, noisy=noisy)
        )
    for name in attested:
        s = series[name]
        out.s1.rows.append(_row(f"{name}, 1 client, sequential", s, "req/s", layout))
        out.plot[name] = s.latencies_us
    floor_s = series.pop(FLOOR)
    out.s1.rows.append(
        Row(case="crypto floor: the four operations back to back, rounds interleaved", unit="sets/s",
            value=floor_s.rate, layout=pinning_layout_floor(layout))
    )  # fmt: skip
    out.s1.data["floor_interleaved_per_s"] = floor_s.rate.median
    if noisy:
        out.s1.data["noise"] = (
            f"**Noisy run**: the interleaved crypto floor, pure computation on one core, spread "
            f"{floor_s.rate.spread_pct:.0f}% across its rounds (a quiet machine gives <= "
            f"{NOISY_SPREAD_PCT:.0f}%): other work shared this machine. moto's rate suffers from it more "
            "than ours, so the ratios against moto are not to be trusted; rerun `make bench` when quiet."
        )
    chain_s = series.pop(CHAIN, None)
    if chain_s is not None:
        out.s1.rows.append(_row(
            "topology floor: the same four processes doing only the crypto and the socket I/O (bench.chain)",
            chain_s, "calls/s", layout,
        ))  # fmt: skip
        out.s1.data["topology_floor_per_s"] = chain_s.rate.median
        out.s1.data.setdefault("series", {})[CHAIN] = chain_s.as_dict()
        chain_cpu = _own_cpu(CHAIN, chain_s)
        out.s1.data["topology_floor_cpu_us_per_call"] = chain_cpu
        parts = ", ".join(f"{k} {v:,.0f}" for k, v in sorted(chain_cpu.items(), key=lambda kv: -kv[1]))
        out.s1.notes.append(f"CPU per call, topology floor: {parts} us (/proc utime+stime over the rounds)")
    for name, s in series.items():
        (out.s1 if name in attested else out.s2).data.setdefault("series", {})[name] = s.as_dict()
        cpu = _own_cpu(name, s)
        target = out.s1 if name in attested else out.s2
        target.data.setdefault("cpu_us_per_call", {})[name] = cpu
        busy = sum(cpu.values())
        wall = 1e6 / s.rate.median
        parts = ", ".join(f"{k} {v:,.0f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]) if v >= 1)
        target.notes.append(
            f"CPU per call, {name}: {parts} us (sum {busy:,.0f} us of {wall:,.0f} us per call on one core; "
            "from /proc utime+stime over the rounds)"
        )
    first = series.get(attested[0]) if attested else None
    if first is not None and settings.sizes[0] == 32:
        rate = first.rate.median
        out.s1.data["sequential_n32_per_s"] = rate
        if moto_s is not None:
            ratio = Ratio(
                name="ours attested (N=32) / moto plain",
                value=rate / moto_s.rate.median,
                target=2.0,
                noisy=noisy,
            )
            out.s2.ratios.insert(0, ratio)
        floor_rate = floor_s.rate.median
        out.s1.ratios.append(
            Ratio(
                name="sequential N=32 / crypto floor (same rounds)",
                value=rate / floor_rate,
                target=0.6,
                noisy=noisy,
                detail=(
                    f"{rate:,.0f} req/s against a floor of {floor_rate:,.0f} sign+verify+encrypt+decrypt "
                    "sets/s measured on the same core in rounds interleaved with the end-to-end ones"
                ),
            )
        )
        if chain_s is not None:
            out.s1.ratios.append(
                Ratio(
                    name="sequential N=32 / topology floor (same rounds)",
                    value=rate / chain_s.rate.median,
                    detail=(
                        f"the topology floor ran {chain_s.rate.median:,.0f} calls/s: "
                        f"{1e6 / chain_s.rate.median - 1e6 / floor_rate:,.0f} us per call above the crypto "
                        "floor is what four Python processes on one core cost with no work of their own"
                    ),
                )
            )
        if floors is not None:
            out.s1.ratios.append(
                Ratio(
                    name="sequential N=32 / crypto floor (scenario 3's per-op medians)",
                    value=rate / floors["floor_per_s"],
                    detail=f"floor {floors['floor_per_s']:,.0f} req/s from scenario 3, taken minutes apart",
                )
            )
    out.s2.notes.append(
        "boto3 spends ~1 ms of CPU per call by itself (deps-and-costs §5b), so boto3-driven rates are capped "
        "near 1,000 req/s whatever the server; the attested numbers use our SDK client, not boto3."
    )


def run_concurrency(
    settings: Settings, pinning: Pinning, home: Path, procs: ProcessGroup, out: E2EOutcome
) -> None:
    """1, 4, 16 concurrent SDK client processes on both cores; kms-sim with one worker per core."""
    s1 = out.s1
    workers = CONCURRENT_KMS_WORKERS if kms_supports_workers() else 1
    if workers == 1:
        s1.notes.append(
            "kms-sim serve has no --workers option: the concurrency series ran one server process"
        )
    layout = f"unpinned (both cores), kms-sim --workers {workers}, one nsm-sim per client"
    kms = start_kms(procs, pinning, home, cpu=None, workers=workers)
    proxy_port, _ = start_proxy(procs, pinning, home, cpu=None, target_port=kms.port)
    # Every client process is its own simulated enclave with its own NSM device, as nitro-cli sets them up.
    devices = [
        start_nsm(procs, pinning, home, cpu=None, index=i)[0] for i in range(sum(settings.concurrency))
    ]
    for n in settings.sizes:
        groups: dict[str, Sequence[Worker]] = {}
        first = 0
        for c in settings.concurrency:
            envs = [enclave_env(home, nsm) for nsm in devices[first : first + c]]
            first += c
            groups[f"N={n}, {c} clients"] = start_workers(
                procs, pinning, kind="sdk", count=c, cpu=None, settings=settings,
                args=_sdk_args(kms, proxy_port, n), env=envs,
            )  # fmt: skip
        series = interleave(groups, settings)
        for ws in groups.values():
            quit_workers(procs, ws)
        for name, s in series.items():
            s1.rows.append(_row(f"attested {name}", s, "req/s", layout))
            s1.data.setdefault("series", {})[f"attested {name}"] = s.as_dict()
        one = series[f"N={n}, {settings.concurrency[0]} clients"].rate.median
        for c in settings.concurrency[1:]:
            rate = series[f"N={n}, {c} clients"].rate.median
            target = 1.5 if c == 4 and n == 32 else None
            s1.ratios.append(
                Ratio(name=f"N={n}: {c} clients / 1 client (both unpinned)", value=rate / one, target=target)
            )
            seq = s1.data.get("sequential_n32_per_s")
            if n == 32 and c == 4 and seq:
                s1.ratios.append(
                    Ratio(name="N=32: 4 clients / 1 sequential client pinned to one core", value=rate / seq)
                )
        if n == settings.sizes[0] and len(settings.concurrency) > 1:
            c = settings.concurrency[1]
            out.plot[f"attested N={n} (SDK), {c} clients"] = series[f"N={n}, {c} clients"].latencies_us
    procs.stop_all()


def run_profile(
    settings: Settings, pinning: Pinning, home: Path, procs: ProcessGroup, s3: ScenarioResult
) -> None:
    """One profiled round of the sequential attested call (N=32); results go to scenario 3.

    CPU time (not wall time: on one shared core a ``send`` that wakes the peer would be charged with the
    peer's work) of the SDK client, kms-sim and nsm-sim, per request and category; the client's wall time
    minus the three CPU times is what the transport (vsock-proxy, kernel, scheduling) costs.
    """
    prof = {side: home / f"{side}.prof" for side in ("client", "kms-sim", "nsm-sim")}
    kms = start_kms(procs, pinning, home, cpu=SEQ_CPU, profile=prof["kms-sim"])
    nsm, nsm_proc = start_nsm(procs, pinning, home, cpu=SEQ_CPU, profile=prof["nsm-sim"])
    proxy_port, _ = start_proxy(procs, pinning, home, cpu=SEQ_CPU, target_port=kms.port)
    workers = start_workers(
        procs, pinning, kind="sdk", count=1, cpu=SEQ_CPU, settings=settings,
        args=_sdk_args(kms, proxy_port, 32), env=enclave_env(home, nsm), profile=str(prof["client"]),
    )  # fmt: skip
    servers = (kms.proc, nsm_proc)
    for proc in servers:  # to the profiled process itself (bench.profiled), not its group
        proc.popen.send_signal(signal.SIGUSR1)
    result = run_round(workers, settings.round_seconds)
    for proc in servers:
        proc.popen.send_signal(signal.SIGUSR2)
    measured = len(result.latencies_us)
    served = measured + 1  # the worker's untimed call before the round falls inside the servers' window
    lifetime = served + workers[0].warmup_calls  # calls over the client's whole connection
    quit_workers(procs, workers)
    time.sleep(0.3)  # let the servers' connection threads see the client leave and file their profiles
    for proc in servers:  # SIGINT: a re-raised SIGTERM would kill them before the profile is written
        procs.stop(proc, signum=signal.SIGINT)
    procs.stop_all()
    wall_us = sum(result.latencies_us) / max(measured, 1)
    data: dict[str, Any] = {"requests_profiled": measured, "client_wall_us_per_request": round(wall_us, 1)}
    cpu_total = 0.0
    for side, path in prof.items():
        if not path.exists():
            s3.notes.append(f"Profile: {side} wrote no profile")
            continue
        rows = profile.per_request(profile.categorize(path), measured if side == "client" else served)
        threads = path.with_name(
            path.name + ".threads"
        )  # per-connection threads, whole life (bench.profiled)
        if threads.exists():
            for k, v in profile.per_request(profile.categorize(threads), lifetime).items():
                rows[k] = round(rows.get(k, 0.0) + v, 1)
            rows = dict(sorted(rows.items(), key=lambda kv: -kv[1]))
        data[f"{side}_cpu_us_per_request"] = rows
        cpu_total += sum(rows.values())
        s3.notes += profile.table(f"Profile, {side} (CPU us per request)", rows)
    data["transport_and_scheduling_us_per_request"] = round(max(wall_us - cpu_total, 0.0), 1)
    s3.notes.append(
        f"Profile: {wall_us:,.0f} us wall per request at the client (profiling on); CPU of client, kms-sim "
        f"and nsm-sim {cpu_total:,.0f} us; the rest, {max(wall_us - cpu_total, 0):,.0f} us, is vsock-proxy, "
        "the kernel and scheduling."
    )
    s3.data["profile"] = data
