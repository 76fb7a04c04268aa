"""The pytest plugin as a user meets it: a suite of their own, run by pytest with the package installed.

Each test writes a user's test files with ``pytester`` and runs pytest on them: in this process
(``runpytest``: the entry point loads the plugin as it would for them), or as a child process where a
signal is part of the test. Those check the process table: no process of ours outlives the run.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nitro_sim.procs import Recorded, alive

pytest_plugins = ["pytester"]

#: Bound on waiting for a child pytest to reach a point or to exit (never asserted as a time).
WAIT_S = 60.0

USER_SUITE = """
import base64
import hashlib
import pytest

OTHER = hashlib.sha384(b"another image").hexdigest()
MINE = hashlib.sha384(b"my image").hexdigest()


def test_x(enclave_kms):
    assert len(enclave_kms.generate_random(NumberOfBytes=32)["Plaintext"]) == 32


def test_another_pcr0_is_denied(enclave_kms, kms_sim):
    kms_sim.set_policy({"nitro-sim": {"Statement": [{
        "Effect": "Allow", "Action": "kms:GenerateRandom", "Resource": "*",
        "Condition": {"StringEqualsIgnoreCase": {"kms:RecipientAttestation:ImageSha384": OTHER}}}]}})
    with pytest.raises(enclave_kms.exceptions.AccessDeniedException):
        enclave_kms.generate_random(NumberOfBytes=32)


def test_audit_shows_the_attested_call(enclave_kms, kms_sim, nsm):
    enclave_kms.generate_random(NumberOfBytes=16)
    [record] = kms_sim.audit()
    recipient = record["additionalEventData"]["recipient"]
    assert base64.b64decode(recipient["attestationDocumentEnclaveImageDigest"]).hex() == nsm.pcrs[0].hex()


@pytest.mark.nitro_pcr(0, MINE)
def test_marked_pcr0(enclave_kms, kms_sim, nsm):
    assert nsm.pcrs[0].hex() == MINE
    enclave_kms.generate_random(NumberOfBytes=8)
    recipient = kms_sim.audit()[-1]["additionalEventData"]["recipient"]
    assert base64.b64decode(recipient["attestationDocumentEnclaveImageDigest"]).hex() == MINE


@pytest.mark.nitro_debug
def test_debug(nsm):
    assert nsm.pcrs[0] == bytes(48)
"""


def test_a_users_suite_gets_attested_bytes_under_strict_markers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_SUITE)
    result = pytester.runpytest("--strict-markers", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=5)


RECORDING_SUITE = """
import os

def _record(kms_sim, nsm):
    with open(os.environ["PIDS_FILE"], "a") as out:
        out.write(f"{kms_sim.process.pid} {nsm.process.pid} {kms_sim.home}\\n")


def _app_key(kms_sim):
    client = kms_sim.boto3_client()
    assert client.list_keys()["Keys"] == []
    key_id = client.create_key()["KeyMetadata"]["KeyId"]
    client.create_alias(AliasName="alias/app", TargetKeyId=key_id)
    client.close()


def test_one(kms_sim, nsm, enclave_kms):
    _record(kms_sim, nsm)
    assert kms_sim.audit() == []
    _app_key(kms_sim)
    kms_sim.set_policy({"nitro-sim": {"Statement": [{"Effect": "Deny", "Action": "kms:*", "Resource": "*"}]}})
    kms_sim.inject_fault("KMSInternalException", 100)


def test_two(kms_sim, nsm, enclave_kms):
    _record(kms_sim, nsm)
    assert kms_sim.audit() == []
    _app_key(kms_sim)
    kms_sim.mark_audit()
    response = enclave_kms.generate_random(NumberOfBytes=8)
    assert response["ResponseMetadata"]["RetryAttempts"] == 0
    assert len(kms_sim.audit()) == 1
