"""Scenario 7: what the pytest fixtures cost a user's test, next to moto's ``mock_aws`` in the same run.

Measured, rounds interleaved (issue 13's goals: the stack ready in under :data:`READY_GOAL_S`, a
function-scoped test at most :data:`TEST_RATIO_GOAL` times a ``mock_aws`` test):

1. **Stack start-up**, in this process, as the fixtures start it in a fresh home each round (a
   function-scoped fixture's): the simulated PKI created, then ``kms-sim``, ``nsm-sim`` and ``vsock-proxy``
   forked together by the session's zygote (:mod:`nitro_sim._zygote`; the proxy towards a port held for
   kms-sim, :func:`nitro_sim.stack.reserve_port`), until all three are ready; then their stop as the
   fixtures stop them: SIGTERM and a handover to the reaper thread (what a test's teardown pays), and the
   time until the reaper has reaped them all (paid in the background). Once per run: the zygote's own start
   (an interpreter importing every program's code), which a session pays once. Floors: a bare interpreter
   start, and one that imports each program's code (what each start cost before the zygote).
2. **Per test**, in child pytest sessions (the plugin loaded from its entry point, as a user has it), each
   of :data:`TESTS_PER_SESSION` tests, the first of each session left out (imports, caches):

   - ``def test(enclave_kms)`` calling ``generate_random(NumberOfBytes=32)``, ``--nitro-sim-scope=function``
     (every test starts and stops the whole stack), with the setup time of each fixture;
   - the same test under the default session scope (one stack, reset between tests);
   - moto: a fixture ``with mock_aws(): yield boto3.client("kms")`` and a plain ``generate_random``.

   A test's time is pytest's own: setup + call + teardown durations of its reports.

Nothing here is asserted on time; the numbers go into the report with their verdicts.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.harness import Settings, Summary, summarize
from bench.model import BenchError, Ratio, Row, ScenarioResult

if TYPE_CHECKING:
    from nitro_sim._reaper import Reaper
    from nitro_sim._zygote import Zygote

TITLE = "pytest fixtures: the attested stack's start-up and a function-scoped test, against moto's mock_aws"
#: Issue 13's goals.
READY_GOAL_S = 0.5
TEST_RATIO_GOAL = 3.0
#: Tests per child pytest session, and in a quick run. The first (imports; under the session scope, the
#: stack's start) and the last (under the session scope, the stack's stop) are left out.
TESTS_PER_SESSION = 7
QUICK_TESTS_PER_SESSION = 3
#: Bound on one child pytest session.
SESSION_TIMEOUT_S = 300.0
#: The first CID of the stack's NSM devices (the fixtures' own choice, nitro_sim.stack.FIRST_NSM_CID).
NSM_CID = 1000
#: Each program's entry module, imported by the floor that shows what its start costs before any work.
PROGRAM_MODULES = {"kms-sim": "kms.cli", "vsock-proxy": "host.vsock_proxy", "nsm-sim": "host.nsm_sim"}

_TIMING_PLUGIN = '''
"""Records pytest's phase durations per test and each fixture's setup time into $BENCH_TIMING_FILE."""
import json, os, time
import pytest

_tests = {}
_current = [None]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    _current[0] = item.nodeid
    _tests.setdefault(item.nodeid, {"fixtures": {}})
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef, request):
    start = time.perf_counter()
    try:
        return (yield)
    finally:
        if _current[0] is not None:
            fixtures = _tests[_current[0]]["fixtures"]
            fixtures[fixturedef.argname] = time.perf_counter() - start


def pytest_runtest_logreport(report):
    entry = _tests.setdefault(report.nodeid, {"fixtures": {}})
    entry[report.when] = report.duration
    entry.setdefault("outcomes", []).append(report.outcome)


def pytest_sessionfinish(session):
    with open(os.environ["BENCH_TIMING_FILE"], "w") as out:
        json.dump(list(_tests.values()), out)
'''

_NITRO_SUITE = """
import os
import pytest


