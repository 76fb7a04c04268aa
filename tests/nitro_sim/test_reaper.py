"""nitro_sim's reaper: a stop handed over returns at once; the thread reaps, SIGKILLs at the bound, cleans up.

The processes are Python one-liners that leave on SIGTERM only once a file exists, so "not yet stopped"
is a state the test controls, never a race with a clock. Waits are bounded; nothing asserts on a duration.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import nitro_sim._reaper as reaper_module
from nitro_sim._reaper import Reaper
from nitro_sim.procs import OutputLine, Process, ProcessGroup, alive, live

#: Bound on waiting for a state (generous; never asserted as a time).
WAIT_S = 30.0


def _until(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def group(tmp_path: Path) -> Iterator[ProcessGroup]:
    with ProcessGroup(tmp_path / "logs") as owned:
        yield owned


def _lingering(group: ProcessGroup, release: Path, name: str = "lingering") -> Process:
    """A process that, on SIGTERM, exits only once ``release`` exists (or never, for a missing directory)."""
    code = (
        "import os, signal, sys, time\n"
        "def leave(*_):\n"
        f"    while not os.path.exists({str(release)!r}):\n"
        "        time.sleep(0.01)\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, leave)\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n"
    )
    return group.start([sys.executable, "-c", code], name=name, ready=OutputLine(pattern="ready"))


def test_stop_later_returns_at_once_and_the_thread_finishes(group: ProcessGroup, tmp_path: Path) -> None:
    release = tmp_path / "release"
    process = _lingering(group, release)
    cleaned: list[bool] = []
    reaper = Reaper()
    reaper.stop_later([process], then=lambda: cleaned.append(alive(process.recorded)))
    group.processes.clear()  # handed over
    assert process.running()  # SIGTERM was sent, and the caller did not wait for its end
    assert reaper.pending() == 1
    assert cleaned == []
    release.touch()
    reaper.close()
    assert cleaned == [False]  # ``then`` ran once the process had ended
    assert process.popen.returncode == 0  # reaped
    assert process.recorded not in live()


def test_what_outlives_the_bound_is_killed(
    group: ProcessGroup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reaper_module, "STOP_TIMEOUT_S", 0.2)
    process = _lingering(group, tmp_path / "no" / "such" / "file")
    reaper = Reaper()
    reaper.stop_later([process])
    group.processes.clear()
    reaper.close()
    assert process.popen.returncode == -signal.SIGKILL


def test_room_for_a_bounded_number_of_jobs(
    group: ProcessGroup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reaper_module, "MAX_PENDING_STOPS", 1)
    release = tmp_path / "release"
    first, second = _lingering(group, release, "first"), _lingering(group, release, "second")
    group.processes.clear()
    reaper = Reaper()
    reaper.stop_later([first])
    handing = threading.Thread(target=reaper.stop_later, args=([second],))
    handing.start()
    handing.join(0.3)
    assert handing.is_alive()  # waits for room while the first job is not done
    release.touch()
    handing.join(WAIT_S)
    assert not handing.is_alive()
    reaper.close()
    assert first.popen.returncode == second.popen.returncode == 0


def test_close_raises_what_a_job_met_and_refuses_more(group: ProcessGroup) -> None:
    process = group.start([sys.executable, "-c", "import time; time.sleep(600)"], name="plain")
    group.processes.clear()
    reaper = Reaper()

    def fail() -> None:
        raise OSError("cleanup failed")

    reaper.stop_later([process], then=fail)
    with pytest.raises(OSError, match="cleanup failed"):
        reaper.close()
    assert _until(lambda: not alive(process.recorded))
    with pytest.raises(RuntimeError, match="the reaper is closed"):
        reaper.stop_later([])
