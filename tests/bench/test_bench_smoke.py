"""Smoke test of ``make bench``: the harness runs end to end with tiny round counts, so it never rots.

It runs ``python -m bench --quick`` as a process, exactly as ``make bench`` does (minus the counts), and
checks the results it writes. It asserts nothing about time: the numbers of a quick run mean nothing.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("bench-results")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NITRO_SIM")}
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return proc, out


def _scenarios(out: Path) -> dict[str, dict[str, object]]:
    doc = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert {"date", "cpu", "cpus", "versions", "python"} <= doc["machine"].keys()
    return {s["key"]: s for s in doc["scenarios"]}


def test_writes_markdown_and_json(quick_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, out = quick_run
    assert "Traceback" not in proc.stderr, proc.stderr
    text = (out / "results.md").read_text(encoding="utf-8")
    assert text.startswith("# attested-random benchmark results")
    assert "make bench" in text
    assert set(_scenarios(out)) == {"1", "2", "3", "4", "5", "6", "7", "8"}
    assert "## 3. Crypto floor" in proc.stdout  # the table is printed to the terminal too


def test_crypto_floor_measures_the_four_operations(
    quick_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, out = quick_run
    s3 = _scenarios(out)["3"]
    assert s3["error"] is None
    cases = [r["case"] for r in s3["rows"]]  # type: ignore[attr-defined]
    assert cases[:4] == [
        "ECDSA P-384 sign (document)",
        "ECDSA P-384 verify",
        "RSA-2048 OAEP encrypt",
        "RSA-2048 OAEP decrypt",
    ]
    assert s3["data"]["floors"]["floor_per_s"] > 0  # type: ignore[index]


def test_in_process_breakdown_runs_our_pipeline(
    quick_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, out = quick_run
    s3 = _scenarios(out)["3"]
    by_process = s3["data"]["components_by_process_us"]  # type: ignore[index]
    assert set(by_process) == {"nsm-sim", "client", "kms-sim"}
    assert all(v > 0 for v in by_process.values())


def test_proxy_scenario_relays_bytes(quick_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    _, out = quick_run
    s5 = _scenarios(out)["5"]
    assert s5["error"] is None
    assert s5["rows"], s5["notes"]
    assert all(r["median"] > 0 for r in s5["rows"])  # type: ignore[attr-defined]


def test_verification_scenario_runs_the_verifier(
    quick_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, out = quick_run
    s4 = _scenarios(out)["4"]
    assert s4["error"] is None
    cases = [r["case"] for r in s4["rows"]]  # type: ignore[attr-defined]
    assert len(cases) == 3
    assert all("Verifier" in c for c in cases)


def test_every_scenario_ran(quick_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, out = quick_run
    errors = {key: s["error"] for key, s in _scenarios(out).items() if s["error"] is not None}
    assert errors == {}
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_end_to_end_and_peer_scenarios_measure_our_stack(
    quick_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, out = quick_run
    scenarios = _scenarios(out)
    s1_cases = [r["case"] for r in scenarios["1"]["rows"]]  # type: ignore[attr-defined]
    assert any("sequential" in c for c in s1_cases)
    assert any("2 clients" in c for c in s1_cases)  # the quick run's concurrency series is 1 and 2
    for row in scenarios["1"]["rows"]:  # type: ignore[attr-defined]
        assert row["median"] > 0
        if row["unit"] == "req/s":
            assert 0 < row["p50_us"] <= row["p99_us"]
    assert scenarios["1"]["data"]["floor_interleaved_per_s"] > 0  # type: ignore[index]
    s2_cases = [r["case"] for r in scenarios["2"]["rows"]]  # type: ignore[attr-defined]
    assert "kms-sim plain, N=32" in s2_cases
    profile = scenarios["3"]["data"]["profile"]  # type: ignore[index]
    assert profile["requests_profiled"] > 0
    assert {"client_cpu_us_per_request", "kms-sim_cpu_us_per_request", "nsm-sim_cpu_us_per_request"} <= set(
        profile
    )


def test_topology_floor_runs_the_four_stand_ins(
    quick_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    from bench import chain

    _, out = quick_run
    s1 = _scenarios(out)["1"]
    assert s1["data"]["topology_floor_per_s"] > 0  # type: ignore[index]
    assert any(r["case"].startswith("topology floor") for r in s1["rows"])  # type: ignore[attr-defined]
    # /proc counts CPU in 10 ms ticks: in a quick run a stand-in may show none.
    assert set(s1["data"]["topology_floor_cpu_us_per_call"]) <= {"client", *chain.STANDS_IN_FOR}  # type: ignore[index]
    assert any(r["name"] == "sequential N=32 / topology floor (same rounds)" for r in s1["ratios"])  # type: ignore[attr-defined]


def test_chain_stand_ins_exchange_the_real_message_sizes(tmp_path: Path) -> None:
    """bench.chain's servers, started as processes, answer the client with the sizes of a real call."""
    from bench import chain
    from bench.harness import Pinning
    from nitro_sim.procs import ProcessGroup

    with ProcessGroup(tmp_path) as procs:
        stand_ins = chain.start(procs, Pinning(enabled=False, reason="test"), tmp_path, cpu=None)
        assert set(stand_ins.processes) == set(chain.STANDS_IN_FOR)
        args = stand_ins.worker_args
        client = chain.ChainClient(Path(args[1]), Path(args[3]))
        for _ in range(3):
            client()
        client.close()
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        raw.connect(args[1])
        with raw:
            raw.sendall(b"\0" * chain.NSM_REQUEST_BYTES)
            buf = bytearray(chain.NSM_RESPONSE_BYTES)
            chain.read_exactly(raw, chain.NSM_RESPONSE_BYTES, buf)
            raw.settimeout(0.2)
            with pytest.raises(TimeoutError):
                raw.recv(1)  # exactly one document-sized answer per request