@pytest.mark.parametrize("n", range(int(os.environ["BENCH_TESTS"])))
def test_generate_random(enclave_kms, n):
    assert len(enclave_kms.generate_random(NumberOfBytes=32)["Plaintext"]) == 32
"""

_MOTO_SUITE = """
import os
import boto3
import pytest
from moto import mock_aws


@pytest.fixture
def kms():
    with mock_aws():
        yield boto3.client("kms", region_name="us-east-1")


@pytest.mark.parametrize("n", range(int(os.environ["BENCH_TESTS"])))
def test_generate_random(kms, n):
    assert len(kms.generate_random(NumberOfBytes=32)["Plaintext"]) == 32
"""

#: The three child sessions: (label, suite, extra pytest arguments).
_SESSIONS = (
    ("function", _NITRO_SUITE, ("--nitro-sim-scope=function",)),
    ("session", _NITRO_SUITE, ("--nitro-sim-scope=session",)),
    ("mock_aws", _MOTO_SUITE, ()),
)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "NITRO_SIM_", "PYTEST_"))}
    env.update(extra)
    return env


def _stack_round(home: Path, zygote: Zygote, reaper: Reaper, *, one_by_one: bool) -> dict[str, float]:
    """One start of the stack as the fixtures start it, then its stop (seconds per step): handed to the
    reaper as the fixtures stop it, or ``one_by_one`` (each SIGTERM awaited) to see what each program's
    stop takes."""
    from attestation.pki import SimulatedPKI
    from nitro_sim.procs import ProcessGroup
    from nitro_sim.stack import KmsSim, Nsm, VsockProxy, reserve_port

    group = ProcessGroup(home / "logs", env=_env(NITRO_SIM_HOME=str(home)), zygote=zygote)
    times: dict[str, float] = {}
    try:
        start = time.perf_counter()
        SimulatedPKI.load_or_create(home, at=datetime.now(UTC))
        pki = time.perf_counter()
        held = reserve_port()
        if held is None:
            raise BenchError("the fixtures' start (a port held for kms-sim, the zygote) needs Linux")
        with held:
            port = held.getsockname()[1]
            kms = KmsSim.spawn(group, home, port=port)
            nsm = Nsm.spawn(group, home, cid=NSM_CID)
            proxy = VsockProxy.spawn(group, home, port)
            spawned = time.perf_counter()
            kms.wait_ready()
        kms_ready = time.perf_counter()
        proxy.wait_ready()
        proxy_ready = time.perf_counter()
        nsm.wait_ready()
        ready = time.perf_counter()
        times |= {
            "ready": ready - start,
            "pki": pki - start,
            "spawn": spawned - pki,
            "kms": kms_ready - spawned,
            "proxy": proxy_ready - kms_ready,
        }
        if one_by_one:
            for name, process in (
                ("vsock-proxy", proxy.process),
                ("nsm-sim", nsm.process),
                ("kms-sim", kms.process),
            ):
                begin = time.perf_counter()
                group.stop(process)
                times[f"stop {name}"] = time.perf_counter() - begin
        else:
            begin = time.perf_counter()
            processes, group.processes = list(reversed(group.processes)), []
            reaper.stop_later(processes)
            handed = time.perf_counter()
            while reaper.pending():
                time.sleep(0.001)
            times |= {"handover": handed - begin, "reaped": time.perf_counter() - begin}
    finally:
        group.stop_all()
    return times


def _zygote_start(work: Path) -> float:
    """Seconds from asking for a zygote to its ready line (an interpreter importing every program's code)."""
    from nitro_sim._zygote import Zygote

    zygote = Zygote(work / "zygote-floor", env=_env(NITRO_SIM_HOME=str(work)))
    try:
        begin = time.perf_counter()
        zygote.start()
        return time.perf_counter() - begin
    finally:
        zygote.close()


def _floor(code: str) -> float:
    """Seconds to run ``python -c code``. No timeout: ``Popen.wait(timeout)`` polls in steps of up to 50 ms,
    which would be measured; a Python that only imports our code, with no input, does not block."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=_env(), stdin=subprocess.DEVNULL)
    return time.perf_counter() - start


def _session(work: Path, label: str, suite: str, extra: tuple[str, ...], tests: int) -> list[dict[str, Any]]:
    """One child pytest session; the timing records of its tests (the first one, a warm-up, left out)."""
    directory = work / label
    directory.mkdir(exist_ok=True)
    (directory / "bench_timing.py").write_text(_TIMING_PLUGIN, encoding="utf-8")
    (directory / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    (directory / "test_suite.py").write_text(textwrap.dedent(suite), encoding="utf-8")
    out = directory / "timing.json"
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "bench_timing"]
    argv += ["-c", str(directory / "pytest.ini"), "--rootdir", str(directory), *extra, "test_suite.py"]
    env = _env(PYTHONPATH=str(directory), BENCH_TIMING_FILE=str(out), BENCH_TESTS=str(tests))
    done = subprocess.run(
        argv, cwd=directory, env=env, capture_output=True, text=True, timeout=SESSION_TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        last = (done.stdout.strip() or done.stderr.strip() or "no output").splitlines()[-1]
        raise BenchError(f"the {label} session failed (exit {done.returncode}): {last}")
    records: list[dict[str, Any]] = json.loads(out.read_text(encoding="utf-8"))
    if len(records) != tests or any(set(r["outcomes"]) != {"passed"} for r in records):
        raise BenchError(f"the {label} session did not pass all {tests} tests")
    return records[1:-1]


def _total(record: Mapping[str, Any]) -> float:
    return float(record["setup"] + record["call"] + record["teardown"])


def _ms(values: list[float]) -> Summary:
    s = summarize(values)
    return Summary(median=s.median * 1e3, low=s.low * 1e3, high=s.high * 1e3, rounds=s.rounds)


def _moto_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("moto") is not None and importlib.util.find_spec("boto3") is not None


def run(settings: Settings, result: ScenarioResult) -> None:
    rounds = max(1, settings.rounds)
    tests = QUICK_TESTS_PER_SESSION if settings.quick else TESTS_PER_SESSION
    sessions = [s for s in _SESSIONS if s[0] != "mock_aws" or _moto_available()]
    stack: dict[str, list[float]] = {}
    floors: dict[str, list[float]] = {}
    per_test: dict[str, list[float]] = {label: [] for label, _, _ in sessions}
    phases: dict[str, dict[str, list[float]]] = {label: {} for label, _, _ in sessions}
    fixtures: dict[str, list[float]] = {}
    work = Path(tempfile.mkdtemp(prefix="arb7-", dir="/tmp"))
    from nitro_sim._reaper import Reaper
    from nitro_sim._zygote import Zygote

    zygote = Zygote(work / "zygote", env=_env(NITRO_SIM_HOME=str(work)))
    reaper = Reaper()
    try:
        _stack_round(_fresh(work, "warmup"), zygote, reaper, one_by_one=False)
        for index in range(rounds):
            for one_by_one in (False, True):
                home = _fresh(work, f"stack{index}{'-one-by-one' if one_by_one else ''}")
                for name, value in _stack_round(home, zygote, reaper, one_by_one=one_by_one).items():
                    stack.setdefault(name, []).append(value)
            floors.setdefault("zygote", []).append(_zygote_start(work))
            floors.setdefault("python", []).append(_floor("pass"))
            floors.setdefault("attestation", []).append(_floor("import attestation"))
            for program, module in PROGRAM_MODULES.items():
                floors.setdefault(program, []).append(_floor(f"import {module}"))
            for label, suite, extra in sessions:
                records = _session(work, label, suite, extra, tests)
                per_test[label].append(statistics.median(_total(r) for r in records))
                for phase in ("setup", "call", "teardown"):
                    phases[label].setdefault(phase, []).append(statistics.median(r[phase] for r in records))
                if label == "function":
                    for name in records[0]["fixtures"]:
                        values = [r["fixtures"].get(name, 0.0) for r in records]
                        fixtures.setdefault(name, []).append(statistics.median(values))
    finally:
        try:
            reaper.close()
        finally:
            zygote.close()
            shutil.rmtree(work, ignore_errors=True)
    _report(
        result, stack=stack, floors=floors, per_test=per_test, phases=phases, fixtures=fixtures, tests=tests
    )


def _fresh(work: Path, name: str) -> Path:
    home = work / name
    home.mkdir()
    return home


def _report(
    result: ScenarioResult,
    *,
    stack: dict[str, list[float]],
    floors: dict[str, list[float]],
    per_test: dict[str, list[float]],
    phases: dict[str, dict[str, list[float]]],
    fixtures: dict[str, list[float]],
    tests: int,
) -> None:
    rows = [
        ("stack ready: kms_sim + vsock_proxy + nsm, fresh home", stack["ready"]),
        ("  of which: simulated PKI created in the home", stack["pki"]),
        (
            "  of which: kms-sim, nsm-sim and vsock-proxy forked by the zygote (kms-sim state, NSM PCRs)",
            stack["spawn"],
        ),
        ("  of which: kms-sim ready (nsm-sim and vsock-proxy starting beside it)", stack["kms"]),
        ("  of which: vsock-proxy ready after kms-sim", stack["proxy"]),
        ("stack stop, a test's part: SIGTERM to all three, handed to the reaper thread", stack["handover"]),
        ("stack stop, in the background: until the reaper has reaped all three", stack["reaped"]),
        *[(f"  {name} alone: SIGTERM to exit", stack[f"stop {name}"]) for name in PROGRAM_MODULES],
        ("zygote start, once per session: Python importing every program's code", floors["zygote"]),
        ("floor: start Python (python -c pass)", floors["python"]),
        ("floor: start Python and import attestation (every program loads it)", floors["attestation"]),
    ]
    rows += [(f"floor: start Python and import {program}'s code", floors[p]) for program, p in _programs()]
    labels = {
        "function": "function-scoped test (enclave_kms, generate_random N=32)",
        "session": "session-scoped test (the same test, one stack for the session)",
        "mock_aws": "mock_aws test (fixture: mock_aws + boto3 client, plain generate_random N=32)",
    }
    for label, values in per_test.items():
        rows.append((f"{labels[label]}: setup + call + teardown", values))
        rows += [(f"  {phase}", phases[label][phase]) for phase in ("setup", "call", "teardown")]
        if label == "function":
            ordered = sorted(fixtures.items(), key=lambda kv: -statistics.median(kv[1]))
            rows += [(f"    setup of fixture {name}", values) for name, values in ordered]
    result.rows += [Row(case=case, unit="ms", value=_ms(values), layout="unpinned") for case, values in rows]
    ready = statistics.median(stack["ready"])
    result.ratios.append(
        Ratio(
            name=f"stack-ready goal ({READY_GOAL_S:g} s) / stack ready",
            value=READY_GOAL_S / ready,
            target=1.0,
            detail=f"kms_sim + vsock_proxy + nsm ready in {ready * 1e3:.0f} ms "
            f"(goal < {READY_GOAL_S * 1e3:.0f} ms)",
        )
    )
    function = statistics.median(per_test["function"])
    session = statistics.median(per_test["session"])
    if "mock_aws" in per_test:
        moto = statistics.median(per_test["mock_aws"])
        result.ratios.append(
            Ratio(
                name=f"{TEST_RATIO_GOAL:g} x mock_aws test / function-scoped test",
                value=TEST_RATIO_GOAL * moto / function,
                target=1.0,
                detail=f"function-scoped {function * 1e3:.0f} ms = {function / moto:.1f}x a mock_aws test "
                f"({moto * 1e3:.1f} ms; goal <= {TEST_RATIO_GOAL:g}x); session-scoped {session * 1e3:.1f} ms "
                f"= {session / moto:.2f}x",
            )
        )
    else:
        result.notes.append("moto is not installed (make bench installs .[bench]): no mock_aws comparison.")
    result.notes.append(_where_it_goes(stack, per_test, phases, fixtures, floors))
    result.notes.append(
        f"Child pytest sessions of {tests} tests each, the first and last left out; the stack rows are "
        "measured in this process with nitro_sim.stack, a fresh home per round. Nothing is pinned: the child "
        "pytest and the three servers share both cores, as they do in a user's run."
    )
    result.data["ms"] = {
        "stack": {k: round(statistics.median(v) * 1e3, 2) for k, v in stack.items()},
        "per_test": {k: round(statistics.median(v) * 1e3, 2) for k, v in per_test.items()},
        "function_fixture_setup": {k: round(statistics.median(v) * 1e3, 2) for k, v in fixtures.items()},
    }


def _programs() -> list[tuple[str, str]]:
    return [(program, program) for program in PROGRAM_MODULES]


def _where_it_goes(
    stack: dict[str, list[float]],
    per_test: dict[str, list[float]],
    phases: dict[str, dict[str, list[float]]],
    fixtures: dict[str, list[float]],
    floors: dict[str, list[float]],
) -> str:
    """What a function-scoped test pays for, from this run's medians (ms)."""

    def med(values: list[float]) -> float:
        return statistics.median(values) * 1e3

    function = phases["function"]
    text = (
        f"Where a function-scoped test's {med(per_test['function']):.0f} ms go: setup "
        f"{med(function['setup']):.0f} ms (the stack, measured alone in {med(stack['ready']):.0f} ms: the "
        f"simulated PKI {med(stack['pki']):.0f} ms, three forks by the zygote {med(stack['spawn']):.0f} ms, "
        f"kms-sim ready {med(stack['kms']):.0f} ms after them with nsm-sim and vsock-proxy starting beside "
        f"it, the proxy ready {med(stack['proxy']):.0f} ms later"
    )
    if "enclave_kms" in fixtures:
        text += (
            f"; the SDK client, its RSA-2048 key pair made in a thread meanwhile, waited for "
            f"{med(fixtures['enclave_kms']):.0f} ms more"
        )
    text += (
        f"), the attested call {med(function['call']):.1f} ms, teardown {med(function['teardown']):.1f} ms "
        f"(SIGTERM and the handover, {med(stack['handover']):.1f} ms alone; the reaper thread reaps them in "
        f"{med(stack['reaped']):.0f} ms while the next test runs: kms-sim's own stop "
        f"{med(stack['stop kms-sim']):.0f} ms, vsock-proxy's {med(stack['stop vsock-proxy']):.0f}, "
        f"nsm-sim's {med(stack['stop nsm-sim']):.0f}). Without the zygote each program's start would cost "
        f"an interpreter importing its code: {med(floors['kms-sim']):.0f} ms for kms-sim, "
        f"{med(floors['vsock-proxy']):.0f} for vsock-proxy, {med(floors['nsm-sim']):.0f} for nsm-sim "
        f"(Python alone {med(floors['python']):.0f} ms); the zygote pays that once per session "
        f"({med(floors['zygote']):.0f} ms)."
    )
    if "mock_aws" in per_test:
        moto = phases["mock_aws"]
        text += (
            f" A mock_aws test takes {med(per_test['mock_aws']):.1f} ms: setup {med(moto['setup']):.1f} ms "
            f"(moto's patches and a boto3 client), call {med(moto['call']):.1f} ms, teardown "
            f"{med(moto['teardown']):.1f} ms; no process starts. The session scope (the default) pays the "
            f"start once: {med(per_test['session']):.1f} ms a test."
        )
    return text