"""


@pytest.mark.parametrize(
    ("how", "stacks"),
    [(["--nitro-sim-scope=function"], 4), (["ini"], 2), ([], 1)],
    ids=["function-by-option", "module-by-ini", "session-by-default"],
)
def test_each_scope_and_the_reset_between_tests(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, how: list[str], stacks: int
) -> None:
    pids = pytester.path / "pids.txt"
    monkeypatch.setenv("PIDS_FILE", str(pids))
    pytester.makepyfile(test_a=RECORDING_SUITE, test_b=RECORDING_SUITE)
    if how == ["ini"]:
        pytester.makeini("[pytest]\nnitro_sim_scope = module\n")
        how = []
    result = pytester.runpytest("-p", "no:cacheprovider", *how)
    result.assert_outcomes(passed=4)
    rows = pids.read_text().split("\n")[:-1]
    assert len(rows) == 4
    assert len({row.split()[0] for row in rows}) == stacks  # kms-sim processes
    assert len({row.split()[1] for row in rows}) == stacks  # NSM devices
    assert len({row.split()[2] for row in rows}) == stacks  # homes
    for row in rows:
        kms_pid, nsm_pid, home = row.split()
        assert not _running(int(kms_pid))
        assert not _running(int(nsm_pid))
        assert not Path(home).exists()  # removed once its processes had ended


def test_a_bad_scope_or_marker_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nnitro_sim_scope = forever\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert "nitro_sim_scope must be one of function, module, session, got 'forever'" in result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(
        test_bad="""
        import pytest

        @pytest.mark.nitro_pcr(16, "00" * 48)
        def test_x(nsm):
            pass
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*nitro_pcr: index must be 0..15, got 16*"])


@pytest.mark.parametrize(
    ("file", "fixture", "said"),
    [
        ("policy.json", "kms_sim", "policy file * is not valid JSON"),
        ("credentials", "enclave_kms", "cannot read credentials file *"),  # not the client's own error
    ],
    ids=["policy-kms_sim", "credentials-enclave_kms"],
)
def test_a_fixture_failure_names_the_process_and_its_last_lines(
    pytester: pytest.Pytester, file: str, fixture: str, said: str
) -> None:
    pytester.makepyfile(
        test_broken=f"""
        import pytest

        @pytest.fixture
        def broken_state(nitro_home):
            (nitro_home / "kms").mkdir()
            (nitro_home / "kms" / "{file}").write_text("{{")

        def test_x(broken_state, {fixture}):
            pass
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "*kms-sim (pid *) exited with status 1 before it was ready; last lines of *kms-sim.log:",
            f"*| kms-sim: error: {said}*",
        ]
    )
    assert "Traceback" not in result.stdout.str()


HANGING_SUITE = """
import os, time

def test_hangs(enclave_kms, nitro_home, _nitro_sim_runtime):
    from nitro_sim.procs import live
    with open(os.environ["PIDS_FILE"] + ".tmp", "w") as out:
        out.write(str(nitro_home) + "\\n")
        out.write(str(_nitro_sim_runtime.directory) + "\\n")
        for process in live():
            out.write(f"{process.pid} {process.token}\\n")
    os.replace(os.environ["PIDS_FILE"] + ".tmp", os.environ["PIDS_FILE"])
    time.sleep(600)
"""


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_an_interrupted_run_leaves_no_process_of_ours(pytester: pytest.Pytester, how: signal.Signals) -> None:
    pids = pytester.path / "pids.txt"
    pytester.makepyfile(test_hang=HANGING_SUITE)
    runner = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_hang.py"],
        cwd=pytester.path,
        env={**os.environ, "PIDS_FILE": str(pids)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + WAIT_S
        while not pids.exists() and runner.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert pids.exists(), f"the child pytest did not reach its test (exit status {runner.poll()})"
        home, session, *rows = pids.read_text().split("\n")[:-1]
        ours = [Recorded(pid=int(row.split()[0]), token=int(row.split()[1])) for row in rows]
        assert len(ours) == 4  # the zygote, and kms-sim, vsock-proxy, nsm-sim forked by it
        assert all(alive(p) for p in ours)
        runner.send_signal(how)
        runner.wait(timeout=WAIT_S)
        deadline = time.monotonic() + WAIT_S
        while any(alive(p) for p in ours) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not any(alive(p) for p in ours)
        assert _processes_mentioning(home) == []
        if how == signal.SIGINT:  # the interrupted runner cleaned up after itself
            assert not Path(home).exists()
            assert not Path(session).exists()
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
        if pids.exists():  # a SIGKILLed runner could not remove its home, nor the session's directory
            for directory in pids.read_text().split("\n")[:2]:
                shutil.rmtree(directory, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rpartition(b")")[2].split()[0]
    except OSError:
        return False
    return state not in (b"Z", b"X")


def _processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line mentions ``text`` (the home: in nsm-sim's and the proxy's)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _running(int(entry.name)):
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found
