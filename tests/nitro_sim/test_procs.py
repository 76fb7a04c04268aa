"""nitro_sim.procs: readiness, failures that name the process, stopping groups, and the safety net.

The programs here are tiny Python one-liners; every process a test starts is stopped by it (or by the net
under test, then checked gone). Waits are bounded; no test asserts on a duration.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nitro_sim.procs import (
    OutputLine,
    ProcessError,
    ProcessGroup,
    Recorded,
    TcpPort,
    UnixSocket,
    alive,
    run,
    start,
    stop_recorded,
)
from nitro_sim.stack import reserve_port

PY = sys.executable
#: Bound on waiting for a process to go (generous; never asserted as a time).
GONE_WITHIN_S = 30.0


def _gone(pid: int, token: int | None = None) -> bool:
    """Wait (bounded) until ``pid`` no longer runs (a zombie does not)."""
    recorded = Recorded(pid=pid, token=token if token is not None else _token(pid))
    deadline = time.monotonic() + GONE_WITHIN_S
    while alive(recorded):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _token(pid: int) -> int:
    raw = Path(f"/proc/{pid}/stat").read_bytes()
    return int(raw.rpartition(b")")[2].split()[19])


@pytest.fixture
def group(tmp_path: Path) -> Iterator[ProcessGroup]:
    with ProcessGroup(tmp_path / "logs") as owned:
        yield owned


def test_output_line_returns_the_line_and_logs_everything(group: ProcessGroup) -> None:
    code = "import time; print('warming up', flush=True); print('ready at 42', flush=True); time.sleep(600)"
    process = group.start([PY, "-c", code], name="talker", ready=OutputLine(pattern=r"ready at \d+"))
    assert process.ready_line == "ready at 42"
    assert process.log == group.log_dir / "talker.log"
    assert "warming up" in process.output()
    assert process.running()


def test_exit_before_ready_names_the_process_and_quotes_its_last_lines(group: ProcessGroup) -> None:
    code = "import sys; [print(f'line {i}') for i in range(50)]; sys.exit('broken config')"
    with pytest.raises(ProcessError) as caught:
        group.start([PY, "-c", code], name="doomed", ready=OutputLine(pattern="never"))
    message = str(caught.value)
    assert message.startswith("doomed (pid ")
    assert "exited with status 1 before it was ready" in message
    assert "  | broken config" in message
    assert "  | line 49" in message
    assert "line 10\n" not in message  # only the last lines
    assert group.processes == []


def test_not_ready_in_time_is_stopped(group: ProcessGroup) -> None:
    code = "import time; print('still booting', flush=True); time.sleep(600)"
    with pytest.raises(ProcessError, match=r"sleeper \(pid \d+\) was not ready within 0.2 s") as caught:
        group.start([PY, "-c", code], name="sleeper", ready=OutputLine(pattern="ready"), timeout=0.2)
    assert "still booting" in str(caught.value) or "(no output)" in str(caught.value)
    assert group.processes == []


def test_unix_socket_and_tcp_port_readiness(group: ProcessGroup, tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    unix = (
        "import socket, time; s = socket.socket(socket.AF_UNIX); time.sleep(0.1); "
        f"s.bind({str(path)!r}); s.listen(); time.sleep(600)"
    )
    group.start([PY, "-c", unix], name="unix", ready=UnixSocket(path=path))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    tcp = (
        "import socket, time; s = socket.socket(); time.sleep(0.1); "
        f"s.bind(('127.0.0.1', {port})); s.listen(); time.sleep(600)"
    )
    group.start([PY, "-c", tcp], name="tcp", ready=TcpPort(port=port))
    assert [p.name for p in group.processes] == ["unix", "tcp"]


def test_a_name_used_twice_gets_its_own_log(group: ProcessGroup) -> None:
    first = group.spawn([PY, "-c", "print('one')"], name="twin")
    second = group.spawn([PY, "-c", "print('two')"], name="twin")
    assert (first.name, second.name) == ("twin", "twin-2")
    assert first.log != second.log


def test_sigterm_then_sigkill_after_the_bound(group: ProcessGroup) -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(600)"
    )
    process = group.start([PY, "-c", code], name="stubborn", ready=OutputLine(pattern="ready"))
    assert process.stop(timeout=0.2) == -signal.SIGKILL


def test_stop_reaches_the_whole_process_group(group: ProcessGroup) -> None:
    code = (
        "import subprocess, sys, time; "
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
        "print('child', c.pid, flush=True); time.sleep(600)"
    )
    process = group.start([PY, "-c", code], name="parent", ready=OutputLine(pattern="^child "))
    assert process.ready_line is not None
    child = int(process.ready_line.split()[1])
    token = _token(child)
    group.stop_all()
    assert _gone(child, token)


def _runner(tmp_path: Path, body: str) -> subprocess.Popen[str]:
    """A Python process that starts a sleeper through nitro_sim.procs, prints its pid, then runs ``body``."""
    script = textwrap.dedent(
        f"""
        import os, signal, sys, time
        from pathlib import Path
        from nitro_sim.procs import start
        argv = [sys.executable, "-c", "import time; time.sleep(600)"]
        p = start(argv, name="orphan", log_dir=Path({str(tmp_path)!r}))
        print(p.pid, p.token, flush=True)
        """
    ) + textwrap.dedent(body)
    return subprocess.Popen([PY, "-c", script], stdout=subprocess.PIPE, text=True, cwd=Path.cwd())


@pytest.mark.parametrize(
    ("body", "how"),
    [
        ("time.sleep(600)\n", signal.SIGKILL),  # the parent-death signal
        ("time.sleep(600)\n", signal.SIGTERM),  # the SIGTERM handler
        ("time.sleep(600)\n", signal.SIGHUP),  # the SIGHUP handler
        ("sys.exit(0)\n", None),  # atexit
        ("os.kill(os.getpid(), signal.SIGINT); time.sleep(600)\n", None),  # KeyboardInterrupt, then atexit
    ],
    ids=["runner-sigkilled", "runner-sigterm", "runner-sighup", "runner-exits", "runner-sigint"],
)
def test_no_orphan_whatever_happens_to_the_runner(tmp_path: Path, body: str, how: int | None) -> None:
    runner = _runner(tmp_path, body)
    try:
        assert runner.stdout is not None
        pid, token = (int(x) for x in runner.stdout.readline().split())
        if how is not None:
            runner.send_signal(how)
        code = runner.wait(timeout=GONE_WITHIN_S)
        assert _gone(pid, token)
        if how in (signal.SIGTERM, signal.SIGHUP):
            assert code == -how  # it still dies of the signal, after stopping its processes
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
        if runner.stdout is not None:
            runner.stdout.close()


def test_detached_outlives_its_starter_and_is_stopped_by_record(tmp_path: Path) -> None:
    script = (
        "import sys; from pathlib import Path; from nitro_sim.procs import start; "
        "argv = [sys.executable, '-c', 'import time; time.sleep(600)']; "
        f"p = start(argv, name='d', log_dir=Path({str(tmp_path)!r}), detached=True); "
        "print(p.pid, p.token)"
    )
    out = subprocess.run([PY, "-c", script], capture_output=True, text=True, check=True, timeout=60).stdout
    pid, token = (int(x) for x in out.split())
    recorded = Recorded(pid=pid, token=token)
    try:
        assert alive(recorded)
        stop_recorded(
            [Recorded(pid=pid, token=token + 1)], timeout=0.1
        )  # a stranger with that pid: untouched
        assert alive(recorded)
        stop_recorded([recorded])
        assert _gone(pid, token)
    finally:
        if alive(recorded):
            os.kill(pid, signal.SIGKILL)


def test_cannot_start_is_a_process_error(tmp_path: Path) -> None:
    with pytest.raises(ProcessError, match=r"cannot start ghost \(/no/such/program\)"):
        start(["/no/such/program"], name="ghost", log_dir=tmp_path)


ECHO = (
    "import sys\n"
    "print('ready', flush=True)\n"
    "for line in sys.stdin:\n"
    "    if line.strip() == 'quit':\n"
    "        break\n"
    "    print('echo', line.strip(), flush=True)\n"
    "    print('noted', line.strip(), file=sys.stderr, flush=True)\n"
)


def test_talk_sends_and_reads_lines_and_logs_stderr(group: ProcessGroup) -> None:
    process = group.start([PY, "-c", ECHO], name="echo", talk=True)
    assert process.read_line() == "ready"
    process.send("one")
    process.send("two")
    assert process.read_line() == "echo one"
    assert process.read_line() == "echo two"
    process.send("quit")
    with pytest.raises(ProcessError, match=r"echo \(pid \d+\) closed its output \(exit status 0\)") as caught:
        process.read_line()
    assert "  | noted two" in str(caught.value)  # stderr went to the log, quoted in the failure
    assert group.stop(process) == 0
    with pytest.raises(ProcessError, match="no longer reads its input"):
        process.send("late")


def test_read_line_is_bounded(group: ProcessGroup) -> None:
    silent = group.start([PY, "-c", "import time; time.sleep(600)"], name="silent", talk=True)
    with pytest.raises(ProcessError, match=r"silent \(pid \d+\) printed no line within 0.1 s"):
        silent.read_line(timeout=0.1)
    code = "import sys, time; sys.stdout.write('x' * 70000); sys.stdout.flush(); time.sleep(600)"
    runaway = group.start([PY, "-c", code], name="runaway", talk=True)
    with pytest.raises(ProcessError, match="wrote a line over 65536 bytes"):
        runaway.read_line()


def test_stop_with_a_chosen_signal(group: ProcessGroup) -> None:
    code = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGINT, lambda *_: (print('saved', flush=True), sys.exit(3)))\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n"
    )
    process = group.start([PY, "-c", code], name="graceful", ready=OutputLine(pattern="ready"))
    assert group.stop(process, signum=signal.SIGINT) == 3
    assert "saved" in process.output()
    assert group.processes == []


def test_restart_runs_the_same_command_again_under_its_name(group: ProcessGroup, tmp_path: Path) -> None:
    held = reserve_port()  # held for the whole test: no ephemeral port takes it between the two servers
    assert held is not None
    with held:
        port = held.getsockname()[1]
        server = (
            "import os, socket, time; s = socket.socket(); "
            "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
            f"s.bind(('127.0.0.1', {port})); s.listen(); print('up', os.getpid(), flush=True); "
            "time.sleep(600)"
        )
        ready = TcpPort(port=port)
        first = group.start([PY, "-c", server], name="server", ready=ready, env={"MARK": "kept"})
        again = group.restart(first, ready=OutputLine(pattern="^up "))
        assert again.name == "server"
        assert again.log == first.log
        assert again.pid != first.pid
        assert not first.running()
        assert again.command.env["MARK"] == "kept"
        assert group.processes == [again]
        assert first.output().count("up ") == 2  # the log goes on
        other = group.restart(
            again, argv=[PY, "-c", "print('other', flush=True); import time; time.sleep(600)"]
        )
        assert other.wait_ready(OutputLine(pattern="^other$")) == "other"


def test_run_a_command_to_its_end(tmp_path: Path) -> None:
    done = run([PY, "-c", "print('out'); import sys; print('err', file=sys.stderr)"], name="talker")
    assert (done.returncode, done.stdout, done.stderr) == (0, "out\n", "err\n")
    code = "import sys; [print(f'line {i}', file=sys.stderr) for i in range(40)]; sys.exit(4)"
    with pytest.raises(ProcessError) as caught:
        run([PY, "-c", code], name="failing thing")
    message = str(caught.value)
    assert message.startswith("failing thing exited with status 4; last lines of its output:\n")
    assert "  | line 39" in message
    assert "line 10\n" not in message
    assert run([PY, "-c", "raise SystemExit(4)"], name="unchecked", check=False).returncode == 4
    with pytest.raises(ProcessError, match=r"^sleeper did not finish within 0.2 s \(killed\)$"):
        run([PY, "-c", "import time; time.sleep(600)"], name="sleeper", timeout=0.2)
    with pytest.raises(ProcessError, match=r"cannot start ghost \(/no/such/program\)"):
        run(["/no/such/program"], name="ghost")
