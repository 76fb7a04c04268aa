"""For every missed target, what the same run's measurements say is in the way (issue 6: "where a target is
missed, the report says by how much and what the profile shows is in the way").

Evidence used, all from this run: CPU per call of each process (/proc, scenario 1's sequential rounds), the
CPU-time profiles (scenario 3), and the crypto floor's per-operation costs (scenario 3).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bench.chain import STANDS_IN_FOR
from bench.model import ScenarioResult

#: Profile categories that are the unavoidable public-key work (or idling), not overhead.
CRYPTO = frozenset({"ECDSA sign", "ECDSA verify", "RSA-OAEP", "key generation", "event loop wait"})
SEQ_N32 = "attested N=32 (SDK)"


def _missed(result: ScenarioResult | None, prefix: str) -> bool:
    return result is not None and any(r.name.startswith(prefix) and r.met is False for r in result.ratios)


def _top_overheads(profile: Mapping[str, Any], side: str, count: int = 3) -> str:
    rows: Mapping[str, float] = profile.get(f"{side}_cpu_us_per_request", {})
    parts = [(k, v) for k, v in rows.items() if k not in CRYPTO][:count]
    return ", ".join(f"{k} {v:,.0f}" for k, v in parts)


def _cpu_line(cpu: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {v:,.0f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]) if v >= 1)


def _budget(s1: ScenarioResult, s2: ScenarioResult, s3: ScenarioResult | None) -> str:
    """Where the 2x-moto budget goes: crypto floor, topology floor, our own work (all from this run)."""
    moto = next((r.value.median for r in s2.rows if r.case.startswith("moto plain")), 0.0)
    ours = s1.data.get("sequential_n32_per_s", 0.0)
    crypto = s1.data.get("floor_interleaved_per_s", 0.0)
    topology = s1.data.get("topology_floor_per_s", 0.0)
    if not (moto and ours and crypto and topology):
        return ""
    need, ours_us, crypto_us, topo_us = 1e6 / (2 * moto), 1e6 / ours, 1e6 / crypto, 1e6 / topology
    text = (
        f". 2x moto needs <= {need:,.0f} us per call on the core. "
        f"The crypto floor takes {crypto_us:,.0f} us; "
        f"the topology floor (four Python processes doing only that crypto and the same socket I/O) takes "
        f"{topo_us:,.0f} us, so context switches, kernel socket paths and the caches each process finds "
        f"cold cost {topo_us - crypto_us:,.0f} us with no work of ours at all. That leaves "
        f"{need - topo_us:,.0f} us per call for everything our four programs do besides (HTTP, SigV4, JSON, "
        f"CBOR, CMS, policy, audit, event loop); they take {ours_us - topo_us:,.0f} us"
    )
    core: Mapping[str, float] = s3.data.get("components_by_process_us", {}) if s3 is not None else {}
    if core:
        warm = sum(core.values()) - crypto_us
        text += f" on the core ({warm:,.0f} us when timed in-process, warm, with no I/O)"
    ours_cpu: Mapping[str, float] = s1.data.get("cpu_us_per_call", {}).get(SEQ_N32, {})
    floor_cpu: Mapping[str, float] = s1.data.get("topology_floor_cpu_us_per_call", {})
    pairs = {**{prog: stand for stand, prog in STANDS_IN_FOR.items()}, "client": "client"}
    own = {p: ours_cpu[p] - floor_cpu[f] for p, f in pairs.items() if p in ours_cpu and f in floor_cpu}
    if own:
        text += "; CPU per call beyond each stand-in: " + ", ".join(
            f"{k} {v:,.0f}" for k, v in sorted(own.items(), key=lambda kv: -kv[1])
        )
        if min(own.values()) < 0:
            text += " (a negative figure: that program used less CPU than its stand-in)"
    return text


def explain(results: Mapping[str, ScenarioResult]) -> None:
    """Append an "In the way:" note to each scenario with a missed target."""
    s1, s2, s3, s4 = (results.get(k) for k in ("1", "2", "3", "4"))
    floors: Mapping[str, float] = s3.data.get("floors", {}) if s3 is not None else {}
    profile: Mapping[str, Any] = s3.data.get("profile", {}) if s3 is not None else {}
    cpu_all: Mapping[str, Mapping[str, float]] = s1.data.get("cpu_us_per_call", {}) if s1 is not None else {}
    cpu = cpu_all.get(SEQ_N32, {})
    cpu_sum = sum(cpu.values())
    if s1 is not None and cpu and floors and _missed(s1, "sequential N=32 / crypto floor"):
        interleaved = s1.data.get("floor_interleaved_per_s")
        floor_us = 1e6 / interleaved if interleaved else floors["floor_us"]
        rate = s1.data.get("sequential_n32_per_s", 0.0)
        wall = 1e6 / rate if rate else 0.0
        note = (
            f"In the way (sequential, N=32): {cpu_sum:,.0f} us of CPU per call ({_cpu_line(cpu)}) against "
            f"the {floor_us:,.0f} us floor, so {cpu_sum - floor_us:,.0f} us per call is work around the four "
            "public-key operations"
        )
        if wall > cpu_sum * 1.1:
            note += (
                f"; and {wall - cpu_sum:,.0f} us of the {wall:,.0f} us per call the core ran something else"
            )
        core: Mapping[str, float] = s3.data.get("components_by_process_us", {}) if s3 is not None else {}
        # A negative difference means the in-process timing ran slower than the process did (noise): omitted.
        shells = {k: cpu[k] - v for k, v in core.items() if k in cpu and cpu[k] > v}
        if shells:
            note += (
                "; beyond their in-process core work (scenario 3), the processes spent "
                + ", ".join(f"{k} {v:,.0f}" for k, v in shells.items())
                + " us per call in their HTTP, framing, event-loop and socket shells"
            )
        if profile:
            note += (
                f". Largest non-crypto costs in the profile (us, inflated by cProfile): kms-sim: "
                f"{_top_overheads(profile, 'kms-sim')}; client: {_top_overheads(profile, 'client')}; "
                f"nsm-sim: {_top_overheads(profile, 'nsm-sim')}"
            )
        s1.notes.append(note + ".")
    if s1 is not None and cpu and _missed(s1, "N=32: 4 clients / 1 client"):
        four = next((r.value.median for r in s1.rows if r.case == "attested N=32, 4 clients"), 0.0)
        s1.notes.append(
            f"In the way (4 clients): at {four:,.0f} calls/s and ~{cpu_sum:,.0f} us of CPU per call the run "
            f"kept ~{four * cpu_sum / 1e6:.2f} of the 2 cores busy; more needs less CPU per call."
        )
    moto = (s2.data.get("cpu_us_per_call", {}) if s2 is not None else {}).get("moto plain (boto3)", {})
    if s2 is not None and cpu and moto and _missed(s2, "ours attested"):
        note = (
            f"In the way (2x moto): an attested call costs {cpu_sum:,.0f} us of CPU ({_cpu_line(cpu)}); "
            f"moto's plain call {sum(moto.values()):,.0f} us ({_cpu_line(moto)}), boto3's client included"
        )
        if s1 is not None:
            note += _budget(s1, s2, s3)
        s2.notes.append(note + ".")
    if s4 is not None and floors and _missed(s4, "with chain cache / target"):
        cached = next((r.value.median for r in s4.rows if "re-verified" in r.case), 0.0)
        verify_us = floors["verify_us"]
        overhead = 1e6 / cached - verify_us if cached else 0.0
        around = (
            f"the verifier adds {overhead:,.0f} us per document around it (decode, limits, cache lookup, "
            "validity)"
            if overhead >= 1
            else "the verifier's own work around it is below this run's noise (the bare verify's rounds "
            "spread more than the difference)"
        )
        s4.notes.append(
            f"In the way (2,500/s): one ECDSA P-384 verify costs {verify_us:,.0f} us on this machine "
            f"({floors['one_verify_per_s']:,.0f}/s at most); {around}. The target needs <= 400 us in all, "
            "so it cannot be met on this CPU whatever the verifier does."
        )
