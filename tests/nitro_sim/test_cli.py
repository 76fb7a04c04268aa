"""``nitro-sim up | status | down`` as a shell uses it: detached processes, exports, a state file.

Every test that brings the stack up brings it down in a ``finally`` (and checks its processes are gone).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nitro_sim.cli import STATE_FILE, main
from nitro_sim.procs import Recorded, alive

BIN = Path(sys.executable).parent
PCR0 = hashlib.sha384(b"a developer's enclave image").hexdigest()
#: Bound on a command and on processes going away (never asserted as a time).
WAIT_S = 60.0


@pytest.fixture
def home() -> Iterator[Path]:
    """A short NITRO_SIM_HOME (the vsock sockets live under it)."""
    path = Path(tempfile.mkdtemp(prefix="nsim-cli-", dir="/tmp"))
    try:
        yield path
    finally:
        subprocess.run([BIN / "nitro-sim", "down"], env=_env(path), capture_output=True, check=False)
        shutil.rmtree(path, ignore_errors=True)


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "NITRO_SIM_"))}
    return {**env, "NITRO_SIM_HOME": str(home), **extra}


def _run(home: Path, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "nitro-sim"), *argv],
        env=env or _env(home),
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
    )


def _exports(stdout: str) -> dict[str, str]:
    out = {}
    for line in stdout.splitlines():
        word, assignment = shlex.split(line)
        assert word == "export"
        name, _, value = assignment.partition("=")
        out[name] = value
    return out


def _recorded(home: Path) -> list[Recorded]:
    state = json.loads((home / STATE_FILE).read_text())
    return [Recorded(pid=p["pid"], token=p["token"]) for p in state["processes"]]


def _all_gone(procs: list[Recorded]) -> bool:
    deadline = time.monotonic() + WAIT_S
    while any(alive(p) for p in procs):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_up_status_down_round_trip(home: Path) -> None:
    up = _run(home, "up", "--pcr", f"0={PCR0}")
    assert up.returncode == 0, up.stderr
    exports = _exports(up.stdout)
    assert exports["NITRO_SIM_HOME"] == str(home)
    assert exports["NITRO_SIM_NSM"].startswith(str(home))
    assert {
        "NITRO_SIM_CID",
        "NITRO_SIM_KMS_TLS",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_ENDPOINT_URL_KMS",
    } < set(exports)
    procs = _recorded(home)
    assert len(procs) == 3
    assert all(alive(p) for p in procs)  # they outlived `nitro-sim up`

    # A shell that evals `nitro-sim up` (up again: the same exports) is the enclave app's shell.
    script = f'eval "$({BIN / "nitro-sim"} up)" && {BIN / "kmstool-enclave-cli"} genrandom --length 16'
    shell = subprocess.run(
        ["bash", "-c", script], env=_env(home), capture_output=True, text=True, timeout=WAIT_S, check=False
    )
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout.startswith("PLAINTEXT: ")
    assert "already up" in shell.stderr
    record = json.loads((home / "kms" / "audit.jsonl").read_text().splitlines()[-1])
    assert (
        base64.b64decode(
            record["additionalEventData"]["recipient"]["attestationDocumentEnclaveImageDigest"]
        ).hex()
        == PCR0
    )

    status = _run(home, "status")
    assert status.returncode == 0
    assert [line.split()[:2] for line in status.stdout.splitlines()] == [
        ["kms-sim", "running"],
        ["vsock-proxy", "running"],
        ["nsm-sim-1000", "running"],
    ]
    # One of them stops: status says so, and up refuses to mix old and new.
    os.kill(procs[2].pid, signal.SIGTERM)
    assert _all_gone(procs[2:])
    assert _run(home, "status").returncode == 1
    refused = _run(home, "up")
    assert (refused.returncode, refused.stdout) == (1, "")
    assert "partly running: run `nitro-sim down` first" in refused.stderr

    down = _run(home, "down")
    assert down.returncode == 0
    assert _all_gone(procs)
    assert not (home / STATE_FILE).exists()
    assert _run(home, "status").returncode == 3


@pytest.mark.parametrize(
    "case",
    [
        (["up", "--pcr", "16=00"], 2, "--pcr index must be a boot PCR in 0..15"),
        (["up", "--pcr", "0=zz"], 2, "value is not hexadecimal"),
        (["up", "--policy", "/no/such/policy.json"], 1, "cannot read policy file /no/such/policy.json"),
        (["sideways"], 2, "invalid choice: 'sideways'"),
    ],
    ids=["pcr-index", "pcr-hex", "policy-missing", "no-such-command"],
)
def test_bad_input_is_one_line(
    home: Path,
    case: tuple[list[str], int, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    argv, code, fragment = case
    monkeypatch.setenv("NITRO_SIM_HOME", str(home))
    assert main(argv) == code
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("nitro-sim: error: ")
    assert captured.err.count("\n") == 1
    assert fragment in captured.err
    assert not (home / STATE_FILE).exists()
    assert not (home / "logs").exists()  # nothing was started


def test_not_up_and_a_corrupt_state_file(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NITRO_SIM_HOME", str(home))
    assert main(["status"]) == 3
    assert main(["down"]) == 0
    (home / STATE_FILE).write_text('{"processes": [{"pid": "x"}]}')
    assert main(["status"]) == 1
    assert main(["down"]) == 1


def test_a_failed_up_names_the_process_and_stops_the_others(home: Path) -> None:
    blocker = home / "vsock" / "3" / "8000.sock"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a socket")
    up = _run(home, "up")
    assert (up.returncode, up.stdout) == (1, "")
    assert up.stderr.startswith("nitro-sim: error: vsock-proxy (pid ")
    assert "exited with status 1 before it was ready" in up.stderr
    assert "exists and is not a socket" in up.stderr
    assert not (home / STATE_FILE).exists()
    marker = f"NITRO_SIM_HOME={home}\0".encode()
    deadline = time.monotonic() + WAIT_S
    while _environ_holds(marker) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _environ_holds(marker) == []


def _environ_holds(marker: bytes) -> list[int]:
    """Live processes of ours whose environment holds ``marker`` (our programs: NITRO_SIM_HOME=<home>)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or entry.name == str(os.getpid()):
            continue
        try:
            state = (entry / "stat").read_bytes().rpartition(b")")[2].split()[0]
            if state not in (b"Z", b"X") and marker in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found