def test_image_scenario_builds_and_runs_the_demo_image(
    quick_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, out = quick_run
    s6 = _scenarios(out)["6"]
    cases = [str(row["case"]) for row in s6["rows"]]  # type: ignore[attr-defined]
    assert any(case.startswith("nitro-cli build-enclave (EIF") for case in cases)
    assert "run-enclave to the app's first attested answer" in cases
    assert any(case.startswith("floor: read + archive + hash") for case in cases)
    assert s6["data"]["eif_bytes"] > 0  # type: ignore[index]


def test_fixture_scenario_times_the_stack_and_the_tests(
    quick_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, out = quick_run
    s7 = _scenarios(out)["7"]
    assert s7["error"] is None
    cases = [str(row["case"]) for row in s7["rows"]]  # type: ignore[attr-defined]
    assert cases[0] == "stack ready: kms_sim + vsock_proxy + nsm, fresh home"
    assert any(case.startswith("function-scoped test (enclave_kms") for case in cases)
    assert any(case.startswith("session-scoped test") for case in cases)
    assert "    setup of fixture enclave_kms" in cases
    assert any(r["name"].startswith("stack-ready goal") for r in s7["ratios"])  # type: ignore[attr-defined]


def test_attested_ops_scenario_measures_four_configurations_against_their_floors(
    quick_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    from bench import attested_ops

    _, out = quick_run
    s8 = _scenarios(out)["8"]
    assert s8["error"] is None
    rows = {str(r["case"]): r for r in s8["rows"]}  # type: ignore[attr-defined]
    configurations = (
        attested_ops.GR_FRESH,
        attested_ops.GR_REUSED,
        attested_ops.DEC_FRESH,
        attested_ops.DEC_REUSED,
    )
    for case in configurations:
        assert rows[case]["unit"] == "req/s"
        assert rows[case]["median"] > 0
        assert 0 < rows[case]["p50_us"] <= rows[case]["p99_us"]
    for case in (attested_ops.FLOOR_FRESH, attested_ops.FLOOR_REUSED):
        assert rows[case]["unit"] == "sets/s"
        assert rows[case]["median"] > 0
    assert rows[attested_ops.AES_OPEN]["unit"] == "us/op"
    ratios = {str(r["name"]): r["value"] for r in s8["ratios"]}  # type: ignore[attr-defined]
    for case in configurations:
        assert ratios[f"{case} / its crypto floor (same rounds)"] > 0
    assert ratios["GenerateRandom: reused / fresh document (speed-up)"] > 0
    assert ratios["Decrypt: reused / fresh document (speed-up)"] > 0
    assert s8["data"]["reuse_seconds"] == attested_ops.REUSE_SECONDS  # type: ignore[index]
