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
    start,
    stop_recorded,
)

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
