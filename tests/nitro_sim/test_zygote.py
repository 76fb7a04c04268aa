"""nitro_sim's zygote: our servers forked from one process that imported their code, each as if exec'd.

A forked nsm-sim (cheap, quiet, exits 0 on SIGTERM) or kms-sim is checked from outside through /proc: its
own session and group, its log as stdout and stderr, /dev/null as stdin, none of the zygote's descriptors,
default signal dispositions, its name, the request's environment and working directory; its end seen and
reaped through the zygote; the zygote's death taking its children with it. How a child ends (exit status,
message, traceback, threads joined, atexit hooks, no finalization) is checked on ``_exit`` itself in a plain
interpreter. Every process a test starts is stopped by it; waits are bounded, nothing asserts on a duration.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nitro_sim._zygote import ForkedChild, Zygote
from nitro_sim.procs import OutputLine, Process, ProcessError, ProcessGroup, Recorded, alive, live
from nitro_sim.stack import KmsSim, child_environment, program

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the zygote is Linux-only")

#: Bound on waiting for a process to go (generous; never asserted as a time).
GONE_WITHIN_S = 30.0


@pytest.fixture
def zygote(tmp_path: Path) -> Iterator[Zygote]:
    owned = Zygote(tmp_path / "zygote", env=child_environment(tmp_path))
    try:
        yield owned
    finally:
        owned.close()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def group(zygote: Zygote, home: Path) -> Iterator[ProcessGroup]:
    with ProcessGroup(home / "logs", env=child_environment(home), zygote=zygote) as owned:
        yield owned


def _nsm(group: ProcessGroup, home: Path, name: str = "nsm-sim", *extra: str) -> Process:
    argv = [*program("nsm-sim"), "--socket", str(home / f"{name}.sock"), *extra]
    return group.start(argv, name=name, ready=OutputLine(pattern="listening on"))


def _gone(recorded: Recorded) -> bool:
    deadline = time.monotonic() + GONE_WITHIN_S
    while alive(recorded):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def _fd_targets(pid: int) -> dict[int, str]:
    return {int(fd.name): os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()}


def test_a_forked_server_is_a_process_of_its_own(group: ProcessGroup, zygote: Zygote, home: Path) -> None:
    process = _nsm(group, home)
    assert isinstance(process.popen, ForkedChild)
    assert process.ready_line == f"nsm-sim listening on {home / 'nsm-sim.sock'}"  # its argv
    pid = process.pid
    assert zygote.process is not None
    assert int(_status(pid)["PPid"]) == zygote.process.pid
    assert os.getpgid(pid) == pid
    assert os.getsid(pid) == pid
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "nsm-sim"
    assert os.readlink(f"/proc/{pid}/cwd") == os.getcwd()  # where an exec'd child would have started
    assert (home / "pki").is_dir()  # nsm-sim made its PKI in the NITRO_SIM_HOME it was given
    targets = _fd_targets(pid)
    assert targets[0] == os.devnull
    assert targets[1] == targets[2] == str(process.log)
    zygote_pipes = {t for t in _fd_targets(zygote.process.pid).values() if t.startswith("pipe:")}
    assert not zygote_pipes & set(targets.values())  # the control channel stayed in the zygote
    status = _status(pid)
    assert int(status["SigBlk"], 16) == 0
    assert int(status["SigCgt"], 16) & (1 << (signal.SIGHUP - 1)) == 0  # the zygote's handler is undone
    assert Recorded(pid=pid, token=process.token or -1) in live()
    assert "module_id" in process.output()  # stderr in the log too


def test_its_end_is_seen_and_reaped_through_the_zygote(group: ProcessGroup, home: Path) -> None:
    process = _nsm(group, home)
    recorded = process.recorded
    assert group.stop(process) == 0  # SIGTERM: nsm-sim's clean exit
    assert not Path(f"/proc/{recorded.pid}").exists()  # reaped
    assert recorded not in live()
    with pytest.raises(ProcessError) as caught:
        _nsm(group, home, "bad", "--pcr", "99=00")
    message = str(caught.value)
    assert message.startswith("bad (pid ")
    assert "exited with status 2 before it was ready" in message
    assert "PCR" in message  # its usage error, quoted from its log
    assert group.processes == []


def test_the_zygotes_death_takes_its_children(group: ProcessGroup, zygote: Zygote, home: Path) -> None:
    children = [_nsm(group, home, f"n{i}") for i in range(2)]
    assert zygote.process is not None
    os.kill(zygote.process.pid, signal.SIGKILL)
    for child in children:
        assert _gone(child.recorded)  # their parent-death signal
        assert child.exit_status() == -signal.SIGKILL
    assert not zygote.serves(children[0].command.argv, children[0].command.env)  # it is gone: exec again
    group.stop_all()
    assert group.processes == []


def test_closing_the_zygote_stops_what_it_still_runs(group: ProcessGroup, zygote: Zygote, home: Path) -> None:
    child = _nsm(group, home)
    zygote.close()
    assert _gone(child.recorded)
    assert not zygote.serves(child.command.argv, child.command.env)
    group.processes.clear()  # the zygote reaped it


def test_what_the_zygote_cannot_fork_is_execd(group: ProcessGroup, home: Path) -> None:
    other = group.spawn([sys.executable, "-c", "import time; time.sleep(600)"], name="other")
    talker = group.spawn([*program("nsm-sim"), "--socket", str(home / "t.sock")], name="talker", talk=True)
    tuned = group.spawn(
        [*program("nsm-sim"), "--socket", str(home / "u.sock")], name="tuned", env={"PYTHONHASHSEED": "7"}
    )
    assert not any(isinstance(p.popen, ForkedChild) for p in (other, talker, tuned))


def test_kms_sim_forked_serves_restarts_and_runs_workers(group: ProcessGroup, home: Path) -> None:
    kms = KmsSim.spawn(group, home, args=["--workers", "2"]).wait_ready()
    assert isinstance(kms.process.popen, ForkedChild)
    client = kms.boto3_client()
    assert len(client.generate_random(NumberOfBytes=8)["Plaintext"]) == 8
    port = kms.port
    first = kms.process.recorded
    client.close()
    kms.restart(group)
    assert isinstance(kms.process.popen, ForkedChild)
    assert kms.port == port
    assert _gone(first)
    assert len(client.generate_random(NumberOfBytes=8)["Plaintext"]) == 8
    client.close()  # a kept-alive connection would hold a worker to uvicorn's graceful-shutdown bound
    assert group.stop(kms.process) == 0


def test_the_control_channel_refuses_bad_requests_and_goes_on(zygote: Zygote, tmp_path: Path) -> None:
    zygote.start()
    process = zygote.process
    assert process is not None
    for line in ("not json", "[1]", json.dumps({"spawn": "bash", "argv": [], "env": {}, "log": "x"})):
        process.send(line)
        assert "error" in json.loads(process.read_line())
    process.send(json.dumps({"reap": os.getpid()}))
    assert "is not an unreaped child" in json.loads(process.read_line())["error"]
    with pytest.raises(ValueError, match="does not run"):
        zygote.spawn([sys.executable], name="x", log_dir=tmp_path, env={}, cwd=None)


@pytest.mark.parametrize(
    ("body", "status", "stdout", "stderr"),
    [
        ("lambda: 3", 3, "hook\n", ""),
        ("lambda: None", 0, "hook\n", ""),
        ("lambda: sys.exit('bad config')", 1, "hook\n", "bad config\n"),
        ("lambda: 1 / 0", 1, "hook\n", "ZeroDivisionError"),
        ("interrupted", -signal.SIGINT, "hook\n", ""),
    ],
    ids=["returns-3", "returns-none", "exit-message", "uncaught", "keyboard-interrupt"],
)
def test_a_child_ends_as_an_interpreter_would(body: str, status: int, stdout: str, stderr: str) -> None:
    code = (
        "import atexit, sys, threading, time\n"
        "from nitro_sim._zygote_main import _exit\n"
        "def interrupted():\n"
        "    raise KeyboardInterrupt\n"
        "late = []\n"
        "threading.Thread(target=lambda: (time.sleep(0.05), late.append(1))).start()  # joined first\n"
        "atexit.register(lambda: print('hook' * len(late), flush=True))\n"
        f"_exit({body})\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == status
    assert done.stdout == stdout
    assert stderr in done.stderr
